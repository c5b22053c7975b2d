"""Alembic environment of the SQL read model.

`mlhub.readmodel.migrate()` passes an open connection in `config.attributes["connection"]`; run from the shell
(`alembic -c migrations/alembic.ini upgrade head`) it connects to the read model named by mlhub's settings.
Migrations are written by hand (explicit columns, no imports of mlhub's table definitions), so an old migration
never changes when the code does; a test checks that head matches `mlhub.readmodel.tables`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection


def _run(connection: Connection) -> None:
    # render_as_batch: later migrations that alter columns work on SQLite (copy-and-move).
    context.configure(connection=connection, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    """Run the migrations on the given connection, or on the read model of mlhub's settings."""
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported: run them against a database")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from mlhub.readmodel.database import create_engine, sqlite_path
    from mlhub.settings import Settings

    url = context.config.get_main_option("sqlalchemy.url") or Settings().resolved_database_url
    engine = create_engine(url)
    path = sqlite_path(engine)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


main()
