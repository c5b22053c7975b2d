"""The base of every domain event: frozen pydantic models with a type, a schema version and an aggregate."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from mlhub.events.keys import Key

__all__ = ["SUBJECT_PREFIX", "Attempt", "DomainEvent", "EntityId", "Key", "NonNegativeInt", "RelativePath", "Sha256Hex",
           "canonical_json", "sha256_of", "subject_token"]

#: Every event subject starts with this prefix; the stream captures `mlhub.ev.>`.
SUBJECT_PREFIX = "mlhub.ev"

#: An id that is also a NATS subject token: letters, digits, '_' and '-' (no '.', '*', '>' or spaces).
EntityId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
_ENTITY_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def subject_token(name: str, fallback: str = "experiment") -> str:
    """The id (subject token) of a free-form name: the name itself when it is a valid id, else its slug and a
    short hash of the name (names that slug alike stay apart: "My exp" and "my-exp!" differ). Stable: the
    experiment ids of existing experiments and the aggregate ids of declared metrics are made by it."""
    if _ENTITY_ID.fullmatch(name):
        return name
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:100] or fallback
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


#: A lowercase hex sha256 digest.
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def _relative_without_dotdot(value: str) -> str:
    if value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f"{value!r} must be a relative path without '..' components")
    return value


#: A logical artifact path inside a run: relative, no '..' components.
RelativePath = Annotated[
    str, StringConstraints(min_length=1, max_length=1000, pattern=r"^[^\x00]+$"),
    AfterValidator(_relative_without_dotdot),
]
NonNegativeInt = Annotated[int, Field(ge=0)]
Attempt = Annotated[int, Field(ge=1)]


class DomainEvent(BaseModel):
    """One immutable fact about an aggregate. Subclasses declare the four class variables below."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    #: The event type, "<aggregate>.<name>", e.g. "run.metrics_logged".
    event_type: ClassVar[str]
    #: The current schema version; older stored versions are upcast on read (see upcasting.py).
    schema_version: ClassVar[int] = 1
    #: The aggregate kind this event belongs to, e.g. "run".
    aggregate_type: ClassVar[str]
    #: The name of the field that holds the aggregate id, e.g. "run_id".
    aggregate_field: ClassVar[str]

    @property
    def aggregate_id(self) -> str:
        """The id of the aggregate this event belongs to."""
        value = getattr(self, self.aggregate_field)
        assert isinstance(value, str)
        return value

    @classmethod
    def event_name(cls) -> str:
        """The part of the type after the aggregate, used as the last subject token."""
        return cls.event_type.split(".", 1)[1]


def canonical_json(value: Any) -> bytes:
    """The one canonical JSON form of a value (sorted keys, no spaces), the input of every config hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_of(value: Any) -> str:
    """sha256 of a value's canonical JSON."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
