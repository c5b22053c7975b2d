"""The parts of `mlhub up` as its supervisor sees them, and the parts file the API's /readyz reports
(Settings.hub_parts_file: `{"hub_pid", "updated_at", "parts": [{name, state, pid, restarts, last_exit_code,
since}]}`, replaced atomically at every change)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


@dataclass
class PartState:
    """What the supervisor knows of one part: running, restarting (dead, waiting out its backoff) or failed."""

    name: str
    state: str = "running"
    pid: int | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    since: float = field(default_factory=time.time)
    #: Monotonic times of the restarts within the last RESTART_WINDOW_S.
    recent: list[float] = field(default_factory=list)
    restart_at: float = 0.0

    def public(self) -> dict[str, object]:
        """The part as the parts file (and /readyz) shows it."""
        return {"name": self.name, "state": self.state, "pid": self.pid, "restarts": self.restarts,
                "last_exit_code": self.last_exit_code,
                "since": datetime.fromtimestamp(self.since, UTC).isoformat()}


def write_parts(path: Path, parts: Iterable[PartState]) -> None:
    """The parts file: written next to its place, then renamed over it, so the API never reads half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"hub_pid": os.getpid(), "updated_at": datetime.now(UTC).isoformat(),
                               "parts": [p.public() for p in parts]}) + "\n")
    os.replace(tmp, path)
