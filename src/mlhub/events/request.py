"""The request aggregate (subject mlhub.ev.request.<key>.accepted): the idempotency record of an API request.

A write request that carries a client key (a run's `request_id`, a log batch's `batch_id`, an upload's
`upload_id`) is appended as one atomic batch whose first message is this record, guarded to be the first
event of its subject. A resent request therefore finds the record however long after (not only within the
stream's duplicate window): the same body (same digest) is answered as the earlier request was, with the
stored events' sequences (the record's sequence + 1 .. + `events`, since a batch is stored contiguously);
another body under the same key is refused (IDEMPOTENCY_KEY_REUSED) and nothing is appended.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from mlhub.events.base import DomainEvent, EntityId, NonNegativeInt, Sha256Hex


class RequestAccepted(DomainEvent):
    """A keyed API request was accepted; its events follow it in the same atomic batch."""

    event_type: ClassVar[str] = "request.accepted"
    aggregate_type: ClassVar[str] = "request"
    aggregate_field: ClassVar[str] = "request_key"

    #: uuid5(client key, operation) as hex: the client key of one operation never collides with another's.
    request_key: EntityId
    operation: str = Field(min_length=1, max_length=100)
    #: sha256 of the request's canonical body: a resend must match it.
    digest: Sha256Hex
    run_id: EntityId | None = None
    #: How many events follow this record in its batch.
    events: NonNegativeInt
