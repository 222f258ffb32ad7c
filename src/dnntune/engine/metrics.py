"""Evaluation metrics (scikit-learn definitions, computed in torch) and which direction is better."""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError

CLASSIFICATION = {"accuracy": "maximize", "balanced_accuracy": "maximize", "precision_macro": "maximize",
                  "recall_macro": "maximize", "f1_macro": "maximize", "log_loss": "minimize", "loss": "minimize"}
REGRESSION = {"mse": "minimize", "rmse": "minimize", "mae": "minimize", "r2": "maximize", "loss": "minimize"}


def default_metric(task: str) -> str:
    return "accuracy" if task == "classification" else "mse"


def direction(metric: str, task: str) -> str:
    """``maximize`` or ``minimize`` for a metric name; a ConfigError lists the valid names."""
    table = CLASSIFICATION if task == "classification" else REGRESSION
    if metric not in table:
        raise ConfigError(f"train.metric: unknown {task} metric {metric!r}; allowed: {', '.join(table)}")
    return table[metric]


def is_better(a: float, b: float | None, dirn: str, min_delta: float = 0.0) -> bool:
    if b is None:
        return True
    return a > b + min_delta if dirn == "maximize" else a < b - min_delta


def tie_loss(metrics: dict) -> float:
    """What breaks ties of the selection metric (a small validation split saturates at 100%): the
    log-loss for classification, else the loss; lower is better."""
    return metrics.get("log_loss", metrics.get("loss", math.inf))


def confusion_matrix(y: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows: true class, columns: predicted class (as scikit-learn)."""
    return torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes).view(num_classes, -1)


def compute_metrics(task: str, outputs: torch.Tensor, targets: torch.Tensor, num_outputs: int,
                    confusion: bool = False) -> dict:
    """All metrics of a task from model outputs (logits) and targets (indices or values).

    Computed in torch from the confusion matrix (cheap enough for every epoch), with scikit-learn's
    definitions: macro averages over all classes with 0 for an empty denominator; balanced accuracy
    is the mean recall over the classes present in the targets. Regression: ``mse``/``rmse``/``mae``
    averaged over all outputs and samples, ``r2`` the mean of the per-output R² (:func:`r2_score`).
    """
    out = outputs.detach().double().cpu()
    y = targets.detach().cpu()
    if task == "classification":
        y = y.long()
        logp = torch.log_softmax(out, dim=1)
        pred = logp.argmax(1)
        cm = confusion_matrix(y, pred, num_outputs).double()
        tp, support, predicted = cm.diag(), cm.sum(1), cm.sum(0)
        recall = torch.where(support > 0, tp / support.clamp_min(1), torch.zeros_like(tp))
        precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
        denom = precision + recall
        f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), torch.zeros_like(tp))
        res = {
            "accuracy": float(tp.sum() / max(len(y), 1)),
            "balanced_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
            "precision_macro": float(precision.mean()),
            "recall_macro": float(recall.mean()),
            "f1_macro": float(f1.mean()),
            "log_loss": float(-logp.gather(1, y.view(-1, 1)).mean()),
        }
        if confusion:
            res["confusion_matrix"] = cm.long().tolist()
        return res
    pred = out
    yt = y.double()
    if pred.ndim == 2 and pred.shape[1] == 1 and yt.ndim == 1:
        pred = pred[:, 0]
    err = pred - yt
    mse = float((err ** 2).mean())
    return {"mse": mse, "rmse": mse ** 0.5, "mae": float(err.abs().mean()), "r2": r2_score(yt, pred)}


def r2_score(y: torch.Tensor, pred: torch.Tensor) -> float:
    """scikit-learn's ``r2_score(y, pred, multioutput="uniform_average")``: the mean over outputs of
    each output's R² (not one R² of the sums of squares pooled over outputs).

    A constant target column follows scikit-learn's ``force_finite=True``: its R² is 1.0 if it is
    predicted exactly, else 0.0. Unlike scikit-learn (NaN with a warning), fewer than two samples
    also get that finite value, so model selection never sees NaN.
    """
    y2 = y if y.ndim > 1 else y.unsqueeze(1)
    p2 = pred if pred.ndim > 1 else pred.unsqueeze(1)
    if len(y2) == 0:
        return math.nan  # as mse and mae of no samples
    residual = ((y2 - p2) ** 2).sum(0)
    total = ((y2 - y2.mean(0)) ** 2).sum(0)
    per_output = torch.where(residual == 0, torch.ones_like(total),
                             torch.where(total == 0, torch.zeros_like(total), 1 - residual / total.clamp_min(1e-300)))
    return float(per_output.mean())
