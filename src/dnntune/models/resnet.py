"""``resnet``: a residual CNN, 1-D for signals (C×L) and 2-D for images (C×H×W).

A stem conv, then ``stages`` stages of ``blocks_per_stage`` basic blocks (two convs and a shortcut). Each
stage after the first doubles the channels and halves the length / height and width with a stride-2 first
block; global average pooling and a linear head follow.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError
from torch import nn

from ..registry import Knobs
from .core import MODELS, Activation, InputSpec, activation


class ResNetKnobs(Knobs):
    channels: int = Field(32, ge=1, le=1024, description="channels of the stem and first stage (doubled per stage)")
    stages: int = Field(3, ge=1, le=6, description="stages; each after the first halves the resolution")
    blocks_per_stage: int = Field(2, ge=1, le=16, description="basic blocks (two convs each) per stage")
    kernel: int = Field(3, ge=1, le=15, description="kernel size of every conv (odd)")
    activation: Activation = Field("relu", description="activation after each conv and each residual sum")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the head")
    batch_norm: bool = Field(True, description="batch normalization after each conv")

    @field_validator("kernel")
    @classmethod
    def _odd(cls, kernel: int) -> int:
        if kernel % 2 == 0:
            raise PydanticCustomError("odd_kernel", "must be odd, so that a block keeps the size of its input")
        return kernel


class BasicBlock(nn.Module):
    """conv → [BN] → act → conv → [BN], plus the input (through a 1×1 projection when the shape changes), → act."""

    def __init__(self, dim: int, c_in: int, c_out: int, stride: int, k: ResNetKnobs):
        super().__init__()
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        norm = (nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d) if k.batch_norm else None
        pad = k.kernel // 2
        self.conv1 = conv(c_in, c_out, k.kernel, stride=stride, padding=pad, bias=norm is None)
        self.bn1 = norm(c_out) if norm else nn.Identity()
        self.act1 = activation(k.activation)
        self.conv2 = conv(c_out, c_out, k.kernel, padding=pad, bias=norm is None)
        self.bn2 = norm(c_out) if norm else nn.Identity()
        if norm:
            # each block starts as the identity, which keeps deep stacks easy to train (Goyal et al., 2017)
            nn.init.zeros_(self.bn2.weight)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            proj = [conv(c_in, c_out, 1, stride=stride, bias=norm is None)]
            self.shortcut = nn.Sequential(*proj, norm(c_out)) if norm else proj[0]
        self.act2 = activation(k.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(h + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, dim: int, shape: tuple[int, ...], out: int, k: ResNetKnobs):
        super().__init__()
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        stem: list[nn.Module] = [conv(shape[0], k.channels, k.kernel, padding=k.kernel // 2, bias=not k.batch_norm)]
        if k.batch_norm:
            stem.append(nn.BatchNorm1d(k.channels) if dim == 1 else nn.BatchNorm2d(k.channels))
        stem.append(activation(k.activation))
        blocks: list[nn.Module] = []
        c_in = k.channels
        for stage in range(k.stages):
            c_out = k.channels * 2 ** stage
            for b in range(k.blocks_per_stage):
                # a stride-2 conv on a size-1 axis keeps size 1, so small inputs take any number of stages
                stride = 2 if (stage > 0 and b == 0) else 1
                blocks.append(BasicBlock(dim, c_in, c_out, stride, k))
                c_in = c_out
        self.features = nn.Sequential(*stem, *blocks)
        self.pool = nn.AdaptiveAvgPool1d(1) if dim == 1 else nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(k.dropout) if k.dropout > 0 else nn.Identity()
        self.head = nn.Linear(c_in, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.pool(self.features(x)).flatten(1)))


@MODELS.register("resnet", ResNetKnobs, kinds=("signal", "image"))
def resnet(knobs: ResNetKnobs, spec: InputSpec, num_outputs: int) -> nn.Module:
    """Residual CNN (basic blocks, channels doubling per stage), 1-D for signals or 2-D for images."""
    spec.require("resnet", "signal", "image", hint="use mlp or linear for tabular data")
    return ResNet(1 if spec.kind == "signal" else 2, spec.shape, num_outputs, knobs)
