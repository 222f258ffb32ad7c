"""Model-family registry: linear, mlp, cnn1d, cnn2d, resnet, rnn, transformer; embedding_bag, textcnn (text)."""

from . import conv as _conv  # noqa: F401  (registers families)
from . import dense as _dense  # noqa: F401
from . import resnet as _resnet  # noqa: F401
from . import sequence as _sequence  # noqa: F401
from . import text as _text  # noqa: F401
from .core import ACTIVATIONS, MODELS, InputSpec, ModelParts, build_model, count_params, model_parts

# each built-in family's head (top-level attribute names); its backbone is every other top-level part (the
# default rule of model_parts), so the variants a family builds per input (the token front of rnn/transformer,
# the category embeddings of mlp/linear) are covered too
_HEADS = {"linear": ("fc",), "mlp": ("head",), "cnn1d": ("head",), "cnn2d": ("head",), "resnet": ("head",),
          "rnn": ("head",), "transformer": ("head",), "embedding_bag": ("head",), "textcnn": ("head",)}
for _name, _head in _HEADS.items():
    if _name in MODELS:
        MODELS.get(_name).meta.setdefault("head", _head)

__all__ = ["ACTIVATIONS", "MODELS", "InputSpec", "ModelParts", "build_model", "count_params", "model_parts"]
