"""Backup and restore of the stream (`mlhub events backup|restore`, mlhub.eventlog.backup) on real nats-servers:
every stored message comes back with the same sequence, subject, headers, bytes and store time, so the audit seals
hold and a rebuild equals the read model built before; bad backups, an existing stream and non-admin users are
refused, changing nothing; a backup taken while events are appended restores a contiguous prefix; an R3 stream of
a 3-node cluster is restored onto a fresh cluster and onto a single server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError
from tests import test_cli
from tests.eventlog.test_auth import as_role
from tests.hub.helpers import free_port
from tests.projections.conftest import metric_batch, run_lifecycle
from tests.projections.test_audit_and_replay_cli import mlhub

from mlhub.errors import BackupFailed, EventLogPermissionDenied, InvalidBackup, RestoreRefused
from mlhub.eventlog import (
    STREAM_NAME,
    EmbeddedNats,
    EventLog,
    StreamSpec,
    UserPassword,
    backup_stream,
    read_backup,
    restore_stream,
    seal,
)
from mlhub.eventlog.auth import embedded_credentials, server_authorization, with_userinfo
from mlhub.eventlog.backup import MANIFEST_FILE, SNAPSHOT_FILE
from mlhub.eventlog.server import answers_info, cluster_node_config, nats_server_binary
from mlhub.events import Envelope


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a command on `data_dir` (its embedded server unless MLHUB_NATS_URL is given)."""
    return test_cli.cli_env(data_dir, MLHUB_SEAL_INTERVAL_S="0", **extra)


async def populate(log: EventLog, runs: int, batches: int, prefix: str = "r") -> int:
    """Runs as a worker appends them (lifecycle guarded one by one, metric batches pipelined); the events count."""
    count = 0
    for i in range(runs):
        run_id = f"{prefix}{i}"
        before, after = run_lifecycle(run_id, "exp", finished=i % 4 != 3)
        for event in before:
            await log.append(Envelope(event=event, producer="test"))
        await log.append_many([Envelope(event=metric_batch(run_id, b), producer="test") for b in range(batches)])
        for event in after:
            await log.append(Envelope(event=event, producer="test"))
        count += len(before) + batches + len(after)
    return count


async def stored(log: EventLog) -> list[dict[str, Any]]:
    """Every stored message as the server answers a get of its sequence: subject, seq, headers, data, time."""
    info = await log.js.stream_info(STREAM_NAME)
    messages = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        answer = await log.nc.request(f"$JS.API.STREAM.MSG.GET.{STREAM_NAME}", json.dumps({"seq": seq}).encode(),
                                      timeout=10)  # nats-py's default of 0.5 s is short for a loaded cluster
        messages.append(json.loads(answer.data)["message"])
    return messages


async def has_stream(url: str) -> bool:
    log = EventLog(url)
    await log.connect()
    try:
        await log.js.stream_info(STREAM_NAME)
        return True
    except NotFoundError:
        return False
    finally:
        await log.close()


def points_in(metrics_dir: Path) -> int:
    from deltalake import DeltaTable

    return int(DeltaTable(str(metrics_dir / "points")).to_pyarrow_dataset().count_rows())


def runs_in(database: Path) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return sorted(conn.execute("SELECT run_id, status FROM runs").fetchall())


