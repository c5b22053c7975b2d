"""The DuckDB query layer: one in-memory, read-only DuckDB connection over the metric tables and the read model.

What a query sees:

- ``mlhub.points`` / ``mlhub.run_experiments``: the Delta tables' files of one snapshot (taken at open), read by
  DuckDB's own Parquet reader from a local folder (hive partition ``bucket`` pruned by filters; files matched by
  column name, so data files written before a column was added read it as NULL), or from S3 as an Arrow
  dataset over exactly those files (filters and columns pushed down into the Arrow scan; no DuckDB extension);
- ``readmodel.<name>``: small tables of the SQL read model (runs, params, metric_definitions, ...) that the
  caller passes as Arrow (DuckDB cannot attach SQLite/PostgreSQL offline); missing ones are empty;
- the views defined by the SQL files in top-level ``projections/`` (file ``<view>.sql`` holds the view's SELECT):
  ``metrics``, ``runs``, ``params``, ``metric_summary``, ``leaderboard``, ...;
- macros ``metric_bucket(run_id)`` and the table macro ``run_metrics(run_id, key)`` (one run's history with
  partition pruning).

After setup the connection's external access is disabled (except a local metrics folder) and its configuration is
locked; user queries also pass ``guard.check_read_only`` first.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import duckdb
import pyarrow as pa

from mlhub.analytics.errors import MetricTableError, QueryFailed, QueryOutOfMemory, QueryRefused
from mlhub.analytics.guard import check_read_only
from mlhub.analytics.layout import NUM_BUCKETS, PARTITION_COLUMN, POINTS_SCHEMA, RUNS_SCHEMA, run_bucket
from mlhub.analytics.location import MetricsLocation, metrics_location
from mlhub.analytics.tables import MetricTables, Snapshot

log = logging.getLogger(__name__)

_S = pa.string()
#: The read-model tables the views use, with the columns the views need when the caller passes none.
READMODEL_TABLES: dict[str, pa.Schema] = {
    "experiments": pa.schema([("experiment_id", _S), ("name", _S), ("description", _S)]),
    "runs": pa.schema([("run_id", _S), ("experiment_id", _S), ("name", _S), ("status", _S),
                       ("attempt", pa.int64())]),
    "params": pa.schema([("run_id", _S), ("key", _S), ("value", _S)]),
    "tags": pa.schema([("run_id", _S), ("key", _S), ("value", _S)]),
    "metric_definitions": pa.schema([("name", _S), ("direction", _S), ("unit", _S), ("description", _S),
                                     ("min_value", pa.float64()), ("max_value", pa.float64())]),
    "epoch_metrics": pa.schema([("run_id", _S), ("key", _S), ("epoch", pa.int64()), ("value", pa.float64()),
                                ("step", pa.int64()), ("timestamp", pa.int64())]),
}


def default_views_dir() -> Path:
    """The SQL view definitions: ``$MLHUB_VIEWS_DIR``, ``mlhub/_projections`` in an installed wheel, or the
    top-level ``projections/`` folder of the source tree."""
    override = os.environ.get("MLHUB_VIEWS_DIR")
    here = Path(__file__).resolve()
    candidates = [Path(override)] if override else []
    candidates += [here.parents[1] / "_projections", here.parents[3] / "projections"]
    for candidate in candidates:
        if any(candidate.glob("*.sql")):
            return candidate
    raise MetricTableError(f"cannot find the SQL view files (looked in {', '.join(map(str, candidates))})")


class QueryEngine:
    """Read-only SQL over the metric tables and the read model (``with QueryEngine(...) as q: q.query(sql)``).

    The constructor does no I/O; ``open()`` (or entering the context) takes the snapshot and builds the views.
    """

    def __init__(
        self,
        location: MetricsLocation | Path | str,
        tables: Mapping[str, pa.Table] | None = None,
        *,
        views_dir: Path | None = None,
        num_buckets: int = NUM_BUCKETS,
        threads: int | None = None,
        memory_limit_mb: int | None = None,
    ) -> None:
        self.location = metrics_location(location)
        self.tables = dict(tables or {})
        self.views_dir = views_dir
        self.num_buckets = num_buckets
        self.threads = threads
        self.memory_limit_mb = memory_limit_mb
        self.snapshot: Snapshot | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._views: list[str] = []
        #: Arrow datasets the views read (metric tables on S3): registered Python objects are per connection,
        #: so every cursor registers them again (`cursor`).
        self._datasets: dict[str, object] = {}

    # -- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> QueryEngine:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> QueryEngine:
        """Take a snapshot of the metric tables, load the read-model tables, create the views, lock it down."""
        if self._con is not None:
            return self
        self.snapshot = MetricTables(self.location).snapshot()
        con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                                  "autoload_known_extensions": False})
        try:
            if self.threads:
                con.execute(f"SET threads = {int(self.threads)}")
            if self.memory_limit_mb:
                con.execute(f"SET memory_limit = '{int(self.memory_limit_mb)}MB'")
            # No spilling: an in-memory database would write to .tmp in the working directory (DuckDB's default);
            # a query over memory_limit fails instead.
            con.execute("SET temp_directory = ''")
            con.execute("SET parquet_metadata_cache = true")
            legacy = self.snapshot.legacy_points
            if legacy:
                # Files of an earlier layout carry min/max statistics on value, which leave NaN out (as Parquet
                # says): DuckDB's statistics propagation would fold isnan(value) to false (nan_count 0, max NaN).
                # Until compaction rewrites them (layout.writer_properties), that optimizer stays off.
                con.execute("SET disabled_optimizers = 'statistics_propagation'")
            con.execute("CREATE SCHEMA mlhub; CREATE SCHEMA readmodel")
            _create_files_view(con, "mlhub.points", self.snapshot.points_files, POINTS_SCHEMA, hive=True,
                               by_name=legacy, location=self.location, datasets=self._datasets)
            _create_files_view(con, "mlhub.run_experiments", self.snapshot.runs_files, RUNS_SCHEMA, hive=False,
                               by_name=False, location=self.location, datasets=self._datasets)
            for name, schema in READMODEL_TABLES.items():
                _load_table(con, name, _with_columns(self.tables.get(name, schema.empty_table()), schema))
            for name, table in self.tables.items():
                if name not in READMODEL_TABLES:
                    _load_table(con, name, table)
            con.execute(
                f"CREATE MACRO metric_bucket(r) AS (('0x' || md5(r)[1:8])::UBIGINT % {int(self.num_buckets)})"
            )
            self._views = _create_views(con, self.views_dir or default_views_dir())
            con.execute(
                "CREATE MACRO run_metrics(r, k) AS TABLE "
                "SELECT step, epoch, value, timestamp, logged_at, seq, attempt FROM metrics "
                "WHERE bucket = metric_bucket(r) AND run_id = r AND key = k ORDER BY step, timestamp, seq"
            )
            if self.location.is_local:
                directories = [str(self.location.local_dir.resolve()) + "/"]
                con.execute(f"SET allowed_directories = {_sql_list(directories)}")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        except duckdb.Error as e:
            con.close()
            raise MetricTableError(f"cannot set up the query engine over {self.location}: {e}") from e
        except BaseException:
            con.close()
            raise
        self._con = con
        return self

    def close(self) -> None:
        """Close the DuckDB connection."""
        if self._con is not None:
            self._con.close()
            self._con = None

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The locked-down DuckDB connection (opened on first use)."""
        if self._con is None:
            self.open()
        assert self._con is not None
        return self._con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of the connection for one thread, seeing the same views (and the datasets they read)."""
        cursor = self.connection.cursor()
        for name, dataset in self._datasets.items():
            cursor.register(name, dataset)
        return cursor

    @property
    def relations(self) -> frozenset[str]:
        """Every table and view a query may name: the views, ``mlhub.points``, ``mlhub.run_experiments`` and
        ``readmodel.<table>`` (lower case; the guard refuses anything else, the system catalogue included)."""
        self.connection  # noqa: B018  (opens)
        names = {v.lower() for v in self._views} | {"mlhub.points", "mlhub.run_experiments"}
        names |= {f"readmodel.{n.lower()}" for n in (*READMODEL_TABLES, *self.tables)}
        return frozenset(names)

    @property
    def views(self) -> list[str]:
        """Names of the views created from the SQL files."""
        self.connection  # noqa: B018  (opens)
        return list(self._views)

    # -- queries --------------------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[object] | None = None) -> pa.Table:
        """Run one read-only SELECT and return its result as Arrow; QueryRefused names what was refused."""
        check_read_only(sql, self.relations)
        return self._execute(sql, params)

    def run_history(self, run_id: str, key: str) -> pa.Table:
        """One run's points of one key in step order: step, epoch, value, timestamp (reads one bucket)."""
        bucket = run_bucket(run_id, self.num_buckets)
        return self._execute(
            "SELECT step, epoch, value, timestamp FROM mlhub.points WHERE bucket = $1 AND run_id = $2 AND key = $3 "
            "ORDER BY step, timestamp, seq",
            [bucket, run_id, key],
        )

    def _execute(self, sql: str, params: Sequence[object] | None) -> pa.Table:
        try:
            relation = self.connection.sql(sql, params=list(params) if params is not None else None)
            return relation.to_arrow_table() if relation is not None else pa.table({})
        except duckdb.Error as e:
            raise self.query_error(e) from e

    def query_error(self, e: duckdb.Error) -> QueryRefused | QueryOutOfMemory | QueryFailed:
        """The mlhub error of a DuckDB error of a user's query on this engine (one mapping for every caller)."""
        if isinstance(e, duckdb.PermissionException):
            return QueryRefused(f"the query tried to reach outside mlhub's views: {_first_line(e)}")
        if isinstance(e, duckdb.OutOfMemoryException):
            return QueryOutOfMemory(self.memory_limit_mb)
        return QueryFailed(_first_line(e))


