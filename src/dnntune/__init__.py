"""dnntune: tune and optimize the training of deep neural networks in PyTorch."""

__version__ = "0.1.0"

from ._api import tune  # noqa: E402
from .config import Recipe, load_recipe, validate_recipe  # noqa: E402
from .deploy import export, load_run  # noqa: E402
from .engine import RunResult, train  # noqa: E402
from .plugins import load_plugins, register_dataset, register_model  # noqa: E402

__all__ = ["Recipe", "RunResult", "__version__", "export", "load_plugins", "load_recipe", "load_run",
           "register_dataset", "register_model", "train", "tune", "validate_recipe"]
