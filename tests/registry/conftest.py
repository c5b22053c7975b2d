"""Fixtures of the registry tests: a migrated read model on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from mlhub.readmodel import migrate
from mlhub.readmodel.testing import DATABASE_KINDS, temporary_database


@pytest.fixture(params=DATABASE_KINDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A read model migrated to head (writer engine): a SQLite file, or a fresh PostgreSQL schema."""
    with temporary_database(request.param, tmp_path) as engine:
        migrate(engine)
        yield engine
