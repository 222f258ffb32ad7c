"""Loss registry. Targets are class indices (N,) or class probabilities (N, C) (mixup, distillation)."""

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


@LOSSES.register("bce", SmoothingKnobs, tasks=("classification",))
def bce(knobs: SmoothingKnobs, num_outputs: int, task: str) -> LossFn:
    """Binary cross-entropy per class (one-vs-rest sigmoid outputs) against one-hot targets."""
    s = knobs.label_smoothing

    def loss(logits, y):
        return F.binary_cross_entropy_with_logits(logits.float(), soft_targets(y, num_outputs, s))

    return loss


class KLKnobs(Knobs):
    temperature: float = Field(1.0, gt=0.0, description="softens both distributions (distillation)")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


@LOSSES.register("kl_div", KLKnobs, tasks=("classification",))
def kl_div(knobs: KLKnobs, num_outputs: int, task: str) -> LossFn:
    """KL(target ‖ softmax(logits / T)) · T², for soft targets (distillation); hard labels become one-hot."""
    t, s = knobs.temperature, knobs.label_smoothing

    def loss(logits, y):
        target = soft_targets(y, num_outputs, s)
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


@LOSSES.register("auto", NoKnobs, tasks=("classification", "regression"))
def auto(knobs: NoKnobs, num_outputs: int, task: str) -> LossFn:
    """cross_entropy for classification, mse for regression (chosen by build_loss)."""
    raise AssertionError("resolved by build_loss")


def build_loss(section, task: str, num_outputs: int) -> LossFn:
    """The loss named in a validated ``loss:`` section, checked against the task."""
    name = section.name
    if name == "auto":
        name = "cross_entropy" if task == "classification" else "mse"
        entry = LOSSES.get(name)
        return entry.builder(entry.knobs(), num_outputs, task)
    entry = LOSSES.get(name, "loss.name")
    if task not in entry.meta["tasks"]:
        ok = [e.name for e in LOSSES if task in e.meta["tasks"]]
        raise ConfigError(f"loss.name: {name} needs a {' or '.join(entry.meta['tasks'])} dataset, this one is "
                          f"{task}; allowed: {', '.join(ok)}")
    return entry.builder(section.knobs, num_outputs, task)
