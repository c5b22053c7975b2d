"""The two steps docker-compose.yml needs from mlhub besides its parts: secrets before the first start, set-up
after each start of the services it depends on.

    uv run python tools/compose.py secrets [--dir secrets]   # on the host, once, before `docker-compose up`
    python tools/compose.py setup                              # the compose service `setup` runs this

`secrets` writes, in the layout the cluster tests use (mlhub.eventlog.auth): one credentials file per event-log
role (`<dir>/nats/credentials/{admin,api,projector,worker}`, one line `user:password`, 0600; kept when they
exist), the NATS nodes' `authorization` block with those users' bcrypt hashes and mlhub's permissions
(`<dir>/nats/auth.conf`, server_authorization, written anew each time), and, when missing, an admin API token
(`<dir>/api-tokens`, `token:admin:compose-admin`).

`setup`, as the event log's admin, with the parts' own MLHUB_* settings: creates the S3 buckets of
MLHUB_ARTIFACT_URI and MLHUB_METRICS_URI when missing (moto stands in for S3 in the compose file; a real bucket
is left as it is), creates the MLHUB_EVENTS stream (MLHUB_STREAM_REPLICAS replicas: the other users may only read
its info) or checks it, and migrates the read model (`alembic upgrade head`), so no two parts race to migrate.
It waits up to --timeout seconds for S3, the NATS cluster (its meta leader is elected within seconds of the
nodes' start) and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets as token_source
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from mlhub.eventlog.auth import embedded_credentials, private_dir, server_authorization, write_private

T = TypeVar("T")


def write_secrets(directory: Path) -> list[Path]:
    """Every file docker-compose.yml's secrets name, under `directory`; the paths written."""
    nats_dir = private_dir(directory) / "nats"
    users = embedded_credentials(nats_dir)
    auth = nats_dir / "auth.conf"
    write_private(auth, server_authorization(users))
    written = [nats_dir / "credentials" / role for role in users] + [auth]
    tokens = directory / "api-tokens"
    if not tokens.exists():
        write_private(tokens, f"{token_source.token_urlsafe(32)}:admin:compose-admin\n")
        written.append(tokens)
    return written


def _retry(what: str, action: Callable[[], T], timeout: float) -> T:
    """action(), again every second while it fails, for `timeout` seconds; mlhub's errors that waiting cannot
    mend (bad credentials, a stream with other settings, a refused permission) end it at once."""
    from mlhub.errors import AppendRejected, EventLogUnauthorized, InvalidInput, StreamConfigConflict

    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except (InvalidInput, EventLogUnauthorized, StreamConfigConflict, AppendRejected) as e:
            raise SystemExit(f"setup: {what} failed: {e}") from e
        except Exception as e:  # not up yet: S3 starting, the cluster electing, PostgreSQL starting
            if time.monotonic() > deadline:
                raise SystemExit(f"setup: {what} failed for {timeout:g} s; last error: {e}") from e
            time.sleep(1)


def _buckets(*uris: str | None) -> list[str]:
    return sorted({urlsplit(u).netloc for u in uris if u and urlsplit(u).scheme == "s3"})


def setup(timeout: float) -> None:
    """Buckets, stream, read-model migrations (see the module's docstring)."""
    from mlhub.artifacts.s3 import S3ArtifactStore
    from mlhub.eventlog import EventLog
    from mlhub.readmodel import migrate
    from mlhub.settings import Settings

    settings = Settings()
    for bucket in _buckets(settings.artifact_uri, settings.metrics_uri):
        client = S3ArtifactStore(bucket, endpoint_url=settings.s3_endpoint_url).client

        def create(client: object = client, bucket: str = bucket) -> None:
            names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}  # type: ignore[attr-defined]
            if bucket not in names:
                client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        _retry(f"creating the bucket {bucket}", create, timeout)
        print(f"setup: bucket {bucket} is there", file=sys.stderr)
    if not settings.nats_url:
        raise SystemExit("setup: MLHUB_NATS_URL is not set (the NATS cluster's nodes)")

    async def stream() -> int:
        async with EventLog.from_settings(settings.nats_url or "", settings, name="mlhub-setup") as log:
            return await log.last_sequence()
    last = _retry("creating or checking the stream", lambda: asyncio.run(stream()), timeout)
    print(f"setup: stream ready with {settings.stream_replicas} replica(s), last sequence {last}", file=sys.stderr)
    _retry("migrating the read model", lambda: migrate(settings.resolved_database_url), timeout)
    print("setup: read model migrated", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("secrets", help="write the secrets docker-compose.yml mounts")
    made.add_argument("--dir", type=Path, default=Path(__file__).resolve().parents[1] / "secrets")
    ready = commands.add_parser("setup", help="buckets, stream and migrations, as the event log's admin")
    ready.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    from mlhub.errors import MlhubError

    try:
        if args.command == "secrets":
            for path in write_secrets(args.dir):
                print(f"wrote {path}")
        else:
            setup(args.timeout)
    except MlhubError as e:  # a bad setting: one line naming it
        raise SystemExit(f"{args.command}: {e}") from None


if __name__ == "__main__":
    main()
