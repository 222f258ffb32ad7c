"""Dataset registry, file loaders, splits, the in-memory TensorLoader and batch augmentation."""

from . import builtin as _builtin  # noqa: F401  (registers the bundled datasets)
from .core import DATASETS, Data, RawData, Split, load_data, prepare
from .loader import TensorLoader

try:  # file formats a user brings
    from . import files as _files  # noqa: F401
except ImportError:  # pragma: no cover - files.py is optional while it is being written
    pass

__all__ = ["DATASETS", "Data", "RawData", "Split", "TensorLoader", "load_data", "prepare"]
