"""Event ids derived from a client's idempotency keys: the tracking service appends under them, and the SDK
derives them again to look a record up in the log (one derivation, used by both).

- a log batch (`batch_id`): its i-th metric event `uuid5(batch_id, "log-batch/<i>")`, its params and tags
  events `uuid5(batch_id, "log-batch/params/<i>")` and `".../tags/<i>"`;
- an artifact upload (`upload_id`): `uuid5(upload_id, "artifact")`;
- a run's creation (`request_id`): the run id is `uuid5(request_id, "run").hex`, its i-th event
  `uuid5(request_id, "create-run/<i>")` and the experiment it made `uuid5(request_id, "create-run/experiment")`.
"""

from __future__ import annotations

import uuid
from typing import Literal


def derived_id(key: uuid.UUID | None, name: str) -> uuid.UUID | None:
    """The id of the event `name` of a keyed request (None without a key: a fresh id is drawn)."""
    return uuid.uuid5(key, name) if key is not None else None


Part = Literal["metrics", "params", "tags"]


def batch_event_id(batch_id: uuid.UUID, index: int, part: Part = "metrics") -> uuid.UUID:
    """The id of a log batch's index-th event of one part."""
    return uuid.uuid5(batch_id, f"log-batch/{index}" if part == "metrics" else f"log-batch/{part}/{index}")


def upload_event_id(upload_id: uuid.UUID) -> uuid.UUID:
    """The id of the run.artifact_stored event of an upload."""
    return uuid.uuid5(upload_id, "artifact")


def run_id_for_request(request_id: uuid.UUID) -> str:
    """The run id a create-run request with this request_id makes."""
    return uuid.uuid5(request_id, "run").hex
