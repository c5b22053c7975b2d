"""Engines for the read model and its schema migrations (Alembic, in top-level migrations/)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from mlhub.errors import MlhubError


class ReadModelError(MlhubError):
    """The read model's database is unusable: wrong URL, missing migrations, unreachable server."""

    code = "READ_MODEL_ERROR"


def create_engine(url: str, *, writer: bool = False, **kwargs: Any) -> Engine:
    """An engine for the read model. No I/O happens until it is used.

    SQLite gets WAL, synchronous=NORMAL and a 30 s busy timeout, and real transactions (so SAVEPOINT works);
    writer=True makes every transaction `BEGIN IMMEDIATE` (it takes the write lock at once, so a projector's
    read-check-write of its checkpoint cannot interleave with another writer). kwargs go to SQLAlchemy.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = sa.create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, begin="BEGIN IMMEDIATE" if writer else "BEGIN")
    elif engine.dialect.name != "postgresql":
        engine.dispose()
        raise ReadModelError(f"the read model runs on SQLite or PostgreSQL, not {engine.dialect.name} ({url!r})")
    return engine


def _configure_sqlite(engine: Engine, *, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # pysqlite's own transaction handling breaks SAVEPOINT; let SQLAlchemy's "begin" event open them.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(begin)


def sqlite_path(engine: Engine) -> Path | None:
    """The database file of a SQLite engine; None for PostgreSQL or an in-memory database."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    return Path(str(engine.url.database)).resolve()


def migrations_dir() -> Path:
    """Where the Alembic environment lives: $MLHUB_MIGRATIONS_DIR, mlhub/_migrations in an installed wheel,
    or migrations/ at the repository root."""
    override = os.environ.get("MLHUB_MIGRATIONS_DIR")
    candidates = [Path(override)] if override else []
    here = Path(__file__).resolve()
    candidates += [here.parents[1] / "_migrations", here.parents[3] / "migrations"]
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise ReadModelError(
        f"cannot find the read model's Alembic migrations (looked in {', '.join(map(str, candidates))})"
    )


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def _with_engine(database: str | Engine, action: str, revision: str) -> None:
    from alembic import command

    engine = create_engine(database) if isinstance(database, str) else database
    try:
        path = sqlite_path(engine)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        config = _alembic_config(engine)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            if action == "upgrade":
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)
    except sa.exc.OperationalError as e:
        raise ReadModelError(f"cannot migrate the read model at {engine.url!r}: {e.orig or e}") from e
    finally:
        if isinstance(database, str):
            engine.dispose()


def migrate(database: str | Engine, revision: str = "head") -> None:
    """`alembic upgrade <revision>` on the read model (a URL or an engine); idempotent."""
    _with_engine(database, "upgrade", revision)


def downgrade(database: str | Engine, revision: str) -> None:
    """`alembic downgrade <revision>` on the read model ("base" drops every table)."""
    _with_engine(database, "downgrade", revision)


def current_revision(database: str | Engine) -> str | None:
    """The Alembic revision the database is at; None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(database) if isinstance(database, str) else database
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if isinstance(database, str):
            engine.dispose()
