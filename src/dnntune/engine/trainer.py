"""The one training path: a concrete Recipe and its Data in, a RunResult out.

``Trainer.fit`` is a short sequence of named steps (set-up, resume, one epoch, validate and track the
best epoch, epoch-end decisions, checkpoint, finish); features hang on it through the callback protocol
of :mod:`dnntune.engine.callbacks`. The trainer knows nothing of search, tracking or reports.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import Recipe
from ..data import Data, TensorLoader, load_data
from ..data.augment import build_augmenter
from ..data.loader import keep_on_device
from ..errors import ConfigError, TrainingDiverged
from ..models import InputSpec, build_model, count_params
from . import checkpoint as ckpt
from .callbacks import EpochEnd, StopFit, hooked
from .losses import build_loss
from .metrics import choose_thresholds, compute_metrics, default_metric, direction, is_better, tie_loss
from .optim import ParamGroupFn, build_optimizer, weight_penalty_params
from .result import RunResult, run_files
from .runtime import predict, recipe_hash, resolve_device, rng_state, seed_everything, set_rng_state
from .schedules import Schedule

EpochHook = Callable[[int, dict], "bool | None"]
CHECKPOINT_KEYS = ("recipe_hash", "epoch", "model", "optimizer", "schedule", "gen", "rng", "history")


@dataclass
class FitState:
    """Everything of a fit that changes per epoch, saved in the checkpoint and restored on resume."""

    epoch: int = 0                     # the next epoch to run (from 0)
    step: int = 0                      # optimizer steps taken
    history: list[dict] = field(default_factory=list)
    best_value: float | None = None
    best_loss: float = math.inf        # breaks ties of the metric (a saturated small validation split)
    best_epoch: int | None = None      # from 1, as in the curves
    best_state: dict | None = None
    since_best: int = 0
    since_growth_best: int = 0
    batch_size: int = 0
    elapsed: float = 0.0               # seconds spent before this process resumed
    stopped: str | None = None         # set when early stopping ended the run: a resume only finishes it


class Trainer:
    """Train one recipe: ``fit()`` runs the whole loop; :func:`train` is the one-call form.

    ``callbacks``: objects of the protocol in :mod:`dnntune.engine.callbacks`; ``on_epoch_end``: a plain
    ``fn(epoch, row) -> stop?`` for the common case. ``param_groups``: a function of the model returning
    optimizer groups (see :func:`~dnntune.engine.optim.build_optimizer`). ``replay``: with no validation split
    (the final retrain on train+val, or ``data.val_fraction: 0``), the epochs at which the validation metric
    improved in an earlier run of the recipe (its curves' ``improved`` column), so ``schedule.name: plateau``
    and ``train.batch_growth.on_plateau`` act at the same epochs as in that run. ``thresholds``: multi-label, with
    no validation split: ``(per-label thresholds, where they were chosen)`` to use instead of 0.5 (the final
    retrain: the best trial's, chosen on its validation split); see :meth:`fit_thresholds`.
    """

    def __init__(self, recipe: Recipe, data: Data | None = None, out_dir: str | Path | None = None,
                 on_epoch_end: EpochHook | None = None, evaluate_test: bool = True, resume: bool = True,
                 replay: list[bool] | None = None, callbacks=(), param_groups: ParamGroupFn | None = None,
                 thresholds: tuple[list[float], str] | None = None):
        self.recipe = recipe
        self.data = data
        self.out_dir = Path(out_dir) if out_dir else None
        self.callbacks = list(callbacks) + ([EpochEnd(on_epoch_end)] if on_epoch_end else [])
        self.evaluate_test = evaluate_test
        self.resume = resume
        self.replay = replay
        self.param_group_fn = param_groups
        self.model: nn.Module | None = None
        self.loss: torch.Tensor | None = None  # the current step's loss, for after_backward callbacks
        self._after_backward: list = []
        self.given_thresholds = thresholds
        self.thresholds: list[float] | None = None  # multi-label decisions: 0.5 until fit_thresholds()
        self.thresholds_from: str | None = None

    def add_callback(self, callback) -> None:
        self.callbacks.append(callback)

    # --- set-up -----------------------------------------------------------------------------------
    def setup(self) -> None:
        """Build data, model, optimizer, schedule, loss and augmentation from the recipe (once)."""
        if self.model is not None:
            return
        r = self.recipe
        if r.train.threads:
            torch.set_num_threads(r.train.threads)
        seed_everything(r.seed)
        if self.data is None:
            self.data = load_data(r.data, r.seed)
        data = self.data
        self.device = resolve_device(r.train.device)
        spec = InputSpec(data.kind, data.input_shape, data.name, data.input_info)
        self.model = build_model(r.model, spec, data.num_outputs).to(self.device)
        self._setup_transfer()
        self.loss_fn = build_loss(r.loss, data.task, data.num_outputs)
        self.optimizer = build_optimizer(r.optim, self.model, self.param_group_fn)
        self.augment = build_augmenter(r.augment, data)
        self.metric = r.train.metric or default_metric(data.task)
        self.direction = direction(self.metric, data.task)
        self.l1_params = weight_penalty_params(self.model) if r.train.l1 > 0 else []
        self.amp = r.train.amp and self.device.type == "cuda"
        # one optimizer-step path: a disabled scaler passes the loss and the step through
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.gen = torch.Generator().manual_seed(r.seed)
        self.on_device = keep_on_device(r.data.in_memory, data.train, self.device)
        self.x_train = data.train.x.to(self.device) if self.on_device else data.train.x
        self.y_train = data.train.y.to(self.device) if self.on_device else data.train.y
        self.steps_per_epoch0 = max(math.ceil(len(data.train) / r.train.batch_size), 1)
        self.schedule = Schedule(r.schedule, r.optim.lr, self.steps_per_epoch0,
                                 self.steps_per_epoch0 * r.train.epochs)
        self.state = FitState(batch_size=r.train.batch_size)

    def _setup_transfer(self) -> None:
        """``model.init_from`` (a resumed checkpoint is loaded over it later), freezing and lr groups."""
        from .transfer import setup_transfer

        plan = setup_transfer(self, self.model)
        self.transfer_table = plan.table
        if self.param_group_fn is None:  # an explicit param_groups function wins
            self.param_group_fn = plan.param_groups
        if plan.freeze is not None:
            self.callbacks.insert(0, plan.freeze)

    def loader(self):
        """This epoch's training batches (seeded shuffle; the batch size may grow between epochs)."""
        bs = self.state.batch_size
        if not self.on_device:
            ds = torch.utils.data.TensorDataset(self.x_train, self.y_train)
            return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, generator=self.gen,
                                               drop_last=len(ds) % bs == 1)
        return TensorLoader(self.x_train, self.y_train, bs, shuffle=True, generator=self.gen)

    # --- one epoch ----------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> float:
        """One pass over the training split; the mean training loss (with the L1 term)."""
        model, loss_fn, dev = self.model, self.loss_fn, self.device
        model.train()  # before the callbacks: they may put parts in eval mode (a frozen backbone's batch norms)
        for cb in hooked(self.callbacks, "on_epoch_start"):
            cb.on_epoch_start(self, epoch)
        loader = self.loader()
        n_batches = len(loader)
        total = torch.zeros((), device=dev)
        seen = 0
        l1 = self.recipe.train.l1
        last_factor = None
        self._after_backward = hooked(self.callbacks, "after_backward")
        # one context for the epoch, reused per batch (as nanoGPT): building an autocast costs ~8 µs a step
        autocast = torch.autocast(dev.type) if self.amp else contextlib.nullcontext()
        for i, (xb, yb) in enumerate(loader):
            if xb.device != dev:
                xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            # the schedule runs in epochs, so a growing batch size keeps its shape
            factor = self.schedule.factor_at((epoch + i / n_batches) * self.steps_per_epoch0)
            if factor != last_factor:
                for g in self.optimizer.param_groups:
                    g["lr"] = g["base_lr"] * factor
                last_factor = factor
            if self.augment is not None:
                xb, yb = self.augment(xb, yb)
            with autocast:
                loss = loss_fn(model(xb), yb)
            if l1 > 0:
                loss = loss + l1 * sum(p.abs().sum() for p in self.l1_params)
            self.optimizer_step(loss)
            total.add_(loss.detach(), alpha=len(xb))
            seen += len(xb)
        return float(total) / max(seen, 1)

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward, ``after_backward`` callbacks, clipping, step: the only optimizer-step code there is."""
        opt, clip = self.optimizer, self.recipe.train.grad_clip
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        after = self._after_backward
        if clip or after:
            self.scaler.unscale_(opt)  # callbacks and clipping see the true gradients
        if after:
            self.loss = loss
            for cb in after:
                cb.after_backward(self, self.state.step)
        if clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(opt)
        self.scaler.update()
        self.state.step += 1

    def evaluate(self, split, confusion: bool = False) -> dict:
        """Loss and metrics of the model on a split, in the target's own units."""
        d = self.data
        out = predict(self.model, split.x, self.recipe.train.eval_batch_size, self.device)
        y = split.y.to(out.device)
        with torch.no_grad():
            loss = float(self.loss_fn(out.to(self.device), split.y.to(self.device)))
        if d.y_std is not None:  # back to the target's own units
            out = out * d.y_std + d.y_mean if out.ndim == y.ndim else out * d.y_std.view(-1) + d.y_mean.view(-1)
            y = y * d.y_std + d.y_mean
        res = (compute_metrics(d.task, out, y, d.num_outputs, confusion=confusion, thresholds=self.thresholds)
               if math.isfinite(loss) else {})
        res["loss"] = loss
        return res

    # --- the loop -------------------------------------------------------------------------------------
    def fit(self) -> RunResult:
        t0 = time.perf_counter()
        result = None
        try:
            self.setup()
            self._check_validation_needs()
            self._resume()
            result = self._loop(t0)
            return result
        finally:
            for cb in hooked(self.callbacks, "on_fit_end"):
                cb.on_fit_end(self, result)

    def _loop(self, t0: float) -> RunResult:
        r, s = self.recipe, self.state
        self._curves_reset()
        for cb in hooked(self.callbacks, "on_fit_start"):
            cb.on_fit_start(self)
        self._last_save, self._saved_epoch = t0, s.epoch
        if s.stopped is not None:  # an early-stopped run, resumed: only its run folder is left to write
            return self._finish(t0, s.stopped)
        stopped = "completed"
        try:
            for epoch in range(s.epoch, r.train.epochs):
                te = time.perf_counter()
                lr_start = r.optim.lr * self.schedule.factor_at(epoch * self.steps_per_epoch0)
                row = {"epoch": epoch + 1, "train_loss": self.train_epoch(epoch), "lr": lr_start,
                       "batch_size": s.batch_size}
                self._check_diverged(row, te)
                improved = self._validate(epoch, row)
                stop = self._epoch_decisions(epoch, improved)
                row["seconds"] = time.perf_counter() - te
                self._record(row)
                s.epoch = epoch + 1
                if stop:
                    stopped = s.stopped = "early_stopping"
                self._checkpoint(t0, last=stop or epoch == r.train.epochs - 1)
                for cb in hooked(self.callbacks, "on_epoch_end"):
                    if cb.on_epoch_end(self, epoch, dict(row)):
                        stopped, stop = "callback", True
                if stop:
                    break
        except StopFit as e:
            stopped = e.reason
        return self._finish(t0, stopped)

    # --- the steps of the loop ------------------------------------------------------------------------
    def _check_validation_needs(self) -> None:
        r, growth = self.recipe, self.recipe.train.batch_growth
        if len(self.data.val) > 0 or self.replay is not None:
            return
        needs = [key for key, on in (("schedule.name: plateau", r.schedule.name == "plateau"),
                                     ("train.batch_growth.on_plateau", growth and growth.on_plateau),
                                     ("train.early_stopping.patience", r.train.early_stopping.patience is not None))
                 if on]
        if needs:
            raise ConfigError(f"{needs[0]}: needs a validation split, and {self.data.name} has none "
                              f"(data.val_fraction: 0); set data.val_fraction > 0 or remove it")

    def _checkpoint_path(self) -> Path | None:
        return self.out_dir / "checkpoint.pt" if (self.out_dir and self.recipe.train.checkpoint) else None

    def _resume(self) -> None:
        """Continue from the run folder's checkpoint when it belongs to this recipe."""
        path = self._checkpoint_path()
        if path is None or not self.resume:
            return
        saved = ckpt.load_resumable(path, CHECKPOINT_KEYS)
        if saved is None or saved.get("recipe_hash") != recipe_hash(self.recipe):
            return
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        self.scaler.load_state_dict(saved.get("scaler") or {})
        self.gen.set_state(saved["gen"])
        set_rng_state(saved, self.device)
        self.state = FitState(**{k: saved[k] for k in FitState.__dataclass_fields__ if k in saved})
        self.state.epoch, self.state.history = int(saved["epoch"]) + 1, list(saved["history"])

    def _curves_reset(self) -> None:
        if self.out_dir is not None:
            ckpt.atomic_write_text(self.out_dir / "curves.jsonl",
                                   "".join(json.dumps(h) + "\n" for h in self.state.history))

    def _record(self, row: dict) -> None:
        self.state.history.append(row)
        if self.out_dir is not None:
            with open(self.out_dir / "curves.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def _check_diverged(self, row: dict, te: float) -> None:
        if math.isfinite(row["train_loss"]):
            return
        row["seconds"] = time.perf_counter() - te
        self._record(row)
        kept = (f"; the last good checkpoint (epoch {self._saved_epoch}) and curves are in {self.out_dir}"
                if self._checkpoint_path() and self._saved_epoch > 0 else "")
        raise TrainingDiverged(
            f"training diverged: the loss became {row['train_loss']} at epoch {row['epoch']} "
            f"(lr {row['lr']:.3g}){kept}. Lower optim.lr, add schedule.warmup_epochs or set train.grad_clip.",
            row["epoch"])

    def _validate(self, epoch: int, row: dict) -> bool:
        """Validation metrics into ``row``; track the best epoch. Did the metric really improve?"""
        s, es = self.state, self.recipe.train.early_stopping
        if len(self.data.val) == 0:
            # no validation: the improvements of the run being replayed
            return self.replay is not None and epoch < len(self.replay) and bool(self.replay[epoch])
        val = self.evaluate(self.data.val)
        row.update({f"val_{k}": v for k, v in val.items()})
        value = val.get(self.metric, float("nan"))
        if not math.isfinite(value):
            raise TrainingDiverged(f"training diverged: validation {self.metric} is {value} at epoch {epoch + 1}. "
                                   f"Lower optim.lr or set train.grad_clip.", epoch + 1)
        loss = tie_loss(val)
        improved = is_better(value, s.best_value, self.direction, es.min_delta)
        if improved or (value == s.best_value and loss < s.best_loss):  # a tie only moves the best epoch
            s.best_value, s.best_loss, s.best_epoch = value, loss, epoch + 1
            if es.restore_best:
                s.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        row["improved"] = int(improved)
        return improved

    def _epoch_decisions(self, epoch: int, improved: bool) -> bool:
        """Plateau schedule, patience and batch growth, which count real improvements only. Stop early?"""
        s, r = self.state, self.recipe
        growth, patience = r.train.batch_growth, r.train.early_stopping.patience
        self.schedule.on_epoch_end(improved)
        s.since_best = 0 if improved else s.since_best + 1
        s.since_growth_best = 0 if improved else s.since_growth_best + 1
        if growth is not None and ((growth.every_epochs and (epoch + 1) % growth.every_epochs == 0) or (
                growth.on_plateau and s.since_growth_best >= growth.on_plateau)):
            s.batch_size = min(int(s.batch_size * growth.factor), growth.max_batch_size, len(self.data.train))
            s.since_growth_best = 0
        return patience is not None and len(self.data.val) > 0 and s.since_best >= patience

    def _checkpoint(self, t0: float, last: bool) -> None:
        path = self._checkpoint_path()
        if path is None or not (last or time.perf_counter() - self._last_save >= self.recipe.train.checkpoint_every):
            return
        self._last_save, self._saved_epoch = time.perf_counter(), self.state.epoch
        s = self.state
        state = {k: getattr(s, k) for k in FitState.__dataclass_fields__}
        state.update({"recipe_hash": recipe_hash(self.recipe), "epoch": s.epoch - 1, "model": self.model.state_dict(),
                      "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                      "scaler": self.scaler.state_dict(), "gen": self.gen.get_state(),
                      "elapsed": s.elapsed + time.perf_counter() - t0, **rng_state(self.device)})
        ckpt.save_checkpoint(path, state)

    def fit_thresholds(self) -> None:
        """Multi-label: the per-label decision thresholds of the final model, which the train/val/test metrics
        after the fit, the run folder (``preprocess.json``) and so ``predict`` / ``serve`` use.

        Chosen on the validation split only (each label's best F1, :func:`~dnntune.engine.metrics.
        choose_thresholds`), never on training or test samples. Without a validation split: the thresholds
        given to the Trainer (the final retrain on train+val: the best trial's, chosen on its validation
        split), else 0.5 for every label.
        """
        d = self.data
        if d.task != "multilabel":
            return
        if len(d.val) > 0:
            out = predict(self.model, d.val.x, self.recipe.train.eval_batch_size, self.device)
            self.thresholds, self.thresholds_from = choose_thresholds(out, d.val.y), "validation split"
        elif self.given_thresholds is not None:
            values, where = self.given_thresholds
            if len(values) != d.num_outputs:
                raise ConfigError(f"thresholds: {len(values)} given for {d.num_outputs} labels ({where})")
            self.thresholds, self.thresholds_from = [float(v) for v in values], where
        else:
            self.thresholds, self.thresholds_from = [0.5] * d.num_outputs, "default 0.5 (no validation split)"

    def _finish(self, t0: float, stopped: str) -> RunResult:
        """Restore the best epoch's weights, evaluate once per split, write the run folder."""
        s, data = self.state, self.data
        if s.best_state is not None and self.recipe.train.early_stopping.restore_best:
            self.model.load_state_dict(s.best_state)
        self.fit_thresholds()
        metrics = {"train": self.evaluate(data.train)}
        if len(data.val) > 0:
            metrics["val"] = self.evaluate(data.val, confusion=True)
        if self.evaluate_test:
            metrics["test"] = self.evaluate(data.test, confusion=True)
        result = RunResult(recipe=self.recipe, metrics=metrics, history=s.history, epochs=len(s.history),
                           best_epoch=s.best_epoch, stopped=stopped, wall_seconds=s.elapsed + time.perf_counter() - t0,
                           params=count_params(self.model), model=self.model, out_dir=self.out_dir)
        if self.out_dir is not None:
            ckpt.write_run_files(self.out_dir, run_files(result, self), checkpoint=self._checkpoint_path())
        return result


def train(experiment: Recipe | dict | str | Path, out_dir: str | Path | None = None, data=None,
          on_epoch_end: EpochHook | None = None, evaluate_test: bool = True, resume: bool = True,
          callbacks=(), num_workers: int = 0) -> RunResult:
    """Train one concrete recipe; write the run folder if ``out_dir`` is given.

    Args:
        experiment: a :class:`Recipe`, the same as a dict (the YAML file's shape), or a YAML file's path.
        out_dir: the run folder (none: nothing is written).
        data: None (the recipe's ``data.name``), a prepared :class:`~dnntune.data.Data`, or the user's own
            data: ``(x, y)`` numpy arrays or torch tensors, a dict with ``x, y`` and optionally ``x_test,
            y_test, kind, task, class_names``, a map-style ``torch.utils.data.Dataset`` of (input, target)
            pairs or a pair (train Dataset, test Dataset). Own data is split and normalized by the same
            ``prepare`` as built-in data (``data.name`` may be left out: it becomes ``python``).
        num_workers: DataLoader processes that read a Dataset (it is read once, into memory).

    Example:
        >>> from dnntune.config import validate_recipe
        >>> r = validate_recipe({"data": {"name": "iris"}, "model": {"family": "linear"}, "train": {"epochs": 2}})
        >>> result = train(r)
        >>> sorted(result.metrics)
        ['test', 'train', 'val']
        >>> import numpy as np
        >>> x, y = np.random.default_rng(0).normal(size=(60, 4)), np.arange(60) % 2
        >>> train({"model": {"family": "linear"}, "train": {"epochs": 1}}, data=(x, y)).recipe.data.name
        'python'
    """
    from ..data import prepare
    from ..data.user import as_raw

    recipe = as_recipe(experiment, own_data=data is not None and not isinstance(data, Data))
    if data is not None and not isinstance(data, Data):
        data = prepare(as_raw(data, "data", num_workers=num_workers), recipe.data, recipe.seed)
    return Trainer(copy.copy(recipe), data, out_dir, on_epoch_end, evaluate_test, resume, callbacks=callbacks).fit()


def as_recipe(experiment: Recipe | dict | str | Path, own_data: bool = False) -> Recipe:
    """A Recipe from a Recipe, a dict or a YAML path; with ``own_data`` (``data=`` given in Python) the data
    section names the ``python`` dataset (its other fields, e.g. val_fraction or kind, are kept)."""
    from ..config import load_recipe, validate_recipe
    from ..data.user import NAME

    if isinstance(experiment, Recipe):
        if own_data and experiment.data.name != NAME:
            raise ConfigError(f"data.name: {experiment.data.name!r} names a dataset, but data= was given too; "
                              f"leave data.name out (or set it to {NAME}) to train on data=")
        return experiment
    if isinstance(experiment, (str, Path)):
        if not own_data:
            return load_recipe(experiment)
        from ..config import read_yaml
        from ..plugins import load_plugins

        raw = read_yaml(experiment)
        load_plugins(raw.get("plugins"), base_dir=Path(experiment).parent)
        return validate_recipe(with_own_data(raw), str(experiment))
    if not isinstance(experiment, dict):
        raise ConfigError(f"experiment: expected a Recipe, a dict or a YAML file path, got {type(experiment).__name__}")
    return validate_recipe(with_own_data(experiment) if own_data else experiment)


def with_own_data(raw: dict) -> dict:
    """``raw`` with ``data.name: python`` (the data given in Python); another dataset name is an error."""
    from ..data.user import NAME

    data = raw.get("data") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"data: expected a mapping of data options, got {data!r}")
    if data.get("name", NAME) != NAME:
        raise ConfigError(f"data.name: {data['name']!r} names a dataset, but data= was given too; leave data.name "
                          f"out (or set it to {NAME}) to use data=")
    return {**raw, "data": {**data, "name": NAME}}
