"""Sequence families: ``rnn`` (GRU / LSTM) and ``transformer`` (a small pre-norm encoder).

Both read their input as a sequence of feature vectors: a signal (C, L) is L steps of C features, an image
(C, H, W) is H steps (rows, top to bottom) of C·W features. Tabular data has no order to read along.
Token sequences (``sequence``: (N, L) int64 ids from a text dataset) go through a token embedding first, with
the padding masked so that outputs do not depend on the padded length (:class:`TokenRNN`,
:class:`TokenTransformer`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError
from torch import nn

from ..errors import ConfigError
from ..registry import Knobs
from .core import MODELS, InputSpec
from .text import embed_masked, token_embedding, trim_padding, vocabulary

SEQUENCE_KINDS = ("signal", "image", "sequence")


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
    embed: int = Field(64, ge=2, le=4096, description="token sequences: width of the token embedding")


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
    """GRU or LSTM over a signal's steps, an image's rows or a text's tokens, with a linear readout."""
    _require_sequence("rnn", spec)
    return TokenRNN(spec, num_outputs, knobs) if spec.kind == "sequence" else RNN(spec, num_outputs, knobs)


class TokenRNN(nn.Module):
    """Token embedding → stacked GRU / LSTM layers that read only the real tokens → [last | mean] → head.

    Each direction is its own one-layer recurrent net. The forward one reads the right-padded ids as they
    are: its output at a real token depends on no later position. The backward one reads each text reversed
    within its length (pads stay after the text), so it too never sees padding before a real token. The two
    are concatenated in reading order before the next layer, as ``nn.GRU(bidirectional=True)`` does. This
    is exactly invariant to the padded length, and exports to ONNX (no packed sequences)."""

    def __init__(self, spec: InputSpec, out: int, k: RNNKnobs):
        super().__init__()
        if k.pooling == "flatten":
            raise ConfigError("model.pooling: flatten reads a fixed number of steps, but a text's length varies "
                              "(and its padding must not count); use last or mean for token sequences")
        vocab, self.pad = vocabulary("rnn", spec)
        self.embed = token_embedding(vocab, k.embed, self.pad)
        cell = nn.GRU if k.cell == "gru" else nn.LSTM
        self.dirs, self.pooling = (2 if k.bidirectional else 1), k.pooling
        sizes = [k.embed] + [self.dirs * k.hidden] * (k.layers - 1)
        self.fwd = nn.ModuleList(cell(n, k.hidden, batch_first=True) for n in sizes)
        self.bwd = nn.ModuleList(cell(n, k.hidden, batch_first=True) for n in sizes) if k.bidirectional else None
        self.drop = nn.Dropout(k.dropout) if k.dropout > 0 else nn.Identity()
        self.head = nn.Linear(self.dirs * k.hidden, out)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = trim_padding(ids, self.pad)
        h, mask = embed_masked(self.embed, ids, self.pad)
        lengths = mask.sum(1, keepdim=True)  # right padding: the real tokens are the first `length`
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        rev = torch.where(pos < lengths, lengths - 1 - pos, pos).unsqueeze(-1)  # reverse within the length
        for i, fwd in enumerate(self.fwd):
            if i:
                h = self.drop(h)
            f = fwd(h)[0]
            b = None
            if self.bwd is not None:
                b_rev = self.bwd[i](h.gather(1, rev.expand(-1, -1, h.shape[-1])))[0]
                b = b_rev.gather(1, rev.expand(-1, -1, b_rev.shape[-1]))  # back in reading order
            h = f if b is None else torch.cat([f, b], -1)
        if self.pooling == "last":  # forward: after the last real token; backward: after reading back to the first
            last = (lengths - 1).clamp_min(0).unsqueeze(-1).expand(-1, -1, f.shape[-1])
            feat = f.gather(1, last).squeeze(1)
            if b is not None:
                feat = torch.cat([feat, b[:, 0]], -1)
        else:
            m = mask.unsqueeze(-1).to(h.dtype)
            feat = (h * m).sum(1) / lengths.clamp_min(1).to(h.dtype)
        return self.head(self.drop(feat))


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
    """Small transformer encoder over a signal's steps, an image's rows (optionally in patches) or a text's tokens."""
    _require_sequence("transformer", spec)
    if spec.kind == "sequence":
        return TokenTransformer(spec, num_outputs, knobs)
    return Transformer(spec, num_outputs, knobs)


class TokenTransformer(nn.Module):
    """Token embedding + learned positions → pre-norm encoder with a key padding mask → [cls | masked mean] →
    LayerNorm → linear head. Padded positions are never attended to nor pooled."""

    def __init__(self, spec: InputSpec, out: int, k: TransformerKnobs):
        super().__init__()
        if k.patch != 1:
            raise ConfigError("model.patch: token sequences take one token per step; use patch 1")
        vocab, self.pad = vocabulary("transformer", spec)
        self.embed = token_embedding(vocab, k.d_model, self.pad, std=0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, k.d_model)) if k.pooling == "cls" else None
        self.pos = nn.Parameter(torch.randn(1, spec.shape[0] + (self.cls is not None), k.d_model) * 0.02)
        self.drop = nn.Dropout(k.dropout)
        layer = nn.TransformerEncoderLayer(k.d_model, k.heads, k.ff_mult * k.d_model, k.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, k.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(k.d_model)
        self.head = nn.Linear(k.d_model, out)

    def no_weight_decay(self) -> set[str]:
        """Learned positions and the class token: no weight decay or L1."""
        return {"pos"} | ({"cls"} if self.cls is not None else set())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = trim_padding(ids, self.pad)
        h, keep = embed_masked(self.embed, ids, self.pad)
        n, length = ids.shape
        # an empty text attends to its first (pad) position: all keys masked would give NaN
        first = torch.arange(length, device=ids.device).unsqueeze(0) == 0
        keep = keep | (first & ~keep.any(1, keepdim=True))
        if self.cls is not None:
            h = torch.cat([self.cls.expand(n, -1, -1), h], 1)
            keep = torch.cat([torch.ones_like(keep[:, :1]), keep], 1)
        h = self.encoder(self.drop(h + self.pos[:, :h.shape[1]]), src_key_padding_mask=~keep)
        if self.cls is not None:
            h = h[:, 0]
        else:
            m = keep.unsqueeze(-1).to(h.dtype)
            h = (h * m).sum(1) / m.sum(1)
        return self.head(self.norm(h))
