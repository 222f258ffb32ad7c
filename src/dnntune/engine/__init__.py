"""Trainer, losses, optimizer and schedule factories, metrics, checkpoints."""

from .losses import LOSSES, build_loss
from .metrics import compute_metrics
from .optim import OPTIMIZERS, build_optimizer
from .schedules import SCHEDULES, Schedule
from .trainer import RunResult, Trainer, train

__all__ = ["LOSSES", "OPTIMIZERS", "SCHEDULES", "RunResult", "Schedule", "Trainer", "build_loss",
           "build_optimizer", "compute_metrics", "train"]
