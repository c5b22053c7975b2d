"""Registering model versions and promoting aliases, as events on the model aggregate.

Both commands read the model aggregate (`mlhub.ev.model.<name>.>`) and append guarded by its version, so two
writers never both act on the same state: concurrent registrations get distinct version numbers (the loser
reads again and takes the next one), and of concurrent promotions that expect the same current version of an
alias exactly one wins (the others get PromotionConflict). Every check reads the event log, not the read
model, so it holds without a projector.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from mlhub.errors import ConcurrencyError, InvalidInput
from mlhub.eventlog import EventLog
from mlhub.events import (
    ArtifactStored,
    Envelope,
    ModelAliasRemoved,
    ModelAliasSet,
    ModelCreated,
    ModelDeleted,
    ModelUpdated,
    ModelVersionDeleted,
    ModelVersionRegistered,
    RunStatus,
    sha256_of,
)
from mlhub.registry.errors import (
    GateFailed,
    ModelNotFound,
    ModelVersionNotFound,
    PromotionConflict,
    RunNotRegistrable,
)
from mlhub.registry.gates import GateResult, GatesConfig, evaluate
from mlhub.registry.runs import read_run

_ENTITY_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: How often a registration re-reads the model and tries the next version number after losing a race.
REGISTER_ATTEMPTS = 100


@dataclass(frozen=True)
class ModelState:
    """The model aggregate folded: its versions, where each alias points, and its version in the log."""

    model_name: str
    versions: dict[int, ModelVersionRegistered] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    #: The stream sequence of the aggregate's last event (0: no event), what appends are guarded by.
    aggregate_version: int = 0
    #: Whether the model exists (created, or a version registered) and has not been deleted since.
    exists: bool = False
    #: The number the next registered version gets (a deleted version's number is not reused).
    next_version: int = 1
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    #: Per version: its description and tags as updated since its registration.
    version_descriptions: dict[int, str] = field(default_factory=dict)
    version_tags: dict[int, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class RegisterResult:
    """A registered version: its number, where it came from, and the stream sequence of its event."""

    model_name: str
    version: int
    run_id: str
    artifact_path: str
    artifact_sha256: str
    seq: int


@dataclass(frozen=True)
class PromoteResult:
    """A promotion: the alias now points to version (it pointed to previous_version).

    seq is None (and changed False) when the alias already pointed to that version: nothing was appended.
    """

    model_name: str
    alias: str
    version: int
    previous_version: int | None
    seq: int | None
    changed: bool
    gates: tuple[GateResult, ...] = ()


def _check_id(what: str, value: str) -> None:
    if not _ENTITY_ID.fullmatch(value):
        raise InvalidInput(f"{what} {value!r} is not a valid name (letters, digits, '_' and '-', 1 to 128)")


async def model_state(event_log: EventLog, model_name: str) -> ModelState:
    """The model's versions and aliases as its events tell them (empty for a model never registered)."""
    _check_id("model name", model_name)
    recorded = await event_log.read_aggregate("model", model_name)
    fold = _ModelFold()
    for r in recorded.events:
        fold.apply(r.envelope.event)
    return ModelState(model_name, fold.versions, fold.aliases, recorded.version, fold.exists, fold.next_version,
                      fold.description, fold.tags, fold.version_descriptions, fold.version_tags)


@dataclass
class _ModelFold:
    """The model aggregate's events folded one at a time (model_state's working state)."""

    versions: dict[int, ModelVersionRegistered] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    exists: bool = False
    next_version: int = 1
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    version_descriptions: dict[int, str] = field(default_factory=dict)
    version_tags: dict[int, dict[str, str]] = field(default_factory=dict)

    def apply(self, e: object) -> None:
        """One more event of the model."""
        if isinstance(e, ModelVersionRegistered):
            self.versions[e.version] = e
            self.version_descriptions[e.version] = e.description
            self.exists, self.next_version = True, max(self.next_version, e.version + 1)
        elif isinstance(e, ModelAliasSet):
            self.aliases[e.alias] = e.version
        elif isinstance(e, ModelAliasRemoved):
            self.aliases.pop(e.alias, None)
        elif isinstance(e, ModelCreated):
            self.__init__()  # type: ignore[misc]  # a model created anew (after a delete) starts empty
            self.exists, self.description, self.tags = True, e.description, dict(e.tags)
        elif isinstance(e, ModelUpdated):
            if e.version is None:
                self.description = self.description if e.description is None else e.description
                self.tags = {**{k: v for k, v in self.tags.items() if k not in e.removed}, **e.tags}
            elif e.version in self.versions:
                if e.description is not None:
                    self.version_descriptions[e.version] = e.description
                old = self.version_tags.get(e.version, {})
                self.version_tags[e.version] = {**{k: v for k, v in old.items() if k not in e.removed}, **e.tags}
        elif isinstance(e, ModelVersionDeleted):
            self.versions.pop(e.version, None)
            self.aliases = {a: v for a, v in self.aliases.items() if v != e.version}
        elif isinstance(e, ModelDeleted):
            self.__init__()  # type: ignore[misc]


def artifact_digest(artifacts: Mapping[str, ArtifactStored], path: str) -> str | None:
    """The sha256 a version records for a run's artifact: the file's own, or for a directory of artifacts (an
    MLflow model: MLmodel, model.pkl, ...) the sha256 of its manifest (each file's path under it and sha256,
    canonical JSON). None when the run stored nothing at or under `path`."""
    if path in artifacts:
        return artifacts[path].sha256
    prefix = path.rstrip("/") + "/"
    manifest = {p[len(prefix):]: a.sha256 for p, a in sorted(artifacts.items()) if p.startswith(prefix)}
    return sha256_of(manifest) if manifest else None


