"""Model-family registry: linear, mlp, cnn1d, cnn2d, resnet, rnn, transformer; embedding_bag, textcnn (text)."""

from . import conv as _conv  # noqa: F401  (registers families)
from . import dense as _dense  # noqa: F401
from . import resnet as _resnet  # noqa: F401
from . import sequence as _sequence  # noqa: F401
from . import text as _text  # noqa: F401
from .core import ACTIVATIONS, MODELS, InputSpec, build_model, count_params

__all__ = ["ACTIVATIONS", "MODELS", "InputSpec", "build_model", "count_params"]
