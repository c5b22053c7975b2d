"""`Hub(url, token)`: the SDK's entry point: start and resume runs, read them back, resend what earlier
processes spooled."""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mlhub.client import hooks
from mlhub.client.delivery import ResendReport, resend_folder
from mlhub.client.errors import HubUnavailable, RunClosed
from mlhub.client.run import Run
from mlhub.client.spool import default_spool_dir, hub_folder
from mlhub.client.transport import Transport
from mlhub.client.values import raise_problems, string_values
from mlhub.errors import InvalidInput

log = logging.getLogger(__name__)


class Hub:
    """A connection to an mlhub API server.

    `url` and `token` default to MLHUB_URL (http://127.0.0.1:8000) and MLHUB_TOKEN, as for the CLI;
    `spool_dir` to MLHUB_SPOOL_DIR, else `~/.mlhub/spool`. With `resend_on_start` (the default) a
    background thread resends, under their original ids, the records that earlier processes left in this
    hub's spool folder (see `resend_spooled`). `duplicate_window_s` should match the server's
    MLHUB_DUPLICATE_WINDOW_S: a record resent later than that after it was made is checked against the
    run's events first. A run's sender sends a heartbeat when it has delivered nothing for `heartbeat_s`
    (default MLHUB_RUN_HEARTBEAT_S, 30 s); a sampler thread of each run logs the script's system metrics
    (CPU, memory, GPU: mlhub.client.system) every `system_metrics_s` (default MLHUB_SYSTEM_METRICS_S, 15 s;
    0: none). The first Hub of a process installs the hooks that end open runs on an uncaught exception,
    SIGTERM and exit (hooks.py).
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, spool_dir: str | Path | None = None,
                 resend_on_start: bool = True, duplicate_window_s: float = 600.0, timeout_s: float = 30.0,
                 start_timeout_s: float = 30.0, interval_s: float = 0.5, finish_timeout_s: float = 60.0,
                 heartbeat_s: float | None = None, system_metrics_s: float | None = None) -> None:
        if url is None or token is None or spool_dir is None or heartbeat_s is None or system_metrics_s is None:
            from mlhub.settings import Settings

            settings = Settings()
            url = url or settings.url
            token = token or settings.token
            spool_dir = spool_dir or settings.spool_dir
            heartbeat_s = settings.run_heartbeat_s if heartbeat_s is None else heartbeat_s
            system_metrics_s = settings.system_metrics_s if system_metrics_s is None else system_metrics_s
        if not url or not url.startswith(("http://", "https://")):
            raise InvalidInput(f"hub url must be an http:// or https:// URL (or set MLHUB_URL), got {url!r}")
        if not heartbeat_s > 0:
            raise InvalidInput(f"heartbeat_s must be more than 0 seconds, got {heartbeat_s!r}")
        if not system_metrics_s >= 0:
            raise InvalidInput(f"system_metrics_s must be 0 (off) or more seconds, got {system_metrics_s!r}")
        self.url = url.rstrip("/")
        self.transport = Transport(self.url, token, timeout_s=timeout_s)
        self.spool_folder = hub_folder(Path(spool_dir).expanduser() if spool_dir else default_spool_dir(), self.url)
        self.duplicate_window_s = duplicate_window_s
        self.start_timeout_s = start_timeout_s
        self.interval_s = interval_s
        self.finish_timeout_s = finish_timeout_s
        self.heartbeat_s = float(heartbeat_s)
        self.system_metrics_s = float(system_metrics_s)
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._resend_thread: threading.Thread | None = None
        self.last_resend: ResendReport | None = None
        self._closed = False
        # A script that ends without finishing its runs: flush them (what the hub does not take in time is
        # spooled) instead of losing the buffered points with the daemon sender threads at exit.
        atexit.register(_close_at_exit, weakref.ref(self))
        hooks.register(self)
        if resend_on_start:
            self._resend_thread = threading.Thread(target=self._resend_background, name="mlhub-resend",
                                                   daemon=True)
            self._resend_thread.start()

    def __repr__(self) -> str:
        return f"Hub({self.url!r})"

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs -----------------------------------------------------------------------------------------------

    def start_run(self, experiment: str, params: dict[str, Any] | None = None, *, name: str | None = None,
                  tags: dict[str, Any] | None = None) -> Run:
        """Create and start a run (the experiment is created when new); waits for the hub up to
        start_timeout_s while it does not answer. Params and tags are checked, flattened and turned into
        strings as `Run.log_params` does; a bad one raises InvalidMetric and nothing is created. A refused
        token raises HubAuthError at once."""
        param_values, problems = string_values(params or {}, "param")
        tag_values, tag_problems = string_values(tags or {}, "tag")
        raise_problems(problems + tag_problems, 0, "not started")
        body: dict[str, Any] = {"experiment": experiment, "params": param_values, "tags": tag_values}
        if name is not None:
            body["name"] = name
        # One request id for every retry: a retry whose first answer was lost names the same run.
        body["request_id"] = str(uuid.uuid4())
        deadline = time.monotonic() + self.start_timeout_s
        delay = 0.2
        while True:
            try:
                created = self.transport.request("POST", "/runs", json_body=body)
                break
            except HubUnavailable:  # (a refused token, HubAuthError, is the caller's to fix: raised at once)
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        return self._track(Run(self, created["run_id"], created["experiment_id"], interval_s=self.interval_s,
                               finish_timeout_s=self.finish_timeout_s, heartbeat_s=self.heartbeat_s,
                               params=param_values, system_metrics_s=self.system_metrics_s))

    def resume_run(self, run_id: str) -> Run:
        """Resume a crashed run (`POST /runs/{id}/resume`): the returned Run logs on into it, its automatic
        step going on from the hub's last step + 1. A run that is not crashed is refused (HubRequestError,
        409 INVALID_STATE); the hub's answer is waited for once (no retry: a second resume would be refused)."""
        resumed: dict[str, Any] = self.transport.request("POST", f"/runs/{quote(run_id, safe='')}/resume",
                                                         json_body={})
        last_step = resumed.get("last_step")
        return self._track(Run(self, resumed["run_id"], resumed["experiment_id"], interval_s=self.interval_s,
                               finish_timeout_s=self.finish_timeout_s, heartbeat_s=self.heartbeat_s,
                               next_step=0 if last_step is None else int(last_step) + 1,
                               system_metrics_s=self.system_metrics_s))

    def open_runs(self) -> list[Run]:
        """The runs of this Hub not finished yet."""
        with self._lock:
            return [run for run in self._runs.values() if run.status is None]

    def _track(self, run: Run) -> Run:
        with self._lock:
            self._runs[run.run_id] = run
        return run

    def _forget(self, run: Run) -> None:
        with self._lock:
            self._runs.pop(run.run_id, None)

    # -- reads ----------------------------------------------------------------------------------------------

    def get_run(self, run_id: str, *, min_seq: int | None = None) -> dict[str, Any]:
        """Everything the hub's read model knows about a run (GET /runs/{id})."""
        result: dict[str, Any] = self.transport.request(
            "GET", f"/runs/{run_id}", params={"min_seq": min_seq} if min_seq else None)
        return result

    def get_metric_series(self, run_id: str, key: str, *, max_points: int = 100_000) -> dict[str, Any]:
        """A run's points of one key in step order (GET /runs/{id}/metrics/{key})."""
        result: dict[str, Any] = self.transport.request(
            "GET", f"/runs/{run_id}/metrics/{quote(key, safe='/')}", params={"max_points": max_points})
        return result

    # -- the spool ------------------------------------------------------------------------------------------

    def resend_spooled(self, timeout_s: float = 60.0) -> ResendReport:
        """Resend what earlier processes left in this hub's spool folder (runs of this Hub that are still
        logging, and files another process holds, are skipped); stops after timeout_s."""
        with self._lock:
            live = frozenset(self._runs)
        report = resend_folder(self.transport, self.spool_folder, deadline_s=timeout_s, stop=self._stop,
                               duplicate_window_s=self.duplicate_window_s, skip=live)
        self.last_resend = report
        if report.delivered or report.rejected:
            log.info("resent %d spooled record(s) (%d points) of %d run(s); %d refused by the hub (see the runs' "
                     "rejected files)", report.delivered, report.points, len(report.runs), len(report.rejected))
        return report

    def _resend_background(self) -> None:
        try:
            self.resend_spooled(timeout_s=3600.0)
        except Exception:
            log.exception("resending the spool of %s failed", self.url)

    def wait_for_resend(self, timeout_s: float = 60.0) -> ResendReport | None:
        """Wait for the start-up resend to end; its report (None while it still runs)."""
        if self._resend_thread is not None:
            self._resend_thread.join(timeout_s)
            if self._resend_thread.is_alive():
                return None
        return self.last_resend

    def close(self, timeout_s: float = 60.0) -> None:
        """Finish the runs still open ("failed": the script did not finish them), stop resending, close."""
        if self._closed:
            return
        self._closed = True
        for run in self.open_runs():
            with contextlib.suppress(RunClosed):  # another thread finished it meanwhile
                run.finish("failed", error_type="NotFinished", error="the Hub was closed before the run finished",
                           timeout_s=timeout_s)
        self._stop.set()
        if self._resend_thread is not None:
            self._resend_thread.join(timeout=5)
        self.transport.close()


def _close_at_exit(ref: weakref.ref[Hub]) -> None:
    hub = ref()
    if hub is not None and not hub._closed:  # noqa: SLF001 - the module's own hook
        hub.close(timeout_s=hub.finish_timeout_s)
