"""docker-compose.yml describes the deployment tests/cluster runs: checked without Docker.

`docker-compose config` (Debian's docker-compose 1.29.2; it needs no daemon) must accept the file and refuse a
broken copy. Its resolved services must be the harness's hosts (tests/cluster/topology.py), and each mlhub
part's command, settings and secrets must be what the harness itself passes to the same part: the harness's own
start methods are driven here with hosts that record instead of starting anything (no root, no network
namespace), and the two are compared setting by setting, allowing only addresses, paths and the tuning
topology.py declares. The files compose mounts must be what topology.py writes and must pass `nats-server -t`
and `haproxy -c`; `tools/compose.py` must write the secrets it names and set up a fresh cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.artifacts.conftest import AWS_LEAKS, FAKE_AWS, start_moto
from tests.cluster import conftest as harness
from tests.cluster import topology as topo

from mlhub.eventlog.auth import ROLES, credentials_file, embedded_credentials, server_authorization
from mlhub.eventlog.server import nats_server_binary

ROOT = topo.ROOT
COMPOSE_FILE = ROOT / "docker-compose.yml"
#: The services docker-compose.yml has beyond the harness's hosts: its two one-shot steps.
ONE_SHOTS = {"venv", "setup"}
#: The machine's environment kept while the harness is driven here (the rest is removed, so that what is left
#: of a part's environment is what the harness set).
MACHINE_ENV = ("PATH", "HOME")


def _machine(name: str) -> bool:
    return name in MACHINE_ENV or name.startswith("PYTEST_")


def docker_compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    """`docker-compose -f file ...` with no COMPOSE_* or DOCKER_* settings of this machine leaking in."""
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed, so docker-compose.yml cannot be checked: .ci/run installs "
                    "Debian's (apt-get install docker-compose); `docker-compose config` needs no Docker daemon")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    return subprocess.run(["docker-compose", "-f", str(file), *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=file.parent)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as docker-compose resolves it (anchors merged, paths absolute)."""
    done = docker_compose("config")
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert isinstance(resolved, dict)
    return resolved


def test_docker_compose_accepts_the_file_and_refuses_a_broken_copy(tmp_path: Path) -> None:
    done = docker_compose("config", "-q")
    assert done.returncode == 0, done.stderr
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text()
    assert "    secrets: [nats-admin]\n" in text
    broken.write_text(text.replace("    secrets: [nats-admin]\n", "    secret: [nats-admin]\n", 1))
    done = docker_compose("config", "-q", file=broken)
    assert done.returncode != 0
    assert "Unsupported config option for services.setup: 'secret'" in done.stderr, done.stderr


def test_the_services_are_the_harness_hosts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == set(topo.SERVICES.values()) | ONE_SHOTS
    kinds = list(topo.PARTS.values())
    assert (kinds.count("api"), kinds.count("projector"), kinds.count("worker"), len(topo.NATS_NODES)) == (2, 2, 3, 3)
    for name, service in services.items():  # the long-running ones come back after a crash or a reboot
        assert service.get("restart") == ("unless-stopped" if name not in ONE_SHOTS else
                                          {"venv": None, "setup": "no"}[name]), name


@pytest.fixture
def driven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> harness.Cluster:
    """The cluster harness with hosts that record what it would start (and start nothing), every part started
    through its own start methods, its hosts reachable at their compose service names."""
    for name in list(os.environ):
        if not _machine(name):
            monkeypatch.delenv(name)
    monkeypatch.setattr(harness, "wait_port", lambda *args, **kwargs: None)
    hosts = {host: RecordingHost(host, service) for host, service in topo.SERVICES.items()}
    c = harness.Cluster(net=None, dir=tmp_path / "cluster", hosts=hosts)  # type: ignore[arg-type]
    c._authorization = server_authorization(embedded_credentials(tmp_path / "cluster" / "nats"))
    c.base_env = harness.harness_env(c.ip)
    for node in topo.NATS_NODES:
        c.start_nats(node)
    for host, kind in topo.PARTS.items():
        getattr(c, f"start_{kind}")(host)
    return c


class RecordingHost:
    """A harness host that records each program it is asked to start."""

    def __init__(self, name: str, address: str) -> None:
        self.name, self.address = name, address
        self.started: list[tuple[list[str], dict[str, str]]] = []

    def popen(self, args: list[str], *, env: dict[str, str], log: Path, user: str | None = None,
              cwd: Path | None = None) -> Any:
        self.started.append((list(args), dict(env)))
        return None


def _expected_compose_env(c: harness.Cluster, host: str, service: str, role: str,
                          env: dict[str, str]) -> dict[str, str]:
    """What the compose service must set, from what the harness gave the part: its settings with compose's
    paths and name, without the harness's tuning."""
    settings = {k: v for k, v in env.items() if not _machine(k)}
    for name, value in topo.HARNESS_SETTINGS.items():
        assert settings.pop(name) == value
    assert settings.pop("MLHUB_NATS_CREDS") == str(c.creds(role))
    assert settings.pop("MLHUB_DATA_DIR") == str(c.dir / "hosts" / host)
    assert settings.pop("MLHUB_PRODUCER") == f"mlhub@{host}"
    expected = {**settings, **topo.part_settings(service, creds=f"/run/secrets/{topo.compose_secret(role)}",
                                                 data_dir=topo.COMPOSE_DATA_DIR)}
    if role == "api":  # the bootstrap admin token: the harness's test token inline, compose's from its secret
        assert settings.pop("MLHUB_API_TOKENS") == f"{harness.TOKEN}:admin"
        del expected["MLHUB_API_TOKENS"]
        expected["MLHUB_API_TOKENS_FILE"] = "/run/secrets/api-tokens"
    return expected


