"""Past the stream's duplicate window JetStream no longer drops a resent event: the SDK then looks for the
record's event in the run's events before resending it. With a hub whose window is 1 s: a spooled batch the
hub had already stored is not stored again; the control (a client that trusts the window) doubles it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.client.conftest import WRITER, HubStack, running_stack

from mlhub.client import Hub
from mlhub.client.delivery import deliver, record_event_id
from mlhub.client.spool import RunSpool, hub_folder
from mlhub.client.transport import Transport
from mlhub.events.ids import batch_event_id, upload_event_id


@pytest.fixture
def short_window_stack(tmp_path: Path, nats_url: str) -> Iterator[HubStack]:
    """A hub whose event stream remembers event ids for 1 s only."""
    with running_stack(tmp_path, nats_url, MLHUB_DUPLICATE_WINDOW_S="1") as stack:
        yield stack


def _batch(run_id: str, first_step: int, n: int) -> dict[str, object]:
    batch_id = str(uuid.uuid4())
    steps = list(range(first_step, first_step + n))
    return {"op": "batch", "id": batch_id, "run_id": run_id, "at": time.time(),
            "body": {"batch_id": batch_id, "metrics": [{"key": "loss", "values": [float(s) for s in steps],
                                                        "steps": steps}]}}


def test_the_client_derives_the_event_ids_the_api_appends() -> None:
    batch_id, upload_id = uuid.uuid4(), uuid.uuid4()
    assert record_event_id({"op": "batch", "id": str(batch_id)}) == str(batch_event_id(batch_id, 0))
    assert record_event_id({"op": "batch", "id": str(batch_id), "body": {"params": {"a": "1"}}}) == \
        str(uuid.uuid5(batch_id, "log-batch/params/0"))
    assert record_event_id({"op": "artifact", "id": str(upload_id)}) == str(upload_event_id(upload_id))


@pytest.mark.parametrize("client_window_s", [1.0, 3600.0], ids=["checked", "control-trusts-the-window"])
def test_a_resend_past_the_window_is_not_stored_twice(short_window_stack: HubStack, spool_dir: Path,
                                                      client_window_s: float) -> None:
    stack = short_window_stack
    transport = Transport(stack.url, WRITER)
    run_id = transport.request("POST", "/runs", json_body={"experiment": "window"})["run_id"]
    # A crashed script left two spooled batches; the hub had taken the first before the crash.
    spool = RunSpool(hub_folder(spool_dir, stack.url), run_id)
    taken, never_sent = _batch(run_id, 0, 10), _batch(run_id, 10, 10)
    spool.append([taken, never_sent])
    deliver(transport, taken)
    time.sleep(2.5)  # past the stream's 1 s duplicate window

    with Hub(stack.url, WRITER, spool_dir=spool_dir, duplicate_window_s=client_window_s) as again:
        report = again.wait_for_resend(60)
    assert report is not None and report.delivered == 2
    logged = stack.logged_steps(run_id)["loss"]
    assert sorted(set(logged)) == list(range(20))
    doubled = sorted(s for s, n in logged.items() if n > 1)
    if client_window_s == 1.0:
        assert doubled == [], "the stored batch was sent again"
    else:  # the bound the docs state: trusting the window past its end doubles what the hub had taken
        assert doubled == list(range(10))