def _with_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table with every column of schema it lacks added as NULLs (the views may rely on them)."""
    for f in schema:
        if f.name not in table.column_names:
            table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    return table


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_sql_str(v) for v in values) + "]"


#: DuckDB's name of each Arrow type the metric tables use.
_DUCKDB_TYPES = {pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.string(): "VARCHAR"}


def parquet_select(con: duckdb.DuckDBPyConnection, files: Sequence[str], schema: pa.Schema, *, hive: bool,
                   by_name: bool = True, location: MetricsLocation | None = None,
                   datasets: dict[str, object] | None = None) -> str:
    """A SELECT of the schema's columns over exactly these Parquet files (at least one) of the location (default:
    local paths).

    Local files are read by DuckDB. With by_name, files are matched by column name (union_by_name, which reads
    every file's schema): a table's older data files may lack a column added to its layout later (``attempt`` of
    the points table); such a column reads as NULL, even when no file has it yet. Without it (a snapshot with no
    legacy files, Snapshot.legacy_points), the first file's columns stand for all (the partition column, when not
    hive, is NULL). Files on S3 are an Arrow dataset of the schema registered on the connection (a column a file
    lacks reads as NULL; the hive partition comes from the paths) and added to `datasets` by its name.
    """
    if location is not None and not location.is_local:
        return _dataset_select(con, files, schema, hive=hive, location=location,
                               datasets=datasets if datasets is not None else {})
    options = ", hive_partitioning = true, hive_types = {'bucket': INTEGER}" if hive else ""
    if by_name:
        options += ", union_by_name = true"
    source = f"read_parquet({_sql_list(list(files))}{options})"
    present = {str(row[0]) for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    columns = ", ".join(f'"{f.name}"' if f.name in present else f'CAST(NULL AS {_DUCKDB_TYPES[f.type]}) AS "{f.name}"'
                        for f in schema)
    return f"SELECT {columns} FROM {source}"


def _dataset_select(con: duckdb.DuckDBPyConnection, files: Sequence[str], schema: pa.Schema, *, hive: bool,
                    location: MetricsLocation, datasets: dict[str, object]) -> str:
    import pyarrow.dataset as ds

    partitioning = None
    if hive:
        partitioning = ds.partitioning(pa.schema([schema.field(PARTITION_COLUMN)]), flavor="hive")
    dataset = ds.dataset(list(files), schema=schema, format="parquet", filesystem=location.filesystem(),
                         partitioning=partitioning,
                         partition_base_dir=_common_dir(files) if hive else None)
    name = f"__mlhub_dataset_{next(_DATASET_NAMES)}"  # registered Python objects are per connection
    con.register(name, dataset)
    datasets[name] = dataset
    columns = ", ".join(f'"{f.name}"' for f in schema)
    return f"SELECT {columns} FROM {name}"


def _common_dir(files: Sequence[str]) -> str:
    """The table folder of hive-partitioned files (``.../points/bucket=3/part-...parquet`` -> ``.../points``)."""
    first = files[0]
    marker = f"/{PARTITION_COLUMN}="
    return first[: first.index(marker)] if marker in first else first.rsplit("/", 1)[0]


_DATASET_NAMES = itertools.count()


def _create_files_view(
    con: duckdb.DuckDBPyConnection, name: str, files: list[str], schema: pa.Schema, *, hive: bool, by_name: bool,
    location: MetricsLocation | None = None, datasets: dict[str, object] | None = None,
) -> None:
    """A view over exactly these Parquet files, or an empty table of the schema when there are none."""
    if not files:
        _load_arrow(con, name, schema.empty_table())
        return
    select = parquet_select(con, files, schema, hive=hive, by_name=by_name, location=location, datasets=datasets)
    con.execute(f"CREATE VIEW {name} AS {select}")


def _load_table(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    if not name.isidentifier():
        raise MetricTableError(f"read-model table name {name!r} is not a plain identifier")
    _load_arrow(con, f"readmodel.{name}", table)


def _load_arrow(con: duckdb.DuckDBPyConnection, qualified: str, table: pa.Table) -> None:
    """Copy an Arrow table into DuckDB (so nothing later depends on the Python object)."""
    staging = "__mlhub_staging"
    con.register(staging, table)
    try:
        con.execute(f"CREATE TABLE {qualified} AS SELECT * FROM {staging}")
    finally:
        con.unregister(staging)


def _create_views(con: duckdb.DuckDBPyConnection, views_dir: Path) -> list[str]:
    """Create one view per ``<name>.sql`` file (its content is the SELECT), in dependency order."""
    if not views_dir.is_dir():
        raise MetricTableError(f"the SQL view folder {views_dir} does not exist")
    pending = {p.stem: p.read_text() for p in sorted(views_dir.glob("*.sql"))}
    created: list[str] = []
    errors: dict[str, str] = {}
    while pending:
        progress = False
        for name, body in list(pending.items()):
            if not name.isidentifier():
                raise MetricTableError(f"view file {name}.sql: the name must be a plain identifier")
            try:
                con.execute(f'CREATE VIEW "{name}" AS {body.strip().rstrip(";")}')
            except duckdb.CatalogException as e:  # depends on a view not created yet
                errors[name] = _first_line(e)
                continue
            except duckdb.Error as e:
                raise MetricTableError(f"view file {views_dir / name}.sql is invalid: {_first_line(e)}") from e
            created.append(name)
            del pending[name]
            progress = True
        if not progress:
            detail = "; ".join(f"{n}.sql: {errors[n]}" for n in pending)
            raise MetricTableError(f"views in {views_dir} cannot be created: {detail}")
    return created


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
