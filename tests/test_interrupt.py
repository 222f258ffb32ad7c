"""Ctrl-C handling is scoped to one study: a second study in the same process runs normally."""

import signal

import optuna
import pytest

from dnntune.search import interrupt, objective, tune

optuna.logging.set_verbosity(optuna.logging.ERROR)


def experiment(n_trials, epochs, **search):
    return {"seed": 0, "data": {"name": "iris"}, "model": {"family": "mlp", "width": 8},
            "optim": {"name": "adam", "lr": {"float": [1e-3, 1e-1], "log": True}},
            "train": {"epochs": epochs, "batch_size": 32}, "search": {"n_trials": n_trials, "seed": 0, **search}}


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handling, whatever the test runner inherited (a background shell, as CI's, starts
    its jobs with SIGINT ignored, and a study then rightly leaves it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_after_an_interrupted_study_the_sigint_handler_and_flag_are_restored(tmp_path, monkeypatch, default_sigint):
    real_fit = objective.fit_tracked

    def ctrl_c_during_the_fit(trainer, tracker):
        interrupt._on_sigint(signal.SIGINT, None)  # what the installed handler does on Ctrl-C

    monkeypatch.setattr(objective, "fit_tracked", ctrl_c_during_the_fit)
    with pytest.raises(KeyboardInterrupt):
        tune(experiment(n_trials=2, epochs=2, pruner="none"), tmp_path / "first", quiet=True)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not interrupt.ctrl_c_pending()
    monkeypatch.setattr(objective, "fit_tracked", real_fit)
    summary = tune(experiment(n_trials=2, epochs=2, pruner="none"), tmp_path / "second", quiet=True)
    assert summary["trials"]["complete"] == 2
