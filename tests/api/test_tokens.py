"""Issued API tokens through the REST API: create (admin only, names unique and checked), a reader token that
cannot write, the actor `token:<name>` on every write, a revoke refused on the very next request of this
replica and within milliseconds on another one, a new replica loading the tokens of the log; the projectors
skip token events (no dead letter)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import sqlalchemy as sa
from tests.api.conftest import ADMIN, WRITER, Api, api_settings, auth, database_url, running_api

from mlhub.eventlog import EventLog
from mlhub.events import TOKEN_SUBJECTS
from mlhub.readmodel import create_engine
from mlhub.readmodel import tables as t


async def _create(api: Api, role: str, name: str | None = None, token: str = ADMIN) -> dict[str, object]:
    response = await api.post("/tokens", {"role": role, "name": name}, token=token)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_create_list_and_what_an_issued_token_may_do(api: Api) -> None:
    reader = await _create(api, "reader", "dash-board")
    assert reader["name"] == "dash-board" and str(reader["token"]).startswith("mlhub_")
    assert reader["created_by"] == "token:env-3" and reader["revoked"] is False
    # Usable at once on this replica; a reader reads but may not write (403 naming the role).
    assert (await api.get("/runs", token=str(reader["token"]))).status_code == 200
    denied = await api.post("/runs", {"experiment": "x"}, token=str(reader["token"]))
    assert denied.status_code == 403 and "needs the writer role" in denied.text
    assert (await api.get("/whoami", token=str(reader["token"]))).json()["name"] == "token:dash-board"

    # Names: unique for good, checked; only an admin issues or lists.
    taken = await api.post("/tokens", {"role": "writer", "name": "dash-board"}, token=ADMIN)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "TOKEN_NAME_TAKEN"
    configured = await api.post("/tokens", {"role": "writer", "name": "env-1"}, token=ADMIN)
    assert configured.status_code == 409 and "MLHUB_API_TOKENS" in configured.text
    bad = await api.post("/tokens", {"role": "writer", "name": "no.dots"}, token=ADMIN)
    assert bad.status_code == 400 and "token name 'no.dots' is not valid" in bad.text
    assert (await api.post("/tokens", {"role": "owner"}, token=ADMIN)).status_code == 422
    assert (await api.post("/tokens", {"role": "reader"}, token=WRITER)).status_code == 403
    assert (await api.get("/tokens", token=WRITER)).status_code == 403
    unnamed = await _create(api, "writer")
    assert str(unnamed["name"]).startswith("writer-")

    listed = (await api.get("/tokens", token=ADMIN)).json()
    assert [(d["name"], d["role"]) for d in listed["data"]] == [("dash-board", "reader"), (unnamed["name"], "writer")]
    assert "token" not in str(listed).replace("token:", "") and str(reader["token"]) not in str(listed)


async def test_writes_record_the_token_and_a_revoke_holds_from_the_next_request(api: Api) -> None:
    issued = await _create(api, "writer", "ci-bot")
    token = str(issued["token"])
    created = await api.post("/runs", {"experiment": "tokens", "name": "by-ci"}, token=token)
    assert created.status_code == 201, created.text
    run_id = created.json()["run_id"]
    events = (await api.get(f"/runs/{run_id}/events", token=ADMIN)).json()["data"]
    assert events and {e["actor"] for e in events} == {"token:ci-bot"}
    ended = await api.post(f"/runs/{run_id}/end", {"status": "killed", "reason": "test"}, token=token)
    assert ended.status_code == 200, ended.text
    detail = (await api.get(f"/runs/{run_id}", params={"min_seq": ended.json()["seq"]})).json()
    assert detail["run"]["created_by"] == "token:ci-bot"

    revoked = await api.post("/tokens/ci-bot/revoke", {"reason": "leaked"}, token=ADMIN)
    assert revoked.status_code == 200 and revoked.json()["changed"] is True
    assert revoked.json()["revoked_by"] == "token:env-3"
    refused = await api.get("/runs", token=token)  # the very next request: no wait
    assert refused.status_code == 401 and "'ci-bot' was revoked" in refused.text
    assert refused.json()["error"]["details"] == {"token_name": "ci-bot", "revoked": True}
    again = await api.post("/tokens/ci-bot/revoke", token=ADMIN)
    assert again.status_code == 200 and again.json()["changed"] is False and again.json()["seq"] is None
    missing = await api.post("/tokens/nobody/revoke", token=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "TOKEN_NOT_FOUND"

    # The projectors skip token events on purpose: nothing dead-lettered.
    last = await api.event_log.last_sequence()
    assert (await api.get("/runs", params={"min_seq": last})).status_code == 200
    engine = create_engine(api.settings.resolved_database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(t.dead_letters)).all() == []
    finally:
        engine.dispose()


async def test_another_replica_loads_the_tokens_and_follows_a_revoke(api: Api, tmp_path: Path, nats_url: str,
                                                                     event_log: EventLog) -> None:
    first = await _create(api, "writer", "shared")
    with database_url("sqlite", tmp_path / "second") as url:
        settings = api_settings(tmp_path / "second", nats_url, url)
        async with running_api(settings, event_log, projectors=False) as second:
            # loaded at start (an issue before the replica started)
            assert (await second.get("/tokens", token=ADMIN)).json()["count"] == 1
            assert (await second.get("/whoami", token=str(first["token"]))).status_code == 200
            # issued on the second replica after the first started: the first follows it
            later = await _create(second, "reader", "later")
            await _eventually(api, str(later["token"]), 200)
            # revoked through the first: the second refuses it within milliseconds
            started = time.monotonic()
            assert (await api.post("/tokens/shared/revoke", token=ADMIN)).status_code == 200
            await _eventually(second, str(first["token"]), 401)
            assert time.monotonic() - started < 2
    assert await event_log.last_sequence(TOKEN_SUBJECTS) > 0


async def _eventually(api: Api, token: str, status: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (await api.get("/whoami", token=token)).status_code != status:
        assert time.monotonic() < deadline, f"no {status} within {timeout_s} s"
        await asyncio.sleep(0.005)


async def test_configured_tokens_keep_working_with_names(tmp_path: Path, nats_url: str,
                                                         event_log: EventLog) -> None:
    with database_url("sqlite", tmp_path) as url:
        settings = api_settings(tmp_path, nats_url, url).model_copy(
            update={"api_tokens": "plain-token-0001:writer,named-token-001:admin:ops"})
        async with running_api(settings, event_log, projectors=False) as app:
            assert (await app.get("/whoami", token="plain-token-0001")).json()["name"] == "token:env-1"
            assert (await app.get("/whoami", token="named-token-001")).json()["name"] == "token:ops"
            assert (await app.client.get("/api/v1/whoami", headers=auth("nope-nope-nope"))).status_code == 401
