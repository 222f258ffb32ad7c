"""Families for token sequences (``sequence`` data: (N, L) int64 ids, right-padded with the pad id):
``embedding_bag`` (fastText-style) and ``textcnn``; ``rnn`` and ``transformer`` take token sequences too
(:mod:`dnntune.models.sequence`, through :func:`token_embedding`).

Every family masks the padding: the same text padded to two lengths gives the same outputs (up to float
rounding), so a prediction never depends on ``data.max_length`` beyond truncation. The vocabulary size and
pad id come from the tokenizer the run trained (``InputSpec.info``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from ..errors import ConfigError
from ..registry import Knobs
from .core import MODELS, InputSpec

TEXT_HINT = "these families read token ids; use a text dataset (text_csv, text_folder)"


def vocabulary(family: str, spec: InputSpec) -> tuple[int, int]:
    """(vocabulary size, pad id) of a token-sequence input; a ConfigError if the input is not one."""
    spec.require(family, "sequence", hint=TEXT_HINT)
    if "vocab_size" not in spec.info:
        raise ConfigError(f"model.family: {family} needs the vocabulary size of {spec.name}'s tokenizer "
                          "(InputSpec.info['vocab_size']); token sequences come from a text dataset's tokenizer")
    return int(spec.info["vocab_size"]), int(spec.info.get("pad_id", 0))


def token_embedding(vocab: int, dim: int, pad: int, std: float = 0.1) -> nn.Embedding:
    """A token embedding whose pad row is zero (and gets no gradient)."""
    emb = nn.Embedding(vocab, dim, padding_idx=pad)
    nn.init.normal_(emb.weight, std=std)
    with torch.no_grad():
        emb.weight[pad].zero_()
    return emb


def trim_padding(ids: torch.Tensor, pad: int) -> torch.Tensor:
    """The ids without the trailing columns that are padding in every row of the batch.

    Every family here is invariant to the padded length, so this changes no output, only the work: most texts
    are much shorter than ``max_length``. Skipped while tracing for export (the exported graph keeps the full,
    fixed length; its outputs are the same)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or ids.shape[1] <= 1:
        return ids
    real = (ids != pad).any(0)
    last = int(real.nonzero().max()) + 1 if bool(real.any()) else 1
    return ids[:, :last] if last < ids.shape[1] else ids


def embed_masked(emb: nn.Embedding, ids: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (N, L, D) with pad positions exactly zero, the mask of real tokens (N, L))."""
    mask = ids != pad
    return emb(ids) * mask.unsqueeze(-1).to(emb.weight.dtype), mask


# --- embedding_bag ----------------------------------------------------------------------------------


class EmbeddingBagKnobs(Knobs):
    dim: int = Field(64, ge=2, le=4096, description="width of the token and bigram embeddings")
    buckets: int = Field(16384, ge=0, le=4_000_000, description="hashed bigram buckets (fastText's word n-grams); "
                         "0 = tokens only")
    hidden: int = Field(0, ge=0, le=4096, description="a hidden layer before the head (0: linear head, as fastText)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the averaged embedding")


BIGRAM_PRIME = 1_000_003  # hash(a, b) = (a·P + b) mod buckets


class EmbeddingBag(nn.Module):
    """fastText: the mean of token embeddings and hashed-bigram embeddings over the real tokens, then linear."""

    def __init__(self, spec: InputSpec, out: int, k: EmbeddingBagKnobs):
        super().__init__()
        vocab, self.pad = vocabulary("embedding_bag", spec)
        self.buckets = k.buckets
        self.embed = token_embedding(vocab, k.dim, self.pad)
        self.bigram = nn.Embedding(k.buckets, k.dim) if k.buckets else None  # pad pairs are masked, not looked up
        if self.bigram is not None:
            nn.init.normal_(self.bigram.weight, std=0.1)
        self.drop = nn.Dropout(k.dropout) if k.dropout > 0 else nn.Identity()
        self.head = (nn.Linear(k.dim, out) if not k.hidden else
                     nn.Sequential(nn.Linear(k.dim, k.hidden), nn.ReLU(), nn.Linear(k.hidden, out)))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = trim_padding(ids, self.pad)
        e, mask = embed_masked(self.embed, ids, self.pad)
        total, count = e.sum(1), mask.sum(1)
        if self.bigram is not None:
            pair = mask[:, :-1] & mask[:, 1:]
            h = (ids[:, :-1] * BIGRAM_PRIME + ids[:, 1:]) % self.buckets
            total = total + (self.bigram(h) * pair.unsqueeze(-1).to(e.dtype)).sum(1)
            count = count + pair.sum(1)
        feat = total / count.clamp_min(1).unsqueeze(-1).to(e.dtype)
        return self.head(self.drop(feat))


@MODELS.register("embedding_bag", EmbeddingBagKnobs, kinds=("sequence",))
def embedding_bag(knobs: EmbeddingBagKnobs, spec: InputSpec, num_outputs: int) -> nn.Module:
    """fastText-style bag of tokens and hashed bigrams: averaged embeddings and a linear head."""
    return EmbeddingBag(spec, num_outputs, knobs)


# --- textcnn --------------------------------------------------------------------------------------


class TextCNNKnobs(Knobs):
    embed: int = Field(64, ge=2, le=4096, description="width of the token embedding")
    channels: int = Field(64, ge=1, le=4096, description="filters per window width")
    widths: tuple[int, ...] = Field((3, 4, 5), min_length=1, max_length=8, description="window widths in tokens "
                                    "(one 1-D convolution each, in parallel)")
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="dropout before the head")

    @field_validator("widths")
    @classmethod
    def _positive(cls, widths: tuple[int, ...]) -> tuple[int, ...]:
        if any(w < 1 or w > 64 for w in widths):
            raise ValueError("every window width must be between 1 and 64")
        return widths


class TextCNN(nn.Module):
    """Kim (2014): token embedding → parallel 1-D convolutions of several widths → ReLU → max over the windows
    that start at a real token → dropout → linear head."""

    def __init__(self, spec: InputSpec, out: int, k: TextCNNKnobs):
        super().__init__()
        vocab, self.pad = vocabulary("textcnn", spec)
        self.embed = token_embedding(vocab, k.embed, self.pad)
        self.widths = tuple(k.widths)
        self.convs = nn.ModuleList(nn.Conv1d(k.embed, k.channels, w) for w in self.widths)
        self.drop = nn.Dropout(k.dropout) if k.dropout > 0 else nn.Identity()
        self.head = nn.Linear(k.channels * len(self.widths), out)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = trim_padding(ids, self.pad)
        e, mask = embed_masked(self.embed, ids, self.pad)
        e = e.transpose(1, 2)  # (N, D, L)
        start = mask.unsqueeze(1)  # a window counts when it starts at a real token
        some = mask.any(1, keepdim=True)  # empty texts: all-zero features
        feats = []
        for conv, w in zip(self.convs, self.widths):
            # zeros after the end: a window running past the last token sees the same zeros at any padding
            h = F.relu(conv(F.pad(e, (0, w - 1))))
            h = h.masked_fill(~start, float("-inf")).amax(2)
            feats.append(torch.where(some, h, torch.zeros((), dtype=h.dtype)))
        return self.head(self.drop(torch.cat(feats, 1)))


@MODELS.register("textcnn", TextCNNKnobs, kinds=("sequence",))
def textcnn(knobs: TextCNNKnobs, spec: InputSpec, num_outputs: int) -> nn.Module:
    """1-D text CNN (Kim 2014): parallel convolutions of several widths, max-pooled over the text."""
    return TextCNN(spec, num_outputs, knobs)
