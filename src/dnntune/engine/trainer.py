"""The one training path: a concrete Recipe and its Data in, a RunResult out.

The trainer knows nothing of search: it calls an optional ``on_epoch_end(epoch, metrics) -> bool``
after each epoch, and stops when that returns True (the search layer hangs pruning on it).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import Recipe
from ..data import Data, TensorLoader, load_data
from ..data.augment import build_augmenter
from ..errors import ConfigError, TrainingDiverged
from ..models import InputSpec, build_model, count_params
from . import checkpoint as ckpt
from .losses import build_loss
from .metrics import compute_metrics, default_metric, direction, is_better, tie_loss
from .optim import build_optimizer, weight_penalty_params
from .schedules import Schedule

EpochHook = Callable[[int, dict], "bool | None"]


@dataclass
class RunResult:
    """What one training run produced."""

    recipe: Recipe
    metrics: dict[str, dict]
    history: list[dict]
    epochs: int
    best_epoch: int | None
    stopped: str
    wall_seconds: float
    params: int
    model: nn.Module = field(repr=False)
    out_dir: Path | None = None

    def summary(self) -> dict:
        return {"metrics": self.metrics, "epochs": self.epochs, "best_epoch": self.best_epoch,
                "stopped": self.stopped, "wall_seconds": round(self.wall_seconds, 3), "params": self.params}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} requested but CUDA is not available; use auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.device: mps requested but not available; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def recipe_hash(recipe: Recipe) -> str:
    """Identity of a run for resuming: everything but the search section."""
    d = recipe.to_dict()
    d.pop("search", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _git_hash() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5, cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _env(device: torch.device) -> dict:
    from .. import __version__

    return {"dnntune": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device), "threads": torch.get_num_threads(), "git": _git_hash()}


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Model outputs for a whole split, in eval mode, batched."""
    model.eval()
    outs = [model(x[i:i + batch_size].to(device, non_blocking=True)) for i in range(0, len(x), batch_size)]
    return torch.cat(outs).float() if outs else torch.empty(0)


