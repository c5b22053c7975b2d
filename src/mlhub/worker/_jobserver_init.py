"""Imported first by the job fork server (mlhub.worker.jobprocess.PRELOAD), and by nothing else: the server is
SIGKILLed when the worker that started it dies, even by SIGKILL, so it never outlives the worker (and its job
processes, which have the same signal towards it, die with it)."""

from __future__ import annotations

import contextlib
import ctypes
import signal

PR_SET_PDEATHSIG = 1

with contextlib.suppress(Exception):
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
