"""Issue 12, item 1: the URL of a local `mlhub up` is no longer the key to its event log.

A real `mlhub up` (subprocess): its data dir is private, hub.json holds no secret, each part connects as its own
NATS user; `MLHUB_NATS_URL=<url from hub.json> mlhub models promote ...` without credentials is refused, with the
worker's credentials it is denied naming the subject, and the alias does not move. Credentials survive a restart.
"""

from __future__ import annotations

import json
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from tests.hub.helpers import RunningHub, free_port, hub_env, mlhub, ok, serving_hub, start, stop

ROLES = ("admin", "api", "projector", "worker")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with serving_hub(tmp_path_factory.mktemp("locked-doors") / "hub") as running:
        yield running


def passwords(data_dir: Path) -> dict[str, str]:
    return {role: (data_dir / "nats" / "credentials" / role).read_text().strip().split(":", 1)[1] for role in ROLES}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_dir_is_private_and_hub_json_holds_no_secret(hub: RunningHub) -> None:
    data_dir = hub.data_dir
    assert mode(data_dir) == 0o700 and mode(data_dir / "nats") == 0o700
    assert mode(data_dir / "readmodel.db") == 0o600 and mode(data_dir / "api-token") == 0o600
    assert mode(data_dir / "nats" / "nats-server.conf") == 0o600
    for role in ROLES:
        assert mode(data_dir / "nats" / "credentials" / role) == 0o600
    secrets = passwords(data_dir)
    hub_file = (data_dir / "hub.json").read_text()
    assert "@" not in json.loads(hub_file)["nats_url"]
    for name in ("hub.json", "nats/server.json", "nats/nats-server.conf", "hub-parts.json"):
        text = (data_dir / name).read_text()
        assert not [role for role, secret in secrets.items() if secret in text], name
    assert not [role for role, secret in secrets.items() if secret in hub.output]
    # Each part connects as its own role, through a file; no password is in any part's environment.
    roles = {}
    for child in psutil.Process(hub.proc.pid).children():
        cmdline = " ".join(child.cmdline())
        environ = child.environ()
        if "nats-server" in cmdline:
            assert "MLHUB_NATS_CREDS" not in environ
            continue
        assert not [role for role, secret in secrets.items() if secret in " ".join(environ.values())], cmdline
        assert "@" not in environ["MLHUB_NATS_URL"]
        part = "api" if "uvicorn" in cmdline else cmdline.split("mlhub.cli ")[1].split()[0]
        roles[part] = Path(environ["MLHUB_NATS_CREDS"]).relative_to(data_dir / "nats" / "credentials").name
    assert roles == {"projector": "projector", "worker": "worker", "api": "api"}


def test_the_url_alone_moves_no_alias_and_the_workers_user_may_not(hub: RunningHub, tmp_path: Path) -> None:
    token = (hub.data_dir / "api-token").read_text().strip()
    client = hub_env(tmp_path / "client", MLHUB_URL=hub.url, MLHUB_TOKEN=token)
    job = json.loads(ok(mlhub(["submit", "configs/digits-mlp.yaml", "--set", "trainer.max_epochs=1", "--wait",
                               "--json"], client)))
    assert job["status"] == "succeeded"
    operator = hub_env(hub.data_dir)  # the hub's owner on its machine: the data dir's admin credentials
    ok(mlhub(["models", "register", "digits", "--run", job["run_id"], "--artifact", "model.onnx", "--direct"],
             operator))
    ok(mlhub(["models", "promote", "digits", "1", "--alias", "candidate", "--direct"], operator))
    no_gates = tmp_path / "no-gates.yaml"
    no_gates.write_text("aliases: {}\n")

    # The attack: another user with only the URL of hub.json.
    url = json.loads((hub.data_dir / "hub.json").read_text())["nats_url"]
    mallory = hub_env(tmp_path / "mallory", MLHUB_NATS_URL=url)
    refused = mlhub(["models", "promote", "digits", "1", "--alias", "production", "--gates", str(no_gates)],
                    mallory, timeout=60)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "error [EVENT_LOG_UNAUTHORIZED]" in refused.stderr and "without credentials" in refused.stderr
    assert "Traceback" not in refused.stderr

    # The worker's credentials (the read model at hand): the server denies the alias event, naming it.
    worker = hub_env(hub.data_dir, MLHUB_NATS_URL=url,
                     MLHUB_NATS_CREDS=str(hub.data_dir / "nats" / "credentials" / "worker"))
    denied = mlhub(["models", "promote", "digits", "1", "--alias", "production", "--gates", str(no_gates)],
                   worker, timeout=60)
    assert denied.returncode == 1, denied.stdout + denied.stderr
    assert "error [EVENT_LOG_PERMISSION_DENIED]" in denied.stderr
    assert "user 'worker'" in denied.stderr and "'mlhub.ev.model.digits.alias_set'" in denied.stderr
    assert not [s for s in passwords(hub.data_dir).values() if s in refused.stderr + denied.stderr]

    # Nothing moved: the log holds one alias event, candidate -> 1.
    events = [json.loads(line) for line in ok(mlhub(["events", "tail", "--subject", "mlhub.ev.model.>"],
                                                    operator)).splitlines()]
    assert [(e["type"], e["payload"].get("alias")) for e in events] == [
        ("model.version_registered", None), ("model.alias_set", "candidate")]


def test_a_restart_on_the_same_data_dir_keeps_the_credentials(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    first = start(["up", "--workers", "0"], data_dir, free_port())
    try:
        first.wait_for(r"press Ctrl-C to stop")
        before = passwords(data_dir)
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(60) == 0, first.output
    finally:
        stop(first)
    again = start(["up", "--workers", "0"], data_dir, free_port())
    try:
        again.wait_for(r"press Ctrl-C to stop")
        assert passwords(data_dir) == before
        ready = httpx.get(f"{again.url}/readyz", timeout=30)
        assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
        # A script that kept the projector's credential file from the first session reads the log now.
        url = json.loads((data_dir / "hub.json").read_text())["nats_url"]
        script = hub_env(tmp_path / "script", MLHUB_NATS_URL=url,
                         MLHUB_NATS_CREDS=str(data_dir / "nats" / "credentials" / "projector"))
        ok(mlhub(["events", "tail"], script, timeout=60))
    finally:
        stop(again)
