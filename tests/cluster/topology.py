"""The scale-out deployment as data: its hosts, what each part runs and every setting it gets.

One source for the two descriptions of the same deployment: tests/cluster/conftest.py starts it for real (each
part on a network namespace of its own), and docker-compose.yml describes it for Docker, checked against this
module and against the harness itself by tests/test_compose.py. The two differ only in addresses, ports and
paths, in how secrets reach a part (files everywhere, except the API's bootstrap token: inline in the
harness), and in the harness's tuning below, each with its reason.

The configuration files compose mounts (deploy/nats/*.conf, deploy/haproxy.cfg) are made by the same functions
as the harness's; rewrite them after a change here with `uv run python -m tests.cluster.topology`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.artifacts.conftest import FAKE_AWS, MOTO_SERVER

from mlhub.eventlog.server import cluster_node_config

ROOT = Path(__file__).resolve().parents[2]

NATS_NODES = ("n1", "n2", "n3")
#: The mlhub parts by host, each with its kind (also its event-log user: mlhub.eventlog.auth.ROLES).
PARTS = {"api1": "api", "api2": "api", "p1": "projector", "p2": "projector", "w1": "worker", "w2": "worker",
         "w3": "worker"}
#: Every host of the harness and its service in docker-compose.yml.
SERVICES = {"n1": "nats-1", "n2": "nats-2", "n3": "nats-3", "db": "postgres", "s3": "s3", "lb": "lb",
            "api1": "api-1", "api2": "api-2", "p1": "projector-1", "p2": "projector-2",
            "w1": "worker-1", "w2": "worker-2", "w3": "worker-3"}

NATS_PORT, ROUTE_PORT, MONITOR_PORT = 4222, 6222, 8222
API_PORT, PG_PORT, S3_PORT = 8000, 5432, 5000
BUCKET = "mlhub-cluster"
#: The workers' ack wait (applied to the pool's shared consumer, so every worker of a pool gets the same):
#: a worker silent for longer loses its job to another one. `mlhub worker`'s default.
ACK_WAIT_S = 30.0
#: PostgreSQL server settings of the read model's database.
POSTGRES_SETTINGS = {"max_connections": "200"}  # 2 API replicas x 40 pooled, projectors, their locks


def settings(address: Callable[[str], str]) -> dict[str, str]:
    """The settings every mlhub part gets; `address(host)` is how the parts reach that host."""
    return {
        "PYTHONUNBUFFERED": "1",
        "MLHUB_NATS_URL": ",".join(f"nats://{address(n)}:{NATS_PORT}" for n in NATS_NODES),
        "MLHUB_STREAM_REPLICAS": "3",
        "MLHUB_NATS_PING_INTERVAL_S": "5",
        "MLHUB_DATABASE_URL": f"postgresql+psycopg://postgres@{address('db')}:{PG_PORT}/mlhub",
        "MLHUB_METRICS_URI": f"s3://{BUCKET}/cluster/metrics",
        "MLHUB_ARTIFACT_URI": f"s3://{BUCKET}/cluster/artifacts",
        "MLHUB_S3_ENDPOINT_URL": f"http://{address('s3')}:{S3_PORT}",
        **FAKE_AWS,  # moto takes any key; a real S3 gets its own (or an instance role)
    }


def part_settings(name: str, *, creds: Path | str, data_dir: Path | str) -> dict[str, str]:
    """What differs between parts: the event-log credentials file of its role, its local directory, its name."""
    return {"MLHUB_NATS_CREDS": str(creds), "MLHUB_DATA_DIR": str(data_dir), "MLHUB_PRODUCER": f"mlhub@{name}"}


def command(kind: str, *, harness: bool = False) -> list[str]:
    """What a part of this kind runs, after the Python interpreter; `harness`: with the harness's tuning."""
    if kind == "api":
        return ["-m", "uvicorn", "--factory", "mlhub.api:create_app", "--host", "0.0.0.0", "--port", str(API_PORT)]
    if kind == "projector":
        return ["-m", "mlhub.cli", "projector", *(HARNESS_PROJECTOR_ARGS if harness else ())]
    if kind == "worker":
        return ["-m", "mlhub.cli", "worker", "--ack-wait", str(HARNESS_ACK_WAIT_S if harness else ACK_WAIT_S)]
    raise ValueError(f"no part kind {kind!r} (kinds: {', '.join(sorted(set(PARTS.values())))})")


def s3_command() -> list[str]:
    """moto's S3 server on every address, after the Python interpreter: one request at a time (see MOTO_SERVER)."""
    return ["-c", MOTO_SERVER.replace("127.0.0.1", "0.0.0.0"), str(S3_PORT)]