def test_a_restored_log_is_the_same_log_seals_and_projections_included(tmp_path: Path) -> None:
    """The operator's round trip on an embedded data dir: back up, lose the store, restore, and check."""
    data = tmp_path / "data"
    server = EmbeddedNats(data / "nats")  # the data dir's server, as `mlhub nats` or `mlhub up` runs it
    env = cli_env(data)
    url = server.start()
    try:
        async def write() -> list[dict[str, Any]]:
            async with EventLog(url) as log:
                await populate(log, runs=6, batches=4)
                await backup_stream(log, tmp_path / "early", mlhub_version="test")  # of 66 events
                await populate(log, runs=6, batches=4, prefix="s")
                await log.js.add_consumer(STREAM_NAME, ConsumerConfig(
                    durable_name="mlhub-worker-cpu", filter_subject="mlhub.ev.job.*.queued",
                    ack_policy=AckPolicy.EXPLICIT))
                return await stored(log)

        written = asyncio.run(write())
        assert (projected := mlhub(env, "projector", "--until-caught-up")).returncode == 0, projected.stderr
        assert (sealed := mlhub(env, "audit", "seal")).returncode == 0, sealed.stderr
        assert "sealed events 1..132" in sealed.stdout
        before = asyncio.run(_stored_at(url))
        assert before[:132] == written and len(before) == 133

        backup = mlhub(env, "events", "backup", str(tmp_path / "backup"))
        assert backup.returncode == 0, backup.stderr
        assert "backed up MLHUB_EVENTS: 133 events, seq 1..133" in backup.stdout
        manifest = json.loads((tmp_path / "backup" / MANIFEST_FILE).read_text())
        assert manifest["state"]["last_seq"] == 133 and manifest["appended_during_backup"] == 0
        assert manifest["last_seal"]["last_seq"] == 132 and manifest["config"]["num_replicas"] == 1
        assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == [MANIFEST_FILE, SNAPSHOT_FILE]
        assert all(p.stat().st_mode & 0o077 == 0 for p in [tmp_path / "backup", *(tmp_path / "backup").iterdir()])
    finally:
        server.stop()

    shutil.rmtree(server.store_dir)  # the store is lost; the credentials and the read model are not
    restored = mlhub(env, "events", "restore", str(tmp_path / "backup"))  # starts the data dir's server for itself
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "holds 133 events, seq 1..133" in restored.stdout and "as the manifest says" in restored.stdout
    assert "seals: 1 checked, sealed through seq 132, 1 events after the last seal" in restored.stdout
    assert manifest["last_seal"]["digest"] in restored.stdout

    url = server.start()
    try:
        assert asyncio.run(_stored_at(url)) == before  # seq, subject, headers, bytes and store time of each
        assert asyncio.run(_durables(url)) == ["mlhub-worker-cpu"]
        verify = mlhub(env, "audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "audit passed" in verify.stdout and "seals: 1 checked" in verify.stdout
        rebuilt = tmp_path / "rebuilt.db"
        replay = mlhub(env, "replay", "--into", f"sqlite:///{rebuilt}", "--metrics-dir", str(tmp_path / "rebuilt-m"))
        assert replay.returncode == 0, replay.stderr
        assert runs_in(rebuilt) == runs_in(data / "readmodel.db") and len(runs_in(rebuilt)) == 12
        assert points_in(tmp_path / "rebuilt-m") == points_in(data / "metrics") == 12 * 4 * 1000

        again = mlhub(env, "events", "restore", str(tmp_path / "backup"))
        assert again.returncode == 1
        assert "error [RESTORE_REFUSED]: the stream MLHUB_EVENTS already exists" in again.stderr
        assert "(133 events, last seq 133)" in again.stderr and "Nothing was changed" in again.stderr
        assert asyncio.run(_stored_at(url)) == before
    finally:
        server.stop()

    # An older backup restored under the read model built from a longer log: the hub would skip events.
    shutil.rmtree(server.store_dir)
    early = mlhub(env, "events", "restore", "--no-seals", str(tmp_path / "early"))
    assert early.returncode == 0, early.stderr
    assert "holds 66 events, seq 1..66" in early.stdout
    assert "WARNING: the read model" in early.stderr
    assert "after the restored log's last seq 66 (sql at 132)" in early.stderr


async def _stored_at(url: str) -> list[dict[str, Any]]:
    log = EventLog(url)
    await log.connect()
    try:
        return await stored(log)
    finally:
        await log.close()


async def _durables(url: str) -> list[str]:
    log = EventLog(url)
    await log.connect()
    try:
        return sorted(c.name for c in await log.js.consumers_info(STREAM_NAME))
    finally:
        await log.close()


@pytest.fixture
async def backed_up(tmp_path: Path, event_log: EventLog) -> Path:
    """A backup of a sealed log of six runs."""
    await populate(event_log, runs=6, batches=2)
    assert await seal(event_log, producer="test") is not None
    await backup_stream(event_log, tmp_path / "backup", mlhub_version="test")
    return tmp_path / "backup"


@pytest.fixture
async def empty_server(tmp_path: Path) -> Any:
    """A second server, without the stream (the restore's target)."""
    server = EmbeddedNats(tmp_path / "target")
    url = server.start()
    log = EventLog(url, ack_timeout_s=2.0)
    await log.connect()
    try:
        yield server, log
    finally:
        await log.close()
        server.stop()


async def test_a_corrupted_backup_is_refused_before_the_server_is_touched(
        backed_up: Path, empty_server: tuple[EmbeddedNats, EventLog], tmp_path: Path) -> None:
    server, log = empty_server
    snapshot = backed_up / SNAPSHOT_FILE
    good = snapshot.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    snapshot.write_bytes(bytes(flipped))
    assert server.url is not None
    result = mlhub(cli_env(tmp_path / "cli", MLHUB_NATS_URL=server.url), "events", "restore", str(backed_up))
    assert result.returncode == 1
    assert f"error [INVALID_BACKUP]: {snapshot} has sha256 " in result.stderr
    assert "the manifest says" in result.stderr and "nothing was restored" in result.stderr
    with pytest.raises(InvalidBackup, match="is corrupt or was altered"):
        await restore_stream(log, backed_up)
    snapshot.write_bytes(good[:-10])
    with pytest.raises(InvalidBackup, match=f"is {len(good) - 10} bytes, the manifest says {len(good)}"):
        await restore_stream(log, backed_up)
    assert not await has_stream(server.url)
    assert not (server.store_dir / "jetstream" / "$G" / "streams" / STREAM_NAME).exists()

    # Changed after the check, while it is sent: the upload is dropped unfinished.
    snapshot.write_bytes(good)
    checked = read_backup(backed_up)
    snapshot.write_bytes(bytes(flipped))
    with pytest.raises(InvalidBackup, match="changed while it was being restored; no stream was created"):
        await restore_stream(log, backed_up, manifest=checked)
    assert not await has_stream(server.url)

    # Damage the manifest's sha256 cannot see (it is recomputed for the damaged file): the server refuses it.
    import hashlib

    snapshot.write_bytes(bytes(flipped))
    manifest = json.loads((backed_up / MANIFEST_FILE).read_text())
    manifest["snapshot"]["sha256"] = hashlib.sha256(flipped).hexdigest()
    (backed_up / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BackupFailed, match="the server could not restore MLHUB_EVENTS: .*no stream was created"):
        await restore_stream(log, backed_up)
    assert not await has_stream(server.url)


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.update(format="natscli"), "is not the manifest of an mlhub event-log backup"),
    (lambda m: m.update(format_version=2), "has format_version 2; this mlhub reads version 1"),
    (lambda m: m["snapshot"].pop("sha256"), "is not a valid manifest: snapshot.sha256: Field required"),
    (lambda m: m.update(stream="ORDERS"), "is a backup of the stream 'ORDERS', not of mlhub's 'MLHUB_EVENTS'"),
    (lambda m: m["config"].update(deny_purge=False), "settings are not mlhub's: deny_purge is False"),
])
async def test_a_manifest_that_is_not_mlhubs_is_refused_naming_what_is_wrong(
        backed_up: Path, empty_server: tuple[EmbeddedNats, EventLog], change: Any, message: str) -> None:
    server, log = empty_server
    manifest = json.loads((backed_up / MANIFEST_FILE).read_text())
    change(manifest)
    (backed_up / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(InvalidBackup, match=message.replace("(", r"\(").replace(")", r"\)")):
        await restore_stream(log, backed_up)
    assert server.url is not None and not await has_stream(server.url)


async def test_not_a_backup_and_an_existing_target_are_named(tmp_path: Path, event_log: EventLog) -> None:
    with pytest.raises(InvalidBackup, match="is not a backup: a backup is the directory"):
        read_backup(tmp_path / "nothing-here")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(InvalidBackup, match="already exists: a backup goes into a new"):
        await backup_stream(event_log, tmp_path / "taken", mlhub_version="test")
    (tmp_path / "empty").mkdir()
    await backup_stream(event_log, tmp_path / "empty", mlhub_version="test")  # an empty directory is taken
    assert read_backup(tmp_path / "empty").state.messages == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no scratch left


async def test_durable_consumers_come_back_with_their_positions(
        tmp_path: Path, event_log: EventLog, empty_server: tuple[EmbeddedNats, EventLog]) -> None:
    await populate(event_log, runs=5, batches=1)
    await event_log.js.add_consumer(STREAM_NAME, ConsumerConfig(
        durable_name="mlhub-worker-cpu", filter_subject="mlhub.ev.run.*.created", ack_policy=AckPolicy.EXPLICIT))
    pull = await event_log.js.pull_subscribe_bind("mlhub-worker-cpu", stream=STREAM_NAME)
    for msg in await pull.fetch(3, timeout=5):
        await msg.ack_sync()
    before = await event_log.js.consumer_info(STREAM_NAME, "mlhub-worker-cpu")
    assert before.ack_floor is not None and before.num_pending == 2
    await backup_stream(event_log, tmp_path / "backup", mlhub_version="test")
    _, target = empty_server
    await restore_stream(target, tmp_path / "backup")
    after = await target.js.consumer_info(STREAM_NAME, "mlhub-worker-cpu")
    assert after.ack_floor is not None and after.delivered is not None and before.delivered is not None
    assert (after.ack_floor.stream_seq, after.ack_floor.consumer_seq) == (before.ack_floor.stream_seq, 3)
    assert after.delivered.stream_seq == before.delivered.stream_seq and after.num_pending == 2
    assert after.config.filter_subject == "mlhub.ev.run.*.created"


async def test_restore_into_an_existing_stream_is_refused_and_leaves_it_untouched(
        backed_up: Path, event_log: EventLog) -> None:
    await populate(event_log, runs=1, batches=1, prefix="later")
    before = await stored(event_log)
    held = rf"\({len(before)} events, last seq {len(before)}\)"
    with pytest.raises(RestoreRefused, match=rf"already exists on .* {held}: a restore never replaces"):
        await restore_stream(event_log, backed_up)
    assert await stored(event_log) == before


async def test_only_the_admin_may_back_up_or_restore(tmp_path: Path, nats_server: EmbeddedNats,
                                                   event_log: EventLog, backed_up: Path) -> None:
    for role in ("api", "projector", "worker"):
        log = as_role(nats_server, role)
        await log.connect()
        try:
            with pytest.raises(EventLogPermissionDenied, match=rf"as user '{role}'.*STREAM.SNAPSHOT.MLHUB_EVENTS"):
                await asyncio.wait_for(backup_stream(log, tmp_path / f"by-{role}", mlhub_version="t"), 10)
            assert not (tmp_path / f"by-{role}").exists()
        finally:
            await log.close()
    target = EmbeddedNats(tmp_path / "target")
    target.start()
    try:
        for role in ("api", "projector", "worker"):
            log = as_role(target, role)
            await log.connect()
            try:
                with pytest.raises(EventLogPermissionDenied, match=rf"'{role}'.*STREAM.RESTORE.MLHUB_EVENTS"):
                    await asyncio.wait_for(restore_stream(log, backed_up), 10)
            finally:
                await log.close()
        assert target.url is not None and not await has_stream(target.url)
    finally:
        target.stop()


async def test_a_backup_taken_while_events_are_appended_restores_a_contiguous_prefix(
        tmp_path: Path, event_log: EventLog, empty_server: tuple[EmbeddedNats, EventLog]) -> None:
    await populate(event_log, runs=12, batches=5)
    stop = asyncio.Event()

    async def writer() -> None:
        k = 0
        while not stop.is_set():
            await populate(event_log, runs=1, batches=1, prefix=f"live{k}-")
            k += 1

    writing = asyncio.create_task(writer())
    await asyncio.sleep(0.2)
    manifest = await backup_stream(event_log, tmp_path / "live", mlhub_version="test")
    stop.set()
    await writing
    _, target = empty_server
    report = await restore_stream(target, tmp_path / "live")
    state = report.state
    assert manifest.state.last_seq <= state.last_seq <= manifest.state.last_seq + manifest.appended_during_backup
    original, restored = await stored(event_log), await stored(target)
    assert len(restored) == state.messages == state.last_seq
    assert restored == original[:state.last_seq]


# -- a replicated stream ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def local_cluster(base: Path, users: dict[str, UserPassword]) -> Iterator[list[str]]:
    """Three nats-servers on 127.0.0.1 in one JetStream cluster with mlhub's users; yields the admin's URLs.
    Restarting it on the same base (and ports) keeps the stores unless they were removed."""
    ports_file = base / "ports.json"
    if ports_file.exists():
        ports = json.loads(ports_file.read_text())
    else:
        ports = [[free_port(), free_port()] for _ in range(3)]
        base.mkdir(parents=True, exist_ok=True)
        ports_file.write_text(json.dumps(ports))
    procs = []
    try:
        for i, (client, route) in enumerate(ports):
            node = base / f"n{i + 1}"
            (node / "store").mkdir(parents=True, exist_ok=True)
            routes = [f"nats://127.0.0.1:{r}" for j, (_, r) in enumerate(ports) if j != i]
            (node / "nats.conf").write_text(cluster_node_config(
                f"n{i + 1}", node / "store", routes, server_authorization(users), listen=f"127.0.0.1:{client}",
                http=f"127.0.0.1:{free_port()}", cluster_listen=f"127.0.0.1:{route}"))
            with open(node / "nats.log", "ab") as log:
                procs.append(subprocess.Popen([str(nats_server_binary()), "-c", str(node / "nats.conf")],
                                              stdout=log, stderr=subprocess.STDOUT))
        urls = [f"nats://127.0.0.1:{client}" for client, _ in ports]
        for url in urls:
            for _ in range(300):
                if answers_info(url):
                    break
                time.sleep(0.05)
        yield [with_userinfo(url, users["admin"]) for url in urls]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)


