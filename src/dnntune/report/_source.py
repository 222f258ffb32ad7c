"""Find the study a report is about: from a run folder or from a storage URL and a study name."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import optuna

from ..errors import UserError


class ReportError(UserError):
    """The report cannot be made from what was given (no such folder, study, or no trials)."""


@dataclass
class Source:
    """A loaded study and where its files are."""

    study: optuna.Study
    storage: str
    run_dir: Path | None = None


def _open(url: str):
    from ..search import storage as st

    if "://" not in url:
        path = Path(url)
        if path.is_dir():
            path = path / st.JOURNAL_NAME
        if not path.is_file():  # opening would create an empty journal
            raise ReportError(f"--storage: {url}: no such journal file")
        return st.open_storage(str(path))
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise ReportError(f"--storage: {url}: no such SQLite file")
    return st.open_storage(url)


def _load(storage, url: str, name: str | None) -> optuna.Study:
    from ..search import storage as st
    from ..search.study import load_study

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if name is None:
        names = st.study_names(storage)
        if len(names) != 1:
            raise ReportError(f"{url}: holds {len(names)} studies ({', '.join(names) or 'none'}); "
                              f"name one with --study")
        name = names[0]
    return load_study(storage, name)


def from_storage(url: str, study_name: str | None) -> Source:
    """The study ``study_name`` in ``url`` (a journal file, a run folder or a database URL)."""
    storage = _open(url)
    study = _load(storage, url, study_name)
    run_dir = None
    if "://" not in url:
        p = Path(url)
        run_dir = p if p.is_dir() else p.parent
    return Source(study, url, run_dir)


def _run_summary(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def run_storage(run_dir: str | Path) -> str | None:
    """The study storage of a ``dnntune tune`` run folder (its journal, or the storage its summary names)."""
    from ..search.storage import JOURNAL_NAME

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    if (run_dir / JOURNAL_NAME).is_file():
        return str(run_dir / JOURNAL_NAME)
    return _run_summary(run_dir).get("storage") or None


def from_run_dir(run_dir: str | Path, study_name: str | None = None) -> Source:
    """The study of a ``dnntune tune`` run folder (its journal, or the storage its summary names)."""
    from ..search.storage import JOURNAL_NAME

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ReportError(f"{run_dir}: no such run folder")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a folder; give the run folder of `dnntune tune` "
                          f"(or --storage URL --study NAME)")
    study_name = study_name or _run_summary(run_dir).get("study")
    url = run_storage(run_dir)
    if url is None:
        raise ReportError(f"{run_dir}: not the run folder of `dnntune tune` (no {JOURNAL_NAME} and no summary.json "
                          f"naming a study storage); give --storage URL --study NAME")
    storage = _open(url)
    return Source(_load(storage, url, study_name), url, run_dir)
