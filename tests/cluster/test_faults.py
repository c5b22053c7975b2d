"""Faults on the scale-out deployment (conftest.py): a node, a projector, an API replica killed, a worker and
a NATS node cut off the network, each under a known workload with exact counts afterwards, and `mlhub audit
verify` (rebuild every projection from the log and compare) passing at the end of each.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.hub.helpers import read_after

from mlhub.client import Hub

from .conftest import ROOT, TOKEN, Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

POINTS = 40_000  # per streaming script: ~4 s of points at the pace below


@dataclass
class Streaming:
    """An SDK script streaming POINTS points through the load balancer in a thread, never waiting on the hub."""

    run: Any
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)
    #: (monotonic time, points delivered) sampled every 10 ms while the script runs
    progress: list[tuple[float, int]] = field(default_factory=list)

    def delivered_after(self, t: float, more_than: int) -> float | None:
        """Seconds after t when more than `more_than` points had been delivered (None: never)."""
        for at, delivered in self.progress:
            if at >= t and delivered > more_than:
                return at - t
        return None


@contextmanager
def streaming(cluster: Cluster, tmp_path: Path, name: str, points: int = POINTS) -> Iterator[Streaming]:
    client = Hub(cluster.url, TOKEN, spool_dir=tmp_path / "spool", interval_s=0.05)
    run = client.start_run(f"cluster-{name}")
    sampled = threading.Event()  # set once the run has finished: every point delivered

    def script() -> None:
        try:
            for step in range(points):
                run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
                if step % 1000 == 999:
                    time.sleep(0.1)
        except BaseException as e:  # noqa: BLE001  # reported by the test
            state.errors.append(e)

    state = Streaming(run, threading.Thread(target=script))

    def sample() -> None:
        while not sampled.is_set():
            state.progress.append((time.monotonic(), run.points_delivered))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    state.thread.start()
    sampler.start()
    try:
        yield state
        state.thread.join()
        assert state.errors == []
        assert run.finish(timeout_s=180), f"not everything arrived: {run.pending} record(s) pending"
    finally:
        state.thread.join()
        sampled.set()
        sampler.join()
        client.close(timeout_s=10)  # a failed test's client stops sending too (before the cluster's hosts go)
    assert run.points_logged == run.points_delivered >= points  # system/ samples come on top


def wait_delivered(stream: Streaming, points: int, timeout: float = 60, *, before_the_fault: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while stream.run.points_delivered < points:
        assert time.monotonic() < deadline, f"only {stream.run.points_delivered} points delivered"
        assert not before_the_fault or stream.thread.is_alive(), "the script ended before the fault"
        time.sleep(0.01)


def assert_stored_once(cluster: Cluster, stream: Streaming, points: int) -> None:
    """Every point of the run stored exactly once, read through the load balancer after the projections: the
    script's `points` of "loss", and all the SDK delivered (the script's and the SDK's own system/ samples, one
    every MLHUB_SYSTEM_METRICS_S)."""
    run_id = stream.run.run_id
    last = asyncio.run(_last_seq(cluster))
    rows = cluster.query(f"SELECT count(*) AS n, count(DISTINCT step) FILTER (WHERE key = 'loss') AS steps, "
                         f"count(*) FILTER (WHERE key = 'loss') AS loss FROM metrics WHERE run_id = '{run_id}'",
                         min_seq=last)
    assert (rows[0]["loss"], rows[0]["steps"], rows[0]["n"]) == (points, points, stream.run.points_delivered), rows
    status = read_after(last, "GET", f"{cluster.url}/api/v1/runs/{run_id}",
                        headers=cluster.headers).json()["run"]["status"]
    assert status == "finished"


async def _last_seq(cluster: Cluster) -> int:
    async with cluster.admin_log() as log:
        return await log.last_sequence()


def test_a_killed_api_replica_loses_no_point(cluster: Cluster, tmp_path: Path) -> None:
    with streaming(cluster, tmp_path, "api") as stream:
        wait_delivered(stream, POINTS // 4)
        killed_at = time.monotonic()
        before = stream.run.points_delivered
        cluster.kill("api1")
        assert stream.thread.is_alive()
    gap = stream.delivered_after(killed_at, before)
    print(f"\nAPI replica killed: the SDK's next delivery {gap:.2f} s later, through the other replica")
    assert gap is not None and gap < 10
    assert_stored_once(cluster, stream, POINTS)
    cluster.start_api("api1")
    cluster.wait_api("api1")
    cluster.audit_verify()


def test_the_stream_leader_killed_mid_ingest_loses_nothing_and_rejoins(cluster: Cluster, tmp_path: Path) -> None:
    leader = cluster.leader()
    with streaming(cluster, tmp_path, "leader") as stream:
        wait_delivered(stream, POINTS // 4)
        before = stream.run.points_delivered
        killed_at = time.monotonic()
        cluster.kill(leader)
        assert stream.thread.is_alive()
    gap = stream.delivered_after(killed_at, before)
    elected = cluster.leader()
    assert elected != leader
    print(f"\nstream leader {leader} SIGKILLed: {elected} leads; the SDK's next delivery {gap:.2f} s after the kill")
    assert gap is not None and gap < 30
    assert_stored_once(cluster, stream, POINTS)
    restarted_at = time.monotonic()
    cluster.start_nats(leader)
    last = cluster.wait_in_sync(60)
    print(f"{leader} restarted: all three replicas hold the same {last} messages "
          f"{time.monotonic() - restarted_at:.2f} s later")
    cluster.audit_verify()


def test_a_killed_active_projector_hands_over_to_the_standby(cluster: Cluster, tmp_path: Path) -> None:
    active = cluster.active_projector
    standby = "p2" if active == "p1" else "p1"
    took_over_before = cluster.log_text(standby).count("took over")
    with streaming(cluster, tmp_path, "projector") as stream:
        wait_delivered(stream, POINTS // 4)
        killed_at = time.monotonic()
        cluster.kill(active)
        # read after the kill: until then the killed instance was still applying events
        at_kill = cluster.positions()
        took_over: float | None = None
        while took_over is None:
            now = cluster.positions()
            if all(now[p] > at_kill[p] for p in at_kill):
                took_over = time.monotonic() - killed_at
            assert time.monotonic() - killed_at < 60, f"{standby} did not take over: {now} (at the kill {at_kill})"
            time.sleep(0.05)
    print(f"\nactive projector {active} SIGKILLed: {standby} applied new events {took_over:.2f} s later")
    assert took_over < 10
    # it waited on the SQL projector's lock (taken first), then took the metric projector's free one
    assert cluster.log_text(standby).count("took over") == took_over_before + 1, cluster.log_text(standby)[-3000:]
    assert_stored_once(cluster, stream, POINTS)
    waiting_before = cluster.log_text(active).count("waiting to take over")
    cluster.start_projector(active)
    cluster.active_projector = standby
    deadline = time.monotonic() + 60
    while cluster.log_text(active).count("waiting to take over") < waiting_before + 1:
        assert time.monotonic() < deadline, f"{active} is not the new standby: {cluster.log_text(active)[-2000:]}"
        time.sleep(0.1)
    cluster.audit_verify()


def _worker_of(cluster: Cluster, worker_id: str) -> str:
    """The host whose worker process has this worker id (host-pid-random)."""
    pid = int(worker_id.rsplit("-", 2)[-2])
    return next(w for w in ("w1", "w2", "w3") if cluster.procs[w].pid == pid)


def test_a_worker_cut_off_loses_its_job_to_another_and_its_late_result_is_refused(cluster: Cluster) -> None:
    config = yaml.safe_load((ROOT / "configs" / "digits-mlp.yaml").read_text())
    answer = httpx.post(f"{cluster.url}/api/v1/jobs", headers=cluster.headers, timeout=30,
                        json={"config": config, "overrides": ["trainer.max_epochs=40"]})
    assert answer.status_code == 201, answer.text
    job_id, run_id, queued_seq = answer.json()["job_id"], answer.json()["run_id"], answer.json()["seq"]

    def job() -> dict[str, Any]:  # read after the job's queueing was projected
        got = read_after(queued_seq, "GET", f"{cluster.url}/api/v1/jobs/{job_id}", headers=cluster.headers)
        assert got.status_code == 200, got.text
        return got.json()  # type: ignore[no-any-return]

    deadline = time.monotonic() + 120
    while (state := job())["status"] != "running":
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    first = _worker_of(cluster, state["worker_id"])
    time.sleep(2)  # training, its metrics streaming
    cut_at = time.monotonic()
    cluster.hosts[first].cut()
    try:
        while (state := job())["attempts"] < 2 or state["status"] != "running":
            assert time.monotonic() - cut_at < 90, f"the job was not redelivered: {state}"
            time.sleep(0.1)
        redelivered = time.monotonic() - cut_at
        second = _worker_of(cluster, state["worker_id"])
        assert second != first
    finally:
        cluster.hosts[first].heal()
    print(f"\nworker {first} cut off: attempt 2 running on {second} {redelivered:.2f} s later")
    deadline = time.monotonic() + 240
    while (state := job())["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    assert state["status"] == "succeeded", state
    deadline = time.monotonic() + 240  # the cut worker trains on, then finds its attempt closed
    while "ended after it lost the job" not in cluster.log_text(first):
        assert time.monotonic() < deadline, f"{first} never ended its attempt: {cluster.log_text(first)[-3000:]}"
        assert cluster.alive(first), cluster.log_text(first)[-3000:]
        time.sleep(0.2)

    async def history() -> list[Any]:
        async with cluster.admin_log() as log:
            return (await log.read_aggregate("job", job_id)).events  # type: ignore[no-any-return]

    events = [r.envelope.event for r in asyncio.run(history())]
    kinds = [(e.event_type, getattr(e, "attempt", None)) for e in events if e.event_type != "job.heartbeat"]
    assert kinds == [("job.queued", None), ("job.started", 1), ("job.failed", 1), ("job.started", 2),
                     ("job.succeeded", 2)], kinds
    failed = next(e for e in events if e.event_type == "job.failed")
    assert failed.error_type == "WorkerLost" and failed.retryable
    last = asyncio.run(_last_seq(cluster))
    run = read_after(last, "GET", f"{cluster.url}/api/v1/runs/{run_id}", headers=cluster.headers).json()["run"]
    assert run["status"] == "finished", run
    cluster.audit_verify()


def test_a_partitioned_nats_node_refuses_writes_while_the_majority_goes_on(cluster: Cluster,
                                                                           tmp_path: Path) -> None:
    from mlhub.errors import EventLogUnavailable
    from mlhub.events import Envelope, TagsSet, aggregate_subject_filter

    from .conftest import NATS_NODES

    # The node to cut off: one that API replicas are connected to (they must move to the majority: that node
    # still answers them), the stream's leader (the hardest to lose) among those if it is one.
    leader = cluster.leader()
    apis = {n: cluster.clients(n).count("mlhub-api") for n in NATS_NODES}
    minority = leader if apis[leader] else max(apis, key=lambda n: apis[n])
    print(f"\nAPI replicas' connections per node: {apis}; the stream leader: {leader}")
    majority = [n for n in NATS_NODES if n != minority]
    others = [cluster.hosts[n] for n in majority]
    with streaming(cluster, tmp_path, "partition") as stream:
        wait_delivered(stream, POINTS // 4)
        before = stream.run.points_delivered
        cut_at = time.monotonic()
        cluster.hosts[minority].partition(others)
        try:
            refused = Envelope(event=TagsSet(run_id=stream.run.run_id, tags={"written": "minority"}),
                               producer="cluster-test")

            async def write_to_the_minority() -> BaseException | None:
                log = cluster.admin_log(f"nats://{cluster.ip(minority)}:4222", append_deadline_s=5)
                await log.connect()  # a client of that node only (no stream set-up: that is a write too)
                try:
                    await log.append(refused)
                except EventLogUnavailable as e:
                    return e
                finally:
                    await log.close()
                return None

            problem = asyncio.run(write_to_the_minority())
            assert problem is not None, f"{minority}, cut off from {majority}, stored a write"
            print(f"{minority} partitioned from {majority}: an append there was refused: {problem}")
            wait_delivered(stream, before + 1, timeout=60, before_the_fault=False)
            gap = time.monotonic() - cut_at
            elected = cluster.leader(tuple(majority))
            assert elected in majority
            print(f"{elected} leads the majority; the SDK's next delivery {gap:.2f} s after the cut")
            assert gap < 45  # 5-22 s measured (the API replicas on the cut-off node move after 10 s)
            written = cluster.stream_state(elected)["last_seq"]
            assert cluster.stream_state(minority)["last_seq"] < written, "the minority got the majority's writes"
        finally:
            cluster.hosts[minority].unpartition(others)
        healed_at = time.monotonic()
        while cluster.stream_state(minority).get("last_seq", 0) < written:
            assert time.monotonic() - healed_at < 60, f"{minority} did not catch up: {cluster.stream_state(minority)}"
            time.sleep(0.05)
        print(f"healed: {minority} holds the majority's writes (to seq {written}) "
              f"{time.monotonic() - healed_at:.2f} s later")
    last = cluster.wait_in_sync(60)
    print(f"one history: the same {last} messages on all three nodes")
    assert_stored_once(cluster, stream, POINTS)

    async def minority_write_stored() -> bool:
        async with cluster.admin_log() as log:
            return bool(await log.find_events(aggregate_subject_filter("run", stream.run.run_id),
                                                [refused.event_id]))

    assert not asyncio.run(minority_write_stored()), "the write refused by the minority is in the stream"
    cluster.audit_verify()
