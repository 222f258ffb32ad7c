"""Output folders checked before any work: a command whose ``--out`` cannot be written stops at once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import OutDirUnwritable


def prepare_out_dir(path: str | Path, field: str = "--out") -> Path:
    """Create ``path`` (and its parents) and check that files can be written in it.

    Raises :class:`~dnntune.errors.OutDirUnwritable` (a ``UserError``: exit status 2) naming ``field``, the
    path and the reason: permission denied, a read-only file system, a parent that is a file, ...

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()) / "runs" / "a"
        >>> prepare_out_dir(d) == d and d.is_dir()
        True
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".dnntune-write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutDirUnwritable(f"{field} {path}: cannot write there ({_why(path, e)})") from None
    return path


def _why(path: Path, e: OSError) -> str:
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        for p in (path, *path.parents):  # the nearest existing ancestor: a file in the way?
            if p.exists():
                if not p.is_dir():
                    return "it is a file, not a folder" if p == path else f"{p} is a file, not a folder"
                break
    return e.strerror or str(e) or type(e).__name__
