"""Dataset registry, file loaders, splits, the in-memory TensorLoader and batch augmentation."""

from . import builtin as _builtin  # noqa: F401  (registers the bundled datasets)
from . import files as _files  # noqa: F401  (registers csv, npz)
from . import image_files as _image_files  # noqa: F401  (registers idx, image_folder)
from . import text as _text  # noqa: F401  (registers text_csv, text_folder and the text tokenizer)
from . import user as _user  # noqa: F401  (registers python: the data given to dnntune.train(..., data=))
from .core import DATASETS, Data, RawData, Split, load_data, prepare
from .loader import TensorLoader

__all__ = ["DATASETS", "Data", "RawData", "Split", "TensorLoader", "load_data", "prepare"]
