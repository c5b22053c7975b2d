"""The envelope every event travels in, the subjects it is stored under, and the one serializer.

Wire form (UTF-8 JSON, one message per event; the event id is also the message's Nats-Msg-Id):

    {"event_id": "...", "type": "run.metrics_logged", "schema_version": 2,
     "occurred_at": "2026-11-25T18:00:00.000000Z", "producer": "worker@host", "correlation_id": "<job id>",
     "actor": "token:ci", "aggregate_type": "run", "aggregate_id": "<run id>", "payload": {...}}

(`actor` only when a person or token made the event happen.)

Every stored message is strict JSON: non-finite metric values are written as the strings "NaN", "Infinity"
and "-Infinity" (and read back as floats).
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pydantic_core
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from mlhub.errors import EventDecodeError
from mlhub.events.base import SUBJECT_PREFIX, DomainEvent
from mlhub.events.catalog import EVENT_TYPES
from mlhub.events.upcasting import upcast

__all__ = ["CURRENT_ACTOR", "STREAM_SUBJECTS", "SUBJECT_PREFIX", "Envelope", "aggregate_subject_filter", "cli_actor",
           "decode", "encode", "event_subject", "to_json_dict", "token_actor"]

STREAM_SUBJECTS = f"{SUBJECT_PREFIX}.>"


def aggregate_subject_filter(aggregate_type: str, aggregate_id: str) -> str:
    """The wildcard subject that matches every event of one aggregate, e.g. `mlhub.ev.run.<id>.>`."""
    return f"{SUBJECT_PREFIX}.{aggregate_type}.{aggregate_id}.>"


def event_subject(event: DomainEvent) -> str:
    """The subject an event is stored under: `mlhub.ev.<aggregate type>.<aggregate id>.<event name>`."""
    return f"{SUBJECT_PREFIX}.{event.aggregate_type}.{event.aggregate_id}.{event.event_name()}"


#: Who acts in the current request or command, in the one actor format (see `token_actor`, `cli_actor`): an
#: Envelope made without an explicit actor takes it. The API sets it per request from the caller's token, the
#: CLI's direct mode to `cli:<login>`; workers, projectors and the reaper leave it unset (their `producer` says
#: who they are).
CURRENT_ACTOR: ContextVar[str | None] = ContextVar("mlhub_current_actor", default=None)


def token_actor(name: str) -> str:
    """The actor of a request made with the API token `name`: `token:<name>`."""
    return f"token:{name}"


def cli_actor(login: str | None) -> str:
    """The actor of a direct-mode CLI command run by `login`: `cli:<login>`."""
    return f"cli:{login or 'unknown'}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """An event with its metadata: id (dedup key), time, producer and correlation id (the job)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: DomainEvent
    producer: str = Field(min_length=1, max_length=200)
    correlation_id: str | None = Field(default=None, max_length=200)
    #: Who made the event happen (`token:<name>`, `cli:<login>`), when a person or token did: every write
    #: through the API or the direct-mode CLI records it. None for the hub's own parts (see `producer`).
    actor: str | None = Field(default_factory=lambda: CURRENT_ACTOR.get(), max_length=300)
    event_id: UUID = Field(default_factory=uuid4)
    occurred_at: AwareDatetime = Field(default_factory=_utcnow)

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @property
    def type(self) -> str:
        """The event type, e.g. "run.created"."""
        return self.event.event_type

    @property
    def schema_version(self) -> int:
        """The schema version the event is written with."""
        return self.event.schema_version

    @property
    def aggregate_type(self) -> str:
        """The aggregate kind, e.g. "run"."""
        return self.event.aggregate_type

    @property
    def aggregate_id(self) -> str:
        """The aggregate's id."""
        return self.event.aggregate_id

    @property
    def subject(self) -> str:
        """The NATS subject the event is stored under."""
        return event_subject(self.event)


def encode(envelope: Envelope) -> bytes:
    """Serialize an envelope to its wire form."""
    head = {
        "event_id": str(envelope.event_id),
        "type": envelope.type,
        "schema_version": envelope.schema_version,
        "occurred_at": envelope.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "producer": envelope.producer,
        "correlation_id": envelope.correlation_id,
        **({"actor": envelope.actor} if envelope.actor is not None else {}),  # events without one keep their bytes
        "aggregate_type": envelope.aggregate_type,
        "aggregate_id": envelope.aggregate_id,
    }
    # The payload is serialized by pydantic-core (fast for large metric batches) and spliced in.
    return json.dumps(head, separators=(",", ":"))[:-1].encode() + b',"payload":' + envelope.event.model_dump_json(
        round_trip=True
    ).encode() + b"}"


def to_json_dict(envelope: Envelope) -> dict[str, Any]:
    """The wire form as a plain JSON-ready dict."""
    result: dict[str, Any] = pydantic_core.from_json(encode(envelope), allow_inf_nan=True)
    return result


def decode(data: bytes | str) -> Envelope:
    """Parse a stored message into an envelope, upcasting an older payload to the current class."""
    try:
        raw = pydantic_core.from_json(data, allow_inf_nan=True)
    except ValueError as e:
        raise EventDecodeError(f"message is not JSON: {e}") from e
    if not isinstance(raw, dict):
        raise EventDecodeError("message is not a JSON object")
    try:
        event_type = raw["type"]
        cls = EVENT_TYPES[event_type]
    except KeyError as e:
        raise EventDecodeError(f"unknown or missing event type {raw.get('type')!r}") from e
    try:
        payload = upcast(event_type, int(raw["schema_version"]), cls.schema_version, raw["payload"])
        event = cls.model_validate(payload)
        envelope = Envelope(
            event=event,
            producer=raw["producer"],
            correlation_id=raw.get("correlation_id"),
            actor=raw.get("actor"),
            event_id=raw["event_id"],
            occurred_at=raw["occurred_at"],
        )
    except (KeyError, TypeError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        raise EventDecodeError(f"{event_type}: missing or invalid field: {e}") from e
    if raw.get("aggregate_id") != event.aggregate_id or raw.get("aggregate_type") != event.aggregate_type:
        raise EventDecodeError(
            f"{event_type}: envelope names aggregate {raw.get('aggregate_type')}/{raw.get('aggregate_id')} "
            f"but the payload belongs to {event.aggregate_type}/{event.aggregate_id}"
        )
    return envelope
