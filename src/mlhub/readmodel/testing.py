"""Throw-away read-model databases for tests: a SQLite file, or a fresh schema in a real PostgreSQL.

PostgreSQL comes from $MLHUB_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
Each database is a schema of its own (`t_<random>`, the engine's search_path), dropped afterwards, so tests
never see each other's rows. An unreachable server is an error, never a skip: the read model must be tested on
both databases.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlhub.readmodel.database import ReadModelError, create_engine

DEFAULT_TEST_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DATABASE_KINDS = ("sqlite", "postgresql")


def postgres_test_url() -> str:
    """The PostgreSQL server tests use."""
    return os.environ.get("MLHUB_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL)


@contextmanager
def temporary_database(kind: str, directory: Path, *, writer: bool = True) -> Iterator[Engine]:
    """An empty (unmigrated) read-model database of a kind ("sqlite" or "postgresql"), removed afterwards."""
    if kind == "sqlite":
        engine = create_engine(f"sqlite:///{directory / 'readmodel.db'}", writer=writer)
        try:
            yield engine
        finally:
            engine.dispose()
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}; expected one of {DATABASE_KINDS}")
    url = postgres_test_url()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as e:
        admin.dispose()
        raise ReadModelError(
            f"the read-model tests need PostgreSQL at {url} (set MLHUB_TEST_POSTGRES_URL): {e.orig or e}"
        ) from e
    engine = create_engine(url, writer=writer, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
