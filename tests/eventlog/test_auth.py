"""Credentials and least privilege on the embedded nats-server (real server, real connections).

The server refuses anonymous clients; each role's user may publish only what its part appends; a denied append
fails at once with an error naming the subject; credentials are generated once per data dir and reused.
"""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path

import nats
import pytest

from mlhub.errors import EventLogPermissionDenied, EventLogUnauthorized, InvalidInput
from mlhub.eventlog import EmbeddedNats, EventLog, NatsAuth, UserPassword, redact_url, seal
from mlhub.eventlog.auth import read_credentials
from mlhub.events import (
    Envelope,
    MetricDefined,
    MetricSpec,
    ModelAliasSet,
    RunCrashed,
    RunCreated,
    TagsSet,
)
from mlhub.settings import Settings


def env(event: object) -> Envelope:
    return Envelope(event=event, producer="test")  # type: ignore[arg-type]


def as_role(server: EmbeddedNats, role: str, **kwargs: float) -> EventLog:
    cred = read_credentials(server.credentials_file(role))
    assert isinstance(cred, UserPassword)
    assert server.public_url is not None
    return EventLog(server.public_url, auth=NatsAuth(user=cred), ack_timeout_s=2.0, append_deadline_s=20.0,
                    **kwargs)


def alias_set() -> Envelope:
    return env(ModelAliasSet(model_name="digits", alias="production", version=1, actor="mallory"))


