"""The local hub of `mlhub up` and `mlhub demo`: every part of mlhub in one process tree.

The parent process (this module) starts the embedded nats-server (unless MLHUB_NATS_URL names one), creates
the stream, migrates the read model, then supervises its children: `mlhub projector --only sql` and
`--only metrics`, N `mlhub worker` processes and the API (uvicorn) on 127.0.0.1:PORT. There is no scheduler
process: submitting is an append done by whoever submits, and job timeouts are enforced by the workers.

Process tree guarantees:
- every child runs in a session of its own, so a Ctrl-C in the terminal reaches only the parent, which then
  stops the children in order (API, workers and projector first, with SIGTERM, then the event log last, so
  a worker can still give its job back);
- every child has PR_SET_PDEATHSIG=SIGKILL (and the nats-server SIGTERM, see mlhub.eventlog.server): when
  the parent dies, even by SIGKILL, no child outlives it. A job a killed worker was running is redelivered
  as a new attempt, as after any worker crash.

Healing: once started, a part that dies (the nats-server, a projector, a worker, the API) is restarted by
`supervise()` after a backoff (BACKOFF_FIRST_S, doubling with each restart of that part in the last
RESTART_WINDOW_S, at most BACKOFF_MAX_S), from the main thread (the parent-death signal belongs to the thread
that started a child). The nats-server comes back on the same port with the same JetStream store, so nothing
acknowledged is lost and every client reconnects; a restarted projector goes on from its checkpoint. A part
restarted more than MLHUB_HUB_MAX_RESTARTS_PER_MIN times in RESTART_WINDOW_S stops the hub, which says why.
Each restart is logged (stderr of `mlhub up` and the part's own log), and the state of every part is written to
Settings.hub_parts_file (DATA_DIR/hub-parts.json), which the API's /readyz reports.

Locked doors: the data dir is made 0700, the SQLite read model 0600, and every child runs with umask 077. The
embedded nats-server refuses anonymous clients; each child connects as the user of its role (projectors:
`projector`, workers: `worker`, the API: `api`; see mlhub.eventlog.auth) through MLHUB_NATS_CREDS, which names
that role's credential file in the data dir. hub.json holds no secret: URLs without credentials and the path of
the (0600) token file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mlhub.commands.parts import PartState, write_parts
from mlhub.errors import MlhubError
from mlhub.settings import Settings

if TYPE_CHECKING:
    from mlhub.eventlog import EmbeddedNats, EventLog

PR_SET_PDEATHSIG = 1
#: Longest the children get to stop after SIGTERM before they are killed (a worker finishes its batch).
STOP_GRACE_S = 30.0
#: Longest the API may take to answer /healthz after it was started.
READY_TIMEOUT_S = 120.0
#: The file next to the data dir's state that tells clients where the local hub serves.
HUB_FILE = "hub.json"
#: The hub's admin token (0600), made on the first start and reused on every later one, when
#: MLHUB_API_TOKENS/MLHUB_API_TOKENS_FILE are unset. Delete it (hub stopped) to get a new one.
TOKEN_FILE = "api-token"
#: The name of that token: its writes are recorded as the actor `token:hub-admin`.
HUB_TOKEN_NAME = "hub-admin"
#: The restart bound counts the restarts of one part within this many seconds.
RESTART_WINDOW_S = 60.0
#: Delay before the first restart of a part; it doubles with each restart in the window, up to BACKOFF_MAX_S.
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 8.0
#: The name of the embedded nats-server among the parts.
NATS_PART = "nats-server"


class HubError(MlhubError):
    """The local hub could not start, or one of its parts died."""

    code = "HUB_ERROR"


@dataclass
class Child:
    """One supervised process."""

    name: str
    args: list[str]
    log_path: Path
    #: The event-log user it connects as (with the embedded server): api, projector or worker.
    role: str = "admin"
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    part: PartState = field(init=False)

    def __post_init__(self) -> None:
        self.part = PartState(self.name)


@dataclass
class HubInfo:
    """Where the started hub serves and how to authenticate."""

    url: str
    #: The event log's URL for this process (with the embedded server: carrying its admin's credentials, so
    #: never print it); `public_nats_url` is the same without credentials.
    nats_url: str
    public_nats_url: str
    data_dir: Path
    token: str | None
    token_file: Path | None
    logs_dir: Path


@dataclass
class Hub:
    """Start, watch and stop the local hub. Construct, then `start()`; always `stop()` (also after errors)."""

    settings: Settings
    port: int = 8000
    workers: int = 1
    host: str = "127.0.0.1"
    echo: Callable[[str], None] = print
    #: The project whose configs/metrics.yaml (with migrations/metrics/, the layout of metricdefs.SchemaFiles)
    #: `start()` declares, as `mlhub metrics apply` does: by default the working directory, whose relative
    #: configs/metrics.yaml is also the default of `mlhub metrics apply --file`.
    project_root: Path = Path(".")
    children: list[Child] = field(default_factory=list)
    info: HubInfo | None = None
    _nats: EmbeddedNats | None = None
    _nats_part: PartState | None = None
    _env: dict[str, str] = field(default_factory=dict)
    _lock_fd: int | None = None

    @property
    def data_dir(self) -> Path:
        """The hub's data dir, absolute (children may run in another working dir)."""
        return self.settings.data_dir.resolve()

    def start(self) -> HubInfo:
        """Start everything and wait until the API answers; HubError names what failed."""
        if self.info is not None:
            raise HubError("the hub is started already")
        from mlhub.eventlog import private_dir, redact_url

        private_dir(self.data_dir)  # credentials, the token, the read model: the owner's only
        self._take_lock()
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        _check_port_free(self.host, self.port)
        nats_url, public_nats_url = self._start_nats()
        embedded = f" (embedded nats-server, store {self.settings.nats_dir.resolve()}, one user per part)"
        self.echo(f"event log: {public_nats_url}" + ("" if self.settings.nats_url else embedded))
        asyncio.run(self._prepare_stream(nats_url))
        self._migrate()
        token, token_file = self._token()
        url = f"http://{self.host}:{self.port}"
        env = self._child_env(public_nats_url if self._nats is not None else nats_url, token)
        self._env = env  # kept for restarts
        python = [sys.executable, "-m"]
        # The SQL and metric-table projectors in a process each: they would share one interpreter lock otherwise
        # (measured: ingest until queryable 435,000 -> 592,000 points/s, tools/bench/api.py).
        self.children = [Child(f"projector-{name}", [*python, "mlhub.cli", "projector", "--only", name],
                               logs / f"projector-{name}.log", role="projector") for name in ("sql", "metrics")]
        self.children += [Child(f"worker-{i + 1}", [*python, "mlhub.cli", "worker"], logs / f"worker-{i + 1}.log",
                                role="worker") for i in range(self.workers)]
        self.children.append(Child("api", [*python, "uvicorn", "--factory", "mlhub.api:create_app", "--host",
                                           self.host, "--port", str(self.port)], logs / "api.log", role="api"))
        for child in self.children:
            self._spawn(child, env)
        self.info = HubInfo(url=url, nats_url=nats_url, public_nats_url=public_nats_url, data_dir=self.data_dir,
                            token=token, token_file=token_file, logs_dir=logs)
        self._wait_ready(url)
        self._write_parts()
        (self.data_dir / HUB_FILE).write_text(json.dumps({
            "url": url, "pid": os.getpid(), "nats_url": redact_url(public_nats_url),
            "token_file": str(token_file) if token_file else None}) + "\n")
        return self.info

    def _take_lock(self) -> None:
        """One `mlhub up` per data dir: it owns DIR/hub.json and DIR/api-token (a flock on DIR/hub.lock)."""
        fd = os.open(self.data_dir / "hub.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                other = json.loads((self.data_dir / HUB_FILE).read_text())
                where = f" (pid {other.get('pid')}, serving at {other.get('url')})"
            except (OSError, ValueError, AttributeError):
                where = ""
            raise HubError(f"another `mlhub up` already runs on the data dir {self.data_dir}{where}: stop it, "
                           "or give this one another --data-dir") from None
        self._lock_fd = fd

    def _start_nats(self) -> tuple[str, str]:
        """The event log's URL for this process (the embedded admin's, with credentials) and without secrets."""
        from mlhub.eventlog import EmbeddedNats, redact_url

        if self.settings.nats_url:
            return self.settings.nats_url, redact_url(self.settings.nats_url)
        server = EmbeddedNats(self.settings.nats_dir, port=self.settings.nats_port, sync=self.settings.nats_sync)
        url = server.start()  # stops what it started when it fails
        self._nats = server
        self._nats_part = PartState(NATS_PART, pid=server.process.pid if server.process else None)
        assert server.public_url is not None
        return url, server.public_url

    async def _prepare_stream(self, url: str) -> None:
        from mlhub.commands.common import open_event_log

        # As the admin (embedded) or as MLHUB_NATS_CREDS/the URL's user names (external): creates or checks the stream.
        settings = self.settings if self.settings.nats_url else self.settings.model_copy(update={"nats_creds": None})
        async with open_event_log(settings, url, "mlhub-up") as log:
            await self._declare_metrics(log)

    async def _declare_metrics(self, log: EventLog) -> None:
        """Declare the project's metric definitions (`mlhub metrics apply`: metric.defined for new ones,
        metric.migrated for pending migrations), so the leaderboard has them from the start. No file: nothing
        applied, said so; a file the log refuses (a changed definition without a migration, a bad file): said
        so, and the hub serves on."""
        from mlhub.metricdefs import SchemaFiles, apply_definitions

        files = SchemaFiles.of(self.project_root)
        where = files.definitions.resolve()
        if not files.definitions.is_file():
            self.echo(f"metric definitions: none applied (no {where}; `mlhub metrics apply --file FILE` "
                      "declares them)")
            return
        try:
            result = await apply_definitions(log, files.definitions, producer=self.settings.producer,
                                             migrations_dir=files.migrations if files.migrations.is_dir() else None)
        except MlhubError as e:
            self.echo(f"metric definitions ({where}): none applied: error [{e.code}]: {e}")
            return
        self.echo(f"metric definitions ({where}): {result.summary()}")

    def _migrate(self) -> None:
        from mlhub.readmodel import create_engine, migrate, sqlite_path

        engine = create_engine(self.settings.resolved_database_url, writer=True)
        try:
            migrate(engine)
            path = sqlite_path(engine)
            if path is not None:  # its journal files (WAL, SHM) take the database file's mode
                os.chmod(path, 0o600)
        finally:
            engine.dispose()

    def _token(self) -> tuple[str | None, Path | None]:
        """The hub's admin token when no token is configured: DATA_DIR/api-token (0600) when it holds one (so
        pasted and scripted tokens survive a restart), else a new one written there."""
        if self.settings.api_tokens or self.settings.api_tokens_file:
            return None, None
        path = self.data_dir / TOKEN_FILE
        try:
            token = path.read_text().strip()
        except FileNotFoundError:
            token = ""
        except OSError as e:
            raise HubError(f"cannot read the hub's admin token {path}: {e.strerror or e}") from e
        if token:
            if len(token) < 8 or any(c in token for c in ",:# \t"):
                raise HubError(f"{path} does not hold a usable token (at least 8 characters, no ',', ':', '#' or "
                               "spaces): delete it and start again for a new one")
            os.chmod(path, 0o600)  # it may have been copied with laxer permissions
            return token, path
        path.unlink(missing_ok=True)
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token, path

    def _child_env(self, nats_url: str, token: str | None) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"MLHUB_DATA_DIR": str(self.data_dir), "MLHUB_NATS_URL": nats_url, "PYTHONUNBUFFERED": "1"})
        if token is not None:
            env["MLHUB_API_TOKENS"] = f"{token}:admin:{HUB_TOKEN_NAME}"
        return env

    def _spawn(self, child: Child, env: dict[str, str]) -> None:
        parent = os.getpid()
        child.log = child.log_path.open("ab")
        if self._nats is not None:  # the embedded server: each part connects as its role's user
            env = {**env, "MLHUB_NATS_CREDS": str(self._nats.credentials_file(child.role))}
        child.process = subprocess.Popen(
            child.args, env=env, stdin=subprocess.DEVNULL, stdout=child.log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=lambda: _die_with_parent(parent))
        child.part.pid = child.process.pid

    def _wait_ready(self, url: str) -> None:
        import httpx

        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            dead = self.dead_child()
            if dead is not None:
                raise HubError(dead)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.2)
        raise HubError(f"the API did not answer at {url} within {READY_TIMEOUT_S:g} s; see "
                       f"{self.data_dir / 'logs' / 'api.log'}")

    def dead_child(self) -> str | None:
        """A line naming a part that stopped on its own (and its log), or None while all run."""
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                return (f"the {child.name} process exited with code {child.process.returncode}; its log: "
                        f"{child.log_path}\n{_tail(child.log_path)}")
        server = self._nats
        if server is not None and server.process is not None and server.process.poll() is not None:
            return (f"the embedded nats-server exited with code {server.process.returncode}; its log: "
                    f"{server.log_file}")
        return None

    def parts(self) -> list[PartState]:
        """Every part, the event log first."""
        return ([self._nats_part] if self._nats_part is not None else []) + [c.part for c in self.children]

    def supervise(self) -> str | None:
        """One look at every part (call it from the main thread, often): a part found dead is restarted after
        its backoff. Returns a line saying why the hub must stop (a part died more often than the bound allows,
        or could not be started again), else None."""
        changed = False
        now = time.monotonic()
        server, part = self._nats, self._nats_part
        if server is not None and part is not None:
            if part.state == "running" and server.process is not None and server.process.poll() is not None:
                changed = True
                fatal = self._died(part, server.process.returncode, server.log_file)
                if fatal is not None:
                    return fatal
            if part.state == "restarting" and now >= part.restart_at:
                changed = True
                try:
                    self._restart_nats(server)
                except MlhubError as e:
                    part.state = "failed"
                    self._write_parts()
                    return f"the {NATS_PART} could not be restarted: {e}"
                self._running(part, server.process.pid if server.process else None)
        for child in self.children:
            process = child.process
            if child.part.state == "running" and process is not None and process.poll() is not None:
                changed = True
                fatal = self._died(child.part, process.returncode, child.log_path)
                if fatal is not None:
                    return fatal
            if child.part.state == "restarting" and now >= child.part.restart_at:
                changed = True
                self._respawn(child)
        if changed:
            self._write_parts()
        return None

    def _died(self, part: PartState, code: int | None, log_path: Path) -> str | None:
        """Record a death; schedule the restart, or say why not (the bound)."""
        now = time.monotonic()
        part.last_exit_code = code
        part.since = time.time()
        part.recent = [t for t in part.recent if now - t < RESTART_WINDOW_S]
        bound = self.settings.hub_max_restarts_per_min
        if len(part.recent) >= bound:
            part.state = "failed"
            self._write_parts()
            return (f"the {part.name} process exited with code {code} after {len(part.recent)} restart(s) within "
                    f"{RESTART_WINDOW_S:g} s (MLHUB_HUB_MAX_RESTARTS_PER_MIN={bound}): not restarting it again; "
                    f"its log: {log_path}\n{_tail(log_path)}")
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** len(part.recent))
        part.recent.append(now)
        part.state, part.restart_at = "restarting", now + delay
        self.echo(f"the {part.name} process exited with code {code}; restarting it in {delay:g} s (restart "
                  f"{len(part.recent)} of at most {bound} within {RESTART_WINDOW_S:g} s); its log: {log_path}")
        return None

    def _running(self, part: PartState, pid: int | None) -> None:
        part.state, part.pid, part.since = "running", pid, time.time()
        part.restarts += 1
        self.echo(f"restarted the {part.name} process (pid {pid}, restart {part.restarts} of this session)")

    def _respawn(self, child: Child) -> None:
        if child.log is not None:
            child.log.close()
        with child.log_path.open("ab") as log:
            log.write(f"--- {datetime.now(UTC).isoformat()} mlhub up: restarting {child.name} (it exited with "
                      f"code {child.part.last_exit_code}) ---\n".encode())
        self._spawn(child, self._env)
        assert child.process is not None
        self._running(child.part, child.process.pid)

    def _restart_nats(self, server: EmbeddedNats) -> None:
        """The same port and JetStream store: clients reconnect to the URL they know, nothing stored is lost."""
        if server.process is not None and server.process.stderr is not None:
            server.process.stderr.close()
        server.restart()

    def _write_parts(self) -> None:
        write_parts(self.settings.hub_parts_file.resolve(), self.parts())

    def stop(self) -> None:
        """Stop every part: SIGTERM to the children, SIGKILL after STOP_GRACE_S, then the event log."""
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.echo(f"the {child.name} process did not stop within {STOP_GRACE_S:g} s: killed")
                child.process.kill()
                child.process.wait()
        for child in self.children:
            if child.log is not None:
                child.log.close()
                child.log = None
        if self._nats is not None:
            self._nats.stop()
            self._nats = None
        if self._lock_fd is not None:  # the files are this hub's only while it holds the lock
            (self.data_dir / HUB_FILE).unlink(missing_ok=True)
            self.settings.hub_parts_file.unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise HubError(f"cannot serve the API on {host}:{port}: {e.strerror or e} (is another `mlhub up` "
                           "running? choose another port with --port)") from e


