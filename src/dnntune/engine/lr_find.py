"""The learning-rate range test (Smith 2015, "Cyclical Learning Rates for Training Neural Networks", §3.3;
fastai's ``lr_find``): one short run in which the learning rate grows exponentially per step from
``min_lr`` to ``max_lr`` while the training loss is recorded.

The recorded curve is the exponential moving average of the per-step training loss with bias
correction: ``avg ← β·avg + (1 − β)·loss``, ``smoothed = avg / (1 − β^(i+1))``, with β = 1 − 10/steps
(0.9 for 100 steps): the average remembers a tenth of the test. fastai's fixed β = 0.98 remembers 50 of
100 steps, about 4 of the 8 decades swept, and its minimum lags the raw curve by as much (measured on
digits and MNIST-1D: suggestions 2–16× higher than with β = 0.9). The test stops early when the
smoothed loss exceeds 4× its minimum or a loss is NaN/inf.

**Suggestion rule** (one rule, chosen for robustness): the learning rate at the minimum of the smoothed
loss, divided by 10 (clamped to ``[min_lr, max_lr]``). The steepest-descent point is the other common
rule; on a 100-point curve its finite-difference slope is noisy, while the minimum is stable and sits
where training starts to become unstable, an order of magnitude above a good peak rate.

**A callback over the one training loop** (fastai's ``LRFinder``): :class:`LRRangeTest` sets every
parameter group's learning rate in ``after_backward`` (each group keeps its ratio to ``optim.lr``), records
the step's loss and raises :class:`~dnntune.engine.callbacks.StopFit` when the test is done; ``lr_find``
drives ``Trainer.train_epoch`` until then. So the test sees the same model, optimizer, loss (with L1),
clipping, augmentation, batch size and seed as the training run would. The validation and test splits
are never touched, and the model is discarded.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import Recipe
from ..data import Data
from ..errors import ConfigError
from .callbacks import Callback, StopFit

DIVERGE_FACTOR = 4.0
RULE = "lr at the minimum of the smoothed loss / 10"


@dataclass
class LRFindResult:
    """What a range test recorded. ``losses`` are smoothed; ``raw_losses`` are the per-step losses."""

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float
    min_loss_lr: float
    stopped: str  # "diverged" (smoothed loss > 4× its minimum), "nan" or "completed"
    min_lr: float
    max_lr: float
    steps: int
    batch_size: int
    smoothing: float
    rule: str = RULE
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``lr_find.json`` and ``lr_find.png`` (loss vs lr on a log axis, suggestion marked)."""
        from .checkpoint import write_json

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "lr_find.json", "png": out / "lr_find.png"}
        write_json(paths["json"], self.to_dict())
        plot(self, paths["png"])
        return paths


