"""The trainer's callback protocol: features hang on the one training loop instead of copying it.

A callback is any object with some of these methods (a subclass of :class:`Callback` gets no-op
defaults for the rest); each receives the :class:`~dnntune.engine.trainer.Trainer`, whose ``model``,
``optimizer``, ``schedule``, ``data``, ``device``, ``recipe``, ``loss`` and ``state`` (a ``FitState``: epoch,
optimizer steps taken, history, best epoch) it may read or change:

- ``on_fit_start(trainer)``: after set-up and resume, before the first epoch.
- ``on_epoch_start(trainer, epoch)``: ``epoch`` counts from 0; the model is already in train mode, so a
  callback may put parts of it in eval mode (a frozen backbone's batch norms).
- ``after_backward(trainer, step)``: gradients are computed (and unscaled, under mixed precision),
  the optimizer has not stepped: gradient masks, gradient noise, QAT observers. ``trainer.loss`` is the
  step's loss. Called only for callbacks that define it, so the hot loop pays nothing otherwise.
- ``on_epoch_end(trainer, epoch, row) -> bool | None``: ``row`` is the epoch's line of ``curves.jsonl``
  (``epoch`` counts from 1 there); returning True stops the fit (``stopped: callback``). The checkpoint of
  the epoch is written before these run, so a callback that raises loses nothing.
- ``on_fit_end(trainer, result)``: after the final evaluation; ``result`` is None when the fit raised
  (close files here).

Any hook may raise :class:`StopFit` to end the fit at once (mid-epoch too); the trainer then evaluates
and writes the run as usual, with ``stopped`` set to the exception's reason.
"""

from __future__ import annotations

from collections.abc import Callable

HOOKS = ("on_fit_start", "on_epoch_start", "after_backward", "on_epoch_end", "on_fit_end")


class StopFit(Exception):  # noqa: N818 - a signal, not an error (fastai's CancelFitException)
    """Raised by a callback to end the fit cleanly; ``reason`` becomes ``RunResult.stopped``."""

    def __init__(self, reason: str = "callback"):
        super().__init__(reason)
        self.reason = reason


class Callback:
    """Base class with no-op hooks; override the ones a feature needs.

    Example:
        >>> from dnntune.config import validate_recipe
        >>> from dnntune.engine.trainer import train
        >>> class StopAtTwo(Callback):
        ...     def on_epoch_end(self, trainer, epoch, row):
        ...         return row["epoch"] == 2
        >>> r = validate_recipe({"data": {"name": "iris"}, "model": {"family": "linear"}, "train": {"epochs": 9}})
        >>> train(r, callbacks=[StopAtTwo()]).epochs
        2
    """

    def on_fit_start(self, trainer) -> None:
        pass

    def on_epoch_start(self, trainer, epoch: int) -> None:
        pass

    def on_epoch_end(self, trainer, epoch: int, row: dict) -> bool | None:
        return None

    def on_fit_end(self, trainer, result) -> None:
        pass

    # after_backward is deliberately not defined here: the trainer calls it only on callbacks that have it


class EpochEnd(Callback):
    """A plain ``fn(epoch, row) -> stop?`` as a callback (``epoch`` counts from 1, as in ``row``)."""

    def __init__(self, fn: Callable[[int, dict], bool | None]):
        self.fn = fn

    def on_epoch_end(self, trainer, epoch: int, row: dict) -> bool | None:
        return self.fn(row["epoch"], dict(row))


def hooked(callbacks, hook: str) -> list:
    """The callbacks that define ``hook``, in order."""
    return [cb for cb in callbacks if callable(getattr(cb, hook, None))]
