"""Model-family registry: linear, mlp, cnn1d, cnn2d, resnet, rnn, transformer."""

from . import conv as _conv  # noqa: F401  (registers families)
from . import dense as _dense  # noqa: F401
from . import resnet as _resnet  # noqa: F401
from . import sequence as _sequence  # noqa: F401
from .core import ACTIVATIONS, MODELS, InputSpec, ModelParts, build_model, count_params, model_parts

# each built-in family's backbone and head (top-level attribute names), for transfer learning
_PARTS = {"linear": ((), ("fc",)), "mlp": (("blocks",), ("head",)), "cnn1d": (("features",), ("head",)),
          "cnn2d": (("features",), ("head",)), "resnet": (("features",), ("head",)), "rnn": (("rnn",), ("head",)),
          "transformer": (("embed", "pos", "cls", "encoder", "norm"), ("head",))}
for _name, (_backbone, _head) in _PARTS.items():
    if _name in MODELS:
        MODELS.get(_name).meta.setdefault("backbone", _backbone)
        MODELS.get(_name).meta.setdefault("head", _head)

__all__ = ["ACTIVATIONS", "MODELS", "InputSpec", "ModelParts", "build_model", "count_params", "model_parts"]
