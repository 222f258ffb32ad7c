import math

import pytest

from dnntune.config import ScheduleSection
from dnntune.engine.schedules import SCHEDULES, Schedule

SPE, EPOCHS = 10, 10  # steps per epoch, epochs
TOTAL = SPE * EPOCHS


def make(name, warmup=0.0, start=0.0, **knobs):
    entry = SCHEDULES.get(name)
    section = ScheduleSection(name=name, warmup_epochs=warmup, warmup_start_factor=start, knobs=entry.knobs(**knobs))
    return Schedule(section, base_lr=0.1, steps_per_epoch=SPE, total_steps=TOTAL)


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_schedule_is_positive_bounded_and_warms_up(name):
    s = make(name, warmup=2, start=0.1)
    assert s.lr_at(0) == pytest.approx(0.01)  # warmup starts at start_factor × peak
    assert s.lr_at(2 * SPE) <= 0.1 + 1e-12   # end of warmup reaches at most the peak
    for step in range(0, TOTAL + 1):
        lr = s.lr_at(step)
        assert 0.0 <= lr <= 0.1 + 1e-12 and math.isfinite(lr)


@pytest.mark.parametrize("name, knobs, expected", [
    ("constant", {}, {0: 0.1, 50: 0.1, 100: 0.1}),
    ("step", {"step_epochs": 3, "gamma": 0.5}, {0: 0.1, 29: 0.1, 30: 0.05, 60: 0.025, 99: 0.0125}),
    ("exponential", {"gamma": 0.9}, {0: 0.1, 10: 0.09, 100: 0.1 * 0.9 ** 10}),
    ("cosine", {"min_factor": 0.0}, {0: 0.1, 50: 0.05, 100: 0.0}),
    ("cosine", {"min_factor": 0.1}, {100: 0.01}),
    ("linear", {}, {0: 0.1, 50: 0.05, 100: 0.0}),
    ("cyclical", {"cycle_epochs": 2, "min_factor": 0.1}, {0: 0.01, 10: 0.1, 20: 0.01, 30: 0.1}),
    ("cyclical", {"cycle_epochs": 2, "min_factor": 0.0, "mode": "triangular2"}, {10: 0.1, 30: 0.05, 50: 0.025}),
    ("one_cycle", {"pct_start": 0.3, "div_factor": 25, "final_div_factor": 1e4}, {0: 0.004, 30: 0.1, 100: 0.1 / 25e4}),
])
def test_values_at_known_steps(name, knobs, expected):
    s = make(name, **knobs)
    for step, lr in expected.items():
        assert s.lr_at(step) == pytest.approx(lr, rel=1e-6, abs=1e-12), (name, step)


def test_warmup_is_linear_then_main_schedule_runs_over_the_rest():
    s = make("cosine", warmup=2)
    assert s.lr_at(0) == 0.0
    assert s.lr_at(10) == pytest.approx(0.05)
    assert s.lr_at(20) == pytest.approx(0.1)      # end of warmup = peak
    assert s.lr_at(60) == pytest.approx(0.05)     # half-way through the remaining 80 steps
    assert s.lr_at(100) == pytest.approx(0.0, abs=1e-12)


def test_plateau_reduces_after_patience_and_respects_floor():
    s = make("plateau", factor=0.5, patience=2, min_factor=0.2)
    for improved in (True, False, False):
        s.on_epoch_end(improved)
    assert s.lr_at(5) == pytest.approx(0.05)
    for _ in range(10):
        s.on_epoch_end(False)
    assert s.lr_at(5) == pytest.approx(0.02)
    restored = make("plateau", factor=0.5, patience=2, min_factor=0.2)
    restored.load_state_dict(s.state_dict())
    assert restored.lr_at(5) == s.lr_at(5)