def test_each_part_runs_and_gets_what_the_harness_gives_it(compose: dict[str, Any],
                                                           driven: harness.Cluster) -> None:
    services = compose["services"]
    for host, kind in topo.PARTS.items():
        service = services[topo.SERVICES[host]]
        [(args, env)] = driven.hosts[host].started  # type: ignore[attr-defined]
        assert args == [sys.executable, *topo.command(kind, harness=True)]
        assert service["command"] == [topo.COMPOSE_PYTHON, *topo.command(kind)], host
        expected = _expected_compose_env(driven, host, topo.SERVICES[host], kind, env)
        assert service["environment"] == expected, host
        secrets = [s["source"] for s in service["secrets"]]
        assert secrets == [topo.compose_secret(kind), *(["api-tokens"] if kind == "api" else [])], host
        assert service["depends_on"] == {"setup": {"condition": "service_completed_successfully"}}, host
    # ... and the deployment differs from the harness only in the declared tuning
    assert topo.command("worker") == ["-m", "mlhub.cli", "worker", "--ack-wait", str(topo.ACK_WAIT_S)]
    assert topo.command("projector") + list(topo.HARNESS_PROJECTOR_ARGS) == topo.command("projector", harness=True)


def test_setup_is_the_harness_operator(compose: dict[str, Any], driven: harness.Cluster) -> None:
    setup = compose["services"]["setup"]
    expected = _expected_compose_env(driven, "operator", "setup", "admin", driven.env("admin", "operator"))
    assert setup["environment"] == expected
    assert setup["command"] == [topo.COMPOSE_PYTHON, "tools/compose.py", "setup"]
    assert [s["source"] for s in setup["secrets"]] == [topo.compose_secret("admin")]
    infrastructure = {topo.SERVICES[h] for h in (*topo.NATS_NODES, "db", "s3")}
    assert set(setup["depends_on"]) == infrastructure | {"venv"}
    assert setup["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_the_secrets_are_the_harness_credential_files(compose: dict[str, Any]) -> None:
    secrets = {name: Path(s["file"]) for name, s in compose["secrets"].items()}
    for role in ROLES:
        assert secrets.pop(topo.compose_secret(role)) == credentials_file(ROOT / "secrets" / "nats", role)
    assert secrets == {"nats-auth": ROOT / "secrets" / "nats" / "auth.conf",
                       "api-tokens": ROOT / "secrets" / "api-tokens"}
    assert "/secrets/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_nats_nodes_run_the_harness_config(compose: dict[str, Any], driven: harness.Cluster,
                                               tmp_path: Path) -> None:
    version = subprocess.run([str(nats_server_binary()), "--version"], capture_output=True, text=True).stdout
    files = topo.deploy_files()
    write_secrets(tmp_path / "secrets")
    for node in topo.NATS_NODES:
        name = topo.SERVICES[node]
        service = compose["services"][name]
        assert service["image"] == f"nats:{version.split()[-1].removeprefix('v')}"  # the tests' nats-server
        assert service["command"] == ["-c", topo.COMPOSE_NATS_CONFIG]
        config = ROOT / "deploy" / "nats" / f"{name}.conf"
        assert f"{config}:{topo.COMPOSE_NATS_CONFIG}:ro" in service["volumes"]
        assert f"{name}:{topo.COMPOSE_NATS_STORE}:rw" in service["volumes"]
        assert service["secrets"] == [{"source": "nats-auth", "target": topo.COMPOSE_NATS_AUTH}]
        assert config.read_text() == files[config], "deploy/ is stale: uv run python -m tests.cluster.topology"
        # the harness's own config file of that node, with compose's name, store and the users included
        [(args, _)] = driven.hosts[node].started  # type: ignore[attr-defined]
        started = Path(args[args.index("-c") + 1]).read_text()
        store = json.dumps(str(driven.dir / "nats" / node / "store"))
        assert started.startswith(f"server_name: {node}\n") and driven._authorization in started
        translated = (started.replace(f"server_name: {node}\n", f"server_name: {name}\n")
                      .replace(store, json.dumps(topo.COMPOSE_NATS_STORE))
                      .replace(driven._authorization, f'include "{Path(topo.COMPOSE_NATS_AUTH).name}"\n'))
        assert translated == config.read_text()
        # nats-server itself accepts it, with the auth.conf that `tools/compose.py secrets` writes beside it
        checked = tmp_path / "etc" / name
        checked.mkdir(parents=True)
        shutil.copy(config, checked / "nats-server.conf")
        shutil.copy(tmp_path / "secrets" / "nats" / "auth.conf", checked / "auth.conf")
        done = subprocess.run([str(nats_server_binary()), "-t", "-c", str(checked / "nats-server.conf")],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr


def test_haproxy_runs_the_harness_config(compose: dict[str, Any]) -> None:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed: .ci/run installs Debian's haproxy")
    config = ROOT / "deploy" / "haproxy.cfg"
    apis = [topo.SERVICES[h] for h, kind in topo.PARTS.items() if kind == "api"]
    assert config.read_text() == topo.haproxy_config(apis, resolver=topo.COMPOSE_DNS), \
        "deploy/ is stale: uv run python -m tests.cluster.topology"
    # the harness's config, plus Docker's DNS to re-resolve the replicas' names, and nothing else
    harness_cfg = topo.haproxy_config(apis)
    compose_lines = [line.replace(" resolvers dns init-addr libc,none", "") for line in config.read_text().splitlines()
                     if line not in ("resolvers dns", f"  nameserver dns1 {topo.COMPOSE_DNS}", "  hold valid 10s")]
    assert compose_lines == harness_cfg.splitlines()
    assert "option httpchk GET /healthz" in harness_cfg
    done = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    lb = compose["services"]["lb"]
    assert f"{config}:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"]
    assert set(lb["depends_on"]) == set(apis)


