"""`Hub(url, token)`: the SDK's entry point: start runs, read them back, resend what earlier processes spooled."""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mlhub.client.delivery import ResendReport, resend_folder
from mlhub.client.errors import HubUnavailable
from mlhub.client.run import Run
from mlhub.client.spool import default_spool_dir, hub_folder
from mlhub.client.transport import Transport
from mlhub.errors import InvalidInput

log = logging.getLogger(__name__)


class Hub:
    """A connection to an mlhub API server.

    `url` and `token` default to MLHUB_URL (http://127.0.0.1:8000) and MLHUB_TOKEN, as for the CLI;
    `spool_dir` to MLHUB_SPOOL_DIR, else `~/.mlhub/spool`. With `resend_on_start` (the default) a
    background thread resends, under their original ids, the records that earlier processes left in this
    hub's spool folder (see `resend_spooled`). `duplicate_window_s` should match the server's
    MLHUB_DUPLICATE_WINDOW_S: a record resent later than that after it was made is logged as possibly
    stored twice.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, spool_dir: str | Path | None = None,
                 resend_on_start: bool = True, duplicate_window_s: float = 600.0, timeout_s: float = 30.0,
                 start_timeout_s: float = 30.0, interval_s: float = 0.5, finish_timeout_s: float = 60.0) -> None:
        if url is None or token is None or spool_dir is None:
            from mlhub.settings import Settings

            settings = Settings()
            url = url or settings.url
            token = token or settings.token
            spool_dir = spool_dir or settings.spool_dir
        if not url or not url.startswith(("http://", "https://")):
            raise InvalidInput(f"hub url must be an http:// or https:// URL (or set MLHUB_URL), got {url!r}")
        self.url = url.rstrip("/")
        self.transport = Transport(self.url, token, timeout_s=timeout_s)
        self.spool_folder = hub_folder(Path(spool_dir).expanduser() if spool_dir else default_spool_dir(), self.url)
        self.duplicate_window_s = duplicate_window_s
        self.start_timeout_s = start_timeout_s
        self.interval_s = interval_s
        self.finish_timeout_s = finish_timeout_s
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._resend_thread: threading.Thread | None = None
        self.last_resend: ResendReport | None = None
        self._closed = False
        # A script that ends without finishing its runs: flush them (what the hub does not take in time is
        # spooled) instead of losing the buffered points with the daemon sender threads at exit.
        atexit.register(_close_at_exit, weakref.ref(self))
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
        start_timeout_s while it does not answer. Params and tag values are sent as strings."""
        body: dict[str, Any] = {"experiment": experiment,
                                "params": {str(k): str(v) for k, v in (params or {}).items()},
                                "tags": {str(k): str(v) for k, v in (tags or {}).items()}}
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
            except HubUnavailable as e:
                # A token the hub does not know (401/403) is the caller's to fix: say so at once. (A run's
                # sender, by contrast, keeps retrying them: a hub restarted with its token list recovers.)
                if e.status in (401, 403) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        run = Run(self, created["run_id"], created["experiment_id"], interval_s=self.interval_s,
                  finish_timeout_s=self.finish_timeout_s)
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
        if report.delivered or report.dropped:
            log.info("resent %d spooled record(s) (%d points) of %d run(s); %d dropped", report.delivered,
                     report.points, len(report.runs), report.dropped)
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
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            if run.status is None:
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
