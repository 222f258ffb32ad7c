"""Ctrl-C during a study: the running trial is recorded as interrupted (and re-run on the next start).

Python loses a KeyboardInterrupt that lands in a finalizer ("Exception ignored in ..."), and the study
would then run on; so the SIGINT handler also sets a flag, which trials check at every epoch and the
worker after each trial. :func:`catching_ctrl_c` installs the handler for the length of a study and
restores the previous one (and clears the flag) afterwards, so a second study in the same process (a
notebook) runs normally. A process started with SIGINT ignored (a background job) keeps ignoring it.
"""

from __future__ import annotations

import contextlib
import signal
import threading

INTERRUPTED = "interrupted (Ctrl-C)"

_CTRL_C = threading.Event()


def _on_sigint(signum, frame):
    _CTRL_C.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def catching_ctrl_c():
    """Install the flag-setting SIGINT handler (main thread, default handler only) for the block."""
    install = threading.current_thread() is threading.main_thread() and \
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous = signal.signal(signal.SIGINT, _on_sigint) if install else None
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGINT, previous)
            _CTRL_C.clear()


def check_ctrl_c() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C arrived (even one whose exception was lost)."""
    if _CTRL_C.is_set():
        raise KeyboardInterrupt


def ctrl_c_pending() -> bool:
    return _CTRL_C.is_set()
