"""Evaluation metrics (scikit-learn definitions, computed in torch) and which direction is better."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ConfigError

CLASSIFICATION = {"accuracy": "maximize", "balanced_accuracy": "maximize", "precision_macro": "maximize",
                  "recall_macro": "maximize", "f1_macro": "maximize", "log_loss": "minimize", "loss": "minimize"}
REGRESSION = {"mse": "minimize", "rmse": "minimize", "mae": "minimize", "r2": "maximize", "loss": "minimize"}
# multi-label: F1 and subset accuracy need decision thresholds (0.5 while training, the validation-chosen ones
# at the end); average_precision and log_loss need none, so they select epochs and trials
MULTILABEL = {"average_precision": "maximize", "f1_micro": "maximize", "f1_macro": "maximize",
              "subset_accuracy": "maximize", "hamming_loss": "minimize", "log_loss": "minimize", "loss": "minimize"}
TABLES = {"classification": CLASSIFICATION, "regression": REGRESSION, "multilabel": MULTILABEL}
DEFAULT_METRIC = {"classification": "accuracy", "regression": "mse", "multilabel": "average_precision"}


def default_metric(task: str) -> str:
    return DEFAULT_METRIC.get(task, "mse")


def direction(metric: str, task: str) -> str:
    """``maximize`` or ``minimize`` for a metric name; a ConfigError lists the valid names."""
    table = TABLES.get(task, REGRESSION)
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
                    confusion: bool = False, thresholds=None) -> dict:
    """All metrics of a task from model outputs (logits) and targets (indices or values).

    Computed in torch from the confusion matrix (cheap enough for every epoch), with scikit-learn's
    definitions: macro averages over all classes with 0 for an empty denominator; balanced accuracy
    is the mean recall over the classes present in the targets. Regression: ``mse``/``rmse``/``mae``
    averaged over all outputs and samples, ``r2`` the mean of the per-output R² (:func:`r2_score`).
    Multi-label: :func:`multilabel_metrics` (``thresholds``: per label; ``confusion``: add the per-label table).
    """
    out = outputs.detach().double().cpu()
    y = targets.detach().cpu()
    if task == "multilabel":
        return multilabel_metrics(outputs, targets, thresholds, per_label=confusion)
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


# --- multi-label ------------------------------------------------------------------------------------


def sigmoid32(outputs) -> torch.Tensor:
    """Per-label probabilities of logits, in float32: the one computation the trainer's metrics, ``predict``
    and ``serve`` share, so a decision ``p >= threshold`` is the same everywhere."""
    return torch.sigmoid(torch.as_tensor(outputs).detach().cpu().float())


def decide(outputs, thresholds=None) -> torch.Tensor:
    """0/1 decisions (N, K) int64: ``sigmoid(logit) >= threshold`` per label (0.5 where ``thresholds`` is None)."""
    p = sigmoid32(outputs)
    t = torch.full((p.shape[-1],), 0.5) if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float32)
    return (p >= t).long()


def multilabel_metrics(outputs: torch.Tensor, targets: torch.Tensor, thresholds=None, per_label: bool = False) -> dict:
    """Multi-label metrics (scikit-learn) of logits (N, K) against 0/1 targets (N, K).

    ``f1_micro`` / ``f1_macro`` / ``subset_accuracy`` (exact match of all K decisions) / ``hamming_loss`` use the
    decisions ``sigmoid >= threshold`` per label (``thresholds``: one per label, default 0.5);
    ``average_precision`` (mean over the labels with at least one positive sample of scikit-learn's
    ``average_precision_score``) and ``log_loss`` (mean binary cross-entropy over all N × K entries) need no
    threshold. F1 with an empty denominator is 0 (``zero_division=0``). ``per_label``: also a ``per_label``
    table: F1, precision, recall, support (positives) and the threshold of each label.
    """
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        f1_score,
        hamming_loss,
        precision_score,
        recall_score,
    )

    logits = outputs.detach().cpu().double()
    y = targets.detach().cpu().round().long().numpy()
    if len(y) == 0:
        return {k: math.nan for k in MULTILABEL if k != "loss"}
    d = decide(outputs, thresholds).numpy()
    p = sigmoid32(outputs).double().numpy()
    present = y.sum(0) > 0
    ap = float(average_precision_score(y[:, present], p[:, present], average="macro")) if present.any() else 0.0
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.as_tensor(y, dtype=torch.float64))
    res = {
        "average_precision": ap,
        "f1_micro": float(f1_score(y, d, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(y, d, average="macro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(y, d)),
        "hamming_loss": float(hamming_loss(y, d)),
        "log_loss": float(bce),
    }
    if per_label:
        t = [0.5] * y.shape[1] if thresholds is None else [float(v) for v in thresholds]
        res["per_label"] = {
            "f1": [float(v) for v in f1_score(y, d, average=None, zero_division=0)],
            "precision": [float(v) for v in precision_score(y, d, average=None, zero_division=0)],
            "recall": [float(v) for v in recall_score(y, d, average=None, zero_division=0)],
            "support": [int(v) for v in y.sum(0)], "threshold": t}
    return res


def choose_thresholds(outputs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per label, the decision threshold on ``sigmoid(logit)`` that maximizes that label's F1 on these samples.

    Meant for the **validation** split only. The candidates are the label's distinct scores on these samples
    (``p >= t`` predicts positive); the chosen one is moved halfway down to the next lower distinct
    score, so a sample scored just below it elsewhere is not flipped by rounding. Ties of F1 go to the candidate
    nearest 0.5. A label with no positive sample (F1 is 0 at every threshold) keeps 0.5.
    """
    from sklearn.metrics import precision_recall_curve

    p = sigmoid32(outputs).double().numpy()
    y = targets.detach().cpu().round().long().numpy()
    out = []
    for k in range(y.shape[1]):
        if y[:, k].sum() == 0 or len(y) == 0:
            out.append(0.5)
            continue
        precision, recall, cand = precision_recall_curve(y[:, k], p[:, k])
        precision, recall = precision[:-1], recall[:-1]
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        i = int(best[np.argmin(np.abs(cand[best] - 0.5))])
        below = np.unique(p[:, k][p[:, k] < cand[i]])
        t = (cand[i] + below[-1]) / 2 if len(below) else cand[i]
        out.append(float(np.float32(t)))
    return out