# -- the harness's tuning: what it sets for its tests that a deployment does not (docker-compose.yml keeps the
#    deployment's values) --------------------------------------------------------------------------------------

#: A cut-off worker's job moves to another worker within a test's time, not after 30 s.
HARNESS_ACK_WAIT_S = 3.0
#: No progress lines every 30 s in the parts' logs (the tests read positions from /readyz and the read model).
HARNESS_PROJECTOR_ARGS = ("--status-every", "0")
#: No periodic audit seals during the fault tests (set so since the harness's first version; each test's
#: `mlhub audit verify` still rebuilds and compares every projection). A deployment keeps the default 60 s:
#: the seals are its tamper evidence.
HARNESS_SETTINGS = {"MLHUB_SEAL_INTERVAL_S": "0"}
#: A throwaway database: no fsync (never in a deployment: a power loss would corrupt it).
HARNESS_POSTGRES_SETTINGS = {"fsync": "off"}


# -- the configuration files --------------------------------------------------------------------------------------

def nats_config(name: str, store: str, peers: list[str], authorization: str) -> str:
    """A node's nats-server config (mlhub.eventlog.server.cluster_node_config): JetStream fsyncing every write,
    the cluster's routes to `peers`, monitoring on MONITOR_PORT, and `authorization`
    (mlhub.eventlog.auth.server_authorization, or an include of it)."""
    return cluster_node_config(name, store, [f"nats://{p}:{ROUTE_PORT}" for p in peers], authorization,
                               listen=f"0.0.0.0:{NATS_PORT}", http=f"0.0.0.0:{MONITOR_PORT}",
                               cluster_listen=f"0.0.0.0:{ROUTE_PORT}")


def haproxy_config(apis: list[str], *, resolver: str | None = None) -> str:
    """HAProxy in front of the API replicas at `apis`: round robin, health check GET /healthz every 500 ms,
    a failed connection retried on the other replica. `resolver`: a DNS server to re-resolve the replicas' names
    at (Docker's), so a recreated container's new address is found; without it, the addresses are fixed."""
    dns = " resolvers dns init-addr libc,none" if resolver else ""
    servers = "\n".join(f"  server api{i + 1} {a}:{API_PORT} check" for i, a in enumerate(apis))
    resolvers = f"resolvers dns\n  nameserver dns1 {resolver}\n  hold valid 10s\n" if resolver else ""
    return f"""global
  maxconn 512
  log stdout format raw local0
{resolvers}defaults
  mode http
  log global
  option httplog
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  retries 3
  option redispatch
  retry-on conn-failure empty-response response-timeout
frontend api
  bind 0.0.0.0:{API_PORT}
  default_backend apis
backend apis
  balance roundrobin
  option httpchk GET /healthz
  default-server inter 500ms fall 2 rise 2{dns}
{servers}
"""


# -- docker-compose.yml's side: where its parts find things ---------------------------------------------------------

COMPOSE_PYTHON = "/opt/venv/bin/python"
COMPOSE_DATA_DIR = "/var/lib/mlhub"
COMPOSE_NATS_STORE = "/data"
COMPOSE_NATS_CONFIG = "/etc/nats/nats-server.conf"
#: The nodes' users and permissions (server_authorization of the secrets written by `tools/compose.py secrets`),
#: mounted as a secret beside each node's config.
COMPOSE_NATS_AUTH = "/etc/nats/auth.conf"
COMPOSE_DNS = "127.0.0.11:53"  # Docker's embedded DNS server


def compose_secret(role: str) -> str:
    """The compose secret holding a role's event-log credentials (mounted at /run/secrets/<it>)."""
    return f"nats-{role}"


def deploy_files() -> dict[Path, str]:
    """The configuration files docker-compose.yml mounts, by path: each node's nats-server config and HAProxy's."""
    files = {}
    for node in NATS_NODES:
        peers = [SERVICES[n] for n in NATS_NODES if n != node]
        files[ROOT / "deploy" / "nats" / f"{SERVICES[node]}.conf"] = nats_config(
            SERVICES[node], COMPOSE_NATS_STORE, peers, f'include "{Path(COMPOSE_NATS_AUTH).name}"\n')
    apis = [SERVICES[h] for h, kind in PARTS.items() if kind == "api"]
    files[ROOT / "deploy" / "haproxy.cfg"] = haproxy_config(apis, resolver=COMPOSE_DNS)
    return files


def main() -> None:
    """Write deploy_files()."""
    for path, text in deploy_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
