"""Hosts for the cluster tests: Linux network namespaces on one bridge, each with its own address.

Every "host" is a network namespace with one veth pair: one end (`eth0`, address 10.231.N.x/24) inside, the
other end on a bridge in the machine's own namespace, which also holds 10.231.N.1 so the test process reaches
every host. Hosts reach each other over the bridge only. `cut()` takes a host's bridge end down: the host is
then cut off from every other host and from the test (its TCP connections are not closed, they stall, as when
a cable is pulled); `heal()` puts it back. Processes run inside a host with `ip netns exec` (which execs: the
Popen's pid is the program's own, so a signal reaches it directly).

Needs root (CAP_NET_ADMIN) and iproute2, which CI has; `available()` says why not where they are missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(("netns", "exec", ns, "ip") if ns else ()), *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done


def available() -> str | None:
    """None when network namespaces can be made here, else why not."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    probe = f"mlhprobe{os.getpid() % 100000}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    """One namespace: a name, its address, and the processes started in it."""

    net: Network
    name: str
    ns: str
    address: str
    veth: str  # the bridge end, in the machine's namespace
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(self, args: list[str], *, env: dict[str, str], log: Path, user: str | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a program in this host, its stdout and stderr appended to `log`."""
        prefix = ["ip", "netns", "exec", self.ns]
        if user is not None:
            prefix += ["runuser", "-u", user, "--"]
        out: IO[bytes] = log.open("ab")
        try:
            proc = subprocess.Popen([*prefix, *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                    start_new_session=True)
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def run(self, args: list[str], *, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a program in this host to its end."""
        return subprocess.run(["ip", "netns", "exec", self.ns, *args], env=env, capture_output=True, text=True,
                              timeout=timeout)

    def cut(self) -> None:
        """Cut the host off the network (its bridge end down: no packet in or out)."""
        _ip("link", "set", self.veth, "down")

    def heal(self) -> None:
        """Put the host back on the network."""
        _ip("link", "set", self.veth, "up")

    def partition(self, others: list[Host]) -> None:
        """Cut this host off `others` only (both ways: blackhole routes on each side, so sends fail at once and
        nothing arrives); every other host, the machine's namespace included, still reaches it."""
        for other in others:
            _ip("route", "add", "blackhole", f"{other.address}/32", ns=self.ns)
            _ip("route", "add", "blackhole", f"{self.address}/32", ns=other.ns)

    def unpartition(self, others: list[Host]) -> None:
        for other in others:
            _ip("route", "del", "blackhole", f"{other.address}/32", ns=self.ns, check=False)
            _ip("route", "del", "blackhole", f"{self.address}/32", ns=other.ns, check=False)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.wait(10)


class Network:
    """A bridge and the hosts on it; `close()` removes every namespace, link and process it made."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 10000:04d}"
        self.tag = tag
        self.subnet = f"10.231.{os.getpid() % 250 + 1}"
        self.bridge = f"mlhb{tag}"
        self.hosts: dict[str, Host] = {}
        self.close()  # leftovers of an earlier run with the same pid
        _ip("link", "add", "name", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    @property
    def gateway(self) -> str:
        """The machine's own address on the bridge (where the test process is reached from the hosts)."""
        return f"{self.subnet}.1"

    def add(self, name: str) -> Host:
        index = len(self.hosts) + 10
        ns = f"mlh{self.tag}-{name}"
        veth = f"mlh{self.tag}v{index}"
        host = Host(self, name, ns, f"{self.subnet}.{index}", veth)
        _ip("netns", "add", ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
        _ip("link", "set", f"{veth}p", "netns", ns)
        _ip("link", "set", f"{veth}p", "name", "eth0", ns=ns)
        _ip("addr", "add", f"{host.address}/24", "dev", "eth0", ns=ns)
        _ip("link", "set", "eth0", "up", ns=ns)
        _ip("link", "set", "lo", "up", ns=ns)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        self.hosts[name] = host
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            host.stop_all()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in listed.splitlines():
            ns = line.split()[0] if line.split() else ""
            if ns.startswith(f"mlh{self.tag}-"):
                _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.bridge, check=False)
        self.hosts.clear()


def wait_port(address: str, port: int, timeout: float = 30, proc: subprocess.Popen[bytes] | None = None,
              what: str = "") -> None:
    """Wait until a TCP port answers (from the machine's namespace, over the bridge)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what or address}: exited with {proc.returncode} before {address}:{port} answered")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((address, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what or address}: {address}:{port} did not answer within {timeout:g} s")
