"""Every SDK run ends: process hooks, installed once per process by the first Hub, that end the open runs.

- an uncaught exception (`sys.excepthook`): its runs end `failed` with the exception's type and message; an
  uncaught KeyboardInterrupt (Ctrl-C) ends them `killed`. The previous hook runs after (it prints the
  traceback).
- SIGTERM: the runs end `killed`, then the previous handler runs; when that was the default, the default is
  restored and SIGTERM re-raised, so the process still dies of SIGTERM. Installed only from the main thread
  and only over the default handler or a Python handler (which it chains); an ignored SIGTERM stays ignored.
- interpreter exit with a run still open: each Hub's atexit hook (hub.py) ends it `failed` (`NotFinished`).

SIGKILL cannot be caught: the hub's reaper marks such a run `crashed` when it goes silent.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlhub.client.hub import Hub
    from mlhub.client.run import Status

log = logging.getLogger(__name__)

#: How long ending the runs may take on SIGTERM before the process goes on dying (what the hub did not take
#: by then stays spooled); an orchestrator's grace period is often 30 s.
SIGNAL_FINISH_TIMEOUT_S = 20.0

_hubs: weakref.WeakSet[Hub] = weakref.WeakSet()
_installed = False
_lock = threading.Lock()
_previous_excepthook: Callable[[type[BaseException], BaseException, TracebackType | None], Any] | None = None
_previous_sigterm: Any = None


def register(hub: Hub) -> None:
    """Track a Hub's runs for the hooks, installing the hooks on the first call in this process."""
    global _installed
    with _lock:
        _hubs.add(hub)
        if _installed:
            return
        _installed = True
    _install_excepthook()
    _install_sigterm()


def end_open_runs(status: Status, *, error_type: str | None = None, error: str | None = None,
                  timeout_s: float | None = None) -> int:
    """End every open run of every live Hub of this process; how many were ended."""
    ended = 0
    for hub in list(_hubs):
        for run in hub.open_runs():
            try:
                run.finish(status, error_type=error_type, error=error,
                           timeout_s=min(timeout_s or run.finish_timeout_s, run.finish_timeout_s))
                ended += 1
            except Exception:  # another thread finished it meanwhile, or the hub is gone: the next one
                log.exception("could not end run %s as %s", run.run_id, status)
    return ended


def _install_excepthook() -> None:
    global _previous_excepthook
    _previous_excepthook = sys.excepthook
    sys.excepthook = _excepthook


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    try:
        if issubclass(exc_type, KeyboardInterrupt):
            end_open_runs("killed", error="KeyboardInterrupt")
        else:
            end_open_runs("failed", error_type=exc_type.__name__, error=str(exc)[:20_000])
    finally:
        previous = _previous_excepthook or sys.__excepthook__
        previous(exc_type, exc, tb)


def _install_sigterm() -> None:
    global _previous_sigterm
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal works in the main thread only; a Hub made elsewhere relies on atexit
    current = signal.getsignal(signal.SIGTERM)
    if current is not signal.SIG_DFL and not callable(current):
        return  # ignored (SIG_IGN) or set outside Python: leave it as the process wants it
    _previous_sigterm = current
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    end_open_runs("killed", error="SIGTERM", timeout_s=SIGNAL_FINISH_TIMEOUT_S)
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
        return
    # The default: die of SIGTERM as the process would have without us.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