async def register(
    event_log: EventLog,
    model_name: str,
    run_id: str,
    artifact_path: str,
    *,
    description: str = "",
    registered_by: str | None = None,
    producer: str = "mlhub",
    allow_running: bool = False,
) -> RegisterResult:
    """Register the next version of a model from an artifact of a finished run.

    The run must exist, have finished (or, `allow_running`, still run: MLflow registers while the run logs),
    and have stored artifact_path, a file or a directory (the sha256 recorded is the file's or the manifest's);
    RunNotRegistrable names which of these fails. The version number is the model's count of versions + 1,
    appended guarded by the model's version: a registration that loses a race reads again and takes the next.
    """
    _check_id("model name", model_name)
    _check_id("run id", run_id)
    if len(description) > 5000:
        raise InvalidInput(f"description is {len(description)} characters long; 5000 at most")
    run = await read_run(event_log, run_id)
    if not run.exists:
        raise RunNotRegistrable(f"no run {run_id} exists: a model version comes from a run's artifact")
    if run.status != RunStatus.FINISHED and not (allow_running and run.status == RunStatus.RUNNING):
        raise RunNotRegistrable(f"run {run_id} is {run.status}, not finished: only a finished run's artifact "
                                f"can become a model version")
    sha256 = artifact_digest(run.artifacts, artifact_path)
    if sha256 is None:
        stored = ", ".join(sorted(run.artifacts)) or "none"
        raise RunNotRegistrable(f"run {run_id} has no artifact {artifact_path!r} (it stored: {stored})")
    for attempt in range(REGISTER_ATTEMPTS):
        state = await model_state(event_log, model_name)
        version = state.next_version
        event = ModelVersionRegistered(
            model_name=model_name, version=version, run_id=run_id, artifact_path=artifact_path,
            artifact_sha256=sha256, description=description, registered_by=registered_by,
        )
        try:
            result = await event_log.append(Envelope(event=event, producer=producer, correlation_id=run_id),
                                            expected_version=state.aggregate_version)
        except ConcurrencyError:
            await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # spread the retries of many racers
            continue
        return RegisterResult(model_name, version, run_id, artifact_path, sha256, result.seq)
    raise ConcurrencyError(f"model {model_name}: no version number could be taken in {REGISTER_ATTEMPTS} tries; "
                           f"too many concurrent registrations, try again")


async def promote(
    event_log: EventLog,
    model_name: str,
    alias: str,
    version: int,
    expected_current: int | None,
    *,
    actor: str,
    reason: str = "",
    gates: GatesConfig | None = None,
    producer: str = "mlhub",
) -> PromoteResult:
    """Point alias at version, if the alias now points to expected_current (None: the alias is not set).

    PromotionConflict when it does not (naming both); GateFailed when a gate of the alias is not met (naming
    each failing condition and the actual value). The append is guarded by the model's version: if any other
    event of the model came first, the model is read again, and the promotion goes on only if the alias still
    points to expected_current. Nothing is appended on any error.
    """
    _check_id("model name", model_name)
    _check_id("alias", alias)
    if version < 1:
        raise InvalidInput(f"version must be >= 1, got {version}")
    if not actor or len(actor) > 200:
        raise InvalidInput("actor must be 1 to 200 characters (who promotes is recorded)")
    if len(reason) > 2000:
        raise InvalidInput(f"reason is {len(reason)} characters long; 2000 at most")
    state = await model_state(event_log, model_name)
    if not state.versions:
        raise ModelNotFound(f"no model {model_name} is registered")
    registered = state.versions.get(version)
    if registered is None:
        raise ModelVersionNotFound(f"model {model_name} has no version {version} (latest: {max(state.versions)})")
    current = state.aliases.get(alias)
    if current != expected_current:
        raise PromotionConflict(model_name, alias, expected=expected_current, actual=current)
    if current == version:
        return PromoteResult(model_name, alias, version, current, seq=None, changed=False)
    checked: tuple[GateResult, ...] = ()
    conditions = gates.conditions(model_name, alias) if gates is not None else []
    if conditions:
        checked = tuple(await evaluate(event_log, conditions, await read_run(event_log, registered.run_id)))
        failed = [f"{g.condition} failed: {g.detail}" for g in checked if not g.passed]
        if failed:
            raise GateFailed(model_name, alias, version, failed)
    event = ModelAliasSet(model_name=model_name, alias=alias, version=version, previous_version=current,
                          actor=actor, reason=reason)
    while True:
        try:
            result = await event_log.append(Envelope(event=event, producer=producer),
                                            expected_version=state.aggregate_version)
        except ConcurrencyError:
            state = await model_state(event_log, model_name)
            now = state.aliases.get(alias)
            if now != expected_current:
                raise PromotionConflict(model_name, alias, expected=expected_current, actual=now) from None
            continue  # another event of the model (a registration, another alias) came first: try again
        return PromoteResult(model_name, alias, version, current, seq=result.seq, changed=True, gates=checked)


async def current_alias(event_log: EventLog, model_name: str, alias: str) -> int | None:
    """The version an alias points to now, from the event log (None: not set). ModelNotFound for no model."""
    state = await model_state(event_log, model_name)
    if not state.versions:
        raise ModelNotFound(f"no model {model_name} is registered")
    return state.aliases.get(alias)
