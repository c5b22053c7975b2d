"""Promotions against a real event log and read model: history, conflicts, and ten racing promoters."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine
from tests.registry.helpers import add_run, project

from mlhub.eventlog import AppendResult, EventLog
from mlhub.events import Envelope, ModelAliasSet
from mlhub.registry import (
    ModelNotFound,
    ModelVersionNotFound,
    PromotionConflict,
    model_state,
    promote,
    register,
)
from mlhub.registry.queries import alias_history, model_details


async def registered(log: EventLog, count: int, model: str = "digits") -> list[str]:
    """Register `count` versions of a model from fresh finished runs; their run ids."""
    runs = [await add_run(log) for _ in range(count)]
    for run_id in runs:
        await register(log, model, run_id, "model.onnx")
    return runs


async def test_history_records_who_when_from_to_and_why(event_log: EventLog, database: Engine) -> None:
    await registered(event_log, 3)
    started = datetime.now(UTC)
    first = await promote(event_log, "digits", "production", 1, None, actor="ana", reason="first release")
    second = await promote(event_log, "digits", "production", 2, 1, actor="bo", reason="better val_acc")
    await promote(event_log, "digits", "staging", 3, None, actor="cy", reason="try it")
    assert (first.previous_version, second.previous_version) == (None, 1)
    await project(event_log, database)

    with database.connect() as conn:
        changes = alias_history(conn, "digits", "production")
        everything = alias_history(conn, "digits")
        details = model_details(conn, "digits")
    assert [(c.from_version, c.to_version, c.actor, c.reason, c.action) for c in changes] == [
        (None, 1, "ana", "first release", "set"), (1, 2, "bo", "better val_acc", "set")]
    assert [c.seq for c in changes] == [first.seq, second.seq]
    for c in changes:
        assert started <= c.occurred_at.astimezone(UTC) <= datetime.now(UTC)
    assert [c.alias for c in everything] == ["production", "production", "staging"]
    assert details.summary.aliases == {"production": 2, "staging": 3}
    assert [(v.version, v.aliases, v.run_status) for v in details.versions] == [
        (1, (), "finished"), (2, ("production",), "finished"), (3, ("staging",), "finished")]


async def test_an_expectation_that_is_not_the_current_version_is_a_conflict(event_log: EventLog) -> None:
    await registered(event_log, 2)
    await promote(event_log, "digits", "production", 1, None, actor="ana")
    before = await event_log.last_sequence()
    with pytest.raises(PromotionConflict) as raised:
        await promote(event_log, "digits", "production", 2, None, actor="bo")
    assert str(raised.value).startswith(
        "model digits: alias 'production' points to version 1, not the expected no version (unset)")
    assert (raised.value.alias, raised.value.expected, raised.value.actual) == ("production", None, 1)
    assert raised.value.code == "PROMOTION_CONFLICT"
    with pytest.raises(PromotionConflict, match="points to no version \\(unset\\), not the expected version 2"):
        await promote(event_log, "digits", "staging", 1, 2, actor="bo")
    assert await event_log.last_sequence() == before


async def test_unknown_models_and_versions_are_named(event_log: EventLog) -> None:
    with pytest.raises(ModelNotFound, match="no model nope is registered"):
        await promote(event_log, "nope", "production", 1, None, actor="ana")
    await registered(event_log, 1)
    with pytest.raises(ModelVersionNotFound, match="model digits has no version 5 \\(latest: 1\\)"):
        await promote(event_log, "digits", "production", 5, None, actor="ana")


async def test_promoting_to_the_version_it_already_has_appends_nothing(event_log: EventLog) -> None:
    await registered(event_log, 1)
    await promote(event_log, "digits", "production", 1, None, actor="ana")
    before = await event_log.last_sequence()
    again = await promote(event_log, "digits", "production", 1, 1, actor="ana")
    assert (again.changed, again.seq) == (False, None)
    assert await event_log.last_sequence() == before


async def test_ten_concurrent_promoters_expecting_the_same_version_one_wins(event_log: EventLog) -> None:
    await registered(event_log, 11)
    await promote(event_log, "digits", "production", 1, None, actor="setup")
    outcomes = await asyncio.gather(
        *(promote(event_log, "digits", "production", v, 1, actor=f"promoter-{v}", reason=f"to v{v}")
          for v in range(2, 12)),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    conflicts = [o for o in outcomes if isinstance(o, PromotionConflict)]
    assert len(winners) == 1 and len(conflicts) == 9, outcomes
    winner = winners[0]
    for conflict in conflicts:
        assert (conflict.expected, conflict.actual) == (1, winner.version)
        assert f"points to version {winner.version}, not the expected version 1" in str(conflict)
    alias_events = [r.envelope.event for r in (await event_log.read_aggregate("model", "digits")).events
                    if isinstance(r.envelope.event, ModelAliasSet)]
    assert [(e.previous_version, e.version, e.actor) for e in alias_events] == [
        (None, 1, "setup"), (1, winner.version, f"promoter-{winner.version}")]
    assert (await model_state(event_log, "digits")).aliases == {"production": winner.version}


class RegistersBeforeFirstPromotion(EventLog):
    """The real event log, with another writer's registration landing just before the first alias append."""

    run_id = ""

    async def append(self, envelope: Envelope, *, expected_version: int | None = None) -> AppendResult:
        if isinstance(envelope.event, ModelAliasSet) and self.run_id:
            run_id, self.run_id = self.run_id, ""
            await register(self, envelope.event.model_name, run_id, "model.onnx")
        return await super().append(envelope, expected_version=expected_version)


async def test_an_unrelated_event_in_between_is_retried_not_a_conflict(nats_url: str) -> None:
    async with RegistersBeforeFirstPromotion(nats_url) as log:
        await registered(log, 1)
        log.run_id = await add_run(log)
        result = await promote(log, "digits", "production", 1, None, actor="ana")
        state = await model_state(log, "digits")
    assert result.changed and sorted(state.versions) == [1, 2]
    assert state.aliases == {"production": 1}
