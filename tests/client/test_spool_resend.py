"""A script killed with a spool file: the next Hub resends it under the same ids, and nothing is doubled, even
a record the hub had already taken before the crash (its `.done` line never written). Plus the spool files'
own rules: torn last line, exclusive lock, clean-up."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from tests.client.conftest import WRITER, HubStack

from mlhub.client import Hub, HubRequestError, RecordRejected
from mlhub.client.delivery import deliver, reject, resend_folder
from mlhub.client.spool import RunSpool, hub_folder, spooled_runs
from mlhub.client.transport import Transport

SCRIPT = """
import os, signal, sys
from mlhub.client import Hub

hub = Hub(sys.argv[1], sys.argv[2], spool_dir=sys.argv[3], resend_on_start=False, interval_s=0.05)
run = hub.start_run("crash", params={"seed": 7})
print(run.run_id, flush=True)
for step in range(200):
    run.log_metrics({"loss": step * 0.5}, step=step)
assert run.flush(30), "the hub did not take the first points"
print("flushed", flush=True)
sys.stdin.readline()  # the test kills the API now
for step in range(200, 600):
    run.log_metrics({"loss": step * 0.5}, step=step)
    if step % 100 == 0:
        run.flush(0.5)  # several batches, each spilled
assert not run.flush(2), "the hub answered while it was down"
assert run.spool.records_path.exists()
print("spooled", run.records_spilled, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_crashed_script_s_spool_is_resent_by_the_next_hub_without_doubles(hub_stack: HubStack,
                                                                           spool_dir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, hub_stack.url, WRITER, str(spool_dir)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert proc.stdout.readline().strip() == "flushed", proc.stderr.read() if proc.stderr else ""
    hub_stack.kill_api()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    spooled = proc.stdout.readline().split()
    assert proc.wait(timeout=60) == -9, proc.stderr.read() if proc.stderr else ""
    assert spooled and spooled[0] == "spooled" and int(spooled[1]) >= 2

    folder = hub_folder(spool_dir, hub_stack.url)
    spool = RunSpool(folder, run_id)
    pending = list(spool.pending())
    assert sum(len(r["body"]["metrics"][0]["values"]) for r in pending) == 400
    hub_stack.start_api()
    # The hub took the first spooled batch, but the crash came before its .done line: it is still pending.
    deliver(Transport(hub_stack.url, WRITER), pending[0])
    with open(spool.records_path, "ab") as f:  # and the process died in the middle of one more line
        f.write(b'{"op":"batch","id":"torn","run_id":"' + run_id.encode() + b'","body":{"metr')

    with Hub(hub_stack.url, WRITER, spool_dir=spool_dir) as hub:
        report = hub.wait_for_resend(120)
    assert report is not None and report.runs == [run_id] and not report.left
    assert report.delivered == len(pending) and report.points == 400 and report.rejected == []

    logged = hub_stack.logged_steps(run_id)["loss"]
    assert {s: n for s, n in logged.items() if n != 1} == {}, "a step was stored twice"
    assert sorted(logged) == list(range(600))
    events = hub_stack.run_events(run_id)
    assert hub_stack.projected_steps(run_id, "loss", events[-1]["seq"]) == list(range(600))
    assert events[-1]["type"] == "run.metrics_logged", "a crashed script's run is not finished for it"
    assert not spool.records_path.exists() and not spool.done_path.exists()


def test_the_spool_files_rules(tmp_path: Path) -> None:
    folder = tmp_path / "hub"
    spool = RunSpool(folder, "run1")
    records = [{"op": "batch", "id": f"b{i}", "run_id": "run1", "at": 0, "body": {"metrics": []}} for i in range(3)]
    assert spool.try_lock()
    spool.append(records)
    with open(spool.records_path, "ab") as f:
        f.write(b'{"op":"batch","id":"torn"')
    assert [r["id"] for r in spool.pending()] == ["b0", "b1", "b2"]
    first = spool.next_pending()
    assert first is not None and first["id"] == "b0"
    spool.mark_done("b0")
    spool.advance()
    next_record = spool.next_pending()
    assert next_record is not None and next_record["id"] == "b1"
    assert not spool.remove_if_delivered(), "records are pending: nothing is removed"

    # Another owner (another process, or another Hub of this one) cannot take the lock while it is held,
    # and a resend skips the run instead of sending its records twice at once.
    assert not RunSpool(folder, "run1").try_lock()
    stop = threading.Event()
    report = resend_folder(Transport("http://127.0.0.1:9", None), folder, deadline_s=1, stop=stop,
                           duplicate_window_s=600)
    assert report.skipped_locked == ["run1"] and report.delivered == 0

    # A new reader of the same files sees what was marked done (the .done file); a torn .done line marks
    # nothing, and the next line appended after it is not swallowed by it.
    with open(spool.done_path, "ab") as f:
        f.write(b"b")
    again = RunSpool(folder, "run1")
    assert [r["id"] for r in again.pending()] == ["b1", "b2"]
    spool.mark_done("b2")
    assert [r["id"] for r in RunSpool(folder, "run1").pending()] == ["b1"]
    spool.append([{"op": "batch", "id": "b3", "run_id": "run1", "at": 0, "body": {"metrics": []}}])
    assert [r["id"] for r in RunSpool(folder, "run1").pending()] == ["b1", "b3"], "the torn record swallowed b3"
    spool.unlock()
    spool.mark_done("b1", rejected="refused: 409 INVALID_STATE")
    spool.mark_done("b3")
    assert spool.remove_if_delivered()
    assert list(folder.iterdir()) == []


def test_a_batch_refused_by_key_is_read_back_as_its_rest_under_a_derived_id(tmp_path: Path) -> None:
    """The hub named the keys it refuses (422 with details.keys): the rejected file gets those keys' data, and
    the spooled record is read back (by this reader and by the next process's) as its rest, under
    uuid5(batch_id, "without-refused"), ahead of the records after it."""
    folder = tmp_path / "hub"
    spool = RunSpool(folder, "run1")
    batch_id = str(uuid.uuid4())
    series = [{"key": k, "values": [1.0, 2.0], "steps": [0, 1]} for k in ("loss", "odd")]
    record = {"op": "batch", "id": batch_id, "run_id": "run1", "at": 0,
              "body": {"batch_id": batch_id, "params": {"lr": "0.1"}, "metrics": series}}
    after = {"op": "finish", "id": "f1", "run_id": "run1", "at": 0, "body": {"status": "finished"}}
    spool.append([record, after])
    refused = HubRequestError("422 UNDECLARED_METRIC: 'odd' is not declared", status=422,
                              api_code="UNDECLARED_METRIC", details={"keys": ["odd", "not-in-this-batch"]})
    with pytest.warns(RecordRejected, match=r"run run1: the hub refused batch .* of key\(s\) 'odd' for good"):
        rejection, rest = reject(spool, spool.next_pending() or {}, refused, spooled=True)
    rest_id = str(uuid.uuid5(uuid.UUID(batch_id), "without-refused"))
    assert rest is not None and rest["id"] == rest_id
    assert rest["body"] == {"params": {"lr": "0.1"}, "metrics": [series[0]], "batch_id": rest_id}
    assert (rejection.op, rejection.keys, rejection.status, rejection.code, rejection.points) == (
        "batch", ("odd",), 422, "UNDECLARED_METRIC", 2)
    assert spool.next_pending() == rest
    assert [r["id"] for r in RunSpool(folder, "run1").pending()] == [rest_id, "f1"], "after a crash too"
    [line] = [json.loads(x) for x in spool.rejected_path.read_text().splitlines()]
    assert line["refused"] == {"metrics": [series[1]]} and line["rest_id"] == rest_id
    assert line["status"] == 422 and line["message"] == str(refused) and line["points"] == 2

    # The rest refused whole (every key it has named): the record is done, the finish is next.
    whole = HubRequestError("422", status=422, api_code="INVALID_METRIC", details={"keys": ["lr", "loss"]})
    with pytest.warns(RecordRejected, match="of key\\(s\\) 'loss', 'lr' for good"):
        rejection, rest = reject(spool, spool.next_pending() or {}, whole, spooled=True)
    assert rest is None and rejection.keys == ("loss", "lr") and rejection.record_id == rest_id
    spool.advance()
    assert [r["id"] for r in RunSpool(folder, "run1").pending()] == ["f1"]
    assert spool.next_pending() == after
    assert "run1.rejected" not in spooled_runs(folder), "the rejected file is no run to resend"
    spool.mark_done("f1")
    assert spool.remove_if_delivered() and spool.rejected_path.exists(), "the rejected file is kept for the user"