def test_s3_and_postgres_run_as_in_the_harness(compose: dict[str, Any]) -> None:
    s3 = compose["services"]["s3"]
    assert s3["command"] == [topo.COMPOSE_PYTHON, *topo.s3_command()]
    assert s3["environment"] == FAKE_AWS
    postgres = compose["services"]["postgres"]
    assert postgres["command"] == ["postgres", *harness._server_settings(topo.POSTGRES_SETTINGS)]
    assert postgres["environment"] == {"POSTGRES_DB": "mlhub", "POSTGRES_HOST_AUTH_METHOD": "trust"}
    database_url = topo.settings(topo.SERVICES.__getitem__)["MLHUB_DATABASE_URL"]
    assert database_url.endswith("/" + postgres["environment"]["POSTGRES_DB"])


def write_secrets(directory: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "compose.py"), "secrets", "--dir", str(directory)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def test_compose_secrets_writes_what_compose_mounts_and_keeps_the_passwords(tmp_path: Path) -> None:
    write_secrets(tmp_path)
    first = {role: credentials_file(tmp_path / "nats", role).read_text() for role in ROLES}
    token = (tmp_path / "api-tokens").read_text()
    write_secrets(tmp_path)
    assert {role: credentials_file(tmp_path / "nats", role).read_text() for role in ROLES} == first
    assert (tmp_path / "api-tokens").read_text() == token and token.strip().endswith(":admin:compose-admin")
    auth = (tmp_path / "nats" / "auth.conf").read_text()
    for role in ROLES:
        assert f'user: "{role}"' in auth
        assert first[role].split(":", 1)[1].strip() not in auth  # hashes only
    for path in [*(credentials_file(tmp_path / "nats", r) for r in ROLES), tmp_path / "nats" / "auth.conf",
                 tmp_path / "api-tokens"]:
        assert path.stat().st_mode & 0o077 == 0, path


def test_compose_setup_makes_bucket_stream_and_read_model(tmp_path: Path) -> None:
    """`tools/compose.py setup` on a fresh embedded server, moto and SQLite: refused at once without the admin's
    credentials, then bucket, stream and migrations as admin, and again (idempotent)."""
    import boto3

    from mlhub.eventlog import EmbeddedNats
    from mlhub.readmodel import current_revision

    moto, moto_url = start_moto(FAKE_AWS)
    try:
        with EmbeddedNats(tmp_path / "nats") as server:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_") and k not in AWS_LEAKS}
            database = f"sqlite:///{tmp_path / 'readmodel.db'}"
            env.update(FAKE_AWS, MLHUB_NATS_URL=str(server.public_url), MLHUB_DATA_DIR=str(tmp_path / "data"),
                       MLHUB_DATABASE_URL=database, MLHUB_S3_ENDPOINT_URL=moto_url,
                       MLHUB_ARTIFACT_URI="s3://setup-test/a", MLHUB_METRICS_URI="s3://setup-test/m")

            def setup(role: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [sys.executable, str(ROOT / "tools" / "compose.py"), "setup", "--timeout", "20"],
                    env={**env, "MLHUB_NATS_CREDS": str(credentials_file(tmp_path / "nats", role))},
                    capture_output=True, text=True, timeout=120)

            refused = setup("worker")
            assert refused.returncode != 0 and "stream" in refused.stderr, refused.stderr
            for _ in range(2):
                done = setup("admin")
                assert done.returncode == 0, done.stderr
                assert "stream ready with 1 replica(s)" in done.stderr and "read model migrated" in done.stderr
        s3 = boto3.client("s3", endpoint_url=moto_url, aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
                          region_name=FAKE_AWS["AWS_DEFAULT_REGION"])
        assert "setup-test" in {b["Name"] for b in s3.list_buckets()["Buckets"]}
        assert current_revision(database) is not None
    finally:
        moto.terminate()
        moto.wait(10)
