"""Engine overhead: the Trainer vs a hand-written loop, TensorLoader vs DataLoader, peak memory of `train`.

Every comparison runs its arms side by side in one process, interleaved (A, B, A, B, ...), and
reports the median of each arm and their ratio: the machine is shared, so only ratios measured
under the same conditions mean anything.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from dnntune.config import validate_recipe
from dnntune.data import TensorLoader, load_data
from dnntune.engine import Trainer
from dnntune.engine import checkpoint as ckpt_mod
from dnntune.engine import trainer as trainer_mod
from dnntune.models import InputSpec, build_model

ROOT = Path(__file__).resolve().parent.parent

# (label, data section, model section, batch size, epochs full, epochs quick)
CASES = [
    ("MNIST-1D / cnn1d", {"name": "mnist1d"},
     {"family": "cnn1d", "channels": 64, "depth": 3, "kernel": 5, "pooling": "max", "batch_norm": True,
      "head": "flatten"}, 128, 5, 1),
    ("digits / mlp", {"name": "digits"}, {"family": "mlp", "width": 256, "depth": 2}, 64, 30, 2),
]
LR = 3e-3
WEIGHT_DECAY = 0.0  # 0 so that both arms do bit-for-bit the same updates (the engine splits decay groups)


def _recipe(data: dict, model: dict, batch: int, epochs: int, threads: int):
    return validate_recipe({
        "seed": 0, "data": data, "model": model, "loss": {"name": "cross_entropy"},
        "optim": {"name": "adamw", "lr": LR, "weight_decay": WEIGHT_DECAY}, "schedule": {"name": "constant"},
        "train": {"epochs": epochs, "batch_size": batch, "threads": threads},
    })


def _samples_per_epoch(n: int, bs: int) -> int:
    return n - 1 if n % bs == 1 else n  # both arms drop a last batch of one sample (batch norm)


def _interleave(arms: dict, repeats: int, warmup: bool) -> dict[str, list[float]]:
    """Run ``arms`` (name -> callable returning seconds) as A, B, A, B, ...; every arm's times."""
    if warmup:
        for fn in arms.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(repeats):
        for name, fn in arms.items():
            times[name].append(fn())
    return times


# --- 1. engine vs plain loop ---------------------------------------------------------------------------------


def plain_fit(recipe, data) -> torch.nn.Module:
    """What a competent user writes by hand: randperm over in-memory tensors, no per-batch .item()."""
    torch.set_num_threads(recipe.train.threads)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model, InputSpec(data.kind, data.input_shape, data.name), data.num_outputs)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.optim.lr, weight_decay=recipe.optim.weight_decay)
    gen = torch.Generator().manual_seed(recipe.seed)
    x, y = data.train.x, data.train.y
    n, bs = len(y), recipe.train.batch_size
    stop = _samples_per_epoch(n, bs)
    model.train()
    for _ in range(recipe.train.epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, stop, bs):
            idx = perm[i:i + bs]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return model


