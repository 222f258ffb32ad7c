"""dnntune: tune and optimize the training of deep neural networks in PyTorch."""

__version__ = "0.1.0"

from .config import Recipe, load_recipe, validate_recipe  # noqa: E402
from .deploy import export, load_run  # noqa: E402
from .engine import RunResult, train  # noqa: E402

__all__ = ["Recipe", "RunResult", "__version__", "export", "load_recipe", "load_run", "train", "validate_recipe"]
