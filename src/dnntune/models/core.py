"""The model-family registry and the pieces families share (activations, input adaptation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

MODELS: Registry = Registry("model family")

Activation = Literal["relu", "gelu", "silu", "tanh", "sigmoid"]
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


@dataclass(frozen=True)
class InputSpec:
    """What a model family needs to know about its input: kind and per-sample shape, and ``info``: what a
    featurizer learned that the model must match (``Data.input_info``: categorical columns and their levels,
    vocabulary size and padding id; empty for plain numeric data)."""

    kind: Literal["tabular", "signal", "image", "sequence"]
    shape: tuple[int, ...]
    name: str = "data"
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def flat_size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def require(self, family: str, *kinds: str, hint: str = "") -> None:
        """Raise a clear ConfigError if this family cannot take this kind of input."""
        if self.kind not in kinds:
            shape = "×".join(map(str, self.shape))
            raise ConfigError(
                f"model.family: {family} needs {' or '.join(kinds)} input, but {self.name} is {self.kind} "
                f"data of shape {shape}{'; ' + hint if hint else ''}"
            )


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def build_model(section, spec: InputSpec, num_outputs: int) -> nn.Module:
    """Build the model family named in a validated ``model:`` section for this input and output size.

    The family's ``kinds`` (registry meta) are checked first: a family never sees a kind it did not declare."""
    entry = check_kind(section.family, spec)
    return entry.builder(section.knobs, spec, num_outputs)


def check_kind(family: str, spec: InputSpec):
    """The family's registry entry, if it accepts the spec's data kind (its ``kinds`` meta); a ConfigError
    naming the family, the kind and the allowed kinds (and the families that take this kind) otherwise."""
    entry = MODELS.get(family, "model.family")
    kinds = entry.meta.get("kinds")
    if kinds and spec.kind not in kinds:
        fits = [e.name for e in MODELS if spec.kind in (e.meta.get("kinds") or ())]
        spec.require(family, *kinds, hint=f"families for {spec.kind} data: {', '.join(fits) or 'none'}; "
                     "if the kind was inferred wrongly, set data.kind")
    return entry


def _dry_input(spec: InputSpec) -> torch.Tensor:
    """A batch of 2 zero samples of the spec's shape (token ids are long, pad id 0)."""
    dtype = torch.long if spec.kind == "sequence" else torch.float32
    return torch.zeros((2, *spec.shape), dtype=dtype)


def checked_builder(fn: Callable, module: str, family: str) -> Callable:
    """A plugin family's builder, checked once per build: it must return an ``nn.Module`` whose output on a
    batch of 2 zero samples has shape (2, num_outputs). Anything else is a ConfigError naming the plugin."""
    from ..errors import UserError

    who = f"plugin {module}, model family {family!r}"

    def build(knobs, spec: InputSpec, num_outputs: int) -> nn.Module:
        try:
            model = fn(knobs, spec, num_outputs)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's code: name it, no traceback
            from ..plugins import _where

            raise ConfigError(f"{who}: the builder raised {_where(e)}") from None
        if not isinstance(model, nn.Module):
            raise ConfigError(f"{who}: the builder returned {type(model).__name__}, not a torch.nn.Module")
        x = _dry_input(spec)
        was_training = model.training
        model.eval()  # no batch-norm statistics change, no dropout
        try:
            with torch.no_grad():
                out = model(x)
        except Exception as e:  # noqa: BLE001
            from ..plugins import _where

            raise ConfigError(f"{who}: a forward pass on a batch of 2 zero inputs of shape {tuple(x.shape)} "
                              f"failed: {_where(e)}") from None
        finally:
            model.train(was_training)
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if got != (2, num_outputs):
            raise ConfigError(f"{who}: on a batch of 2 inputs of shape {tuple(x.shape)} the model's output has "
                              f"shape {got}; expected (2, {num_outputs}) (one output per "
                              f"{'class' if num_outputs > 1 else 'target'})")
        return model

    return build


@dataclass(frozen=True)
class ModelParts:
    """A built model split into ``backbone`` (feature extractor) and ``head`` (the output layer(s)): names of
    top-level submodules or parameters, for transfer learning (freeze, re-initialize, discriminative lr)."""

    backbone: tuple[str, ...]
    head: tuple[str, ...]

    def parameters(self, model: nn.Module, part: str) -> list[nn.Parameter]:
        """The parameters of ``part`` (backbone or head) of ``model``."""
        out = []
        for name in getattr(self, part):
            obj = getattr(model, name)
            out += [obj] if isinstance(obj, nn.Parameter) else list(obj.parameters())
        return out


def _top_level(model: nn.Module) -> list[str]:
    """Top-level names holding parameters: child modules and direct parameters, in definition order."""
    names = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
    return names + [n for n, _ in model.named_parameters(recurse=False)]


def model_parts(model: nn.Module, family: str) -> ModelParts:
    """The family's declared backbone / head (registry meta), or the default rule: the head is the last
    child module holding parameters, the backbone every other top-level module or parameter."""
    entry = MODELS.get(family, "model.family")
    names = _top_level(model)
    head = entry.meta.get("head")
    if head is None:
        children = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
        head = tuple(children[-1:])
    backbone = entry.meta.get("backbone")
    if backbone is None:
        backbone = tuple(n for n in names if n not in head)
    missing = [n for n in (*backbone, *head) if not hasattr(model, n)]
    if missing:
        raise ConfigError(f"model family {family!r}: declared backbone/head part(s) {', '.join(missing)} are "
                          f"not attributes of the built model; its top-level parts: {', '.join(names)}")
    present = lambda ns: tuple(n for n in ns if getattr(model, n) is not None)  # noqa: E731 (optional parts)
    return ModelParts(present(backbone), present(head))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
