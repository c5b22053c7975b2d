"""Every SDK run ends: SIGTERM and Ctrl-C end a script's open runs `killed` (a chained SIGTERM handler still
runs), an uncaught exception `failed`; heartbeats keep a live run known, a 409 answer says it was ended
elsewhere; a crashed run (SIGKILL: the reaper's job) is resumed and logs on from its last step. Subprocess
scripts against one real hub for the module."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.client.conftest import WRITER, HubStack, running_stack

from mlhub.client import Hub, HubRequestError
from mlhub.events import RunCrashed

SCRIPT = """
import signal, sys, time
from mlhub.client import Hub

mode = sys.argv[4]
if mode == "chained":
    def previous(signum, frame):
        print("the previous handler ran", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, previous)
hub = Hub(sys.argv[1], sys.argv[2], spool_dir=sys.argv[3], interval_s=0.05)
run = hub.start_run("ends")
for step in range(100):
    run.log_metrics({"loss": step * 0.1})
if mode in ("sigkill", "sigterm", "chained"):
    assert run.flush(30)
print(run.run_id, flush=True)
if mode == "raise":
    raise ValueError("the data loader broke")
if mode == "ctrl-c":
    raise KeyboardInterrupt
time.sleep(120)  # the test signals the script here
"""


def start_script(stack: HubStack, spool_dir: Path, mode: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, stack.url, WRITER, str(spool_dir), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert run_id, proc.stderr.read() if proc.stderr else ""
    return proc, run_id


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("mode", ["sigterm", "chained", "ctrl-c"])
def test_sigterm_and_ctrl_c_end_the_script_s_run_killed(shared_hub: HubStack, spool_dir: Path, mode: str) -> None:
    """Needs the API to take finish status 'killed'."""
    proc, run_id = start_script(shared_hub, spool_dir, mode)
    if mode != "ctrl-c":
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    if mode == "sigterm":
        assert proc.returncode == -signal.SIGTERM, "the process still dies of SIGTERM"
    elif mode == "chained":
        assert proc.returncode == 3 and "the previous handler ran" in out, "the script's own handler ran after"
    else:
        assert proc.returncode != 0 and "KeyboardInterrupt" in err
    events = shared_hub.run_events(run_id)
    assert events[-1]["type"] == "run.cancelled", (events[-1], err[-2000:])
    assert events[-1]["payload"]["reason"] == ("KeyboardInterrupt" if mode == "ctrl-c" else "SIGTERM")
    assert sorted(shared_hub.logged_steps(run_id)["loss"].elements()) == list(range(100))


def test_an_uncaught_exception_ends_the_script_s_run_failed(shared_hub: HubStack, spool_dir: Path) -> None:
    proc, run_id = start_script(shared_hub, spool_dir, "raise")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "ValueError: the data loader broke" in err, "the previous excepthook ran"
    failed = shared_hub.run_events(run_id)[-1]
    assert failed["type"] == "run.failed", (failed, err[-2000:])
    assert failed["payload"]["error_type"] == "ValueError" and failed["payload"]["error"] == "the data loader broke"
    assert sorted(shared_hub.logged_steps(run_id)["loss"].elements()) == list(range(100))


def test_heartbeats_and_a_run_ended_elsewhere(shared_hub: HubStack, spool_dir: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """Needs the API's POST /runs/{id}/heartbeat (409 INVALID_STATE once the run ended)."""
    caplog.set_level(logging.WARNING, logger="mlhub.client")
    with Hub(shared_hub.url, WRITER, spool_dir=spool_dir, interval_s=0.05, heartbeat_s=0.2) as hub:
        run = hub.start_run("heartbeats")
        wait_for(lambda: run.heartbeats_sent >= 3, 15, "three heartbeats")
        assert sum(e["type"] == "run.heartbeat" for e in shared_hub.run_events(run.run_id)) >= 3
        last_seq = shared_hub.run_events(run.run_id)[-1]["seq"]
        shared_hub.append(RunCrashed(run_id=run.run_id, reason="no event for 300 s", silent_s=300.0,
                                     last_seq=last_seq))  # what the hub's reaper appends
        wait_for(lambda: run.ended_remotely, 15, "a heartbeat to be refused")
        time.sleep(1)  # no more heartbeats, and one warning
        warned = [r for r in caplog.records if "the hub says the run has ended" in r.getMessage()]
        assert len(warned) == 1 and run.run_id in warned[0].getMessage()
        sent = run.heartbeats_sent
        time.sleep(0.5)
        assert run.heartbeats_sent == sent
        assert not run.finish(timeout_s=30) and run.rejected[-1].code == "INVALID_STATE"


DEAD_AFTER_S = 2.0


@pytest.fixture(scope="module")
def reaping_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStack]:
    """A hub whose reaper (in `mlhub projector`) ends runs silent for DEAD_AFTER_S, sweeping twice a second."""
    with running_stack(tmp_path_factory.mktemp("reaping"), MLHUB_RUN_DEAD_AFTER_S=str(DEAD_AFTER_S),
                       MLHUB_REAPER_INTERVAL_S="0.5") as stack:
        yield stack


def test_a_sigkilled_script_s_run_crashes_and_is_resumed_from_its_last_step(reaping_hub: HubStack,
                                                                            spool_dir: Path) -> None:
    """The script is SIGKILLed (nothing can catch that); the hub's reaper ends its run as crashed within
    MLHUB_RUN_DEAD_AFTER_S + MLHUB_REAPER_INTERVAL_S (and the read model's lag); a new process resumes it."""
    proc, run_id = start_script(reaping_hub, spool_dir, "sigkill")
    proc.kill()
    proc.communicate(timeout=30)
    killed_at = time.monotonic()
    wait_for(lambda: reaping_hub.run_events(run_id)[-1]["type"] == "run.crashed", DEAD_AFTER_S + 30,
             "the reaper to end the SIGKILLed script's run")
    took = time.monotonic() - killed_at
    assert took <= DEAD_AFTER_S + 30, took
    crashed = reaping_hub.run_events(run_id)[-1]["payload"]
    assert crashed["silent_s"] >= DEAD_AFTER_S and "killed or lost" in crashed["reason"]
    shared_hub = reaping_hub
    with Hub(shared_hub.url, WRITER, spool_dir=spool_dir, interval_s=0.05) as hub:
        resumed = hub.resume_run(run_id)
        assert resumed.next_step == 100, "the automatic step goes on after the hub's last step"
        resumed.log_metrics({"loss": 10.0})
        resumed.log_metrics({"loss": 10.1})
        assert resumed.finish(timeout_s=30)
        with pytest.raises(HubRequestError, match="INVALID_STATE") as refused:
            hub.resume_run(run_id)  # a finished run is not crashed
        assert refused.value.status == 409
    types = [e["type"] for e in shared_hub.run_events(run_id)]
    assert types[-2:] == ["run.metrics_logged", "run.finished"] and "run.resumed" in types
    assert sorted(shared_hub.logged_steps(run_id)["loss"].elements()) == list(range(102))
