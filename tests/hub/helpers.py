"""Running `mlhub up` / `mlhub demo` as a user does (subprocesses) and finding every process they started."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

MLHUB = [sys.executable, "-m", "mlhub.cli"]
ROOT = Path(__file__).resolve().parents[2]


def mlhub(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """One `mlhub` CLI call as a user makes it (a process of its own, from the repository root)."""
    return subprocess.run([*MLHUB, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a CLI call that must succeed (its whole output when it did not)."""
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Callable[[], str], timeout_s: float = 90.0,
                 poll_s: float = 0.1) -> None:
    """Wait until the API at url answers /healthz with 200; fail with the end of its log if its process exits
    first or it does not answer within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the API at {url} exited with {proc.returncode}:\n{log()[-3000:]}"
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(poll_s)
    raise AssertionError(f"the API at {url} did not answer /healthz within {timeout_s:g} s:\n{log()[-3000:]}")


def read_after(seq: int, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """A read that waits for `seq` (min_seq) as a dashboard does: a projector that restarted or took over catches
    up from its checkpoint, which on a loaded machine can take longer than the API's wait, and the API then
    answers 504 PROJECTION_TIMEOUT: ask again, for up to 60 s."""
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.request(method, url, params={"min_seq": seq}, timeout=60, **kwargs)
        if answer.status_code != 504 or time.monotonic() > deadline:
            return answer
        assert answer.json()["error"]["code"] == "PROJECTION_TIMEOUT", answer.text


def hub_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with no MLHUB_* settings but the data dir (and extra)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_")}
    env.update({"MLHUB_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **extra})
    return env


def processes_of(data_dir: Path) -> list[psutil.Process]:
    """Every live process that belongs to the hub of data_dir: started with it as MLHUB_DATA_DIR, or naming it on
    its command line (the nats-server). Found by scanning the whole machine, so orphans are found too."""
    mine = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == mine:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            if str(data_dir) in cmdline or proc.environ().get("MLHUB_DATA_DIR") == str(data_dir):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def wait_until_none_left(data_dir: Path, timeout: float = 15) -> list[psutil.Process]:
    """Wait for every process of the hub to be gone; what is still alive at the end."""
    deadline = time.monotonic() + timeout
    left = processes_of(data_dir)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_of(data_dir)
    return left


@dataclass
class RunningHub:
    """An `mlhub up` (or `mlhub demo`) subprocess whose output is collected by a thread."""

    proc: subprocess.Popen[str]
    data_dir: Path
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 180) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output)
            if match:
                return match
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader thread collect the last lines
                match = re.search(pattern, self.output)
                if match:
                    return match
                raise AssertionError(f"exited with {self.proc.returncode} before {pattern!r}:\n{self.output}")
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.output}")


def start(args: list[str], data_dir: Path, port: int, cwd: Path = ROOT, **env: str) -> RunningHub:
    proc = subprocess.Popen([*MLHUB, *args, "--data-dir", str(data_dir), "--port", str(port)],
                            env=hub_env(data_dir, **env), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    hub = RunningHub(proc, data_dir, port)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            hub.lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return hub


def stop(hub: RunningHub) -> None:
    """Stop a hub a test left running (SIGTERM, then SIGKILL of everything of its data dir)."""
    if hub.proc.poll() is None:
        hub.proc.terminate()
        try:
            hub.proc.wait(60)
        except subprocess.TimeoutExpired:
            hub.proc.kill()
            hub.proc.wait()
    for proc in wait_until_none_left(hub.data_dir, timeout=5):
        proc.kill()


@contextlib.contextmanager
def serving_hub(data_dir: Path, workers: int = 1, cwd: Path = ROOT, **env: str) -> Iterator[RunningHub]:
    """`mlhub up --workers N` on data_dir (with extra MLHUB_* settings in env), run in cwd (the repository root by
    default), until the block ends; afterwards no process of it is left."""
    running = start(["up", "--workers", str(workers)], data_dir, free_port(), cwd=cwd, **env)
    try:
        running.wait_for(r"press Ctrl-C to stop")
        yield running
    finally:
        stop(running)
        assert wait_until_none_left(data_dir, timeout=5) == []