async def cluster_ready(log: EventLog) -> None:
    """Wait until the cluster has a JetStream meta leader (its API answers 503 or not at all until then)."""
    for _ in range(120):
        try:
            await log.js.account_info()
            return
        except Exception:
            await asyncio.sleep(0.5)
    await log.js.account_info()


def test_a_replicated_stream_is_restored_onto_a_fresh_cluster_and_onto_one_server_and_back(tmp_path: Path) -> None:
    users = embedded_credentials(tmp_path / "creds")
    spec3 = StreamSpec(replicas=3)

    async def write(urls: list[str]) -> tuple[list[dict[str, Any]], Any]:
        log = EventLog(urls, spec=spec3, ack_timeout_s=5.0)
        await log.connect()
        try:
            await cluster_ready(log)
            await log.ensure_stream()
            await populate(log, runs=6, batches=2)
            await seal(log, producer="test")
            manifest = await backup_stream(log, tmp_path / "r3", mlhub_version="t")
            return await stored(log), manifest
        finally:
            await log.close()

    async def restore(urls: list[str] | str, spec: StreamSpec, backup: str = "r3",
                      then_backup: str | None = None) -> tuple[list[dict[str, Any]], Any, Any]:
        log = EventLog(urls, spec=spec, ack_timeout_s=5.0)
        await log.connect()
        try:
            await cluster_ready(log)
            report = await restore_stream(log, tmp_path / backup)
            info = await log.js.stream_info(STREAM_NAME)
            if then_backup:
                await backup_stream(log, tmp_path / then_backup, mlhub_version="t")
            return await stored(log), report, info
        finally:
            await log.close()

    def wipe_cluster() -> None:
        for node in ("n1", "n2", "n3"):
            shutil.rmtree(tmp_path / "cluster" / node / "store")

    with local_cluster(tmp_path / "cluster", users) as urls:
        original, manifest = asyncio.run(write(urls))
    assert manifest.config["num_replicas"] == 3 and manifest.state.messages == len(original) == 55
    wipe_cluster()
    with local_cluster(tmp_path / "cluster", users) as urls:
        restored, report, info = asyncio.run(restore(urls, spec3))
    assert restored == original and report.changes == [] and report.replicas == 3
    assert info.config.num_replicas == 3 and info.cluster is not None and len(info.cluster.replicas or []) == 2

    single = EmbeddedNats(tmp_path / "single")
    url = single.start()
    try:
        with pytest.raises(BackupFailed, match="replicas > 1 not supported in non-clustered mode.*no stream was"):
            asyncio.run(restore(url, spec3))  # MLHUB_STREAM_REPLICAS=3 against one server: the server refuses
        restored, report, info = asyncio.run(restore(url, StreamSpec(replicas=1), then_backup="r1"))
    finally:
        single.stop()
    assert restored == original and info.config.num_replicas == 1
    assert report.changes == ["num_replicas 3 -> 1 (MLHUB_STREAM_REPLICAS)"]

    wipe_cluster()  # and back: the single server's R1 backup becomes the cluster's R3 stream
    with local_cluster(tmp_path / "cluster", users) as urls:
        restored, report, info = asyncio.run(restore(urls, spec3, backup="r1"))
    assert restored == original and report.changes == ["num_replicas 1 -> 3 (MLHUB_STREAM_REPLICAS)"]
    assert info.config.num_replicas == 3 and info.cluster is not None and len(info.cluster.replicas or []) == 2
