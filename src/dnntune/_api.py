"""``dnntune.tune``: the Python form of ``dnntune tune``, on an experiment file or dict and optionally the
user's own data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError


def _experiment(experiment: dict | str | Path) -> tuple[dict, str, Path | None]:
    from .config import Recipe, read_yaml
    from .plugins import load_plugins

    if isinstance(experiment, Recipe):
        return experiment.to_dict(), "recipe", None
    if isinstance(experiment, (str, Path)):
        raw = read_yaml(experiment)
        load_plugins(raw.get("plugins"), base_dir=Path(experiment).parent)
        return raw, str(experiment), Path(experiment)
    if not isinstance(experiment, dict):
        raise ConfigError(f"experiment: expected a dict or a YAML file path, got {type(experiment).__name__}")
    return experiment, "experiment", None


def tune(experiment: dict | str | Path, out_dir: str | Path, data: Any = None, *, storage_url: str | None = None,
         study_name: str | None = None, quiet: bool = True, tracker: str = "jsonl", num_workers: int = 0) -> dict:
    """Search the experiment's recipe space (as ``dnntune tune``) and return the study's summary.

    Args:
        experiment: a dict in the YAML file's shape (search dimensions allowed) or a YAML file's path. An
            experiment naming only ``data`` gets the default search space for that data.
        out_dir: the tune run folder (study journal, trials, ``best/``, report).
        data: the user's own data, as for :func:`dnntune.train` (``data.name`` may be left out). With
            ``search.workers > 1`` arrays are written once to ``out_dir/data.npz`` and every worker process
            reads them through the npz loader; a torch Dataset object cannot reach other processes: register
            a dataset builder in a plugin module instead (``@dnntune.register_dataset``).
        storage_url, study_name, tracker: as ``--storage``, ``--study`` and ``--tracker`` of the CLI.
        quiet: no live view on stderr (default).
        num_workers: DataLoader processes that read a Dataset (it is read once, into memory).
    """
    from .config import SearchSection, apply_overrides
    from .data.user import NAME, as_raw, provide
    from .engine.runfolder import prepare_out_dir
    from .engine.trainer import with_own_data
    from .plugins import main_registrations, used_plugins
    from .search import complete_experiment
    from .search import tune as run_tune

    raw, source, path = _experiment(experiment)
    out = prepare_out_dir(Path(out_dir))
    if data is not None:
        raw = with_own_data(raw)
        rd = as_raw(data, "data", num_workers=num_workers)
        workers = SearchSection(**(raw.get("search") or {})).workers
        if workers > 1:
            if _is_dataset_like(data):
                raise ConfigError(f"data=: a torch Dataset cannot reach the {workers} worker processes "
                                  "(search.workers > 1); register a dataset builder in a plugin module "
                                  "(@dnntune.register_dataset) and name it in data.name and plugins:, or use "
                                  "search.workers: 1")
            raw = _via_npz(raw, rd, out)
        else:
            provide(rd)
    plugins = list(dict.fromkeys([*(raw.get("plugins") or []), *used_plugins(raw)]))
    rest = {k: v for k, v in raw.items() if k != "plugins"}  # the default space is for data-only experiments
    full = complete_experiment(apply_overrides(rest, []))
    if plugins:
        full = {"plugins": plugins, **full}
    workers = SearchSection(**(full.get("search") or {})).workers
    local = main_registrations(full)
    if workers > 1 and local:
        raise ConfigError(f"search.workers: {workers} worker processes cannot import {', '.join(local)}: it is "
                          "registered in your script (__main__); move the registration to a module and list it in "
                          "plugins:, or use search.workers: 1")
    try:
        return run_tune(full, out, storage_url=storage_url, study_name=study_name or (path.stem if path else "study"),
                        quiet=quiet, source=source, tracker=tracker)
    finally:
        if data is not None and full.get("data", {}).get("name") == NAME:
            provide(None)


def _is_dataset_like(obj: Any) -> bool:
    from torch.utils.data import Dataset

    return isinstance(obj, Dataset) or (isinstance(obj, (tuple, list)) and any(isinstance(o, Dataset) for o in obj))


def _via_npz(raw: dict, rd, out: Path) -> dict:
    """The data of ``rd`` written once to ``out/data.npz``, and ``raw`` naming it (worker processes read it)."""
    if rd.task == "multilabel":
        raise ConfigError("data=: multi-label data cannot be handed to worker processes as arrays; use "
                          "search.workers: 1 or a dataset registered in a plugin module")
    arrays = {"x": rd.x, "y": rd.y}
    if rd.x_test is not None:
        arrays.update(x_test=rd.x_test, y_test=rd.y_test)
    if rd.task == "classification" and rd.class_names and len(rd.class_names) == int(np.max(rd.y)) + 1 and \
            rd.class_names == sorted(rd.class_names):
        names = np.asarray(rd.class_names)  # labels as text: the npz loader sorts them back into these indices
        arrays["y"] = names[rd.y]
        if rd.x_test is not None:
            arrays["y_test"] = names[rd.y_test]
    path = out / "data.npz"
    np.savez(path, **arrays)
    data = {k: v for k, v in raw["data"].items() if k != "name"}
    if rd.kind not in (None, "auto") and data.get("kind", "auto") == "auto":
        data["kind"] = rd.kind
    return {**raw, "data": {"name": "npz", "path": str(path.resolve()), "task": rd.task, **data}}
