"""Evaluation metrics (scikit-learn) and which direction is better for each."""

from __future__ import annotations

import torch
from sklearn import metrics as skm

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


def compute_metrics(task: str, outputs: torch.Tensor, targets: torch.Tensor, num_outputs: int,
                    confusion: bool = False) -> dict:
    """All metrics of a task from model outputs (logits) and targets (indices or values)."""
    out = outputs.detach().float().cpu()
    y = targets.detach().cpu()
    if task == "classification":
        logp = torch.log_softmax(out.double(), dim=1)
        pred = logp.argmax(1).numpy()
        yt = y.numpy()
        labels = list(range(num_outputs))
        res = {
            "accuracy": float(skm.accuracy_score(yt, pred)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(yt, pred)),
            "precision_macro": float(skm.precision_score(yt, pred, average="macro", labels=labels,
                                                         zero_division=0)),
            "recall_macro": float(skm.recall_score(yt, pred, average="macro", labels=labels, zero_division=0)),
            "f1_macro": float(skm.f1_score(yt, pred, average="macro", labels=labels, zero_division=0)),
            "log_loss": float(-logp.gather(1, y.long().view(-1, 1)).mean()),
        }
        if confusion:
            res["confusion_matrix"] = skm.confusion_matrix(yt, pred, labels=labels).tolist()
        return res
    pred = out.numpy()
    yt = y.numpy()
    if pred.ndim == 2 and pred.shape[1] == 1 and yt.ndim == 1:
        pred = pred[:, 0]
    mse = float(skm.mean_squared_error(yt, pred))
    return {"mse": mse, "rmse": mse ** 0.5, "mae": float(skm.mean_absolute_error(yt, pred)),
            "r2": float(skm.r2_score(yt, pred))}
