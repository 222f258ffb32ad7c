"""Insight into a study: the HTML report and experiment tracking.

``write_report(RUN_DIR)`` (or ``write_report(storage=URL, study=NAME)``) writes one self-contained
HTML page and its figures; trackers write per-epoch scalars of each run (see :mod:`.tracking`).
Matplotlib is imported only when a report is drawn.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ._build import Report, build_report
from ._source import ReportError
from .tracking import TRACKERS, TensorBoardTracker, check_tracker, fit_tracked, make_tracker


def write_report(run_dir: str | Path | None = None, *, storage: str | None = None, study: str | None = None,
                 out: str | Path | None = None, on_step: Callable[[str], None] | None = None):
    """Report on the study of a run folder (``RUN_DIR/report/index.html``) or of ``storage``/``study``.

    Without ``out``, a storage's report goes to ``<journal folder>/report`` (a journal file) or
    ``runs/<study>/report`` (a database URL).
    """
    from . import _source

    if run_dir is not None:
        src = _source.from_run_dir(run_dir, study)
    elif storage is not None:
        src = _source.from_storage(storage, study)
    else:
        raise ReportError("report: give a RUN_DIR or --storage URL --study NAME")
    if out is None:
        base = src.run_dir if src.run_dir is not None else Path("runs") / src.study.study_name
        out = base / "report"
    return build_report(src.study, out, src.run_dir, src.storage, on_step)


__all__ = ["TRACKERS", "Report", "ReportError", "TensorBoardTracker", "build_report", "check_tracker", "fit_tracked",
           "make_tracker", "write_report"]
