"""Loss registry. Targets are class indices (N,) or class probabilities (N, C) (mixup, distillation); multi-label:
0/1 label vectors (N, K) (mixed vectors under mixup)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field

from ..errors import ConfigError
from ..registry import Knobs, NoKnobs, Registry

LOSSES: Registry = Registry("loss")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def soft_targets(y: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Class indices → (smoothed) one-hot probabilities; probabilities pass through (smoothed)."""
    p = F.one_hot(y, num_classes).to(torch.float32) if y.ndim == 1 else y.float()
    if smoothing > 0:
        p = p * (1 - smoothing) + smoothing / num_classes
    return p


class SmoothingKnobs(Knobs):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="mix targets with the uniform distribution")


@LOSSES.register("cross_entropy", SmoothingKnobs, tasks=("classification",))
def cross_entropy(knobs: SmoothingKnobs, num_outputs: int, task: str) -> LossFn:
    """Softmax cross-entropy, optional label smoothing; accepts hard or soft targets."""
    s = knobs.label_smoothing

    def loss(logits, y):
        return F.cross_entropy(logits.float(), y, label_smoothing=s)

    return loss


class BCEKnobs(SmoothingKnobs):
    pos_weight: float | list[float] | None = Field(
        None, description="multi-label: weight of the positive samples, one number or one per label (> 1 favours "
        "recall of rare labels); None: 1")


@LOSSES.register("bce", BCEKnobs, tasks=("classification", "multilabel"))
def bce(knobs: BCEKnobs, num_outputs: int, task: str) -> LossFn:
    """Binary cross-entropy per output (sigmoid outputs): against one-hot targets (classification, one-vs-rest)
    or the 0/1 label vectors of a multi-label dataset (mixup: mixed vectors)."""
    s = knobs.label_smoothing
    if task == "multilabel" and s > 0:
        raise ConfigError("loss.label_smoothing: is for single-label classification; a multi-label dataset has "
                          "independent 0/1 labels: set it to 0")
    weight = _pos_weight(knobs.pos_weight, num_outputs)

    def loss(logits, y):
        target = y.float() if task == "multilabel" else soft_targets(y, num_outputs, s)
        pw = None if weight is None else weight.to(logits.device)
        return F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=pw)

    return loss


def _pos_weight(value, num_outputs: int) -> torch.Tensor | None:
    """``loss.pos_weight`` as a (num_outputs,) tensor, or None."""
    if value is None:
        return None
    w = [float(value)] * num_outputs if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(w) != num_outputs or min(w) <= 0:
        raise ConfigError(f"loss.pos_weight: one positive number or {num_outputs} (one per output), got {value!r}")
    return torch.tensor(w)


class KLKnobs(Knobs):
    temperature: float = Field(1.0, gt=0.0, description="softens both the target and the predicted "
                               "distribution, loss scaled by T² (distillation)")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="mix the (softened) targets with the "
                                   "uniform distribution")


def soften(p: torch.Tensor, t: float) -> torch.Tensor:
    """Probabilities at temperature ``t``: ``p^(1/t)`` renormalized, i.e. ``softmax(log p / t)``, which is
    ``softmax(z / t)`` for ``p = softmax(z)``. A one-hot stays one-hot."""
    if t == 1.0:
        return p
    return torch.softmax(p.clamp_min(0).log() / t, dim=1)


@LOSSES.register("kl_div", KLKnobs, tasks=("classification",))
def kl_div(knobs: KLKnobs, num_outputs: int, task: str) -> LossFn:
    """KL(soften(target, T) ‖ softmax(logits / T)) · T²: Hinton distillation from teacher probabilities."""
    t, s = knobs.temperature, knobs.label_smoothing

    # Targets are probabilities (a teacher's softmax(z), mixup) or class indices (one-hot). Both
    # distributions are softened by T: the targets as softmax(log p / T) = softmax(z / T), the student
    # as log_softmax(logits / T); T² keeps the gradient scale independent of T. A one-hot target stays
    # one-hot at any T, so hard labels give T² · cross-entropy of logits / T. Label smoothing is
    # applied after softening, so hard labels with smoothing get the usual smoothed one-hot.
    def loss(logits, y):
        p = soft_targets(y, num_outputs)
        target = soft_targets(soften(p, t), num_outputs, s)
        logp = F.log_softmax(logits.float() / t, dim=1)
        return F.kl_div(logp, target, reduction="batchmean") * (t * t)

    return loss


def _pair(out: torch.Tensor, y: torch.Tensor, num_outputs: int, task: str):
    """Regression: outputs and targets of the same shape. Classification: softmax vs one-hot/soft targets."""
    if task == "classification":
        return torch.softmax(out.float(), dim=1), soft_targets(y, num_outputs)
    out = out.float()
    return (out.squeeze(-1), y) if y.ndim == out.ndim - 1 else (out, y)


@LOSSES.register("mse", NoKnobs, tasks=("classification", "regression"))
def mse(knobs: NoKnobs, num_outputs: int, task: str) -> LossFn:
    """Mean squared error (regression; for classification: between softmax and one-hot targets)."""

    def loss(out, y):
        a, b = _pair(out, y, num_outputs, task)
        return F.mse_loss(a, b)

    return loss


@LOSSES.register("mae", NoKnobs, tasks=("regression",))
def mae(knobs: NoKnobs, num_outputs: int, task: str) -> LossFn:
    """Mean absolute error (L1), robust to outliers."""

    def loss(out, y):
        a, b = _pair(out, y, num_outputs, task)
        return F.l1_loss(a, b)

    return loss


class HuberKnobs(Knobs):
    delta: float = Field(1.0, gt=0.0)


@LOSSES.register("huber", HuberKnobs, tasks=("regression",))
def huber(knobs: HuberKnobs, num_outputs: int, task: str) -> LossFn:
    """Huber loss: quadratic near zero, linear beyond ``delta``."""

    def loss(out, y):
        a, b = _pair(out, y, num_outputs, task)
        return F.huber_loss(a, b, delta=knobs.delta)

    return loss


@LOSSES.register("auto", NoKnobs, tasks=("classification", "regression", "multilabel"))
def auto(knobs: NoKnobs, num_outputs: int, task: str) -> LossFn:
    """cross_entropy for classification, mse for regression, bce for multi-label (chosen by build_loss)."""
    raise AssertionError("resolved by build_loss")


def build_loss(section, task: str, num_outputs: int) -> LossFn:
    """The loss named in a validated ``loss:`` section, checked against the task."""
    name = section.name
    if name == "auto":
        name = {"classification": "cross_entropy", "multilabel": "bce"}.get(task, "mse")
        entry = LOSSES.get(name)
        return entry.builder(entry.knobs(), num_outputs, task)
    entry = LOSSES.get(name, "loss.name")
    if task not in entry.meta["tasks"]:
        ok = [e.name for e in LOSSES if task in e.meta["tasks"]]
        raise ConfigError(f"loss.name: {name} needs a {' or '.join(entry.meta['tasks'])} dataset, this one is "
                          f"{task}; allowed: {', '.join(ok)}")
    return entry.builder(section.knobs, num_outputs, task)