def _die_with_parent(parent_pid: int) -> None:
    """In the child before exec: ask Linux to SIGKILL us when the parent dies; exit if it already has. What the
    child writes (logs, read model, metric tables, artifacts) is its owner's only (umask 077)."""
    os.umask(0o077)
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


@dataclass(frozen=True)
class LocalHub:
    """What DATA_DIR/hub.json (written by a running `mlhub up`) says about the hub of that data dir."""

    #: The hub.json it was read from.
    file: Path
    url: str
    pid: int | None
    token_file: Path | None

    @property
    def process_alive(self) -> bool:
        """Whether the `mlhub up` process that wrote the file still exists (a killed one leaves the file)."""
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def token_for(self, url: str) -> str | None:
        """The admin token of this hub when it is the one serving `url`, else None (another hub, or no token)."""
        if _normal(self.url) != _normal(url) or self.token_file is None:
            return None
        try:
            return self.token_file.read_text().strip() or None
        except OSError:
            return None


def read_hub_file(data_dir: Path) -> LocalHub | None:
    """The local hub that DATA_DIR/hub.json names, or None (no such file, or not one `mlhub up` wrote)."""
    file = data_dir / HUB_FILE
    try:
        hub = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(hub, dict) or not isinstance(hub.get("url"), str) or not hub["url"]:
        return None
    pid, token_file = hub.get("pid"), hub.get("token_file")
    return LocalHub(file=file.resolve(), url=hub["url"].rstrip("/"), pid=pid if isinstance(pid, int) else None,
                    token_file=Path(token_file) if isinstance(token_file, str) and token_file else None)


def _normal(url: str) -> str:
    return url.rstrip("/").replace("://localhost:", "://127.0.0.1:")
