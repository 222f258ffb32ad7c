"""Engine overhead: the Trainer vs a hand-written loop, TensorLoader vs DataLoader, peak memory of `train`.

Every comparison runs its arms side by side in one process, interleaved (A, B, A, B, ...), and
reports the median of each arm and their ratio: the machine is shared, so only ratios measured
under the same conditions mean anything. With one thread the ratios are also taken on process CPU
time, which other processes on the machine barely disturb.
"""

from __future__ import annotations

import contextlib
import os
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
      "head": "flatten"}, 128, 4, 1),
    ("digits / mlp", {"name": "digits"}, {"family": "mlp", "width": 256, "depth": 2}, 64, 20, 2),
]
LR = 3e-3
WEIGHT_DECAY = 0.0  # 0 so that both arms do bit-for-bit the same updates (the engine splits decay groups)
REPEATS = 7  # at most, per configuration (full run)
BUDGET_S = 70.0  # no new repeat of a configuration starts after this many seconds (at least one is done)


def _recipe(data: dict, model: dict, batch: int, epochs: int, threads: int):
    return validate_recipe({
        "seed": 0, "data": data, "model": model, "loss": {"name": "cross_entropy"},
        "optim": {"name": "adamw", "lr": LR, "weight_decay": WEIGHT_DECAY}, "schedule": {"name": "constant"},
        "train": {"epochs": epochs, "batch_size": batch, "threads": threads},
    })


def _with_epochs(recipe, epochs: int):
    return recipe.model_copy(update={"train": recipe.train.model_copy(update={"epochs": epochs})})


def _samples_per_epoch(n: int, bs: int) -> int:
    return n - 1 if n % bs == 1 else n  # both arms drop a last batch of one sample (batch norm)


def _interleave(arms: dict, repeats: int, warmup: dict | None = None, budget: float | None = None) -> dict:
    """Call ``arms`` (name -> callable) as A, B, A, B, ... ``repeats`` times; every arm's results in order.

    ``warmup`` (name -> callable) runs once first, untimed. With ``budget`` (seconds), no new round
    starts once the budget is spent; at least one round always runs.
    """
    for fn in (warmup or {}).values():
        fn()
    t0 = time.perf_counter()
    out: dict[str, list] = {k: [] for k in arms}
    for i in range(repeats):
        if i and budget is not None and time.perf_counter() - t0 > budget:
            break
        for name, fn in arms.items():
            out[name].append(fn())
    return out


class Clock:
    """Wall and process CPU seconds of a block: ``with Clock() as c: ...; c.wall, c.cpu``."""

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self._w, time.process_time() - self._c


# --- 1. engine vs plain loop ---------------------------------------------------------------------------------


def _plain_epochs(recipe, data):
    """plain_fit's loop as a closure that runs one more epoch per call (model and optimizer persist)."""
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model, InputSpec(data.kind, data.input_shape, data.name), data.num_outputs)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.optim.lr, weight_decay=recipe.optim.weight_decay)
    gen = torch.Generator().manual_seed(recipe.seed)
    x, y = data.train.x, data.train.y
    n, bs = len(y), recipe.train.batch_size
    stop = _samples_per_epoch(n, bs)

    def epoch():
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, stop, bs):
            idx = perm[i:i + bs]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return model, epoch


def plain_fit(recipe, data) -> torch.nn.Module:
    """What a competent user writes by hand: randperm over in-memory tensors, no per-batch .item()."""
    torch.set_num_threads(recipe.train.threads)
    model, epoch = _plain_epochs(recipe, data)
    for _ in range(recipe.train.epochs):
        epoch()
    return model


PARTS = ["train loop", "setup", "per-epoch validation", "metrics, per-epoch validation",
         "final eval", "metrics, final eval", "checkpoint", "run folder"]


