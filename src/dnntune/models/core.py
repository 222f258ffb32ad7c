"""The model-family registry and the pieces families share (activations, input adaptation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

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
    """Build the model family named in a validated ``model:`` section for this input and output size."""
    entry = MODELS.get(section.family, "model.family")
    return entry.builder(section.knobs, spec, num_outputs)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