class TimedTrainer(Trainer):
    """The Trainer with timers around its per-epoch parts (a handful of perf_counter calls per epoch)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.t: dict[str, float] = defaultdict(float)
        self._val_next = False
        self._phase = "final eval"

    def _setup(self):
        t0 = time.perf_counter()
        super()._setup()
        self.t["setup (model, optimizer)"] += time.perf_counter() - t0

    def _train_epoch(self, epoch):
        t0 = time.perf_counter()
        out = super()._train_epoch(epoch)
        self.t["train loop"] += time.perf_counter() - t0
        self._val_next = True
        return out

    def _evaluate(self, split, confusion=False):
        # the first evaluation after an epoch is its validation; the ones after the loop are the final ones
        self._phase = "per-epoch validation" if self._val_next else "final eval (train/val/test)"
        self._val_next = False
        t0 = time.perf_counter()
        out = super()._evaluate(split, confusion)
        self.t[self._phase] += time.perf_counter() - t0
        return out

    def _write(self, result):
        t0 = time.perf_counter()
        super()._write(result)
        self.t["run folder (weights, summary, git)"] += time.perf_counter() - t0


@contextlib.contextmanager
def _timed_internals(trainer_box: list):
    """Time compute_metrics (scikit-learn) and save_checkpoint inside the trainer, restored afterwards."""
    orig_metrics, orig_save = trainer_mod.compute_metrics, ckpt_mod.save_checkpoint

    def metrics(*a, **kw):
        t0 = time.perf_counter()
        out = orig_metrics(*a, **kw)
        tr = trainer_box[0]
        tr.t[f"  of which metrics, {tr._phase.split(' (')[0]}"] += time.perf_counter() - t0
        return out

    def save(*a, **kw):
        t0 = time.perf_counter()
        out = orig_save(*a, **kw)
        trainer_box[0].t["checkpoint every epoch"] += time.perf_counter() - t0
        return out

    trainer_mod.compute_metrics, ckpt_mod.save_checkpoint = metrics, save
    try:
        yield
    finally:
        trainer_mod.compute_metrics, ckpt_mod.save_checkpoint = orig_metrics, orig_save


def same_work_check(recipe, data) -> float:
    """Max |difference| of all weights and BN buffers after one epoch of each arm: 0 means identical work."""
    r1 = recipe.model_copy(update={"train": recipe.train.model_copy(update={"epochs": 1})})
    plain = plain_fit(r1, data).state_dict()
    eng = Trainer(r1, data=data, evaluate_test=False).fit().model.state_dict()
    return max(float((plain[k].double() - eng[k].double()).abs().max()) for k in plain)


def _fit_seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


PARTS = ["train loop", "setup (model, optimizer)", "per-epoch validation", "  of which metrics, per-epoch validation",
         "final eval (train/val/test)", "  of which metrics, final eval", "checkpoint every epoch",
         "run folder (weights, summary, git)"]


def _compare(label: str, recipe, data, repeats: int, quick: bool, tmp_root: Path) -> tuple[str, str]:
    """One configuration: the three arms interleaved; a throughput row and a breakdown row."""
    parts: list[dict] = []

    def engine():
        res = Trainer(recipe, data=data).fit()
        assert res.epochs == recipe.train.epochs

    def timed():
        tr = TimedTrainer(recipe, data=data, out_dir=tempfile.mkdtemp(dir=tmp_root), resume=False)
        with _timed_internals([tr]):
            tr.t["total fit"] = _fit_seconds(tr.fit)
        parts.append(dict(tr.t))
        return tr.t["total fit"]

    t0 = time.perf_counter()
    times = _interleave({"plain": lambda: _fit_seconds(lambda: plain_fit(recipe, data)),
                         "engine": lambda: _fit_seconds(engine), "engine_out": timed}, repeats, warmup=not quick)
    print(f"  {label}, {recipe.train.threads} thread(s): {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if not quick:
        del parts[0]  # the warm-up run
    t = recipe.train
    n_samples = t.epochs * _samples_per_epoch(len(data.train), t.batch_size)
    med = {k: statistics.median(v) for k, v in times.items()}
    sps = {k: n_samples / v for k, v in med.items()}
    paired = [p / e for p, e in zip(times["plain"], times["engine"])]
    part = {k: statistics.median(p.get(k, 0.0) for p in parts) for k in {k for p in parts for k in p}}
    loop, val = part["train loop"], part.get("per-epoch validation", 0.0)
    row = (f"| {label} | {t.threads} | {t.batch_size} | {t.epochs} | {sps['plain']:,.0f} | {sps['engine']:,.0f} | "
           f"**{sps['engine'] / sps['plain']:.3f}** ({min(paired):.2f}–{max(paired):.2f}) | "
           f"{med['plain'] / loop:.3f} | {med['plain'] / (loop + val):.3f} | {sps['engine_out']:,.0f} | "
           f"{sps['engine_out'] / sps['plain']:.3f} |")
    total = part.pop("total fit")
    other = total - sum(v for k, v in part.items() if not k.startswith("  "))
    cells = [f"{part.get(k, 0.0) * 1e3:,.0f} ms ({part.get(k, 0.0) / total:.1%})" for k in PARTS]
    cells.append(f"{other * 1e3:,.0f} ms ({other / total:.1%})")
    return row, f"| {label} | {t.threads} | {total * 1e3:,.0f} ms | " + " | ".join(cells) + " |"


def engine_vs_plain(quick: bool) -> str:
    repeats = 1 if quick else 5
    thread_counts = (1,) if quick else (1, 2)
    rows, breakdown, checks = [], [], []
    tmp_root = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    try:
        for label, data_sec, model_sec, bs, epochs_full, epochs_quick in CASES:
            epochs = epochs_quick if quick else epochs_full
            data = load_data(_recipe(data_sec, model_sec, bs, 1, 1).data, 0)
            for threads in thread_counts:
                recipe = _recipe(data_sec, model_sec, bs, epochs, threads)
                if threads == 1:
                    checks.append((label, same_work_check(recipe, data)))
                row, parts = _compare(label, recipe, data, repeats, quick, tmp_root)
                rows.append(row)
                breakdown.append(parts)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    cfg = "; ".join(f"{label}: batch {bs}, {eq if quick else ef} epochs"
                    for label, _, _, bs, ef, eq in CASES)
    lines = [
        "### Engine vs a hand-written PyTorch loop",
        "",
        "Same model (built by the model registry with the same seed), same in-memory tensors (train split of "
        f"the prepared data), same batch size, AdamW lr {LR} constant, weight decay {WEIGHT_DECAY}, "
        "cross-entropy, same thread count (`torch.set_num_threads`) in both arms. The plain loop is "
        "`randperm` indexing + `zero_grad/forward/loss/backward/step`, no per-batch `.item()`, no "
        "validation. The engine arm is `Trainer(recipe, data=data).fit()` exactly as it runs: validation "
        "each epoch, the final train/val/test evaluation, no `out_dir` (the `+ out_dir` arm adds the "
        "per-epoch checkpoint and the run folder). Samples/s = training samples processed over the whole "
        f"call. {cfg}. Arms interleaved plain, engine, engine + out_dir (this arm also carries the timers of the "
        "breakdown below: a few `perf_counter` calls per epoch); "
        f"{repeats} repeat(s){'' if quick else ' after one warm-up of each arm'}, median per arm. "
        "In brackets: range of the per-repeat paired ratios. *Loop only* = plain time / the engine's time "
        "inside `_train_epoch` (from the out_dir arm's timers); *per epoch* = plain time / (train loop + per-epoch "
        "validation), the steady-state ratio of a long run, without the one-off setup and final evaluation.",
        "",
        "| data / model | threads | batch | epochs | plain samples/s | engine samples/s | engine / plain | "
        "loop only | per epoch | engine + out_dir samples/s | + out_dir / plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Where the engine's time goes (the `+ out_dir` arm; median per part over the repeats, share of "
        "the whole `fit`):",
        "",
        "| data / model | threads | fit | train loop | setup | per-epoch val | ↳ metrics | final eval | "
        "↳ metrics | checkpoint | run folder | other |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *breakdown,
        "",
        "Same-work check (1 epoch each, 1 thread): max |Δ| over all weights and buffers between the arms = "
        + ", ".join(f"{label}: {d:.1e}" for label, d in checks) + ".",
    ]
    return "\n".join(lines)


# --- 2. TensorLoader vs DataLoader -------------------------------------------------------------------------


def loader_bench(quick: bool) -> str:
    torch.set_num_threads(1)
    data = load_data(_recipe({"name": "mnist1d"}, {"family": "mlp"}, 128, 1, 1).data, 0)
    x, y = data.train.x, data.train.y
    repeats = 1 if quick else 7
    ep_tl, ep_dl = (5, 1) if quick else (40, 4)
    rows = []

    def iterate(loader, epochs):
        seen, acc = 0, torch.zeros(())
        t0 = time.perf_counter()
        for _ in range(epochs):
            for xb, yb in loader:
                acc += xb.sum()  # touch every batch
                seen += len(yb)
        return seen / (time.perf_counter() - t0)

    for bs in (32, 128, 512):
        gen = torch.Generator().manual_seed(0)
        tl = TensorLoader(x, y, bs, shuffle=True, generator=gen)
        dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=bs, shuffle=True)
        # the arms return samples/s; _interleave's bookkeeping is the same
        res = _interleave({"tl": lambda tl=tl: iterate(tl, ep_tl), "dl": lambda dl=dl: iterate(dl, ep_dl)},
                          repeats, warmup=not quick)
        tl_s, dl_s = statistics.median(res["tl"]), statistics.median(res["dl"])
        rows.append(f"| {bs} | {tl_s:,.0f} | {dl_s:,.0f} | **{tl_s / dl_s:.1f}×** |")
    return "\n".join([
        "### TensorLoader vs torch DataLoader",
        "",
        f"Pure iteration over the MNIST-1D training tensors ({tuple(x.shape)} float32, shuffle on), each batch "
        "touched with `.sum()`. DataLoader over a `TensorDataset`, default `num_workers=0` and default "
        f"collate. 1 thread. Per repeat: {ep_tl} epochs of TensorLoader, {ep_dl} of DataLoader; arms "
        f"interleaved, {repeats} repeat(s), median samples/s.",
        "",
        "| batch | TensorLoader samples/s | DataLoader samples/s | ratio |",
        "|---|---|---|---|",
        *rows,
    ])


# --- 3. peak memory of `dnntune train` ----------------------------------------------------------------------


# A bare interpreter that runs the command and reports RUSAGE_CHILDREN. Measuring from this (large) process
# directly would be wrong: a child's ru_maxrss starts from the RSS of the process that forked it (Linux
# carries the pre-exec high-water mark over), so every child would show at least this process's RSS.
_LAUNCHER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[2:]).returncode; "
             "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
             "sys.exit(rc)")


def _peak_rss(cmds: list[list[str]], cwd: Path, parallel: bool) -> list[tuple[float, float]]:
    """Run each command to completion under a small launcher: its peak RSS in MB and wall seconds.

    ``parallel`` (quick mode) starts them all at once: peak RSS is per process, only wall times suffer.
    """
    with tempfile.TemporaryDirectory() as d:
        out, running = [], []

        def finish(i, p, t0, log):
            rc = p.wait()
            dt = time.perf_counter() - t0
            log.close()
            print(f"  {' '.join(Path(c).name for c in cmds[i][:3])}...: {dt:.0f} s", file=sys.stderr)
            if rc != 0:
                text = (Path(d) / f"log{i}").read_text()[-2000:]
                raise RuntimeError(f"{' '.join(cmds[i])} failed ({rc}):\n{text}")
            out.append((int((Path(d) / f"rss{i}").read_text()) / 1024, dt))  # Linux: kilobytes

        for i, cmd in enumerate(cmds):
            log = open(Path(d) / f"log{i}", "wb")
            t0 = time.perf_counter()
            p = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, str(Path(d) / f"rss{i}"), *cmd],
                                 stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
            running.append((i, p, t0, log))
            if not parallel:
                finish(*running.pop())
        for job in running:
            finish(*job)
        return out


def _dnntune_cmd() -> list[str]:
    script = Path(sys.executable).parent / "dnntune"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dnntune"]


DIGITS_INLINE = """\
# inline digits recipe (examples/digits-strong.yaml did not exist when this benchmark ran)
seed: 0
data: {name: digits}
model: {family: mlp, width: 256, depth: 2}
optim: {name: adamw, lr: 0.003, weight_decay: 0.05}
schedule: {name: cosine, warmup_epochs: 1}
train: {epochs: 30, batch_size: 64}
"""


def memory_bench(quick: bool) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    try:
        digits = ROOT / "examples" / "digits-strong.yaml"
        if not digits.exists():
            digits = tmp / "digits-inline.yaml"
            digits.write_text(DIGITS_INLINE)
        extra = ["--set", "train.epochs=1"] if quick else []
        baselines = [("`python -c 'import torch'`", [sys.executable, "-c", "import torch"]),
                     ("`python -c 'import dnntune.engine'`", [sys.executable, "-c", "import dnntune.engine"]),
                     ("the same + one `torch.optim.AdamW(...)` (its first construction imports `torch._dynamo`)",
                      [sys.executable, "-c", "import dnntune.engine, torch; "
                       "torch.optim.AdamW([torch.zeros(1, requires_grad=True)])"])]
        jobs = baselines[1:2] if quick else baselines
        for i, recipe in enumerate([ROOT / "examples" / "mnist1d-strong.yaml", digits]):
            shown = recipe.relative_to(ROOT) if recipe.is_relative_to(ROOT) else "inline digits recipe (below)"
            jobs.append((f"`dnntune train {shown} --quiet --out TMP{' ' + ' '.join(extra) if extra else ''}`",
                         _dnntune_cmd() + ["train", str(recipe), "--quiet", "--out", str(tmp / f"run{i}"), *extra]))
        results = _peak_rss([cmd for _, cmd in jobs], ROOT, parallel=quick)
        rows = [f"| {what} | {mb:,.0f} | {dt:.1f} |" for (what, _), (mb, dt) in zip(jobs, results)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    note = "" if (ROOT / "examples" / "digits-strong.yaml").exists() else (
        "\n\nInline digits recipe:\n\n```yaml\n" + DIGITS_INLINE.split("\n", 1)[1] + "```")
    return "\n".join([
        "### Peak memory of `dnntune train`",
        "",
        "Each command runs as its own child process (default torch threads, dataset cache already warm); "
        "peak RSS is `ru_maxrss` of that child alone, read by a bare launcher interpreter (a child "
        "forked straight from the benchmark process would inherit the benchmark's own RSS as its high-water mark). "
        "Wall time is informational only (the machine is shared"
        f"{'; quick mode runs them concurrently' if quick else ''}).",
        "",
        "| command | peak RSS (MB) | wall (s) |",
        "|---|---|---|",
        *rows,
    ]) + note


def run(quick: bool) -> str:
    old_threads = torch.get_num_threads()
    try:
        parts = [engine_vs_plain(quick), loader_bench(quick), memory_bench(quick)]
    finally:
        torch.set_num_threads(old_threads)
    return "## Engine overhead\n\n" + "\n\n".join(parts) + "\n"
