"""The model behind ``predict`` and ``serve``: PyTorch (a run folder) or onnxruntime (an exported model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError

ENGINES = ("torch", "onnxruntime")


def load_model(path: str | Path, engine: str = "torch", device: str = "cpu", threads: int | None = None) -> Any:
    """``load_run(path, device)`` for ``torch``, ``load_onnx(path, device, threads)`` for ``onnxruntime``; both
    return an object with ``predict(raw_inputs) -> Prediction``, ``task``, ``class_names`` and ``input_shape``.

    Raises:
        ConfigError: an unknown engine, or an .onnx file with the torch engine.
    """
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine}: unknown engine; allowed: {', '.join(ENGINES)}")
    if engine == "onnxruntime":
        from ._onnx import load_onnx

        return load_onnx(path, device=device, threads=threads)
    if Path(path).suffix.lower() == ".onnx" and Path(path).is_file():
        raise ConfigError(f"{path}: an ONNX file runs with --engine onnxruntime (--engine torch reads run folders)")
    from ._run import load_run

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return load_run(path, device=device)
