"""Compaction: same content, sorted files, and readers never see a half-compacted table."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError
from tests.analytics.conftest import Events, read_points, same_points

from mlhub.analytics import DEFAULT_APP_ID, MetricTables, MetricTableWriter, QueryEngine, run_bucket


def _fill(metrics_dir: Path, events: Events, batches: int = 12) -> MetricTableWriter:
    writer = MetricTableWriter(metrics_dir, flush_points=1)  # one commit per event: many small files
    envs = [events.run_created(f"run{i}") for i in range(6)]
    envs += [events.metrics(f"run{(i * 5) % 6}", {"loss": [float(i)] * 40 + [float("nan")], "acc": [0.5] * 20})
             for i in range(batches)]
    for record in enumerate(envs, start=1):
        writer.apply_records([record])
    writer.flush()
    return writer


def test_compaction_keeps_content_and_checkpoint_and_sorts(tmp_path: Path, events: Events) -> None:
    writer = _fill(tmp_path, events)
    tables = MetricTables(tmp_path)
    before, snapshot = read_points(tmp_path), tables.snapshot()
    result = tables.compact()
    after = tables.snapshot()
    assert result.files_removed > result.files_added > 0
    assert len(after.points_files) < len(snapshot.points_files)
    assert same_points(read_points(tmp_path), before)
    assert after.checkpoint == snapshot.checkpoint == writer.checkpoint()
    for path in after.points_files:
        rows = pq.read_table(path, columns=["run_id", "key", "step"]).to_pylist()
        assert rows == sorted(rows, key=lambda r: (r["run_id"], r["key"], r["step"]))
    # The writer keeps appending after a compaction, and resumes from the same checkpoint.
    resumed = MetricTableWriter(tmp_path)
    assert resumed.checkpoint() == writer.checkpoint()
    assert tables.vacuum(retention_hours=168) == []  # replaced files stay for readers of older snapshots
    assert DEFAULT_APP_ID


def test_readers_during_compaction_see_a_whole_table(tmp_path: Path, events: Events) -> None:
    _fill(tmp_path, events, batches=30)
    expected = len(read_points(tmp_path))
    opened_before = QueryEngine(tmp_path).open()
    counts: list[int] = []
    done = threading.Event()

    def read_repeatedly() -> None:
        while not done.is_set():
            with QueryEngine(tmp_path) as q:
                counts.append(q.query("SELECT count(*) AS n FROM metrics").column("n")[0].as_py())

    reader = threading.Thread(target=read_repeatedly)
    reader.start()
    try:
        MetricTables(tmp_path).compact()
    finally:
        done.set()
        reader.join()
    assert counts and set(counts) == {expected}
    # An engine opened before the compaction still reads its snapshot's files (kept until vacuum).
    assert opened_before.query("SELECT count(*) AS n FROM metrics").column("n")[0].as_py() == expected
    opened_before.close()


def test_compaction_racing_an_append_keeps_the_appended_points(tmp_path: Path, events: Events) -> None:
    """A compaction that read a bucket before an append to it must not commit (it would not lose the point, but
    Delta refuses the stale rewrite); the bucket is skipped and compacted next time."""
    writer = _fill(tmp_path, events, batches=6)
    tables = MetricTables(tmp_path)
    stale = DeltaTable(str(tmp_path / "points"))
    writer.apply_records([(writer.last_applied + 1, events.metrics("run0", {"loss": [42.0]}))])
    writer.flush()
    expected = read_points(tmp_path)
    with pytest.raises(CommitFailedError):
        tables._rewrite_sorted(stale, run_bucket("run0"))
    assert same_points(read_points(tmp_path), expected)
    assert tables.compact().skipped == []
    assert same_points(read_points(tmp_path), expected)
