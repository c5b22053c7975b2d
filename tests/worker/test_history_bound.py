"""A long-lived worker remembers only its latest jobs: jobs_handled and results stay bounded, the count does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from mlhub.eventlog import EventLog
from mlhub.worker.service import HISTORY_KEPT, Worker


def test_a_worker_keeps_the_last_jobs_only(tmp_path: Path) -> None:
    worker = Worker.local(cast(EventLog, None), tmp_path)  # no job is taken: nothing reaches the event log
    try:
        for i in range(HISTORY_KEPT + 150):
            worker._remember(f"job{i}", cast(Any, f"result{i}"))
            worker._done(f"job{i}", "succeeded")
        worker._remember("job200", cast(Any, "again"))  # a redelivered job: its newest result, as the latest
    finally:
        worker._executor.shutdown()
    assert worker.messages_handled == HISTORY_KEPT + 150
    assert len(worker.jobs_handled) == HISTORY_KEPT and worker.jobs_handled[-1] == (f"job{HISTORY_KEPT + 149}",
                                                                                    "succeeded")
    assert worker.jobs_handled[0] == ("job150", "succeeded")
    assert len(worker.results) == HISTORY_KEPT and list(worker.results)[-1] == "job200"
    assert worker.results["job200"] == "again" and "job149" not in worker.results
