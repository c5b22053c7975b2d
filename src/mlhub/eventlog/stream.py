"""The MLHUB_EVENTS stream: the settings mlhub requires, and idempotent setup that names any conflict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import APIError, NotFoundError

from mlhub.errors import StreamConfigConflict
from mlhub.events import STREAM_SUBJECTS

STREAM_NAME = "MLHUB_EVENTS"
#: Largest event accepted (the server's default max_payload is 1 MiB; metric batches stay well below).
MAX_EVENT_BYTES = 1024 * 1024


def worker_consumer_name(pool: str) -> str:
    """The durable consumer a worker pool's workers share (its name is also in the worker role's permissions)."""
    return f"mlhub-worker-{pool}"


@dataclass(frozen=True)
class StreamSpec:
    """What mlhub requires of its stream; the rest of the server's defaults are left alone."""

    name: str = STREAM_NAME
    replicas: int = 1
    duplicate_window_s: float = 600.0

    def config(self) -> StreamConfig:
        """The StreamConfig to create the stream with."""
        return StreamConfig(
            name=self.name,
            description="mlhub event log: append-only, every experiment action as an immutable event",
            subjects=[STREAM_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_msgs=-1,
            max_bytes=-1,
            max_age=0,
            max_msgs_per_subject=-1,
            max_msg_size=MAX_EVENT_BYTES,
            discard=DiscardPolicy.OLD,
            num_replicas=self.replicas,
            duplicate_window=self.duplicate_window_s,
            deny_delete=True,
            deny_purge=True,
            allow_rollup_hdrs=False,
            allow_direct=True,
            # Atomic batches (nats-server >= 2.12): what one API request appends is stored together or not at all.
            allow_atomic=True,
        )

    def conflicts(self, actual: StreamConfig) -> list[str]:
        """Each setting of an existing stream that differs from what mlhub requires, as a sentence."""
        want = self.config()
        checks: list[tuple[str, Any, Any]] = [
            ("retention", _enum_value(actual.retention), _enum_value(want.retention)),
            ("storage", _enum_value(actual.storage), _enum_value(want.storage)),
            ("deny_delete", bool(actual.deny_delete), True),
            ("deny_purge", bool(actual.deny_purge), True),
            ("allow_rollup_hdrs", bool(actual.allow_rollup_hdrs), False),
            ("allow_direct", bool(actual.allow_direct), True),
            ("sealed", bool(actual.sealed), False),
            ("max_age", actual.max_age or 0, 0),
            ("max_msgs", _unlimited(actual.max_msgs), -1),
            ("max_bytes", _unlimited(actual.max_bytes), -1),
            ("max_msgs_per_subject", _unlimited(actual.max_msgs_per_subject), -1),
            ("num_replicas", actual.num_replicas or 1, want.num_replicas),
            ("duplicate_window", round(actual.duplicate_window or 0, 3), round(want.duplicate_window, 3)),
        ]
        problems = [f"{name} is {have!r} on the server, mlhub requires {need!r}" for name, have, need in checks
                    if have != need]
        if STREAM_SUBJECTS not in (actual.subjects or []):
            problems.append(f"subjects are {actual.subjects!r} on the server, mlhub requires {[STREAM_SUBJECTS]!r}")
        return problems


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def _unlimited(value: int | None) -> int:
    return -1 if value is None or value <= 0 else value


async def ensure_stream(js: JetStreamContext, spec: StreamSpec) -> StreamInfo:
    """Create the stream if it is missing; otherwise check that its settings are mlhub's (idempotent).

    Raises StreamConfigConflict naming every setting that differs; the stream is never changed silently
    (deny_delete and deny_purge cannot be changed after creation anyway).
    """
    for _ in range(3):
        try:
            info = await js.stream_info(spec.name)
            if not info.config.allow_atomic:
                # Streams made before atomic batches were used: turning the setting on changes nothing stored.
                config = info.config
                config.allow_atomic = True
                info = await js.update_stream(config)
        except NotFoundError:
            try:
                return await js.add_stream(spec.config())
            except APIError as e:
                if e.err_code == 10058:  # created by a racing process meanwhile: check it
                    continue
                raise
        problems = spec.conflicts(info.config)
        if problems:
            raise StreamConfigConflict(
                f"stream {spec.name} exists with settings that conflict with mlhub's: " + "; ".join(problems)
            )
        return info
    raise StreamConfigConflict(f"stream {spec.name} could not be created or read")
