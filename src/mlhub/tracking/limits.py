"""The tracking service's limits: explicit, documented settings (docs/api.md), each named in the error a
request over it gets (413 for sizes, 422 for counts), checked before anything is appended."""

from __future__ import annotations

from dataclasses import dataclass

from mlhub.eventlog import MAX_ATOMIC_BATCH, MAX_EVENT_BYTES
from mlhub.events import MAX_KEY_LENGTH, MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH
from mlhub.settings import Settings


@dataclass(frozen=True)
class TrackingLimits:
    """What one tracking request may carry."""

    #: Params + tags + metric keys in one request (MLHUB_API_MAX_KEYS_PER_REQUEST).
    max_keys_per_request: int = 1_000
    #: Metric points in one request (MLHUB_API_MAX_POINTS_PER_REQUEST).
    max_points_per_request: int = 1_000_000
    #: Bytes of one request body (MLHUB_API_MAX_BODY_BYTES); the API refuses a larger body before reading it.
    max_body_bytes: int = 64 * 1024 * 1024
    #: Longest key, param value and tag value: fixed by the event schema (not settings).
    max_key_length: int = MAX_KEY_LENGTH
    max_param_value_length: int = MAX_PARAM_VALUE_LENGTH
    max_tag_value_length: int = MAX_TAG_VALUE_LENGTH
    #: Events one request may append (one atomic batch of the event log) and the size of each.
    max_events_per_request: int = MAX_ATOMIC_BATCH
    max_event_bytes: int = MAX_EVENT_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> TrackingLimits:
        """The limits a deployment set."""
        return cls(max_keys_per_request=settings.api_max_keys_per_request,
                   max_points_per_request=settings.api_max_points_per_request,
                   max_body_bytes=settings.api_max_body_bytes)
