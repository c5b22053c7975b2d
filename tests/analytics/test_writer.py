"""The metric table writer: points land exactly once across repeats, restarts and crashes; NaN survives."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from deltalake import DeltaTable
from tests.analytics.conftest import Events, read_points, same_points

from mlhub.analytics import DEFAULT_APP_ID, MetricTableWriter, run_bucket
from mlhub.eventlog import EventLog
from mlhub.events import Envelope, decode, encode


def _records(envelopes: list[Envelope], first_seq: int = 1) -> list[tuple[int, Envelope]]:
    return [(first_seq + i, e) for i, e in enumerate(envelopes)]


def _log(events: Events) -> list[tuple[int, Envelope]]:
    """A small log: two runs in two experiments, metrics in several batches, unrelated events between."""
    envs = [
        events.run_created("r1", "expA"),
        events.run_created("r2", "expB"),
        events.params("r1", lr="0.1"),
        events.metrics("r1", {"loss": [1.0, 0.5, 0.25], "acc": [0.1, 0.2, 0.3]}),
        events.metrics("r2", {"loss": [2.0, float("nan"), 1.0]}),
        events.params("r2", lr="0.2"),
        events.metrics("r1", {"loss": [0.125, float("inf"), -float("inf")]}),
        events.metrics("r2", {"acc": [0.5]}),
    ]
    return _records(envs)


def test_points_land_once_with_experiment_and_checkpoint(tmp_path: Path, events: Events) -> None:
    log = _log(events)
    writer = MetricTableWriter(tmp_path, flush_points=1_000_000)
    assert writer.checkpoint() == 0
    writer.apply_records(log)
    assert read_points(tmp_path) == []  # buffered, nothing visible yet
    assert writer.flush() == 8
    points = read_points(tmp_path)
    assert len(points) == 13
    assert {(r, e) for r, e, *_ in points} == {("r1", "expA"), ("r2", "expB")}
    assert DeltaTable(str(tmp_path / "points")).transaction_version(DEFAULT_APP_ID) == 8
    nan = [p for p in points if p[0] == "r2" and p[2] == "loss" and p[3] == 1]
    assert len(nan) == 1 and math.isnan(nan[0][4])
    assert {p[4] for p in points if p[0] == "r1" and p[3] in (4, 5)} == {float("inf"), -float("inf")}

    # The same events again, in the same writer and in a restarted one: no-ops.
    writer.apply_records(log)
    writer.flush()
    restarted = MetricTableWriter(tmp_path)
    assert restarted.checkpoint() == 8
    restarted.apply_records(log)
    restarted.flush()
    assert same_points(read_points(tmp_path), points)


def test_crash_between_batches_loses_nothing_after_replay(tmp_path: Path, events: Events) -> None:
    log = _log(events)
    first = MetricTableWriter(tmp_path, flush_points=1_000_000)
    first.apply_records(log[:4])
    first.flush()  # checkpoint 4
    first.apply_records(log[4:7])  # buffered, then the process "crashes": no flush
    del first

    resumed = MetricTableWriter(tmp_path)
    checkpoint = resumed.checkpoint()
    assert checkpoint == 4
    # The runtime replays from checkpoint + 1 (here: from an even older position, which must also be harmless).
    resumed.apply_records(log[2:])
    resumed.flush()

    reference_dir = tmp_path / "reference"
    reference = MetricTableWriter(reference_dir)
    reference.apply_records(log)
    reference.flush()
    assert read_points(tmp_path)  # not empty
    assert repr(read_points(tmp_path)) == repr(read_points(reference_dir))


def test_experiment_of_a_run_created_before_the_checkpoint_survives_restart(tmp_path: Path, events: Events) -> None:
    first = MetricTableWriter(tmp_path)
    first.apply_records(_records([events.run_created("r9", "expZ"), events.params("r9", a="1")]))
    first.flush()  # only the run map and the checkpoint are committed
    second = MetricTableWriter(tmp_path)
    assert second.checkpoint() == 2
    assert second.experiment_of("r9") == "expZ"
    second.apply_records(_records([events.metrics("r9", {"loss": [1.0]})], first_seq=3))
    second.flush()
    assert read_points(tmp_path) == [("r9", "expZ", "loss", 0, 1.0)]


def test_flushes_by_size_and_partitions_by_run_bucket(tmp_path: Path, events: Events) -> None:
    writer = MetricTableWriter(tmp_path, flush_points=1000, flush_interval_s=3600)
    log = [events.run_created(f"run{i}") for i in range(10)]
    log += [events.metrics(f"run{i % 10}", {"loss": [float(j) for j in range(300)]}) for i in range(20)]
    writer.apply_records(_records(log[:16]))
    assert writer.checkpoint() == 16 and writer.pending_points == 0  # 1800 points: flushed by size
    writer.apply_records(_records(log[16:19], first_seq=17))
    assert writer.checkpoint() == 16 and writer.pending_points == 900
    writer.apply_records(_records(log[19:], first_seq=20))
    writer.flush()
    assert writer.checkpoint() == 30
    table = DeltaTable(str(tmp_path / "points")).to_pyarrow_table(columns=["bucket", "run_id"])
    assert table.num_rows == 6000
    assert all(r["bucket"] == run_bucket(r["run_id"]) for r in table.to_pylist())
    for uri in DeltaTable(str(tmp_path / "points")).file_uris():
        assert "/bucket=" in uri


def test_advances_the_checkpoint_over_events_without_points(tmp_path: Path, events: Events) -> None:
    writer = MetricTableWriter(tmp_path, advance_every=5)
    writer.apply_records(_records([events.params("r1", **{f"p{i}": "x"}) for i in range(6)]))
    assert writer.checkpoint() == 6
    assert read_points(tmp_path) == []


@dataclass(frozen=True)
class _Incoming:
    seq: int
    subject: str
    data: bytes
    envelope: Envelope | None
    error: str | None = None

    def dead_letter(self, error: str) -> tuple[int, str]:
        return (self.seq, error)


@dataclass(frozen=True)
class _Batch:
    events: list[_Incoming]
    last_seq: int


def test_runtime_batch_interface_returns_dead_letters_and_moves_to_last_seq(tmp_path: Path, events: Events) -> None:
    env = events.metrics("r1", {"loss": [1.0, 2.0]})
    batch = _Batch(
        events=[_Incoming(3, env.subject, encode(env), env), _Incoming(4, "mlhub.ev.x.y.z", b"{", None, "bad json")],
        last_seq=9,
    )
    writer = MetricTableWriter(tmp_path)
    assert writer.name == "metrics" and writer.event_types is not None
    assert list(writer.apply(batch)) == [(4, "bad json")]
    assert writer.flush() == 9
    assert list(MetricTableWriter(tmp_path).apply(batch)) == []  # already applied: no dead letter twice
    assert len(read_points(tmp_path)) == 2


async def test_exactly_once_from_a_real_event_log_across_a_crash(
    tmp_path: Path, event_log: EventLog, events: Events
) -> None:
    """Events appended to a real nats-server; a writer crashes mid-stream; a new one resumes from its checkpoint."""
    envelopes = [events.run_created(f"run{i}", f"exp{i % 2}") for i in range(4)]
    envelopes += [events.metrics(f"run{i % 4}", {"loss": [float(i)] * 50, "acc": [0.5] * 50}) for i in range(40)]
    for env in envelopes:
        await event_log.append(env)
    metrics_dir = tmp_path / "metrics"

    async def consume(writer: MetricTableWriter, stop_after: int | None) -> None:
        applied = 0
        async for batch in event_log.replay_batches(writer.checkpoint() + 1, max_batch=7):
            for m in batch:  # one at a time, so the crash point does not depend on how batches arrive
                writer.apply_records([(m.seq, decode(m.data))])
                applied += 1
                if stop_after is not None and applied >= stop_after and writer.pending_points > 0:
                    return  # crash: whatever is buffered is lost

    crashed = MetricTableWriter(metrics_dir, flush_points=500, flush_interval_s=3600)
    await consume(crashed, stop_after=20)
    assert 0 < crashed.checkpoint() < crashed.last_applied and crashed.pending_points > 0
    resumed = MetricTableWriter(metrics_dir, flush_points=500, flush_interval_s=3600)
    await consume(resumed, stop_after=None)
    resumed.flush()
    assert resumed.checkpoint() == len(envelopes)
    points = read_points(metrics_dir)
    assert len(points) == 40 * 100
    assert len({(p[0], p[2], p[3]) for p in points}) == len(points)  # no duplicates
    assert {(p[0], p[1]) for p in points} == {(f"run{i}", f"exp{i % 2}") for i in range(4)}
