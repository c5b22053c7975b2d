"""`resolve_run_ref`, the one query behind `mlhub show RUN` (both modes) and GET /run-lookup, on SQLite and
PostgreSQL: a full id, a unique id prefix (exact, case-sensitive, no LIKE wildcards) or an exact name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from mlhub.api.errors import ApiError, NotFound
from mlhub.api.queries import RUN_REF_CANDIDATES, resolve_run_ref
from mlhub.readmodel import migrate, tables

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RUNS = [("abc123", "alpha"), ("abd456", "beta"), ("ff0001", "beta"), ("a_c999", "gamma"), ("abc123x", "delta")]


@pytest.fixture
def engine(database: Engine) -> Engine:
    migrate(database)
    with database.begin() as conn:
        conn.execute(tables.runs.insert(), [
            {"run_id": run_id, "name": name, "status": "finished", "created_at": T0 + timedelta(minutes=i),
             "updated_at": T0, "last_seq": i + 1} for i, (run_id, name) in enumerate(RUNS)])
    return database


def test_an_id_a_unique_prefix_or_a_name_names_one_run(engine: Engine) -> None:
    with engine.connect() as conn:
        assert resolve_run_ref(conn, "abc123")["matched_by"] == "id"  # exact id, though also a prefix of another
        assert (resolve_run_ref(conn, "abd")["run_id"], resolve_run_ref(conn, "abd")["matched_by"]) == (
            "abd456", "id_prefix")
        assert (resolve_run_ref(conn, "alpha")["run_id"], resolve_run_ref(conn, "alpha")["matched_by"]) == (
            "abc123", "name")
        assert resolve_run_ref(conn, "a_")["run_id"] == "a_c999"  # `_` is no wildcard
        with pytest.raises(NotFound, match="no run has the id, id prefix or name 'ABD'"):
            resolve_run_ref(conn, "ABD")  # case-sensitive on both databases
        with pytest.raises(NotFound):
            resolve_run_ref(conn, "alph")  # names match exactly only


def test_several_matches_are_an_error_naming_the_candidates(engine: Engine) -> None:
    with engine.connect() as conn:
        with pytest.raises(ApiError) as by_name:
            resolve_run_ref(conn, "beta")
        assert by_name.value.code == "AMBIGUOUS_RUN_REF" and by_name.value.details["count"] == 2
        assert [c["run_id"] for c in by_name.value.details["candidates"]] == ["ff0001", "abd456"]  # newest first
        assert "2 runs match 'beta'" in str(by_name.value) and "ff0001 (beta" in str(by_name.value)
        with pytest.raises(ApiError) as by_prefix:
            resolve_run_ref(conn, "ab")
        assert by_prefix.value.details["count"] == 3
        assert len(by_prefix.value.details["candidates"]) <= RUN_REF_CANDIDATES
