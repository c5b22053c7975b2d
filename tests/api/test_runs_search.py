"""The runs list: the filter language, sorting and page tokens, on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from tests.api.conftest import Api, create_run

from mlhub.api.filters import FilterError, parse_filter


async def _seed(api: Api) -> tuple[dict[str, dict[str, Any]], int]:
    """Seven runs with different lr, team and val_acc; returns name -> run, and the last sequence."""
    specs = [("a", "0.01", "vision", 0.95), ("b", "0.01", "vision", 0.85), ("c", "0.1", "vision", 0.97),
             ("d", "0.01", "nlp", 0.99), ("e", "0.01", "vision", 0.91), ("f", "0.001", "vision", 0.50),
             ("g", "0.01", "vision", None)]
    runs: dict[str, dict[str, Any]] = {}
    seq = 0
    for name, lr, team, acc in specs:
        run = await create_run(api, "search", name=name, params={"lr": lr}, tags={"team": team})
        if acc is not None:
            logged = await api.post(f"/runs/{run['run_id']}/log-batch",
                                    {"metrics": [{"key": "val_acc", "values": [0.1, acc], "steps": [0, 1]}]})
            assert logged.status_code == 200, logged.text
            seq = logged.json()["seq"]
        runs[name] = run
        seq = max(seq, run["seq"])
    return runs, seq


async def test_filter_sort_and_pages(api_any_db: Api) -> None:
    api = api_any_db
    runs, seq = await _seed(api)
    by_id = {r["run_id"]: name for name, r in runs.items()}

    response = await api.get("/runs", params={
        "filter": "metrics.val_acc > 0.9 and params.lr = '0.01' and tags.team = 'vision'",
        "order_by": "name ASC", "min_seq": seq})
    assert response.status_code == 200, response.text
    assert [r["name"] for r in response.json()["data"]] == ["a", "e"]
    first = response.json()["data"][0]
    assert first["params"] == {"lr": "0.01"} and first["tags"] == {"team": "vision"}
    assert first["metrics"] == {"val_acc": 0.95}

    for text, expected in [
        ("params.lr IN ('0.1', '0.001')", ["c", "f"]),
        ("tags.team != 'vision'", ["d"]),
        ("metrics.`val_acc` <= 0.85", ["b", "f"]),
        ("name LIKE 'a%' and status = 'running'", ["a"]),
        ("attributes.name ILIKE 'G'", ["g"]),
        (f"run_id = '{runs['c']['run_id']}'", ["c"]),
        ("created_at > 0", list("abcdefg")),
    ]:
        found = await api.get("/runs", params={"filter": text, "order_by": "name", "min_seq": seq})
        assert found.status_code == 200, (text, found.text)
        assert [r["name"] for r in found.json()["data"]] == expected, text

    for order, descending in (("created_at DESC", True), ("name ASC", False), ("name DESC", True),
                              ("run_id ASC", False), ("metrics.val_acc DESC", True), ("metrics.`val_acc` ASC", False),
                              ("params.lr DESC", True)):
        seen: list[str] = []
        token = None
        for _ in range(10):
            params: dict[str, Any] = {"order_by": order, "max_results": 3, "experiment_id": "search"}
            if token:
                params["page_token"] = token
            page = await api.get("/runs", params=params)
            assert page.status_code == 200, page.text
            seen += [r["run_id"] for r in page.json()["data"]]
            token = page.json()["next_page_token"]
            if token is None:
                break
        assert sorted(seen) == sorted(by_id) and len(seen) == 7, order
        if order.startswith("name"):
            names = [by_id[r] for r in seen]
            assert names == sorted(names, reverse=descending)
        if order.startswith("run_id"):
            assert seen == sorted(seen)
        if order.startswith("metrics."):  # g logged no val_acc: it sorts as the lowest value
            expected = ["d", "c", "a", "e", "b", "f", "g"]
            assert [by_id[r] for r in seen] == (expected if descending else expected[::-1]), order
        if order.startswith("params."):  # ties (lr 0.01) by run id, in the same direction
            ties = sorted((r for r in seen if by_id[r] in "abdeg"), reverse=True)
            assert seen == [runs["c"]["run_id"], *ties, runs["f"]["run_id"]]

    other = await api.get("/runs", params={"order_by": "name", "max_results": 2})
    reused = await api.get("/runs", params={"order_by": "name DESC", "page_token": other.json()["next_page_token"]})
    assert reused.status_code == 400 and reused.json()["error"]["code"] == "INVALID_PAGE_TOKEN"
    garbage = await api.get("/runs", params={"page_token": "!!!not-a-token"})
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "INVALID_PAGE_TOKEN"


async def test_invalid_filters_get_a_400_naming_the_token(api: Api) -> None:
    for text, token in [
        ("metrics.val_acc > 'high'", ">"),
        ("params.lr > '0.1'", ">"),
        ("metrics.acc >", None),
        ("colour = 'red'", "colour"),
        ("metrics.acc > 0.9 or params.lr = '1'", "or"),
        ("metrics.acc ~ 3", "~"),
        ("bogus.key = 'x'", "bogus.key"),
        ("params.lr = 0.01", "="),
        ("metrics.acc > 0.9 and", None),
        ("tags.team IN ('a' 'b')", "'b'"),
    ]:
        response = await api.get("/runs", params={"filter": text})
        assert response.status_code == 400, (text, response.text)
        error = response.json()["error"]
        assert error["code"] == "INVALID_FILTER" and error["details"]["token"] == token, (text, error)
        if token is not None:
            assert repr(token) in error["message"]
    order = await api.get("/runs", params={"order_by": "colour DESC"})
    assert order.status_code == 400 and "colour" in order.json()["error"]["message"]


def test_filter_values_are_bound_never_spliced() -> None:
    from sqlalchemy.dialects import sqlite

    from mlhub.api.filters import to_conditions

    clauses = parse_filter("tags.team = 'x''; DROP TABLE runs; --'")
    assert clauses[0].value == "x'; DROP TABLE runs; --"
    sql = str(to_conditions(clauses)[0].compile(dialect=sqlite.dialect()))
    assert "DROP" not in sql and "?" in sql
    with pytest.raises(FilterError):
        parse_filter("tags.team = 'unterminated")


async def test_runs_list_carries_the_best_value_of_declared_metrics(api_any_db: Api) -> None:
    from mlhub.events import Envelope, MetricDefined, MetricSpec

    api = api_any_db
    for name, direction in (("acc", "max"), ("err", "min")):
        await api.event_log.append(Envelope(event=MetricDefined(name=name, spec=MetricSpec(direction=direction)),
                                            producer="test"))
    run = await create_run(api, "best")
    logged = await api.post(f"/runs/{run['run_id']}/log-batch", {"metrics": [
        {"key": "acc", "values": [0.5, 0.9, 0.7], "steps": [0, 1, 2]},
        {"key": "err", "values": [0.4, 0.1, 0.3], "steps": [0, 1, 2]},
        {"key": "free", "values": [1.0, 2.0], "steps": [0, 1]}]})
    found = (await api.get("/runs", params={"min_seq": logged.json()["seq"], "experiment_id": run["experiment_id"]}))
    item = found.json()["data"][0]
    assert item["metrics"] == {"acc": 0.7, "err": 0.3, "free": 2.0}
    assert item["best_metrics"] == {"acc": 0.9, "err": 0.1}  # an undeclared key has no direction, so no best

    # sorting by a best value: err is "min", so its best is its minimum
    other = await create_run(api, "best")
    logged = await api.post(f"/runs/{other['run_id']}/log-batch", {"metrics": [
        {"key": "err", "values": [0.05, 0.2], "steps": [0, 1]}, {"key": "acc", "values": [0.8], "steps": [0]}]})
    seq = logged.json()["seq"]
    for order, first in (("best_metrics.err ASC", other), ("best_metrics.err DESC", run),
                         ("metrics.err ASC", other), ("best_metrics.acc DESC", run), ("metrics.acc DESC", other)):
        found = await api.get("/runs", params={"order_by": order, "min_seq": seq,
                                               "experiment_id": run["experiment_id"]})
        assert found.status_code == 200, found.text
        assert found.json()["data"][0]["run_id"] == first["run_id"], order
        page = await api.get("/runs", params={"order_by": order, "max_results": 1,
                                              "experiment_id": run["experiment_id"]})
        rest = await api.get("/runs", params={"order_by": order, "max_results": 1, "page_token": page.json()[
            "next_page_token"], "experiment_id": run["experiment_id"]})
        assert {page.json()["data"][0]["run_id"], rest.json()["data"][0]["run_id"]} == {run["run_id"],
                                                                                      other["run_id"]}
    for bad in ("metrics. DESC", "metrics.a b", "colour.x ASC", "params.x SIDEWAYS"):
        refused = await api.get("/runs", params={"order_by": bad})
        assert refused.status_code == 400 and "order_by" in refused.json()["error"]["message"], bad


async def test_the_dashboard_is_served_at_the_root(api: Api) -> None:
    index = await api.client.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/app.js">' in index.text
    for path in ("app.js", "api.js", "chart.js", "util.js", "style.css", "views/runs.js", "views/run.js",
                 "views/compare.js", "views/models.js", "views/jobs.js", "views/series.js"):
        response = await api.client.get(f"/ui/{path}")
        assert response.status_code == 200 and response.content, path
    assert (await api.client.get("/ui/nope.js")).status_code == 404
    assert "/" not in (await api.client.get("/openapi.json")).json()["paths"]


async def test_whoami_names_the_role_and_what_it_may_do(api: Api) -> None:
    from tests.api.conftest import ADMIN, READER, WRITER

    for token, role, write, admin in ((READER, "reader", False, False), (WRITER, "writer", True, False),
                                      (ADMIN, "admin", True, True)):
        me = (await api.get("/whoami", token=token)).json()
        assert (me["role"], me["can_write"], me["can_admin"]) == (role, write, admin)
        assert "production" in me["protected_aliases"] and token not in me["name"]
    assert (await api.get("/whoami", token=None)).status_code == 401
    assert (await api.get("/whoami", token="not-a-configured-token")).status_code == 401