class Trainer:
    """Train one recipe. ``fit`` is the only entry point; see :func:`train` for the one-call form."""

    def __init__(self, recipe: Recipe, data: Data | None = None, out_dir: str | Path | None = None,
                 on_epoch_end: EpochHook | None = None, evaluate_test: bool = True, resume: bool = True,
                 max_epochs: int | None = None, replay: list[bool] | None = None):
        """``replay``: with no validation split (the final retrain on train+val, or ``data.val_fraction: 0``),
        the epochs at which the validation metric improved in an earlier run of the recipe (its curves'
        ``improved`` column), so ``schedule.name: plateau`` and ``train.batch_growth.on_plateau`` act at the
        same epochs as in that run instead of never (growth) or every ``patience`` epochs (plateau)."""
        self.recipe = recipe
        self.replay = replay
        self.data = data
        self.out_dir = Path(out_dir) if out_dir else None
        self.hooks: list[EpochHook] = [on_epoch_end] if on_epoch_end else []
        self.evaluate_test = evaluate_test
        self.resume = resume
        self.max_epochs = max_epochs

    def add_hook(self, hook: EpochHook) -> None:
        self.hooks.append(hook)

    # --- set-up -----------------------------------------------------------------------------------
    def _setup(self):
        r = self.recipe
        if r.train.threads:
            torch.set_num_threads(r.train.threads)
        seed_everything(r.seed)
        if self.data is None:
            self.data = load_data(r.data, r.seed)
        data = self.data
        self.device = resolve_device(r.train.device)
        spec = InputSpec(data.kind, data.input_shape, data.name)
        self.model = build_model(r.model, spec, data.num_outputs).to(self.device)
        self.loss_fn = build_loss(r.loss, data.task, data.num_outputs)
        self.optimizer = build_optimizer(r.optim, self.model)
        self.augment = build_augmenter(r.augment, data)
        self.metric = r.train.metric or default_metric(data.task)
        self.direction = direction(self.metric, data.task)
        self.l1_params = weight_penalty_params(self.model) if r.train.l1 > 0 else []
        self.amp = r.train.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.gen = torch.Generator().manual_seed(r.seed)
        on_dev = r.data.in_memory is not False
        self.x_train = data.train.x.to(self.device) if on_dev else data.train.x
        self.y_train = data.train.y.to(self.device) if on_dev else data.train.y
        self.batch_size = r.train.batch_size
        self.steps_per_epoch0 = max(math.ceil(len(data.train) / self.batch_size), 1)
        self.schedule = Schedule(r.schedule, r.optim.lr, self.steps_per_epoch0,
                                 self.steps_per_epoch0 * r.train.epochs)

    def _loader(self):
        if self.recipe.data.in_memory is False:
            ds = torch.utils.data.TensorDataset(self.x_train, self.y_train)
            return torch.utils.data.DataLoader(ds, batch_size=self.batch_size, shuffle=True, generator=self.gen,
                                               drop_last=len(ds) % self.batch_size == 1)
        return TensorLoader(self.x_train, self.y_train, self.batch_size, shuffle=True, generator=self.gen)

    # --- one epoch ----------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> float:
        model, opt, loss_fn, dev = self.model, self.optimizer, self.loss_fn, self.device
        model.train()
        loader = self._loader()
        n_batches = len(loader)
        total = torch.zeros((), device=dev)
        seen = 0
        l1 = self.recipe.train.l1
        clip = self.recipe.train.grad_clip
        autocast = (lambda: torch.autocast("cuda")) if self.amp else contextlib.nullcontext
        last_lr = None
        for i, (xb, yb) in enumerate(loader):
            if xb.device != dev:
                xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            # the schedule runs in epochs, so a growing batch size keeps its shape
            lr = self.schedule.lr_at((epoch + i / n_batches) * self.steps_per_epoch0)
            if lr != last_lr:
                for g in opt.param_groups:
                    g["lr"] = lr
                last_lr = lr
            if self.augment is not None:
                xb, yb = self.augment(xb, yb)
            with autocast():
                out = model(xb)
                loss = loss_fn(out, yb)
            if l1 > 0:
                loss = loss + l1 * sum(p.abs().sum() for p in self.l1_params)
            opt.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                if clip:
                    self.scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                self.scaler.step(opt)
                self.scaler.update()
            else:
                loss.backward()
                if clip:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
            total.add_(loss.detach(), alpha=len(xb))
            seen += len(xb)
        return float(total) / max(seen, 1)

    def _evaluate(self, split, confusion: bool = False) -> dict:
        d = self.data
        out = predict(self.model, split.x, self.recipe.train.eval_batch_size, self.device)
        y = split.y.to(out.device)
        with torch.no_grad():
            loss = float(self.loss_fn(out.to(self.device), split.y.to(self.device)))
        if d.y_std is not None:  # back to the target's own units
            out = out * d.y_std + d.y_mean if out.ndim == y.ndim else out * d.y_std.view(-1) + d.y_mean.view(-1)
            y = y * d.y_std + d.y_mean
        res = compute_metrics(d.task, out, y, d.num_outputs, confusion=confusion) if math.isfinite(loss) else {}
        res["loss"] = loss
        return res

    # --- the loop -------------------------------------------------------------------------------------
    def fit(self) -> RunResult:
        t0 = time.perf_counter()
        self._setup()
        r, data = self.recipe, self.data
        has_val = len(data.val) > 0
        epochs = r.train.epochs if self.max_epochs is None else min(self.max_epochs, r.train.epochs)
        es = r.train.early_stopping
        growth = r.train.batch_growth
        if not has_val and self.replay is None:
            needs = [key for key, on in (("schedule.name: plateau", r.schedule.name == "plateau"),
                                         ("train.batch_growth.on_plateau", growth and growth.on_plateau),
                                         ("train.early_stopping.patience", es.patience is not None)) if on]
            if needs:
                raise ConfigError(f"{needs[0]}: needs a validation split, and {data.name} has none "
                                  f"(data.val_fraction: 0); set data.val_fraction > 0 or remove it")
        history: list[dict] = []
        best_value, best_epoch, best_state = None, None, None
        best_loss = math.inf  # breaks ties of the metric: a saturated accuracy (100% of a small val split)
        since_best = since_growth_best = 0
        start_epoch = 0
        elapsed_before = 0.0
        ckpt_path = self.out_dir / "checkpoint.pt" if (self.out_dir and r.train.checkpoint) else None
        rhash = recipe_hash(r)
        if ckpt_path and self.resume and ckpt_path.exists():
            state = ckpt.load_checkpoint(ckpt_path)
            if state.get("recipe_hash") == rhash:
                self.model.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
                self.schedule.load_state_dict(state["schedule"])
                self.gen.set_state(state["gen"])
                torch.set_rng_state(state["rng"])
                history = list(state["history"])
                start_epoch = int(state["epoch"]) + 1
                best_value, best_epoch = state["best_value"], state["best_epoch"]
                best_loss = state.get("best_loss", math.inf)
                best_state = state.get("best_state")
                since_best, since_growth_best = int(state["since_best"]), int(state["since_growth_best"])
                self.batch_size = int(state["batch_size"])
                elapsed_before = float(state.get("elapsed", 0.0))
        stopped = "completed"
        curves = self.out_dir / "curves.jsonl" if self.out_dir else None
        if curves is not None:
            ckpt.atomic_write_text(curves, "".join(json.dumps(h) + "\n" for h in history))
        epoch = start_epoch - 1
        last_save, saved_epoch = t0, start_epoch
        for epoch in range(start_epoch, epochs):
            te = time.perf_counter()
            lr_start = self.schedule.lr_at(epoch * self.steps_per_epoch0)
            train_loss = self._train_epoch(epoch)
            row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": lr_start, "batch_size": self.batch_size}
            if not math.isfinite(train_loss):
                row["seconds"] = time.perf_counter() - te
                history.append(row)
                if curves is not None:
                    with open(curves, "a") as f:
                        f.write(json.dumps(row) + "\n")
                kept = (f"; the last good checkpoint (epoch {saved_epoch}) and curves are in {self.out_dir}"
                        if ckpt_path and saved_epoch > 0 else "")
                raise TrainingDiverged(
                    f"training diverged: the loss became {train_loss} at epoch {epoch + 1} "
                    f"(lr {lr_start:.3g}){kept}. Lower optim.lr, add schedule.warmup_epochs or set "
                    f"train.grad_clip.", epoch + 1)
            improved = False
            if has_val:
                val = self._evaluate(data.val)
                row.update({f"val_{k}": v for k, v in val.items()})
                value = val.get(self.metric, float("nan"))
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"training diverged: validation {self.metric} is {value} at epoch {epoch + 1}. "
                        f"Lower optim.lr or set train.grad_clip.", epoch + 1)
                loss = tie_loss(val)
                improved = is_better(value, best_value, self.direction, es.min_delta)
                if improved or (value == best_value and loss < best_loss):  # a tie only moves the best epoch
                    best_value, best_loss, best_epoch = value, loss, epoch + 1
                    if es.restore_best:
                        best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                if improved:  # patience, plateau schedules and batch growth count real improvements only
                    since_best = since_growth_best = 0
                else:
                    since_best += 1
                    since_growth_best += 1
                row["improved"] = int(improved)
            elif self.replay is not None:  # no validation: the improvements of the run being replayed
                improved = epoch < len(self.replay) and bool(self.replay[epoch])
                since_growth_best = 0 if improved else since_growth_best + 1
            self.schedule.on_epoch_end(improved)
            row["seconds"] = time.perf_counter() - te
            history.append(row)
            if curves is not None:
                with open(curves, "a") as f:
                    f.write(json.dumps(row) + "\n")
            stop = es.patience is not None and has_val and since_best >= es.patience
            if stop:
                stopped = "early_stopping"
            if growth is not None:
                grow = (growth.every_epochs and (epoch + 1) % growth.every_epochs == 0) or (
                    growth.on_plateau and since_growth_best >= growth.on_plateau)
                if grow:
                    self.batch_size = min(int(self.batch_size * growth.factor), growth.max_batch_size,
                                          len(data.train))
                    since_growth_best = 0
            last = stop or epoch == epochs - 1
            if ckpt_path is not None and (last or time.perf_counter() - last_save >= r.train.checkpoint_every):
                # saved before the hooks run: a hook that raises loses nothing the checkpoint holds
                last_save = time.perf_counter()
                saved_epoch = epoch + 1
                ckpt.save_checkpoint(ckpt_path, {
                    "recipe_hash": rhash, "epoch": epoch, "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                    "gen": self.gen.get_state(), "rng": torch.get_rng_state(), "history": history,
                    "best_value": best_value, "best_loss": best_loss, "best_epoch": best_epoch,
                    "best_state": best_state, "since_best": since_best, "since_growth_best": since_growth_best,
                    "batch_size": self.batch_size, "elapsed": elapsed_before + time.perf_counter() - t0})
            for hook in self.hooks:
                if hook(epoch + 1, dict(row)):
                    stopped, stop = "callback", True
            if stop:
                break
        if best_state is not None and es.restore_best:
            self.model.load_state_dict(best_state)
        metrics = {"train": self._evaluate(data.train)}
        if has_val:
            metrics["val"] = self._evaluate(data.val, confusion=True)
        if self.evaluate_test:
            metrics["test"] = self._evaluate(data.test, confusion=True)
        result = RunResult(recipe=r, metrics=metrics, history=history, epochs=len(history), best_epoch=best_epoch,
                           stopped=stopped, wall_seconds=elapsed_before + time.perf_counter() - t0,
                           params=count_params(self.model), model=self.model, out_dir=self.out_dir)
        if self.out_dir is not None:
            self._write(result)
        return result

    def _write(self, result: RunResult) -> None:
        out = self.out_dir
        ckpt.save_weights(out / "model.safetensors", result.model)
        ckpt.atomic_write_text(out / "recipe.yaml", result.recipe.to_yaml())
        summary = result.summary()
        summary.update({"metric": self.metric, "direction": self.direction, "data": self.data.describe(),
                        "env": _env(self.device)})
        ckpt.write_json(out / "summary.json", summary)
        if result.history:
            keys = list(dict.fromkeys(k for h in result.history for k in h))
            lines = [",".join(keys)] + [",".join("" if h.get(k) is None else repr(h.get(k)) for k in keys)
                                        for h in result.history]
            ckpt.atomic_write_text(out / "curves.csv", "\n".join(lines) + "\n")


def train(recipe: Recipe, data: Data | None = None, out_dir: str | Path | None = None,
          on_epoch_end: EpochHook | None = None, evaluate_test: bool = True, resume: bool = True) -> RunResult:
    """Train one concrete recipe; write the run folder if ``out_dir`` is given.

    Example:
        >>> from dnntune.config import validate_recipe
        >>> r = validate_recipe({"data": {"name": "iris"}, "model": {"family": "linear"}, "train": {"epochs": 2}})
        >>> result = train(r)
        >>> sorted(result.metrics)
        ['test', 'train', 'val']
    """
    return Trainer(copy.copy(recipe), data, out_dir, on_epoch_end, evaluate_test, resume).fit()
