"""Tokens that last, against a real `mlhub up` (subprocesses): `mlhub tokens create|list|revoke` through the
hub and with --direct pass one contract; an issued writer's writes are recorded as `token:<name>`, a reader's
are refused (403), a revoked token gets 401 on the next request and the SDK reports it as HubAuthError with its
points kept in the spool; a restarted `mlhub up` keeps its admin token and the issued ones."""

from __future__ import annotations

import functools
import getpass
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.hub import helpers
from tests.hub.helpers import RunningHub, free_port, hub_env, serving_hub, start, stop

from mlhub.client import Hub, HubAuthError
from mlhub.client.spool import RunSpool, hub_folder


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with serving_hub(tmp_path_factory.mktemp("tokens") / "hub", workers=0) as running:
        yield running


mlhub = functools.partial(helpers.mlhub, timeout=120)


def _env(hub: RunningHub, mode: str, tmp_path: Path) -> tuple[dict[str, str], list[str], str]:
    """The environment, extra arguments and expected actor of the CLI in one mode."""
    if mode == "client":  # a user elsewhere: the hub's URL and its admin token
        token = (hub.data_dir / "api-token").read_text().strip()
        return hub_env(tmp_path / "client", MLHUB_URL=hub.url, MLHUB_TOKEN=token), [], "token:hub-admin"
    return hub_env(hub.data_dir), ["--direct"], f"cli:{getpass.getuser()}"  # on the hub's machine


def _api(hub: RunningHub, method: str, path: str, token: str, **kwargs: object) -> httpx.Response:
    return httpx.request(method, f"{hub.url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"},
                         timeout=30, **kwargs)  # type: ignore[arg-type]


def _until(hub: RunningHub, token: str, status: int) -> None:
    deadline = time.monotonic() + 5
    while _api(hub, "GET", "/whoami", token).status_code != status:
        assert time.monotonic() < deadline, f"the hub did not answer {status} within 5 s"
        time.sleep(0.01)


@pytest.mark.parametrize("mode", ["client", "direct"])
def test_create_list_revoke_in_both_modes(hub: RunningHub, mode: str, tmp_path: Path) -> None:
    env, direct, actor = _env(hub, mode, tmp_path)
    name = f"ci-{mode}"
    created = mlhub(["tokens", "create", "--role", "writer", "--name", name, "--json", *direct], env)
    assert created.returncode == 0, created.stderr
    issued = json.loads(created.stdout)
    token = issued["token"]
    assert (issued["name"], issued["role"], issued["created_by"]) == (name, "writer", actor)
    text = mlhub(["tokens", "create", "--role", "reader", "--name", f"{name}-r", *direct], env)
    assert text.returncode == 0 and "shown only now" in text.stdout
    reader = text.stdout.strip().splitlines()[-1]

    taken = mlhub(["tokens", "create", "--role", "writer", "--name", name, *direct], env)
    assert taken.returncode == 1 and "error [TOKEN_NAME_TAKEN]" in taken.stderr and name in taken.stderr
    bad = mlhub(["tokens", "create", "--role", "writer", "--name", "a b", *direct], env)
    assert bad.returncode == 1 and "token name 'a b' is not valid" in bad.stderr
    role = mlhub(["tokens", "create", "--role", "owner", *direct], env)
    assert role.returncode == 2 and "owner" in role.stderr

    # The new writer works at once (also when issued on the log: the API follows it) and is the actor.
    _until(hub, token, 200)
    run = _api(hub, "POST", "/runs", token, json={"experiment": "tokens", "name": name})
    assert run.status_code == 201, run.text
    events = _api(hub, "GET", f"/runs/{run.json()['run_id']}/events", token).json()["data"]
    assert {e["actor"] for e in events} == {f"token:{name}"}
    _until(hub, reader, 200)
    assert _api(hub, "POST", "/runs", reader, json={"experiment": "tokens"}).status_code == 403

    listed = mlhub(["tokens", "list", *direct], env)
    assert listed.returncode == 0 and listed.stdout.split()[:5] == ["NAME", "ROLE", "CREATED", "CREATED_BY",
                                                                    "REVOKED"]
    assert name in listed.stdout and token not in listed.stdout and reader not in listed.stdout
    mine = {t["name"]: t for t in json.loads(mlhub(["tokens", "list", "--json", *direct], env).stdout)}
    assert mine[name]["revoked"] is False and mine[name]["created_by"] == actor

    # The SDK logs with it, then the token is revoked: 401 as HubAuthError, the points kept in the spool.
    spool_dir = tmp_path / "spool"
    sdk = Hub(hub.url, token, spool_dir=spool_dir, interval_s=0.05, resend_on_start=False)
    sdk_run = sdk.start_run("tokens", name=f"sdk-{mode}")
    sdk_run.log_metrics({"loss": 1.0}, step=0)
    assert sdk_run.flush(30)

    revoked = mlhub(["tokens", "revoke", name, "--reason", "test", *direct], env)
    assert revoked.returncode == 0 and f"token {name} revoked" in revoked.stdout, revoked.stderr
    if mode == "client":  # revoked through the API: refused on the very next request
        assert _api(hub, "GET", "/whoami", token).status_code == 401
    else:  # appended to the log: the API's subscription has it within milliseconds
        _until(hub, token, 401)
    with pytest.warns(RuntimeWarning, match="refused the token .*was revoked.*set MLHUB_TOKEN"):
        for step in range(1, 11):
            sdk_run.log_metrics({"loss": float(step)}, step=step)
        assert not sdk_run.flush(10)
    assert isinstance(sdk_run.auth_error, HubAuthError) and sdk_run.auth_error.status == 401
    spooled = list(RunSpool(hub_folder(spool_dir, hub.url), sdk_run.run_id).pending())
    assert sum(len(r["body"]["metrics"][0]["values"]) for r in spooled if r["op"] == "batch") == 10
    sdk.close()

    again = mlhub(["tokens", "revoke", name, *direct], env)
    assert again.returncode == 0 and "revoked already" in again.stdout
    gone = mlhub(["tokens", "revoke", "never-issued", *direct], env)
    assert gone.returncode == 1 and "error [TOKEN_NOT_FOUND]" in gone.stderr
    after = {t["name"]: t for t in json.loads(mlhub(["tokens", "list", "--json", *direct], env).stdout)}
    assert after[name]["revoked"] is True and after[name]["revoked_by"] == actor


def test_a_restarted_up_keeps_its_admin_token_and_the_issued_ones(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    port = free_port()
    first = start(["up", "--workers", "0"], data_dir, port)
    try:
        admin = first.wait_for(r"admin token of this hub: (\S+)").group(1)
        first.wait_for(r"press Ctrl-C to stop")
        issued = _api(first, "POST", "/tokens", admin, json={"role": "reader", "name": "dashboard"})
        assert issued.status_code == 201, issued.text
    finally:
        stop(first)
    token_file = data_dir / "api-token"
    assert token_file.read_text().strip() == admin and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    second = start(["up", "--workers", "0"], data_dir, port)
    try:
        assert second.wait_for(r"admin token of this hub: (\S+)").group(1) == admin
        second.wait_for(r"press Ctrl-C to stop")
        assert _api(second, "GET", "/whoami", admin).json()["name"] == "token:hub-admin"
        assert _api(second, "GET", "/runs", issued.json()["token"]).status_code == 200
    finally:
        stop(second)
