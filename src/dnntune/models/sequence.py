"""Sequence families: ``rnn`` (GRU / LSTM) and ``transformer`` (a small pre-norm encoder).

Both read their input as a sequence of feature vectors: a signal (C, L) is L steps of C features, an image
(C, H, W) is H steps (rows, top to bottom) of C·W features. Tabular data has no order to read along.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError
from torch import nn

from ..registry import Knobs
from .core import MODELS, InputSpec

SEQUENCE_KINDS = ("signal", "image")


def sequence_shape(spec: InputSpec) -> tuple[int, int]:
    """(steps, features per step) of a signal or image input."""
    if spec.kind == "signal":
        channels, length = spec.shape
        return length, channels
    channels, height, width = spec.shape
    return height, channels * width


def as_sequence(x: torch.Tensor) -> torch.Tensor:
    """(N, C, L) → (N, L, C); (N, C, H, W) → (N, H, C·W), one row per step."""
    if x.ndim == 3:
        return x.transpose(1, 2)
    n, c, h, w = x.shape
    return x.permute(0, 2, 1, 3).reshape(n, h, c * w)


def _require_sequence(family: str, spec: InputSpec) -> None:
    spec.require(family, *SEQUENCE_KINDS, hint="tabular features have no order to read along; use mlp or linear")


# --- rnn ------------------------------------------------------------------------------------------


class RNNKnobs(Knobs):
    cell: Literal["gru", "lstm"] = Field("gru", description="recurrent cell")
    hidden: int = Field(64, ge=1, le=4096, description="hidden units per direction")
    layers: int = Field(1, ge=1, le=8, description="stacked recurrent layers")
    bidirectional: bool = Field(True, description="also read the sequence backwards (doubles the features)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout between stacked layers and before the head")
    pooling: Literal["last", "mean", "flatten"] = Field(
        "last", description="readout: final hidden state(s), mean over steps, or all steps flattened")


class RNN(nn.Module):
    """A GRU / LSTM over the steps, then a linear readout of the pooled outputs."""

    def __init__(self, spec: InputSpec, out: int, k: RNNKnobs):
        super().__init__()
        steps, features = sequence_shape(spec)
        cell = nn.GRU if k.cell == "gru" else nn.LSTM
        self.rnn = cell(features, k.hidden, num_layers=k.layers, batch_first=True, bidirectional=k.bidirectional,
                        dropout=k.dropout if k.layers > 1 else 0.0)
        self.pooling = k.pooling
        self.dirs = 2 if k.bidirectional else 1
        width = self.dirs * k.hidden
        self.drop = nn.Dropout(k.dropout) if k.dropout > 0 else nn.Identity()
        self.head = nn.Linear(width * steps if k.pooling == "flatten" else width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, state = self.rnn(as_sequence(x))  # hidden state starts at zero
        if self.pooling == "last":
            h_n = state[0] if isinstance(state, tuple) else state  # LSTM: (h_n, c_n)
            # the top layer's final state of each direction (the backward one has read back to step 0)
            feat = h_n[-self.dirs:].transpose(0, 1).flatten(1)
        elif self.pooling == "mean":
            feat = seq.mean(1)
        else:
            feat = seq.flatten(1)
        return self.head(self.drop(feat))


@MODELS.register("rnn", RNNKnobs, kinds=SEQUENCE_KINDS)
def rnn(knobs: RNNKnobs, spec: InputSpec, num_outputs: int) -> nn.Module:
    """GRU or LSTM over a signal's steps or an image's rows, with a linear readout."""
    _require_sequence("rnn", spec)
    return RNN(spec, num_outputs, knobs)


# --- transformer --------------------------------------------------------------------------------


class TransformerKnobs(Knobs):
    d_model: int = Field(64, ge=8, le=2048, description="token width")
    heads: int = Field(4, ge=1, le=64, description="attention heads (must divide d_model)")
    layers: int = Field(2, ge=1, le=24, description="encoder layers")
    ff_mult: int = Field(2, ge=1, le=8, description="feed-forward width as a multiple of d_model")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout in attention, feed-forward and embedding")
    patch: int = Field(1, ge=1, le=256, description="consecutive steps grouped into one token (1 = a token per step)")
    pooling: Literal["cls", "mean"] = Field("mean", description="readout: a learned class token, or mean of tokens")

    @field_validator("heads")
    @classmethod
    def _heads_divide_d_model(cls, heads: int, info) -> int:
        d_model = info.data.get("d_model")
        if d_model is not None and d_model % heads:
            fits = [h for h in range(1, min(d_model, 16) + 1) if d_model % h == 0]
            raise PydanticCustomError(
                "heads_divide_d_model",
                "must divide model.d_model ({d_model}); for this d_model use one of {fits}",
                {"d_model": d_model, "fits": ", ".join(map(str, fits))})
        return heads


class Transformer(nn.Module):
    """Patch embedding + learned positions → pre-norm encoder → [cls | mean] → LayerNorm → linear head."""

    def __init__(self, spec: InputSpec, out: int, k: TransformerKnobs):
        super().__init__()
        steps, features = sequence_shape(spec)
        self.patch = k.patch
        self.pad = -steps % k.patch  # the last token is zero-padded when patch does not divide the steps
        tokens = math.ceil(steps / k.patch)
        self.embed = nn.Linear(features * k.patch, k.d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, k.d_model)) if k.pooling == "cls" else None
        self.pos = nn.Parameter(torch.randn(1, tokens + (self.cls is not None), k.d_model) * 0.02)
        self.drop = nn.Dropout(k.dropout)
        layer = nn.TransformerEncoderLayer(k.d_model, k.heads, k.ff_mult * k.d_model, k.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # nested tensors only speed up padded batches, and are unavailable with norm_first anyway
        self.encoder = nn.TransformerEncoder(layer, k.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(k.d_model)  # pre-norm layers leave the residual stream unnormalized
        self.head = nn.Linear(k.d_model, out)

    def no_weight_decay(self) -> set[str]:
        """Learned positions and the class token: no weight decay or L1 (they are embeddings, not weights)."""
        return {"pos"} | ({"cls"} if self.cls is not None else set())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = as_sequence(x)
        if self.pad:
            seq = F.pad(seq, (0, 0, 0, self.pad))
        n, steps, features = seq.shape
        h = self.embed(seq.reshape(n, steps // self.patch, self.patch * features))
        if self.cls is not None:
            h = torch.cat([self.cls.expand(n, -1, -1), h], 1)
        h = self.encoder(self.drop(h + self.pos))
        h = h[:, 0] if self.cls is not None else h.mean(1)
        return self.head(self.norm(h))


@MODELS.register("transformer", TransformerKnobs, kinds=SEQUENCE_KINDS)
def transformer(knobs: TransformerKnobs, spec: InputSpec, num_outputs: int) -> nn.Module:
    """Small transformer encoder over a signal's steps or an image's rows (optionally grouped into patches)."""
    _require_sequence("transformer", spec)
    return Transformer(spec, num_outputs, knobs)
