"""The read model's schema comes only from the Alembic migrations, and they go up and down on both databases."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from mlhub.readmodel import current_revision, downgrade, migrate, tables


def _tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_creates_exactly_the_declared_schema(database: Engine) -> None:
    assert current_revision(database) is None
    migrate(database)
    assert current_revision(database) == "0002_metric_summaries_declared"
    assert _tables(database) == set(tables.metadata.tables)
    with database.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), tables.metadata)
    assert diff == [], f"migrations and mlhub.readmodel.tables disagree: {diff}"


def test_upgrade_is_idempotent_and_downgrade_drops_everything(database: Engine) -> None:
    migrate(database)
    migrate(database)
    with database.begin() as conn:
        conn.execute(tables.params.insert().values(run_id="r", key="k", value="v", last_seq=1))
    downgrade(database, "base")
    assert _tables(database) == set()
    assert current_revision(database) is None
    migrate(database)
    with database.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.params)).scalar_one() == 0
