"""`mlhub query "SQL"`: read-only SQL (DuckDB) over the metric tables and the SQL read model."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import click
import pyarrow as pa

from mlhub.analytics.cells import json_cell, text_cell
from mlhub.commands.common import fail, load_settings
from mlhub.commands.hubclient import DIRECT, use_client, with_hub
from mlhub.errors import MlhubError

#: Read-model tables handed to the query engine (the views runs, params, ... select from them).
READMODEL_TABLE_NAMES = ("experiments", "runs", "params", "tags", "metric_definitions", "epoch_metrics")


@click.command()
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="Output format: an aligned text table, CSV with a header, or a JSON array of objects.")
@DIRECT
def query(sql: str, fmt: str, direct: bool) -> None:
    """Run one read-only SELECT over the views metrics, runs, params, tags, experiments, metric_definitions,
    metric_summary, epoch_metrics, leaderboard, undeclared_metrics and metric_range_violations (and the table
    macro run_metrics(run_id, key)).

    Example: mlhub query "SELECT r.name, p.value AS lr, s.max_value FROM runs r JOIN params p USING (run_id)
    JOIN metric_summary s USING (run_id) WHERE p.key = 'lr' AND s.key = 'val/acc'"

    Asks the hub at MLHUB_URL (POST /api/v1/query) unless MLHUB_NATS_URL is set or --direct is given; then it
    reads the metric tables and the read model of MLHUB_DATA_DIR / MLHUB_DATABASE_URL itself.
    """
    from mlhub.analytics import QueryEngine, location_from_settings

    settings = load_settings()
    if use_client(settings, direct):
        answer = with_hub(settings, lambda client: client.post("/query", {"sql": sql}))
        if answer.get("truncated"):
            click.echo(f"note: the hub cut the answer at {answer['row_count']} rows", err=True)
        click.echo(render_rows(answer["columns"], answer["rows"], fmt), nl=False)
        return
    try:
        tables = load_readmodel_tables(settings.resolved_database_url)
        with QueryEngine(location_from_settings(settings), tables) as engine:
            result = engine.query(sql)
    except MlhubError as e:
        fail(e)
    click.echo(render(result, fmt), nl=False)


def load_readmodel_tables(url: str) -> dict[str, pa.Table]:
    """The read model's tables named in READMODEL_TABLE_NAMES that exist, as Arrow (none if no database yet)."""
    import sqlalchemy as sa

    from mlhub.readmodel.arrow import rows_to_arrow
    from mlhub.readmodel.database import create_engine, sqlite_path

    engine = create_engine(url)
    try:
        path = sqlite_path(engine)
        if path is not None and not path.exists():
            click.echo(f"note: no read model at {path} yet: runs, params, ... are empty", err=True)
            return {}
        try:
            names = set(sa.inspect(engine).get_table_names())
            metadata = sa.MetaData()
            wanted = [n for n in READMODEL_TABLE_NAMES if n in names]
            metadata.reflect(engine, only=wanted)
            result: dict[str, pa.Table] = {}
            with engine.connect() as conn:
                for name in wanted:
                    table = metadata.tables[name]
                    rows = conn.execute(sa.select(table)).mappings().all()
                    result[name] = rows_to_arrow(table, rows)
            return result
        except sa.exc.SQLAlchemyError as e:
            raise MlhubError(f"cannot read the read model at {engine.url!r}: {e}") from e
    finally:
        engine.dispose()


def render(table: pa.Table, fmt: str) -> str:
    """The result in one of the output formats (each ends with a newline)."""
    names = list(table.column_names)  # as JSON first, so both modes print the same (the hub answers JSON)
    return render_rows(names, [[json_cell(row[n]) for n in names] for row in table.to_pylist()], fmt)


def render_rows(names: list[str], rows: list[list[Any]], fmt: str) -> str:
    """Rows of the named columns in one of the output formats (each ends with a newline)."""
    if fmt == "json":
        return json.dumps([dict(zip(names, map(json_cell, r), strict=True)) for r in rows], indent=None) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([[text_cell(v, none="", quote=False) for v in r] for r in rows])
        return buffer.getvalue()
    cells = [[text_cell(v, none="NULL", quote=False) for v in r] for r in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    lines = [" | ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines) + "\n"

