"""Atomic writes: a crash or kill never leaves a half-written checkpoint, model or summary.

Each file is written to a temporary name in the same folder and renamed over the old one, so a
reader sees the old or the new file, never a mix, whatever happens to the writing process. (No
fsync: that guards against a power cut rather than a kill, and costs milliseconds per file.)

Checkpoints keep one generation back: ``save_checkpoint`` keeps the checkpoint it replaces as
``checkpoint.prev.pt``, and :func:`load_resumable` falls back to it when ``checkpoint.pt`` cannot be
loaded (a file truncated by a full disk, a foreign file), after moving the unreadable file aside.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointUnreadable, CheckpointWriteFailed, RunFolderIncomplete


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_run_files(out_dir: Path, files: Mapping[str, bytes | str],
                    checkpoint: str | Path | None = "checkpoint.pt") -> None:
    """Write a run folder's files (name → content), each atomically, in the order given.

    A write that fails (a full disk, a folder turned read-only) raises :class:`RunFolderIncomplete`,
    naming the folder, the reason, the files written and the files missing. ``checkpoint`` (relative to
    ``out_dir``; None when the run keeps none) is the checkpoint holding the trained state: when it is
    there, the message says that re-running the command finishes the folder without retraining.
    Put the file that marks a whole run folder (``summary.json``) last.
    """
    out_dir = Path(out_dir)
    written: list[str] = []
    for name, content in files.items():
        try:
            atomic_write_bytes(out_dir / name, content.encode() if isinstance(content, str) else content)
        except OSError as e:
            ckpt = out_dir / checkpoint if checkpoint is not None else None
            kept = ckpt is not None and (ckpt.is_file() or previous_path(ckpt).is_file())
            raise RunFolderIncomplete(out_dir, name, _os_reason(e), written, [n for n in files if n not in written],
                                      ckpt if kept else None) from e
        written.append(name)


# --- checkpoints ----------------------------------------------------------------------------------------

def previous_path(path: Path) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint it replaced: ``checkpoint.pt`` → ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file in the same folder, keep the current checkpoint as
    :func:`previous_path`, then rename the new one over it.

    At every instant a complete checkpoint exists under one of the two names: the current one is
    hard-linked to a temporary name renamed over ``.prev`` (so ``checkpoint.pt`` itself never goes
    missing); where the file system has no hard links, it is renamed to ``.prev`` instead. A write that
    fails (a full disk) raises :class:`CheckpointWriteFailed`; the checkpoints already there are kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        _keep_previous(path)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) or (isinstance(e, RuntimeError) and _is_torch_write_error(e)):
            why = _os_reason(e) if isinstance(e, OSError) else f"the write failed, is the disk full? {_reason(e)}"
            raise CheckpointWriteFailed(
                f"cannot write the checkpoint {path} ({why}); the checkpoint written before is kept: "
                f"free disk space and run the same command again to resume from it") from e
        raise


def _keep_previous(path: Path) -> None:
    if not path.is_file():
        return
    prev = previous_path(path)
    link = path.with_name(f".{prev.name}.{os.getpid()}.tmp")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
    except FileNotFoundError:
        return
    except OSError:  # no hard links here: for an instant the old checkpoint exists as .prev only
        os.replace(path, prev)
        return
    try:
        os.replace(link, prev)
    finally:
        link.unlink(missing_ok=True)  # still there when .prev already was this very file


def _is_torch_write_error(e: BaseException) -> bool:
    # torch's zip writer reports a failed write (ENOSPC, EIO) as a RuntimeError from inline_container.cc
    text = str(e)
    return "inline_container" in text or "PytorchStreamWriter" in text or "file write failed" in text


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code from pickles)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_resumable(path: Path, required_keys: Iterable[str] = (), *,
                   warn: Callable[[str], None] | None = None) -> dict | None:
    """The checkpoint to resume from: ``path``, else :func:`previous_path`, else None (start fresh).

    A file that cannot be loaded (truncated, empty, a foreign file, a pickle holding anything but
    tensors and plain data, or not a dict with every one of ``required_keys``) is moved aside to
    ``NAME.corrupt`` (``NAME.corrupt.1``, ... when taken, never overwriting one) and the next candidate is
    tried; one line says what happened (``warn``, default: stderr). Leftover temporary files of writes
    that were killed are removed. Loading is ``torch.load(..., weights_only=True)``.
    """
    path = Path(path)
    warn = warn or _warn_stderr
    required = tuple(required_keys)
    _remove_stale_temps(path)
    notes: list[str] = []
    for candidate in (path, previous_path(path)):
        if not (candidate.exists() or candidate.is_symlink()):
            continue
        try:
            state = _load_checked(candidate, required)
        except MemoryError:
            raise
        except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, KeyError, OSError ...
            try:
                aside = move_aside(candidate)
            except OSError as err:
                raise CheckpointUnreadable(
                    f"the checkpoint {candidate} cannot be loaded ({_reason(e)}) nor moved aside ({_os_reason(err)}): "
                    f"move or delete it, or start over with --fresh") from e
            notes.append(f"{candidate.name} is unreadable ({_reason(e)}): moved to {aside.name}")
            continue
        if notes:
            epoch = state.get("epoch")
            at = f" (epoch {epoch + 1})" if isinstance(epoch, int) else ""
            warn(f"dnntune: warning: {path.parent}: {'; '.join(notes)}; resuming from {candidate.name}{at}")
        return state
    if notes:
        warn(f"dnntune: warning: {path.parent}: {'; '.join(notes)}; "
             f"{'no previous checkpoint' if len(notes) == 1 else 'no other checkpoint'}: training starts fresh")
    return None


class _NotACheckpoint(ValueError):
    """A file that loads but holds something else."""


def _load_checked(path: Path, required: tuple[str, ...]) -> dict:
    with warnings.catch_warnings():  # a foreign pickle's protocol warning: the one line below says it all
        warnings.simplefilter("ignore")
        state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise _NotACheckpoint(f"holds a {type(state).__name__}, not a checkpoint")
    missing = [k for k in required if k not in state]
    if missing:
        raise _NotACheckpoint(f"not a dnntune checkpoint: no {', '.join(missing)}")
    return state


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``NAME.corrupt`` (or ``NAME.corrupt.1``, ...: never over an existing file); the new path."""
    path = Path(path)
    for i in itertools.count():
        dest = path.with_name(f"{path.name}.corrupt" + (f".{i}" if i else ""))
        try:
            os.link(path, dest)  # fails when dest exists: nothing is overwritten, even by a racing process
        except FileExistsError:
            continue
        except OSError:  # no hard links (or a folder): rename when free
            if dest.exists() or dest.is_symlink():
                continue
            os.replace(path, dest)
            return dest
        path.unlink()
        return dest
    raise AssertionError("unreachable")