def plot(result: LRFindResult, path: str | Path) -> None:
    """Loss vs learning rate (log x): raw losses faint, the smoothed curve, the minimum and the suggestion."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=110)
    ax = fig.subplots()
    if result.lrs:
        ax.plot(result.lrs, result.raw_losses, color="0.75", lw=0.8, label="loss per step")
        ax.plot(result.lrs, result.losses, color="C0", lw=1.8, label="smoothed loss")
        i = result.lrs.index(result.min_loss_lr)
        ax.plot([result.min_loss_lr], [result.losses[i]], "o", color="C3", label=f"minimum at {result.min_loss_lr:.2g}")
        ax.axvline(result.suggestion, color="C2", ls="--", label=f"suggested lr {result.suggestion:.2g}")
        lo = min(result.losses + result.raw_losses)
        hi = min(max(result.losses), DIVERGE_FACTOR * min(result.losses))
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo) + 1e-12)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"learning-rate range test ({len(result.lrs)} steps, batch {result.batch_size}, {result.stopped})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def smoothing_for(steps: int) -> float:
    """EMA factor whose memory (1 / (1 − β) steps) is a tenth of the test: 0.9 for 100 steps."""
    return min(max(1 - 10 / steps, 0.8), 0.98)


def suggest(lrs: list[float], losses: list[float], min_lr: float, max_lr: float) -> tuple[float, float]:
    """(suggestion, lr at the minimum) of a smoothed curve: see the module docstring for the rule."""
    i = min(range(len(losses)), key=losses.__getitem__)
    at_min = lrs[i]
    return min(max(at_min / 10, min_lr), max_lr), at_min


class LRRangeTest(Callback):
    """The range test as a trainer callback: exponential lr per step, smoothed loss, stop when done."""

    def __init__(self, min_lr: float, max_lr: float, steps: int, beta: float, base_lr: float,
                 on_step: Callable[[int, float, float], None] | None = None):
        self.min_lr, self.ratio, self.steps, self.beta = min_lr, max_lr / min_lr, steps, beta
        self.base_lr, self.on_step = base_lr, on_step
        self.lrs: list[float] = []
        self.smoothed: list[float] = []
        self.raw: list[float] = []
        self.avg, self.best = 0.0, math.inf
        self.stopped = "completed"

    def after_backward(self, trainer, step: int) -> None:
        i = len(self.lrs)
        lr = self.min_lr * self.ratio ** (i / (self.steps - 1))
        value = float(trainer.loss.detach())  # the loss at the lr of the previous step
        if not math.isfinite(value):
            self.stopped = "nan"
            raise StopFit("nan")
        for g in trainer.optimizer.param_groups:  # this step runs at lr
            g["lr"] = lr * g["base_lr"] / self.base_lr
        self.avg = self.beta * self.avg + (1 - self.beta) * value
        s = self.avg / (1 - self.beta ** (i + 1))
        self.lrs.append(lr)
        self.raw.append(value)
        self.smoothed.append(s)
        if self.on_step is not None:
            self.on_step(i + 1, lr, s)
        self.best = min(self.best, s)
        if s > DIVERGE_FACTOR * self.best:
            self.stopped = "diverged"
            raise StopFit("diverged")
        if i + 1 >= self.steps:
            raise StopFit("completed")


def lr_find(recipe: Recipe, data: Data | None = None, min_lr: float = 1e-7, max_lr: float = 10.0, steps: int = 100,
            smoothing: float | None = None, on_step: Callable[[int, float, float], None] | None = None
            ) -> LRFindResult:
    """Run the range test on a concrete recipe (its lr and schedule are ignored; everything else is used).

    Example:
        >>> from dnntune.config import validate_recipe
        >>> r = validate_recipe({"data": {"name": "iris"}, "model": {"family": "linear"}})
        >>> res = lr_find(r, steps=30)
        >>> 1e-7 <= res.suggestion <= 10.0
        True
    """
    from .trainer import Trainer

    if not (min_lr > 0 and max_lr > min_lr):
        raise ConfigError(f"lr-find: need 0 < --min-lr < --max-lr, got {min_lr:g} and {max_lr:g}")
    if steps < 5:
        raise ConfigError(f"lr-find: --steps must be at least 5, got {steps}")
    beta = smoothing_for(steps) if smoothing is None else smoothing
    test = LRRangeTest(min_lr, max_lr, steps, beta, recipe.optim.lr, on_step)
    trainer = Trainer(recipe, data, evaluate_test=False, callbacks=[test])
    trainer.setup()  # the same builders, data, device and seed as a training run
    if len(trainer.data.train) < 2:
        raise ConfigError(f"lr-find: {trainer.data.name} has fewer than 2 training samples")
    try:
        for epoch in itertools.count():
            trainer.train_epoch(epoch)
    except StopFit:
        pass
    if not test.lrs:
        raise ConfigError(f"lr-find: the loss was already NaN/inf at --min-lr {min_lr:g}; lower it")
    suggestion, at_min = suggest(test.lrs, test.smoothed, min_lr, max_lr)
    return LRFindResult(lrs=test.lrs, losses=test.smoothed, raw_losses=test.raw, suggestion=suggestion,
                        min_loss_lr=at_min, stopped=test.stopped, min_lr=min_lr, max_lr=max_lr, steps=steps,
                        batch_size=trainer.state.batch_size, smoothing=beta,
                        info={"optimizer": recipe.optim.name, "model": recipe.model.family, "data": trainer.data.name,
                              "train_samples": len(trainer.data.train), "seed": recipe.seed})
