"""Plain convolutional families: ``cnn1d`` for signals (C×L) and ``cnn2d`` for images (C×H×W)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..registry import Knobs
from .core import MODELS, Activation, InputSpec, activation


class ConvKnobs(Knobs):
    channels: int = Field(32, ge=1, le=4096, description="channels of the first conv layer")
    channel_mult: float = Field(1.0, ge=1.0, le=4.0, description="channel growth per layer")
    depth: int = Field(3, ge=1, le=16, description="conv layers")
    kernel: int = Field(3, ge=1, le=31, description="kernel size")
    first_kernel: int | None = Field(None, ge=1, le=31, description="kernel of the first layer (default: kernel)")
    stride: int = Field(1, ge=1, le=4, description="stride of each conv layer")
    dilation: int = Field(1, ge=1, le=8)
    pooling: Literal["none", "max", "avg"] = Field("max", description="2× pooling after each layer")
    batch_norm: bool = True
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the head")
    activation: Activation = "relu"
    head: Literal["flatten", "avg"] = Field("flatten", description="flatten features or global average pool")


class ConvNet(nn.Module):
    """Conv → [BN] → act → [pool], ``depth`` times, then a linear head; works in 1-D or 2-D."""

    def __init__(self, dim: int, shape: tuple[int, ...], out: int, k: ConvKnobs):
        super().__init__()
        conv, bn = (nn.Conv1d, nn.BatchNorm1d) if dim == 1 else (nn.Conv2d, nn.BatchNorm2d)
        pool = {"max": nn.MaxPool1d if dim == 1 else nn.MaxPool2d,
                "avg": nn.AvgPool1d if dim == 1 else nn.AvgPool2d}.get(k.pooling)
        layers: list[nn.Module] = []
        c_in, size = shape[0], list(shape[1:])
        for i in range(k.depth):
            c_out = int(round(k.channels * k.channel_mult ** i))
            ks = k.first_kernel if (i == 0 and k.first_kernel) else k.kernel
            pad = k.dilation * (ks - 1) // 2
            layers += [conv(c_in, c_out, ks, stride=k.stride, padding=pad, dilation=k.dilation,
                            bias=not k.batch_norm)]
            if k.batch_norm:
                layers.append(bn(c_out))
            layers.append(activation(k.activation))
            size = [(s + 2 * pad - k.dilation * (ks - 1) - 1) // k.stride + 1 for s in size]
            if pool is not None and min(size) >= 2:
                layers.append(pool(2))
                size = [s // 2 for s in size]
            c_in = c_out
            if min(size) < 1:
                raise ValueError(f"input of shape {shape} is too small for {i + 1} conv layers")
        self.features = nn.Sequential(*layers)
        if k.head == "avg":
            self.pool = nn.AdaptiveAvgPool1d(1) if dim == 1 else nn.AdaptiveAvgPool2d(1)
            n_feat = c_in
        else:
            self.pool = nn.Identity()
            n_feat = c_in * int(torch.tensor(size).prod())
        self.drop = nn.Dropout(k.dropout) if k.dropout > 0 else nn.Identity()
        self.head = nn.Linear(n_feat, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.pool(self.features(x)).flatten(1)))


def _build(dim: int, family: str, knobs: ConvKnobs, spec: InputSpec, num_outputs: int) -> nn.Module:
    from ..errors import ConfigError

    kind = "signal" if dim == 1 else "image"
    spec.require(family, kind, hint="use mlp or linear for tabular data" if spec.kind == "tabular"
                 else f"use {'cnn2d' if dim == 1 else 'cnn1d'} or resnet")
    try:
        return ConvNet(dim, spec.shape, num_outputs, knobs)
    except ValueError as e:
        raise ConfigError(f"model: {e}; use fewer layers, stride 1 or pooling: none") from None


@MODELS.register("cnn1d", ConvKnobs, kinds=("signal",))
def cnn1d(knobs: ConvKnobs, spec: InputSpec, num_outputs: int) -> nn.Module:
    """1-D CNN for signals (channels × length), e.g. MNIST-1D."""
    return _build(1, "cnn1d", knobs, spec, num_outputs)


@MODELS.register("cnn2d", ConvKnobs, kinds=("image",))
def cnn2d(knobs: ConvKnobs, spec: InputSpec, num_outputs: int) -> nn.Module:
    """2-D CNN for images (channels × height × width), e.g. digits as 1×8×8."""
    return _build(2, "cnn2d", knobs, spec, num_outputs)
