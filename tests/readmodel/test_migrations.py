"""The read model's schema comes only from the Alembic migrations, and they go up and down on both databases."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from mlhub.readmodel import current_revision, downgrade, migrate, migrations_dir, tables

#: The newest revision: migrations form one line (a second head would be a merge mistake).
_HEADS = ScriptDirectory.from_config(Config(str(migrations_dir() / "alembic.ini"))).get_heads()
HEAD = _HEADS[0]


def test_the_migrations_have_one_head() -> None:
    assert len(_HEADS) == 1, f"several Alembic heads: {_HEADS}"


def _tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_creates_exactly_the_declared_schema(database: Engine) -> None:
    assert current_revision(database) is None
    migrate(database)
    assert current_revision(database) == HEAD
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


def test_0004_renames_cancelled_runs_to_killed_and_leaves_jobs_alone(database: Engine) -> None:
    from datetime import UTC, datetime

    migrate(database, "0003_epoch_metrics")
    now = datetime.now(UTC)
    with database.begin() as conn:
        conn.execute(sa.text("INSERT INTO runs (run_id, status, updated_at, last_seq) VALUES "
                             "('r1', 'cancelled', :now, 1), ('r2', 'finished', :now, 2)"), {"now": now})
        conn.execute(sa.text("INSERT INTO jobs (job_id, status, attempts, updated_at, last_seq) VALUES "
                             "('j1', 'cancelled', 0, :now, 3)"), {"now": now})

    def statuses() -> tuple[dict[str, str], dict[str, str]]:
        with database.connect() as conn:
            runs = {r: s for r, s in conn.execute(sa.text("SELECT run_id, status FROM runs"))}
            jobs = {j: s for j, s in conn.execute(sa.text("SELECT job_id, status FROM jobs"))}
        return runs, jobs

    migrate(database)
    assert statuses() == ({"r1": "killed", "r2": "finished"}, {"j1": "cancelled"})
    downgrade(database, "0003_epoch_metrics")
    assert statuses() == ({"r1": "cancelled", "r2": "finished"}, {"j1": "cancelled"})


def test_0005_lets_a_metric_definition_name_be_any_metric_key(database: Engine) -> None:
    from datetime import UTC, datetime

    migrate(database)
    name = "val/acc@top1 " + "x" * 200  # longer than an id, as long as a metric key may be
    now = datetime.now(UTC)
    with database.begin() as conn:
        conn.execute(tables.metric_definitions.insert().values(
            name=name, direction="max", unit="", description="", revision=1, defined_at=now, updated_at=now,
            last_seq=1))
    with database.connect() as conn:
        assert conn.execute(sa.select(tables.metric_definitions.c.name)).scalar_one() == name
