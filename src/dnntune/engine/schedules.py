"""Learning-rate schedules as pure functions of the step: ``factor_at(step)`` multiplies the base learning
rate of every optimizer parameter group (``lr_at(step)`` = ``optim.lr`` × factor), so groups with their own
base rates (discriminative learning rates, a frozen backbone at 0) keep their ratios at every step.

Every schedule has optional linear warmup (``warmup_epochs``) from ``warmup_start_factor`` to 1;
the main schedule then runs over the remaining steps. ``plateau`` additionally reacts to the
validation metric once per epoch (``on_epoch_end``), the only state a schedule keeps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from pydantic import Field

from ..registry import Knobs, NoKnobs, Registry

SCHEDULES: Registry = Registry("schedule")
# a main schedule: factor(step_after_warmup, steps_after_warmup, steps_per_epoch) -> factor
Factor = Callable[[float, float, float], float]


@SCHEDULES.register("constant", NoKnobs)
def constant(k: NoKnobs) -> Factor:
    """Fixed learning rate."""
    return lambda s, S, spe: 1.0


class StepKnobs(Knobs):
    step_epochs: float = Field(10.0, gt=0, description="epochs between decays")
    gamma: float = Field(0.1, gt=0, le=1, description="factor applied at each decay")


@SCHEDULES.register("step", StepKnobs)
def step(k: StepKnobs) -> Factor:
    """Step decay: × gamma every ``step_epochs`` epochs."""
    return lambda s, S, spe: k.gamma ** math.floor(s / (k.step_epochs * spe) + 1e-9)


class ExpKnobs(Knobs):
    gamma: float = Field(0.95, gt=0, le=1, description="factor per epoch")


@SCHEDULES.register("exponential", ExpKnobs)
def exponential(k: ExpKnobs) -> Factor:
    """Exponential decay: × gamma per epoch, applied smoothly per step."""
    return lambda s, S, spe: k.gamma ** (s / spe)


class CosineKnobs(Knobs):
    min_factor: float = Field(0.0, ge=0, le=1, description="final lr as a share of the peak")


@SCHEDULES.register("cosine", CosineKnobs)
def cosine(k: CosineKnobs) -> Factor:
    """Cosine annealing from the peak to ``min_factor`` × peak at the last step."""
    def f(s, S, spe):
        t = min(s / max(S, 1.0), 1.0)
        return k.min_factor + (1 - k.min_factor) * 0.5 * (1 + math.cos(math.pi * t))
    return f


class LinearKnobs(Knobs):
    min_factor: float = Field(0.0, ge=0, le=1)


@SCHEDULES.register("linear", LinearKnobs)
def linear(k: LinearKnobs) -> Factor:
    """Linear decay from the peak to ``min_factor`` × peak at the last step."""
    return lambda s, S, spe: 1 - (1 - k.min_factor) * min(s / max(S, 1.0), 1.0)


class CyclicKnobs(Knobs):
    cycle_epochs: float = Field(4.0, gt=0, description="length of one up-and-down cycle")
    min_factor: float = Field(0.1, ge=0, le=1, description="lowest lr as a share of the peak")
    mode: Literal["triangular", "triangular2"] = Field("triangular", description="triangular2 halves each cycle")


@SCHEDULES.register("cyclical", CyclicKnobs)
def cyclical(k: CyclicKnobs) -> Factor:
    """Cyclical learning rate (Smith 2017): triangle waves between min_factor × peak and the peak."""
    def f(s, S, spe):
        pos = s / (k.cycle_epochs * spe)
        cycle = math.floor(pos)
        tri = 1 - abs(2 * (pos - cycle) - 1)  # 0 → 1 → 0 within a cycle
        amp = (1 - k.min_factor) * (0.5 ** cycle if k.mode == "triangular2" else 1.0)
        return k.min_factor + amp * tri
    return f


class OneCycleKnobs(Knobs):
    pct_start: float = Field(0.3, gt=0, lt=1, description="share of steps spent rising")
    div_factor: float = Field(25.0, ge=1, description="initial lr = peak / div_factor")
    final_div_factor: float = Field(1e4, ge=1, description="final lr = initial / final_div_factor")


@SCHEDULES.register("one_cycle", OneCycleKnobs)
def one_cycle(k: OneCycleKnobs) -> Factor:
    """One-cycle (Smith & Topin): cosine rise to the peak, then cosine annealing far below the start."""
    start, end = 1 / k.div_factor, 1 / (k.div_factor * k.final_div_factor)

    def cos(a, b, t):
        return b + (a - b) * 0.5 * (1 + math.cos(math.pi * t))

    def f(s, S, spe):
        up = k.pct_start * S
        if s < up:
            return cos(start, 1.0, s / up)
        return cos(1.0, end, min((s - up) / max(S - up, 1.0), 1.0))
    return f


class PlateauKnobs(Knobs):
    factor: float = Field(0.1, gt=0, lt=1, description="multiply the lr by this on a plateau")
    patience: int = Field(5, ge=1, description="epochs without val improvement")
    min_factor: float = Field(1e-3, ge=0, le=1, description="never below this share of the peak")


@SCHEDULES.register("plateau", PlateauKnobs)
def plateau(k: PlateauKnobs) -> Factor:
    """Reduce on plateau: × factor after ``patience`` epochs without validation improvement."""
    return lambda s, S, spe: 1.0  # the reduction lives in Schedule.on_epoch_end


class Schedule:
    """A built schedule. ``lr_at(step)`` is the learning rate at optimizer step ``step``.

    Example:
        >>> from dnntune.config import ScheduleSection
        >>> s = Schedule(ScheduleSection(name="cosine", knobs=CosineKnobs()), base_lr=0.1,
        ...              steps_per_epoch=10, total_steps=100)
        >>> s.lr_at(0), round(s.lr_at(50), 4), round(s.lr_at(100), 4)
        (0.1, 0.05, 0.0)
    """

    def __init__(self, section, base_lr: float, steps_per_epoch: float, total_steps: float):
        entry = SCHEDULES.get(section.name, "schedule.name")
        self.name = section.name
        self.factor_fn: Factor = entry.builder(section.knobs)
        self.knobs = section.knobs
        self.base_lr = base_lr
        self.spe = max(float(steps_per_epoch), 1.0)
        self.total = max(float(total_steps), 1.0)
        self.warmup = min(section.warmup_epochs * self.spe, self.total)
        self.warmup_start = section.warmup_start_factor
        self.plateau_factor = 1.0
        self._bad_epochs = 0

    def factor_at(self, step: float) -> float:
        if step < self.warmup:
            # 1) linear warmup from warmup_start_factor to 1
            return self.warmup_start + (1 - self.warmup_start) * step / self.warmup
        return self.factor_fn(step - self.warmup, self.total - self.warmup, self.spe) * self.plateau_factor

    def lr_at(self, step: float) -> float:
        return self.base_lr * self.factor_at(step)

    def on_epoch_end(self, improved: bool) -> None:
        """Feed the epoch's validation outcome (only ``plateau`` uses it)."""
        if self.name != "plateau":
            return
        if improved:
            self._bad_epochs = 0
            return
        self._bad_epochs += 1
        if self._bad_epochs >= self.knobs.patience:
            self.plateau_factor = max(self.plateau_factor * self.knobs.factor, self.knobs.min_factor)
            self._bad_epochs = 0

    def state_dict(self) -> dict:
        return {"plateau_factor": self.plateau_factor, "bad_epochs": self._bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.plateau_factor = float(state["plateau_factor"])
        self._bad_epochs = int(state["bad_epochs"])