async def test_an_anonymous_connection_is_refused_at_once(nats_server: EmbeddedNats) -> None:
    assert nats_server.public_url is not None and "@" not in nats_server.public_url
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(nats_server.public_url, allow_reconnect=False, connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(EventLogUnauthorized, match="refused the connection without credentials") as refused:
        await EventLog(nats_server.public_url, connect_timeout_s=10).connect()
    assert time.monotonic() - started < 5  # not retried until the connect time-out: retrying cannot help
    assert "MLHUB_NATS_CREDS" in str(refused.value)


async def test_a_wrong_password_is_refused_and_never_printed(nats_server: EmbeddedNats) -> None:
    assert nats_server.public_url is not None
    wrong = nats_server.public_url.replace("nats://", "nats://admin:not-the-password@")
    with pytest.raises(EventLogUnauthorized) as refused:
        await EventLog(wrong, connect_timeout_s=5).connect()
    assert "not-the-password" not in str(refused.value) and "as user 'admin'" in str(refused.value)
    assert redact_url(wrong) == nats_server.public_url


async def test_the_worker_may_append_run_events_but_not_alias_metric_or_audit_events(
        nats_server: EmbeddedNats, event_log: EventLog) -> None:
    async with as_role(nats_server, "worker") as worker:
        created = await worker.append(env(RunCreated(run_id="r1", experiment_id="e", name="r")), expected_version=0)
        assert created.seq == 1
        for envelope in (alias_set(), env(MetricDefined(name="val_acc", spec=MetricSpec(direction="max")))):
            started = time.monotonic()
            with pytest.raises(EventLogPermissionDenied) as denied:
                await worker.append(envelope)
            assert time.monotonic() - started < 1.5  # at once, not after the ack time-out and retries
            assert f"publish to {envelope.subject!r}" in str(denied.value)
            assert "'worker'" in str(denied.value) and "nothing was stored" in str(denied.value)
        with pytest.raises(EventLogPermissionDenied, match=r"mlhub\.ev\.audit\.seals\.sealed"):
            await seal(worker, producer="worker")
        # An atomic batch with one denied event stores nothing at all.
        with pytest.raises(EventLogPermissionDenied):
            await worker.append_atomic([env(TagsSet(run_id="r1", tags={"a": "1"})), alias_set()])
        assert await worker.last_sequence() == 1  # reads work; the connection survived the refusals
    assert [r.envelope.type async for r in event_log.replay()] == ["run.created"]


async def test_the_projector_appends_only_seals_and_crashes(nats_server: EmbeddedNats, event_log: EventLog) -> None:
    await event_log.append(env(RunCreated(run_id="r1", experiment_id="e", name="r")))
    async with as_role(nats_server, "projector") as projector:
        for envelope in (env(RunCreated(run_id="r2", experiment_id="e", name="r")), alias_set()):
            with pytest.raises(EventLogPermissionDenied, match="'projector'"):
                await projector.append(envelope)
        assert await seal(projector, producer="projector") is not None
        await projector.append(env(RunCrashed(run_id="r1", reason="silent", silent_s=400.0, last_seq=1)))
        assert [r.envelope.type async for r in projector.replay()] == ["run.created", "audit.sealed", "run.crashed"]


async def test_the_api_appends_any_event_but_only_the_admin_creates_the_stream(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        api = as_role(server, "api")
        await api.connect()
        try:
            with pytest.raises(EventLogPermissionDenied, match=r"\$JS\.API\.STREAM\.CREATE\.MLHUB_EVENTS"):
                await api.ensure_stream()
        finally:
            await api.close()
        assert server.url is not None
        async with EventLog(server.url):  # the admin (the URL of the one who started it) creates it
            pass
        async with as_role(server, "api") as api:
            assert (await api.append(alias_set())).seq == 1


async def test_credentials_are_private_hashed_in_the_config_and_reused_across_restarts(tmp_path: Path) -> None:
    nats_dir = tmp_path / "nats"
    with EmbeddedNats(nats_dir) as server:
        files = {role: server.credentials_file(role).read_text() for role in ("admin", "api", "projector", "worker")}
        assert server.url is not None
        async with EventLog(server.url):  # the admin creates the stream
            pass
        async with as_role(server, "worker") as worker:
            await worker.append(env(RunCreated(run_id="r1", experiment_id="e", name="r")))
    assert stat.S_IMODE(nats_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((nats_dir / "credentials").stat().st_mode) == 0o700
    config = (nats_dir / "nats-server.conf").read_text()
    assert stat.S_IMODE((nats_dir / "nats-server.conf").stat().st_mode) == 0o600
    for role, line in files.items():
        assert stat.S_IMODE(server.credentials_file(role).stat().st_mode) == 0o600
        user, password = line.strip().split(":", 1)
        assert user == role and len(password) >= 40
        assert password not in config and f'user: "{role}", password: "$2b$' in config
    with EmbeddedNats(nats_dir) as again:  # the same data dir: the same credentials, old files keep working
        assert {role: again.credentials_file(role).read_text() for role in files} == files
        async with as_role(again, "worker") as worker:
            assert await worker.last_sequence() == 1


async def test_mlhub_nats_creds_names_a_user_password_file(nats_server: EmbeddedNats, event_log: EventLog,
                                                          tmp_path: Path) -> None:
    assert nats_server.public_url is not None
    settings = Settings(nats_url=nats_server.public_url, nats_creds=nats_server.credentials_file("worker"))
    async with EventLog.from_settings(nats_server.public_url, settings, name="t") as log:
        with pytest.raises(EventLogPermissionDenied):
            await log.append(alias_set())

    password = nats_server.credentials_file("worker").read_text().split(":", 1)[1].strip()
    bad = [
        (Settings(nats_creds=tmp_path / "missing"), "no such file"),
        (Settings(nats_creds=Path(f"worker:{password}")), "a value that is not a file"),
        (Settings(nats_url=nats_server.url, nats_creds=nats_server.credentials_file("worker")), "in one of them"),
    ]
    garbage = tmp_path / "garbage"
    garbage.write_text("not a credential\n")
    bad.append((Settings(nats_creds=garbage), "neither a NATS .creds file nor one line user:password"))
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    bad.append((Settings(nats_tls_cert=cert), "MLHUB_NATS_TLS_CERT and MLHUB_NATS_TLS_KEY go together"))
    bad.append((Settings(nats_tls_ca=tmp_path / "no-ca.pem"), "MLHUB_NATS_TLS_CA="))
    for settings, message in bad:
        with pytest.raises(InvalidInput, match=message) as refused:
            NatsAuth.from_settings(settings)
        assert password not in str(refused.value)


async def test_a_url_with_the_admin_user_works_and_messages_redact_it(nats_server: EmbeddedNats) -> None:
    assert nats_server.url is not None and "admin:" in nats_server.url
    async with EventLog(nats_server.url) as log:
        assert await log.last_sequence() == 0
        assert "@" not in log.where
    nats_server.kill()
    log = EventLog(nats_server.url, connect_timeout_s=0.5)
    with pytest.raises(Exception) as unreachable:
        await asyncio.wait_for(log.connect(), 10)
    assert nats_server.url.split("@")[0].split(":")[-1] not in str(unreachable.value)
