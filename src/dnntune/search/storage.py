"""Study storage: an embedded journal file by default, any SQLAlchemy URL (PostgreSQL...) otherwise.

The embedded default is Optuna's ``JournalFileBackend``: an append-only log with file locks, safe
for many processes on one machine (no "database is locked" as with SQLite) and readable by the
stock ``optuna`` CLI and ``optuna-dashboard``. Optuna's journal storage has no heartbeats, so
:class:`HeartbeatJournalStorage` adds them (as trial system attributes) to let Optuna's own
stale-trial machinery re-run the trials of a killed worker. RDB URLs use Optuna's RDB heartbeats.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import TrialState

from ..errors import ConfigError

HEARTBEAT_INTERVAL = 5     # seconds between heartbeats of a running trial
GRACE_PERIOD = 20          # a running trial without heartbeat for this long belongs to a dead worker
MAX_RETRY = 3              # a trial whose worker died is re-run at most this many times
JOURNAL_NAME = "study.journal"
_HB_KEY = "dnntune:heartbeat"
OWNER_KEY = "dnntune:owner"


def owner() -> dict:
    """Who runs a trial: host and process id (a dead local owner makes its trial stale at once)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _dead_local_owner(info) -> bool:
    if not isinstance(info, dict) or info.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError, ValueError, KeyError, TypeError):
        return False
    return False


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """``JournalStorage`` with heartbeats, so stale trials of killed workers are failed and retried."""

    def __init__(self, path: str | Path, heartbeat_interval: int | None = None,
                 grace_period: int | None = None, max_retry: int = MAX_RETRY):
        repair_torn_tail(path)
        super().__init__(JournalFileBackend(str(path), lock_obj=_journal_lock(path)))
        self.path = str(path)
        self.heartbeat_interval = heartbeat_interval or _env_int("DNNTUNE_HEARTBEAT", HEARTBEAT_INTERVAL)
        self.grace_period = grace_period or _env_int("DNNTUNE_GRACE", GRACE_PERIOD)
        self._stale_callback = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, _HB_KEY, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get(_HB_KEY)
            if beat is None and t.datetime_start is not None:
                beat = t.datetime_start.timestamp()
            if (beat is not None and now - float(beat) > self.grace_period) or _dead_local_owner(
                    t.system_attrs.get(OWNER_KEY)):
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_callback


def _journal_lock(path: str | Path) -> JournalFileSymlinkLock:
    """The lock the journal backend takes around every append (Optuna's default, ``<journal>.lock``)."""
    return JournalFileSymlinkLock(str(path))


@contextlib.contextmanager
def _holding(lock: JournalFileSymlinkLock):
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def repair_torn_tail(path: str | Path) -> Path | None:
    """Cut a journal's torn last record (a crash mid-append left it without its newline).

    Optuna's reader skips a torn last line, but the next append would be written onto it and make
    the journal unreadable from there on. The torn bytes are copied to ``<journal>.torn-<time>`` beside
    it, the journal is truncated to its last complete record and one line on stderr says so. Checked
    and cut under the journal's own append lock, so a record another process is appending right now
    is never cut. Returns the backup path, or None when the tail was complete.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if _tail_complete(f):
                return None  # the common case, without the lock; decided again under it
    except FileNotFoundError:
        return None
    try:
        with _holding(_journal_lock(path)), open(path, "r+b") as f:
            if _tail_complete(f):
                return None  # the writer we saw mid-append has finished
            cut = _last_line_end(f, f.seek(0, os.SEEK_END))
            f.seek(cut)
            torn = f.read()
            backup = _write_backup(path, torn)
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # a read-only journal (someone else's run): Optuna's reader skips the torn tail
        print(f"dnntune: warning: {path} ends in a torn record (a crash mid-write) and cannot be repaired "
              f"({e.strerror or e}); appending to it would make the study unreadable", file=sys.stderr)
        return None
    print(f"dnntune: warning: {path} ended in a torn record ({len(torn)} bytes, a crash mid-write): cut back "
          f"to its last complete record, the torn bytes are in {backup}", file=sys.stderr)
    return backup


def _tail_complete(f) -> bool:
    """An open journal is empty or ends with a newline."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return True
    f.seek(size - 1)
    return f.read(1) == b"\n"


def _last_line_end(f, size: int, chunk: int = 1 << 16) -> int:
    """The offset just after the last newline of an open file (0 if it has none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - chunk)
        f.seek(start)
        i = f.read(pos - start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def _write_backup(path: Path, data: bytes) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        backup = path.with_name(f"{path.name}.torn-{stamp}" + (f"-{n}" if n else ""))
        try:
            with open(backup, "xb") as b:
                b.write(data)
                b.flush()
                os.fsync(b.fileno())
            return backup
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}.torn-{stamp}: too many backups")


def _env_int(name: str, default: int) -> int:
    # tests shorten heartbeats; users normally keep the defaults
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def open_storage(url: str | None, run_dir: Path | None = None) -> BaseStorage:
    """Open a study storage: ``None`` → ``RUN_DIR/study.journal``; a path → that journal file;
    ``postgresql://...``, ``sqlite:///...``, ``mysql://...`` → Optuna's RDB storage with heartbeats
    (a plain ``postgresql://`` uses psycopg 3 if installed, else psycopg2)."""
    if url is None:
        if run_dir is None:
            raise ConfigError("--storage: give a storage URL or a run folder")
        run_dir.mkdir(parents=True, exist_ok=True)
        return HeartbeatJournalStorage(run_dir / JOURNAL_NAME)
    if "://" in url:
        url = _postgresql_driver(url)
        try:
            return RDBStorage(url, heartbeat_interval=_env_int("DNNTUNE_HEARTBEAT", HEARTBEAT_INTERVAL),
                              grace_period=_env_int("DNNTUNE_GRACE", GRACE_PERIOD),
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                              engine_kwargs={"pool_pre_ping": True})
        except Exception as e:  # sqlalchemy's errors are many; the user needs the URL and the cause
            raise ConfigError(f"--storage: cannot open {url!r}: {type(e).__name__}: {e}") from None
    path = Path(url)
    if path.is_dir():
        path = path / JOURNAL_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    return HeartbeatJournalStorage(path)


def _importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def _postgresql_driver(url: str) -> str:
    """A plain ``postgresql://`` URL made explicit with the driver that is installed.

    SQLAlchemy 2.1 maps a plain ``postgresql://`` to psycopg 3 (2.0 mapped it to psycopg2);
    ``dnntune[postgres]`` installs both. The URL becomes ``postgresql+psycopg://`` with psycopg 3,
    else ``postgresql+psycopg2://`` with psycopg2, whatever the SQLAlchemy version. A URL that names
    its driver (``postgresql+psycopg2://...``) is used as given.
    """
    scheme, _, rest = url.partition("://")
    if scheme.lower() != "postgresql":
        return url
    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if _importable(module):
            return f"postgresql+{driver}://{rest}"
    raise ConfigError(f"--storage: {url!r} needs a PostgreSQL driver (psycopg or psycopg2) and neither is "
                      "installed; pip install 'dnntune[postgres]'")


def describe(storage: BaseStorage) -> str:
    if isinstance(storage, HeartbeatJournalStorage):
        return storage.path
    if isinstance(storage, RDBStorage):
        return storage.url
    return type(storage).__name__


def study_names(storage: BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
