"""Fixtures of the metric-definition tests: a migrated read model on SQLite and on PostgreSQL, and a temporary
copy of the project's schema files (definitions, lock, migrations, changelog) to edit."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from tests.metricdefs.helpers import ROOT

from mlhub.metricdefs import SchemaFiles
from mlhub.readmodel import migrate
from mlhub.readmodel.testing import DATABASE_KINDS, temporary_database


@pytest.fixture(params=DATABASE_KINDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A read model migrated to head (writer engine): a SQLite file, or a fresh PostgreSQL schema."""
    with temporary_database(request.param, tmp_path) as engine:
        migrate(engine)
        yield engine


@pytest.fixture
def project(tmp_path: Path) -> SchemaFiles:
    """A copy of the repository's metric schema files under tmp_path/project (same layout)."""
    root = tmp_path / "project"
    (root / "configs").mkdir(parents=True)
    for name in ("metrics.yaml", "metrics.lock.json"):
        shutil.copy(ROOT / "configs" / name, root / "configs" / name)
    shutil.copytree(ROOT / "migrations" / "metrics", root / "migrations" / "metrics")
    shutil.copy(ROOT / "CHANGELOG.md", root / "CHANGELOG.md")
    return SchemaFiles.of(root)
