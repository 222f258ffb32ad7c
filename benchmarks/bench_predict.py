"""Predict throughput on CPU: PyTorch eager against onnxruntime, on the MNIST-1D and digits strong recipes.

Each recipe is trained briefly (throughput does not depend on what the weights learned), exported with
``dnntune.deploy.export`` (ONNX, dynamo exporter, normalization folded into the graph) and then predicted four
ways, side by side in one process: ``LoadedRun.predict`` (PyTorch eager with dnntune's input checks,
normalization and Prediction), the bare eager module (the same folded graph, ``FoldedModel``, under
``torch.inference_mode``), ``OnnxRun.predict`` (onnxruntime with the same checks and Prediction, in numpy) and
the bare ``session.run``. Batch 1 and 256, 1 and 2 intra-op threads (``torch.set_num_threads`` and the session's
``intra_op_num_threads``). Arms interleaved, in a rotated order each round; the median per arm over the rounds.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dnntune.config import load_recipe
from dnntune.data import load_data
from dnntune.deploy import export, load_onnx, load_run
from dnntune.deploy._export import FoldedModel
from dnntune.engine import train

ROOT = Path(__file__).resolve().parent.parent
from bench_engine import Clock  # noqa: E402  (benchmarks/ is on sys.path under run.py)

RECIPES = [("MNIST-1D strong (cnn1d)", ROOT / "examples" / "mnist1d-strong.yaml"),
           ("digits strong (cnn2d)", ROOT / "examples" / "digits-strong.yaml")]
ARMS = ("torch predict", "torch bare", "ort predict", "ort bare")
BATCHES = (1, 256)
THREADS = (1, 2)


def _arms(run, onnx_run, x: np.ndarray) -> dict:
    folded = FoldedModel(run.model, run.preprocessing).eval()
    xt = torch.from_numpy(x)
    session, name = onnx_run.session, onnx_run.metadata["input"]["name"]

    def bare_torch():
        with torch.inference_mode():
            return folded(xt)

    return {"torch predict": lambda: run.predict(x), "torch bare": bare_torch,
            "ort predict": lambda: onnx_run.predict(x), "ort bare": lambda: session.run(None, {name: x})}


PAUSE_S = 0.02  # between blocks: each runtime's spinning worker threads go idle before the other one runs


def _measure(arms: dict, rounds: int, block_s: float) -> dict[str, list[tuple[float, float]]]:
    """Per arm and round: (wall, cpu) seconds per call, each from a block of calls lasting about ``block_s``."""
    calls = {}
    for name, fn in arms.items():  # warm-up, then the calls per block from one timed call
        for _ in range(3):
            fn()
        with Clock() as c:
            fn()
        calls[name] = max(1, int(block_s / max(c.wall, 1e-6)))
    out: dict[str, list[tuple[float, float]]] = {k: [] for k in arms}
    names = list(arms)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, n = arms[name], calls[name]
            time.sleep(PAUSE_S)
            with Clock() as c:
                for _ in range(n):
                    fn()
            out[name].append((c.wall / n, c.cpu / n))
    return out


def _prepare(path: Path, epochs: int, folder: Path):
    recipe = load_recipe(path, overrides=[f"train.epochs={epochs}", "train.threads=1"])
    train(recipe, out_dir=folder)
    result = export(folder, format="onnx")
    raw = load_data(recipe.data.model_copy(update={"normalize": False}), recipe.seed)
    x = raw.test.x.numpy()
    return recipe, result, np.ascontiguousarray(np.concatenate([x] * (256 // len(x) + 1))[:256], np.float32)


def _rows(label: str, threads: int, batch: int, res: dict, load: float) -> str:
    sps = {k: batch / statistics.median(w for w, _ in v) for k, v in res.items()}

    def paired(a: str, b: str, i: int) -> float:  # median over rounds of time(b) / time(a): speed of a over b
        return statistics.median(tb[i] / ta[i] for ta, tb in zip(res[a], res[b]))

    cpu = (f"{paired('ort predict', 'torch predict', 1):.2f}× / {paired('ort bare', 'torch bare', 1):.2f}×"
           if threads == 1 else "–")
    return (f"| {label} | {threads} | {batch} | {load:.1f} | {sps['torch predict']:,.0f} | {sps['ort predict']:,.0f} "
            f"| **{paired('ort predict', 'torch predict', 0):.2f}×** | {sps['torch bare']:,.0f} "
            f"| {sps['ort bare']:,.0f} | **{paired('ort bare', 'torch bare', 0):.2f}×** | {cpu} |")


def run(quick: bool) -> str:
    epochs, rounds, block_s = (1, 2, 0.005) if quick else (2, 21, 0.05)
    thread_counts = THREADS[:1] if quick else THREADS
    old_threads = torch.get_num_threads()
    rows, exports, batch1 = [], [], []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
            for i, (label, path) in enumerate(RECIPES):
                torch.set_num_threads(1)
                recipe, result, x = _prepare(path, epochs, Path(tmp) / f"run{i}")
                exports.append(f"{label}: {result.seconds:.1f} s, max |Δ| {result.max_abs_diff:.1e} on "
                               f"{result.checked_samples} test inputs, argmax agreement "
                               f"{100 * result.argmax_agreement:.0f}%")
                run_ = load_run(Path(tmp) / f"run{i}")
                for threads in thread_counts:
                    torch.set_num_threads(threads)
                    onnx_run = load_onnx(result.path, device="cpu", threads=threads)
                    for batch in BATCHES:
                        load = os.getloadavg()[0]
                        res = _measure(_arms(run_, onnx_run, x[:batch]), rounds, block_s)
                        rows.append(_rows(label, threads, batch, res, load))
                        if batch == 1:
                            batch1.append(statistics.median(tb[0] / ta[0] for ta, tb in
                                                            zip(res["ort predict"], res["torch predict"])))
    finally:
        torch.set_num_threads(old_threads)
    goal = min(batch1)
    verdict = (f"the goal (onnxruntime ≥ 1.5× PyTorch eager at batch 1, `predict` against `predict`) is "
               f"{'met' if goal >= 1.5 else 'not met'}: the smallest batch-1 ratio is {goal:.2f}×")
    return "\n".join([
        "## Predict throughput: PyTorch eager vs onnxruntime",
        "",
        f"The recipes `examples/mnist1d-strong.yaml` (cnn1d, 64 channels × 3, 44,874 parameters) and "
        f"`examples/digits-strong.yaml` (cnn2d, 32/64/128 channels), trained for {epochs} epoch(s) only "
        "(`--set train.epochs=...`: throughput does not depend on what the weights learned), exported with "
        "`dnntune.deploy.export(run, format=\"onnx\")` (dynamo exporter, opset 20, input normalization folded into "
        "the graph) and predicted on their raw test inputs. Four arms: *torch predict* = `LoadedRun.predict(x)` "
        "(input checks, normalization, softmax, labels), *ort predict* = `OnnxRun.predict(x)` (the same checks, "
        "softmax and labels in numpy), *torch bare* = the folded eager module under `torch.inference_mode()`, "
        "*ort bare* = `session.run`. Threads: `torch.set_num_threads(t)` and the session's "
        "`intra_op_num_threads = t`. Per configuration: 3 untimed warm-up calls per arm, then "
        f"{rounds} rounds; each round times every arm (rotated order) over a block of calls of about "
        f"{1000 * block_s:.0f} ms, after a {1000 * PAUSE_S:.0f} ms pause (so that neither runtime's spinning "
        "worker threads are still awake when the other one runs); samples/s from the median time per call. "
        "*×* is onnxruntime over PyTorch, the median of the per-round paired ratios; *CPU* gives the same two "
        "ratios on process CPU time (1 thread only). *load* is the 1-minute load average when the configuration "
        "started (2 cores): with other jobs on the cores, PyTorch's OpenMP threads at 2 threads wait for each "
        "other at every operator, which a batch of 1 (many tiny operators) suffers most.",
        "",
        "| recipe | threads | batch | load | torch predict samples/s | ort predict samples/s | predict × "
        "| torch bare samples/s | ort bare samples/s | bare × | CPU (predict / bare) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Result: {verdict}.",
        "",
        "Export on the spot (time including the parity check against the PyTorch model): " + "; ".join(exports) + ".",
    ]) + "\n"
