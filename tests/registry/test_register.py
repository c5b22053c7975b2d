"""Registering model versions against a real event log: checks on the run, numbering under concurrency."""

from __future__ import annotations

import asyncio

import pytest
from tests.registry.helpers import add_run, sha

from mlhub.errors import InvalidInput
from mlhub.eventlog import EventLog
from mlhub.events import ModelVersionRegistered
from mlhub.registry import RunNotRegistrable, model_state, register


async def test_versions_count_up_and_record_the_artifact_hash(event_log: EventLog) -> None:
    first, second = await add_run(event_log), await add_run(event_log)
    one = await register(event_log, "digits", first, "model.onnx", description="baseline", registered_by="ana")
    two = await register(event_log, "digits", second, "model.onnx")
    other = await register(event_log, "other-model", second, "model.onnx")
    assert (one.version, two.version, other.version) == (1, 2, 1)
    assert one.artifact_sha256 == sha(first) and two.run_id == second

    stored = (await event_log.read_aggregate("model", "digits")).events
    assert [r.seq for r in stored] == [one.seq, two.seq]
    event = stored[0].envelope.event
    assert isinstance(event, ModelVersionRegistered)
    assert (event.version, event.run_id, event.artifact_path, event.artifact_sha256, event.description,
            event.registered_by) == (1, first, "model.onnx", sha(first), "baseline", "ana")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no run {run} exists"),
        ("running", "run {run} is running, not finished"),
        ("failed", "run {run} is failed, not finished"),
        ("no-artifact", "run {run} has no artifact 'model.onnx' (it stored: weights.ckpt)"),
    ],
)
async def test_a_run_that_cannot_give_a_version_is_refused_and_nothing_is_appended(
    event_log: EventLog, case: str, message: str
) -> None:
    if case == "missing":
        run_id = "f" * 32
    else:
        run_id = await add_run(event_log, end=case if case != "no-artifact" else "finished",
                               artifact="weights.ckpt" if case == "no-artifact" else "model.onnx")
    before = await event_log.last_sequence()
    with pytest.raises(RunNotRegistrable) as raised:
        await register(event_log, "digits", run_id, "model.onnx")
    assert message.format(run=run_id) in str(raised.value)
    assert raised.value.code == "RUN_NOT_REGISTRABLE"
    assert await event_log.last_sequence() == before


async def test_bad_names_are_refused_with_the_field_named(event_log: EventLog) -> None:
    run_id = await add_run(event_log)
    with pytest.raises(InvalidInput, match="model name 'my model' is not a valid name"):
        await register(event_log, "my model", run_id, "model.onnx")
    with pytest.raises(InvalidInput, match="run id 'a.b' is not a valid name"):
        await register(event_log, "m", "a.b", "model.onnx")


async def test_ten_concurrent_registrations_get_ten_distinct_versions(event_log: EventLog) -> None:
    runs = [await add_run(event_log) for _ in range(10)]
    results = await asyncio.gather(*(register(event_log, "digits", r, "model.onnx") for r in runs))
    assert sorted(r.version for r in results) == list(range(1, 11))
    state = await model_state(event_log, "digits")
    assert sorted(state.versions) == list(range(1, 11))
    # each version belongs to the run whose registration got it
    assert {r.version: r.run_id for r in results} == {v: e.run_id for v, e in state.versions.items()}
