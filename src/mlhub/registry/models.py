"""Registry commands besides register and promote: create a model before its first version, describe and tag
a model or a version, remove an alias, delete a version or the whole model (MLflow's registry has all of
them). Each reads the model aggregate and appends guarded by its version, like register and promote."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mlhub.errors import ConcurrencyError, InvalidInput
from mlhub.eventlog import EventLog
from mlhub.events import (
    DomainEvent,
    Envelope,
    ModelAliasRemoved,
    ModelCreated,
    ModelDeleted,
    ModelUpdated,
    ModelVersionDeleted,
    aggregate_subject_filter,
)
from mlhub.registry.errors import AliasNotFound, ModelExists, ModelNotFound, ModelVersionNotFound
from mlhub.registry.service import ModelState, _check_id, model_state

_ATTEMPTS = 20


def _check_tags(tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        if not key or len(key) > 250 or not isinstance(value, str) or len(value) > 5000:
            raise InvalidInput(f"tag {key[:250]!r}: keys of 1 to 250 characters, string values of at most 5000")


async def _append(event_log: EventLog, model_name: str, make: Callable[[ModelState], list[DomainEvent]],
                  producer: str) -> list[int]:
    _check_id("model name", model_name)
    for _ in range(_ATTEMPTS):
        state = await model_state(event_log, model_name)
        events = make(state)
        if not events:
            return []
        envelopes = [Envelope(event=e, producer=producer) for e in events]
        try:
            results = await event_log.append_atomic(
                envelopes, guards={0: (aggregate_subject_filter("model", model_name), state.aggregate_version)})
        except ConcurrencyError:
            continue
        return [r.seq for r in results]
    raise ConcurrencyError(f"model {model_name} kept changing; retry")


def _existing(state: ModelState) -> ModelState:
    if not state.exists:
        raise ModelNotFound(f"no model {state.model_name} is registered")
    return state


def _version(state: ModelState, version: int) -> None:
    if version not in _existing(state).versions:
        raise ModelVersionNotFound(f"model {state.model_name} has no version {version}")


async def create_model(event_log: EventLog, model_name: str, *, description: str = "",
                       tags: Mapping[str, str] | None = None, producer: str = "mlhub") -> list[int]:
    """Create a registered model with no version yet; ModelExists when it exists."""
    tags = dict(tags or {})
    _check_tags(tags)
    if len(description) > 5000:
        raise InvalidInput(f"description is {len(description)} characters long; 5000 at most")

    def make(state: ModelState) -> list[DomainEvent]:
        if state.exists:
            raise ModelExists(f"registered model {model_name!r} exists already")
        return [ModelCreated(model_name=model_name, description=description, tags=tags)]
    return await _append(event_log, model_name, make, producer)


async def update_model(event_log: EventLog, model_name: str, *, version: int | None = None,
                       description: str | None = None, tags: Mapping[str, str] | None = None,
                       removed: Sequence[str] = (), producer: str = "mlhub") -> list[int]:
    """Change the description and tags of a model (version None) or of one of its versions."""
    tags = dict(tags or {})
    _check_tags(tags)
    if description is not None and len(description) > 5000:
        raise InvalidInput(f"description is {len(description)} characters long; 5000 at most")

    def make(state: ModelState) -> list[DomainEvent]:
        if version is None:
            _existing(state)
            if removed and any(k not in state.tags for k in removed):
                raise InvalidInput(f"model {model_name} has no tag {next(k for k in removed if k not in state.tags)!r}")
        else:
            _version(state, version)
        return [ModelUpdated(model_name=model_name, version=version, description=description, tags=tags,
                             removed=tuple(removed))]
    return await _append(event_log, model_name, make, producer)


async def remove_alias(event_log: EventLog, model_name: str, alias: str, *, actor: str, reason: str = "",
                       producer: str = "mlhub") -> list[int]:
    """Remove an alias (AliasNotFound when it is not set)."""
    _check_id("alias", alias)

    def make(state: ModelState) -> list[DomainEvent]:
        current = _existing(state).aliases.get(alias)
        if current is None:
            raise AliasNotFound(f"model {model_name} has no alias {alias!r}")
        return [ModelAliasRemoved(model_name=model_name, alias=alias, previous_version=current, actor=actor,
                                  reason=reason)]
    return await _append(event_log, model_name, make, producer)


def _alias_removals(state: ModelState, versions: set[int], actor: str, why: str) -> list[DomainEvent]:
    return [ModelAliasRemoved(model_name=state.model_name, alias=a, previous_version=v, actor=actor, reason=why)
            for a, v in sorted(state.aliases.items()) if v in versions]


async def delete_version(event_log: EventLog, model_name: str, version: int, *, actor: str,
                         producer: str = "mlhub") -> list[int]:
    """Delete a version; the aliases pointing to it are removed with it (one atomic batch)."""
    def make(state: ModelState) -> list[DomainEvent]:
        _version(state, version)
        return [*_alias_removals(state, {version}, actor, f"version {version} deleted"),
                ModelVersionDeleted(model_name=model_name, version=version, actor=actor)]
    return await _append(event_log, model_name, make, producer)


async def delete_model(event_log: EventLog, model_name: str, *, actor: str, producer: str = "mlhub") -> list[int]:
    """Delete a model with its versions and aliases (the alias removals are recorded in its history)."""
    def make(state: ModelState) -> list[DomainEvent]:
        _existing(state)
        return [*_alias_removals(state, set(state.versions), actor, "model deleted"),
                ModelDeleted(model_name=model_name, actor=actor)]
    return await _append(event_log, model_name, make, producer)
