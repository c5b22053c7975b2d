"""Events of the audit aggregate (subject mlhub.ev.audit.seals.*): hash seals chained over the stream."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from mlhub.events.base import DomainEvent, EntityId, Sha256Hex


class AuditSealed(DomainEvent):
    """A hash over the stored messages first_seq..last_seq, chained to the previous seal's digest."""

    aggregate_type: ClassVar[str] = "audit"
    aggregate_field: ClassVar[str] = "chain"
    event_type: ClassVar[str] = "audit.sealed"

    chain: EntityId = "seals"
    first_seq: int = Field(ge=1)
    last_seq: int = Field(ge=1)
    message_count: int = Field(ge=0)
    digest: Sha256Hex
    previous_digest: Sha256Hex | None
    algorithm: Literal["sha256-chain-v1"] = "sha256-chain-v1"

    @model_validator(mode="after")
    def _range_ordered(self) -> Self:
        if self.first_seq > self.last_seq:
            raise ValueError(f"first_seq {self.first_seq} is after last_seq {self.last_seq}")
        return self