def _remove_stale_temps(path: Path) -> None:
    """Temporary files of checkpoint writes that were killed: of no use, and a full disk's worth at times."""
    try:
        names = [f".{path.name}.", f".{previous_path(path).name}."]
        for p in path.parent.iterdir():
            if p.name.endswith(".tmp") and p.name.startswith(tuple(names)):
                p.unlink(missing_ok=True)
    except OSError:
        pass


def _reason(e: BaseException) -> str:
    """One short line for an exception: its type and the first sentence of its message."""
    if isinstance(e, _NotACheckpoint):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        first = e.strerror
    else:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().strip("'\"")
        first = text.splitlines()[0] if text else ""
        first = re.split(r"(?<=[a-z)])\. ", first)[0].rstrip(".")
        if len(first) > 120:
            first = first[:117] + "..."
        if isinstance(e, EOFError) and not first:
            first = "the file ends early"
    kind = type(e)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__.lstrip('_')}.{kind.__qualname__}"
    return f"{name}: {first}" if first else name


def _os_reason(e: BaseException) -> str:
    """For a failed write: the system's words (``No space left on device``), else :func:`_reason`."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return _reason(e)


def _warn_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- weights ---------------------------------------------------------------------------------------------

def weights_bytes(model: torch.nn.Module) -> bytes:
    """Model weights as safetensors bytes (for :func:`write_run_files`)."""
    from safetensors.torch import save

    return save({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()})


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """Model weights as safetensors, written atomically."""
    atomic_write_bytes(path, weights_bytes(model))


def load_weights(path: Path, model: torch.nn.Module) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))
