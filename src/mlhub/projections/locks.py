"""One active instance per projector: a lock per projector name, kept in (or next to) the read model's database.

PostgreSQL: a session-level `pg_try_advisory_lock` held on a dedicated connection; the server releases it when
that connection ends, so a crashed instance never leaves it behind. The key is derived from the schema and
the projector name. SQLite: an exclusive `flock` on a file next to the database (`<db>.<projector>.lock`);
the kernel releases it when the process dies.

The lock keeps a second instance from doing the same work; correctness never depends on it alone: the SQL
projector's transaction locks its checkpoint row and skips events at or below it, so even two writers that
both believed they held the lock could not apply an event twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlhub.errors import MlhubError
from mlhub.readmodel import ReadModelError, sqlite_path


class ProjectorLocked(MlhubError):
    """Another instance of the projector holds its lock."""

    code = "PROJECTOR_LOCKED"


class ProjectorLockLost(MlhubError):
    """The connection that held a projector's lock is gone: the instance must stop writing."""

    code = "PROJECTOR_LOCK_LOST"


class ProjectorLock(Protocol):
    """An exclusive, non-blocking, process-death-safe lock for one projector."""

    #: Where the lock lives, for messages.
    description: str

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False when another instance holds it."""
        ...

    def check(self) -> None:
        """Raise ProjectorLockLost when the lock is no longer held (called before each batch)."""
        ...

    def release(self) -> None:
        """Give the lock back (no-op when not held)."""
        ...


def projector_lock(engine: Engine, projector: str) -> ProjectorLock:
    """The lock of a projector in the read model's database (PostgreSQL advisory lock or SQLite lock file)."""
    if engine.dialect.name == "postgresql":
        return AdvisoryLock(engine, projector)
    path = sqlite_path(engine)
    if path is None:
        raise ReadModelError("a projector needs a read model on disk (an in-memory SQLite database cannot be locked)")
    return FileLock(path.with_name(f"{path.name}.{projector}.lock"))


class AdvisoryLock:
    """A PostgreSQL session advisory lock on a dedicated (autocommit) connection."""

    def __init__(self, engine: Engine, projector: str) -> None:
        self.engine = engine
        self.projector = projector
        self.description = f"PostgreSQL advisory lock of projector {projector!r} at {engine.url!r}"
        self._conn: sa.Connection | None = None
        self._key = 0

    def try_acquire(self) -> bool:
        """Take the advisory lock on a connection of its own."""
        if self._conn is not None:
            return True
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
            digest = hashlib.sha256(f"mlhub-projector:{schema}:{self.projector}".encode()).digest()
            key = int.from_bytes(digest[:8], "big", signed=True)
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one())
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn, self._key = conn, key
        return True

    def check(self) -> None:
        """Confirm the lock's connection (and so the lock) is still alive."""
        if self._conn is None:
            raise ProjectorLockLost(f"{self.description} is not held")
        try:
            self._conn.execute(sa.text("SELECT 1"))
        except sa.exc.DBAPIError as e:
            self._conn = None
            raise ProjectorLockLost(f"{self.description} was lost with its connection: {e.orig or e}") from e

    def release(self) -> None:
        """Unlock and close the connection."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
        except sa.exc.DBAPIError:
            pass  # the connection is gone, and the lock with it
        finally:
            conn.close()


class FileLock:
    """An exclusive flock on a file (per open file description: also excludes a second opener in-process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"lock file {path}"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the flock without blocking."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for people looking
        self._fd = fd
        return True

    def check(self) -> None:
        """A held flock cannot be lost while the process lives."""
        if self._fd is None:
            raise ProjectorLockLost(f"{self.description} is not held")

    def release(self) -> None:
        """Unlock and close the file (it stays, empty of meaning, for the next holder)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