class TimedTrainer(Trainer):
    """The Trainer with clocks around its parts (a few clock reads per epoch); ``self.t[part] = [wall, cpu]``."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.t: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self._val_next = False
        self.phase = "final eval"

    def add(self, part: str, c: Clock) -> None:
        self.t[part][0] += c.wall
        self.t[part][1] += c.cpu

    def setup(self):
        with Clock() as c:
            super().setup()
        self.add("setup", c)

    def train_epoch(self, epoch):
        with Clock() as c:
            out = super().train_epoch(epoch)
        self.add("train loop", c)
        self._val_next = True
        return out

    def evaluate(self, split, confusion=False):
        # the first evaluation after an epoch is its validation; the ones after the loop are the final ones
        self.phase = "per-epoch validation" if self._val_next else "final eval"
        self._val_next = False
        with Clock() as c:
            out = super().evaluate(split, confusion)
        self.add(self.phase, c)
        return out


@contextlib.contextmanager
def _timed_internals(tr: TimedTrainer):
    """Clock compute_metrics, save_checkpoint and write_run_files inside the trainer (restored afterwards)."""
    orig_metrics, orig_save = trainer_mod.compute_metrics, ckpt_mod.save_checkpoint
    orig_write = ckpt_mod.write_run_files

    def metrics(*a, **kw):
        with Clock() as c:
            out = orig_metrics(*a, **kw)
        tr.add(f"metrics, {tr.phase}", c)
        return out

    def save(*a, **kw):
        with Clock() as c:
            out = orig_save(*a, **kw)
        tr.add("checkpoint", c)
        return out

    def write(*a, **kw):
        with Clock() as c:
            out = orig_write(*a, **kw)
        tr.add("run folder", c)
        return out

    trainer_mod.compute_metrics, ckpt_mod.save_checkpoint, ckpt_mod.write_run_files = metrics, save, write
    try:
        yield
    finally:
        trainer_mod.compute_metrics, ckpt_mod.save_checkpoint = orig_metrics, orig_save
        ckpt_mod.write_run_files = orig_write


def same_work_check(recipe, data) -> float:
    """Max |difference| of all weights and BN buffers after one epoch of each arm: 0 means identical work."""
    r1 = _with_epochs(recipe, 1)
    plain = plain_fit(r1, data).state_dict()
    eng = Trainer(r1, data=data, evaluate_test=False).fit().model.state_dict()
    return max(float((plain[k].double() - eng[k].double()).abs().max()) for k in plain)


def _compare(label: str, recipe, data, quick: bool, tmp_root: Path) -> tuple[str, str]:
    """One configuration: the three arms interleaved; a throughput row and a breakdown row."""
    parts: list[dict] = []

    def plain(r=recipe):
        with Clock() as c:
            plain_fit(r, data)
        return c

    def engine(r=recipe):
        with Clock() as c:
            res = Trainer(r, data=data).fit()
        assert res.epochs == r.train.epochs
        return c

    def engine_out(r=recipe, keep=True):
        tr = TimedTrainer(r, data=data, out_dir=tempfile.mkdtemp(dir=tmp_root), resume=False)
        with _timed_internals(tr), Clock() as c:
            tr.fit()
        if keep:
            parts.append({"fit": [c.wall, c.cpu], **tr.t})
        return c

    one = _with_epochs(recipe, 1)  # warm-up: lazy imports and allocator, not steady state
    warm = None if quick else {"plain": lambda: plain(one), "engine": lambda: engine(one),
                               "engine_out": lambda: engine_out(one, keep=False)}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    runs = _interleave({"plain": plain, "engine": engine, "engine_out": engine_out}, 1 if quick else REPEATS,
                       warm, None if quick else BUDGET_S)
    print(f"  {label}, {recipe.train.threads} thread(s): {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    t = recipe.train
    n_rep = len(runs["plain"])
    n_samples = t.epochs * _samples_per_epoch(len(data.train), t.batch_size)
    wall = {k: statistics.median(c.wall for c in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c.cpu for c in v) for k, v in runs.items()}
    paired = [p.wall / e.wall for p, e in zip(runs["plain"], runs["engine"])]
    # one thread: the derived ratios on CPU time (robust to other jobs); two threads: on wall time
    ci = 1 if t.threads == 1 else 0
    med = cpu if ci else wall
    part = {k: statistics.median(p.get(k, [0.0, 0.0])[ci] for p in parts) for k in {k for p in parts for k in p}}
    loop, val = part["train loop"], part["per-epoch validation"]
    cpu_ratio = f"{cpu['plain'] / cpu['engine']:.3f}" if ci else "–"
    row = (f"| {label} | {t.threads} | {t.batch_size} | {t.epochs} | {n_rep} | {load:.1f} | "
           f"{n_samples / wall['plain']:,.0f} | {n_samples / wall['engine']:,.0f} | "
           f"**{wall['plain'] / wall['engine']:.3f}** ({min(paired):.2f}–{max(paired):.2f}) | {cpu_ratio} | "
           f"{med['plain'] / loop:.3f} | {med['plain'] / (loop + val):.3f} | "
           f"{med['plain'] / med['engine_out']:.3f} |")
    total = part.pop("fit")
    other = total - sum(v for k, v in part.items() if not k.startswith("metrics"))
    cells = [f"{part.get(k, 0.0) * 1e3:,.0f} ({part.get(k, 0.0) / total:.1%})" for k in PARTS]
    cells.append(f"{other * 1e3:,.0f} ({other / total:.1%})")
    brk = (f"| {label} | {t.threads} | {'CPU' if ci else 'wall'} | {total * 1e3:,.0f} | "
           + " | ".join(cells) + " |")
    return row, brk


def engine_vs_plain(quick: bool) -> str:
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
                row, brk = _compare(label, recipe, data, quick, tmp_root)
                rows.append(row)
                breakdown.append(brk)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    cfg = "; ".join(f"{label}: batch {bs}, {eq if quick else ef} epochs" for label, _, _, bs, ef, eq in CASES)
    rounds = "1 round, no warm-up" if quick else (
        f"one untimed 1-epoch warm-up of each arm, then up to {REPEATS} rounds (no new round after "
        f"{BUDGET_S:.0f} s)")
    return "\n".join([
        "### Engine vs a hand-written PyTorch loop",
        "",
        "Both arms get the same model (built by the model registry with the same seed), the same in-memory "
        f"tensors (the train split of the prepared data), the same batch size, AdamW with constant lr {LR} "
        f"and weight decay {WEIGHT_DECAY}, cross-entropy and the same thread count (`torch.set_num_threads`). "
        "The plain loop is `randperm` indexing plus `zero_grad/forward/loss/backward/step`, with no per-batch "
        "`.item()` and no validation. The engine arm is `Trainer(recipe, data=data).fit()` as it normally "
        "runs, with validation after each epoch, the final train/val/test evaluation and no `out_dir`. "
        "The `+ out_dir` arm adds checkpoints (every `train.checkpoint_every` = 30 s and after the last epoch) "
        "and the run folder, and also carries the clocks "
        "for the breakdown below (a few clock reads per epoch). "
        f"Configurations: {cfg}. Arms run interleaved (plain, engine, engine + out_dir): {rounds}. "
        "Each arm reports its median. "
        "*Samples/s* counts training samples over the whole call, on wall time. *wall* is engine/plain "
        "throughput on wall time, with the range of the per-round paired ratios in brackets. *CPU* is the "
        "same ratio on process CPU time (one thread only), which other jobs on the machine barely disturb. "
        "*loop only* is plain time divided by the engine's time inside `Trainer.train_epoch`. *per epoch* is plain "
        "time divided by (train loop + per-epoch validation): the steady state of a long run, without the "
        "one-off setup and final evaluation. These last three ratios are on CPU time with one thread and on "
        "wall time with two. *load* is the 1-minute load average when the configuration started (2 cores).",
        "",
        "| data / model | threads | batch | epochs | rounds | load | plain samples/s | engine samples/s | "
        "engine / plain, wall | CPU | loop only | per epoch | + out_dir / plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Where the engine's time goes: the `+ out_dir` arm, median ms per part over the rounds, with its "
        "share of the whole `fit`.",
        "",
        "| data / model | threads | clock | fit | train loop | setup | per-epoch val | ↳ metrics | final eval "
        "(train/val/test) | ↳ metrics | checkpoint | run folder | other |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *breakdown,
        "",
        "Same-work check (1 epoch each, 1 thread): the largest |Δ| over all weights and buffers between the "
        "two arms is " + ", ".join(f"{label}: {d:.1e}" for label, d in checks) + ".",
    ])


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
        with Clock() as c:
            for _ in range(epochs):
                for xb, yb in loader:
                    acc += xb.sum()  # touch every batch
                    seen += len(yb)
        return seen / c.wall, seen / c.cpu

    for bs in (32, 128, 512):
        gen = torch.Generator().manual_seed(0)
        tl = TensorLoader(x, y, bs, shuffle=True, generator=gen)
        dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=bs, shuffle=True)
        arms = {"tl": lambda tl=tl: iterate(tl, ep_tl), "dl": lambda dl=dl: iterate(dl, ep_dl)}
        res = _interleave(arms, repeats, None if quick else {k: (lambda f=f: f()) for k, f in arms.items()})
        (tl_w, tl_c), (dl_w, dl_c) = ([statistics.median(r[i] for r in res[k]) for i in (0, 1)] for k in ("tl", "dl"))
        rows.append(f"| {bs} | {tl_w:,.0f} | {dl_w:,.0f} | **{tl_w / dl_w:.1f}×** | {tl_c / dl_c:.1f}× |")
    return "\n".join([
        "### TensorLoader vs torch DataLoader",
        "",
        f"Pure iteration over the MNIST-1D training tensors ({tuple(x.shape)} float32, shuffle on), each batch "
        "touched with `.sum()`. DataLoader over a `TensorDataset`, default `num_workers=0` and default "
        f"collate. 1 thread. Per round: {ep_tl} epochs of TensorLoader, {ep_dl} of DataLoader; arms "
        f"interleaved, {'1 round' if quick else f'one untimed warm-up, then {repeats} rounds'}, median samples/s "
        "(wall); the last column is the same ratio on process CPU time.",
        "",
        "| batch | TensorLoader samples/s | DataLoader samples/s | ratio | ratio, CPU time |",
        "|---|---|---|---|---|",
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
    """Run each command to completion under a small launcher: its peak RSS in MiB and wall seconds.

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
# used when examples/digits-strong.yaml does not exist
seed: 0
data: {name: digits}
model: {family: mlp, width: 256, depth: 2}
optim: {name: adamw, lr: 0.003, weight_decay: 0.05}
schedule: {name: cosine, warmup_epochs: 1}
train: {epochs: 30, batch_size: 64}
"""


# Peak RSS is reached within the first epochs (checked on both recipes: the full 40 / 60 epochs peaked
# within 2% of 3 epochs), so the runs are capped to keep the benchmark short on a loaded 2-core machine.
MEM_EPOCHS = 3
MEM_ROUNDS = 3  # runs of each recipe in the full benchmark (median, range)


def memory_bench(quick: bool) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    try:
        digits = ROOT / "examples" / "digits-strong.yaml"
        if not digits.exists():
            digits = tmp / "digits-inline.yaml"
            digits.write_text(DIGITS_INLINE)
        extra = ["--set", f"train.epochs={1 if quick else MEM_EPOCHS}"]
        if quick:  # concurrent children: one thread each, or OpenMP spin-waits make them crawl
            extra += ["--set", "train.threads=1"]
        baselines = [("`python -c 'import torch'`", [sys.executable, "-c", "import torch"]),
                     ("`python -c 'import dnntune.engine'`", [sys.executable, "-c", "import dnntune.engine"]),
                     ("the same + one `torch.optim.AdamW(...)` (its first construction imports `torch._dynamo`)",
                      [sys.executable, "-c", "import dnntune.engine, torch; "
                       "torch.optim.AdamW([torch.zeros(1, requires_grad=True)])"])]
        jobs = baselines[1:2] if quick else baselines
        train_jobs = []
        for recipe in (ROOT / "examples" / "mnist1d-strong.yaml", digits):
            shown = recipe.relative_to(ROOT) if recipe.is_relative_to(ROOT) else "inline digits recipe (below)"
            train_jobs.append((f"`dnntune train {shown} --quiet --out TMP {' '.join(extra)}`", recipe))
        rounds = 1 if quick else MEM_ROUNDS
        cmds = [cmd for _, cmd in jobs] + [  # interleaved; a fresh run folder each time (no resuming)
            _dnntune_cmd() + ["train", str(recipe), "--quiet", "--out", str(tmp / f"run{i}-{r}"), *extra]
            for r in range(rounds) for i, (_, recipe) in enumerate(train_jobs)]
        results = _peak_rss(cmds, ROOT, parallel=quick)
        rows = [f"| {what} | {mb:,.0f} | {dt:.1f} |" for (what, _), (mb, dt) in zip(jobs, results)]
        rest = results[len(jobs):]
        for k, (what, _) in enumerate(train_jobs):
            mine = rest[k::len(train_jobs)]
            mbs, dts = [r[0] for r in mine], [r[1] for r in mine]
            spread = f" ({min(mbs):,.0f}–{max(mbs):,.0f})" if len(mbs) > 1 else ""
            rows.append(f"| {what} | {statistics.median(mbs):,.0f}{spread} | {statistics.median(dts):.1f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    note = "" if (ROOT / "examples" / "digits-strong.yaml").exists() else (
        "\n\nInline digits recipe:\n\n```yaml\n" + DIGITS_INLINE.split("\n", 1)[1] + "```")
    return "\n".join([
        "### Peak memory of `dnntune train`",
        "",
        f"Each command runs as its own child process with {'1 torch thread' if quick else 'the default torch threads'}"
        " and the dataset cache already "
        f"warm. The recipes run {1 if quick else MEM_EPOCHS} epoch(s) (`--set train.epochs=...`): peak RSS is "
        "reached within the first epochs, and the full recipes peaked within 2% of a 3-epoch run when checked. "
        "Peak RSS is `ru_maxrss` of that child alone, read by a bare launcher interpreter (a child "
        "forked straight from the benchmark process would inherit the benchmark's own RSS as its high-water mark). "
        + ("Quick mode runs them once, concurrently. " if quick else
           f"Each recipe runs {MEM_ROUNDS} times, interleaved; the table gives the median and, in brackets, the "
           "range. ")
        + "Wall time is for information only, because the machine is shared.",
        "",
        "| command | peak RSS (MiB) | wall (s) |",
        "|---|---|---|",
        *rows,
    ]) + note


def loop_only(quick: bool) -> str:
    """The training loop alone, epoch against epoch: the callback protocol and the one step path must cost
    nothing measurable. Many short interleaved rounds, so that the machine's drifts hit both arms alike."""
    rounds = 3 if quick else 40
    torch.set_num_threads(1)
    rows = []
    for label, data_s, model_s, batch, _, _ in CASES:
        recipe = _recipe(data_s, model_s, batch, 1000, 1)
        data = load_data(recipe.data, 0)
        _, plain = _plain_epochs(recipe, data)
        trainer = Trainer(recipe, data=data, evaluate_test=False)
        trainer.setup()
        plain(), trainer.train_epoch(0)  # warm-up, untimed
        ratios, tp, te = [], 0.0, 0.0
        for r in range(rounds):
            with Clock() as cp:
                plain()
            with Clock() as ce:
                trainer.train_epoch(r + 1)
            ratios.append(cp.cpu / ce.cpu)
            tp, te = tp + cp.cpu, te + ce.cpu
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        samples = _samples_per_epoch(len(data.train), batch) * rounds
        rows.append(f"| {label} | {batch} | {rounds} | {samples / tp:,.0f} "
                    f"| {samples / te:,.0f} | **{statistics.median(ratios):.3f}** "
                    f"({q[0]:.3f}–{q[2]:.3f}) | {tp / te:.3f} |")
    return ("### The training loop alone (Trainer.train_epoch vs the hand-written epoch)\n\n"
            "One thread, process CPU time. Each round runs one epoch of the plain loop, then one epoch of "
            "`Trainer.train_epoch` (its set-up done once before: same model family, data, batch size, AdamW at a "
            "constant lr, no augmentation, no callbacks), after an untimed warm-up epoch of each. Both keep "
            "training from round to round. *Per round* is the median of plain time / engine time over the rounds, "
            "with the interquartile range; *total* is the ratio of the summed times. 1.000 means the engine's loop "
            "costs nothing over the hand-written one.\n\n"
            "| data / model | batch | rounds | plain samples/s | engine samples/s | plain / engine, per round | "
            "total |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def run(quick: bool) -> str:
    old_threads = torch.get_num_threads()
    try:
        parts = [loop_only(quick), engine_vs_plain(quick), loader_bench(quick), memory_bench(quick)]
    finally:
        torch.set_num_threads(old_threads)
    return "## Engine overhead\n\n" + "\n\n".join(parts) + "\n"
