"""A whole mlhub stack for the dashboard's browser tests, its benchmark and tools/screenshots.py: a real
nats-server on a free port, a SQLite read model and metric tables under a temporary folder, the projectors of
`mlhub projector` and the API served by a real uvicorn on a free port, in a background thread.

Seeders append their events first and project them with run_until, so the stack answers at once; the projectors
keep following the log afterwards (promotions and cancellations made from the browser are projected live).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from mlhub.api import create_app
from mlhub.artifacts import LocalArtifactStore
from mlhub.eventlog import EmbeddedNats, EventLog
from mlhub.events import (
    ArtifactStored,
    CodeVersionRecorded,
    ConfigSnapshotted,
    DatasetVersionRecorded,
    Envelope,
    EnvironmentRecorded,
    ExperimentCreated,
    JobFailed,
    JobStarted,
    JobSucceeded,
    MetricDefined,
    MetricSeries,
    MetricsLogged,
    MetricSpec,
    ModelAliasSet,
    ModelVersionRegistered,
    ParamsLogged,
    RunCreated,
    RunFailed,
    RunFinished,
    RunStarted,
    SeedRecorded,
    TagsSet,
    sha256_of,
)
from mlhub.projections import build_projectors, run_projectors
from mlhub.projections.runner import run_until
from mlhub.readmodel import create_engine, migrate
from mlhub.settings import Settings

ADMIN = "ui-admin-token-0001"
WRITER = "ui-writer-token-0001"
READER = "ui-reader-token-0001"
TOKENS = f"{ADMIN}:admin,{WRITER}:writer,{READER}:reader"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "digits-mlp.yaml"
T0 = 1_763_000_000_000  # ms: the seeded runs' clock

Seeder = Callable[[EventLog, Settings], Awaitable[dict[str, Any]]]


def chromium_path() -> str:
    """Debian's Chromium; the browser tests fail (never skip) without it, saying how to install it."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: the dashboard's browser tests drive Debian's Chromium "
                           "(apt-get install -y chromium; .ci/run installs it); no browser is downloaded")
    return str(CHROMIUM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    """A running stack: the dashboard's URL, the settings, and what the seeder returned."""

    url: str
    settings: Settings
    seeded: dict[str, Any] = field(default_factory=dict)


def _env(event: Any, at: datetime | None = None) -> Envelope:
    if at is None:
        return Envelope(event=event, producer="ui-test")
    return Envelope(event=event, producer="ui-test", occurred_at=at)


def curve(n: int, key: str, scale: float, start: int = 0, steps_per_epoch: int = 10) -> MetricSeries:
    """A plausible training curve of n points: loss falls, accuracy rises (with a little wiggle)."""
    steps = range(start, start + n)
    if key.endswith("loss"):
        values = [scale * math.exp(-s / max(1, n / 3)) + 0.02 * math.sin(s) + 0.05 for s in steps]
    else:
        values = [min(1.0, scale * (1 - math.exp(-s / max(1, n / 4)))) + 0.01 * math.sin(s) for s in steps]
    return MetricSeries(key=key, values=tuple(values), steps=tuple(steps),
                        epochs=tuple(s // steps_per_epoch for s in steps),
                        timestamps=tuple(T0 + 1000 * s for s in steps))


async def seed_demo(log: EventLog, settings: Settings) -> dict[str, Any]:
    """Two experiments of a dozen runs with params, curves and full provenance, a run still training, a failed
    run, a registered model with an alias, and two queued jobs."""
    from mlhub.scheduler import submit, validate_config

    envs: list[Envelope] = [_env(MetricDefined(name="val_acc", spec=MetricSpec(direction="max"))),
                            _env(MetricDefined(name="val_loss", spec=MetricSpec(direction="min")))]
    runs: dict[str, list[str]] = {}
    store = LocalArtifactStore(settings.data_dir / "artifacts")
    for experiment, count in (("digits", 10), ("wine", 4)):
        envs.append(_env(ExperimentCreated(experiment_id=experiment, name=experiment)))
        for i in range(count):
            run_id = f"{experiment}{i:02d}{uuid.uuid4().hex[:10]}"
            runs.setdefault(experiment, []).append(run_id)
            lr = ("0.1", "0.01", "0.001")[i % 3]
            width = str(32 * (1 + i % 4))
            config = {"experiment": experiment, "plugin": "digits-mlp", "seed": 1000 + i,
                      "model": {"hidden": int(width)}, "optimizer": {"lr": float(lr)}, "trainer": {"max_epochs": 5}}
            # an hour apart, each training for 10 to 40 minutes, so times and durations look like a real history
            created = datetime.now(UTC) - timedelta(hours=2 * count - 2 * i, minutes=7 * i)
            ended = created + timedelta(minutes=10 + 3 * i, seconds=17 * i)
            envs += [_env(e, created) for e in (
                RunCreated(run_id=run_id, experiment_id=experiment, name=f"{experiment}-{i:02d}", source="sdk"),
                ConfigSnapshotted(run_id=run_id, config=config, sha256=sha256_of(config),
                                  overrides=("trainer.max_epochs=5",)),
                SeedRecorded(run_id=run_id, seed=1000 + i),
                DatasetVersionRecorded(run_id=run_id, name=f"{experiment}-v1", fingerprint=f"{i:02d}" + "ab" * 31,
                                       size_bytes=1_234_567, num_examples=1797),
                CodeVersionRecorded(run_id=run_id, git_commit="0123456789abcdef0123456789abcdef01234567",
                                    dirty=i % 2 == 1, diff_sha256=("cd" * 32) if i % 2 == 1 else None,
                                    repository="https://example.org/team/models.git"),
                EnvironmentRecorded(run_id=run_id, python="3.11.2", platform="Linux-6.1-x86_64", torch="2.5.1",
                                    lightning="2.4.0", packages_sha256="ef" * 32),
                ParamsLogged(run_id=run_id, params={"lr": lr, "width": width, "optimizer": "adam"}),
                TagsSet(run_id=run_id, tags={"team": ("vision", "nlp")[i % 2]}),
                RunStarted(run_id=run_id),
                MetricsLogged(run_id=run_id, series=(curve(50, "val_loss", 1.0 + i / 10),
                                                     curve(50, "val_acc", 0.8 + i / 60),
                                                     curve(50, "train_loss", 1.2 + i / 10))),
            )]
            if experiment == "digits" and i == 0:
                stored = store.put_bytes(b"onnx model bytes " * 1000)
                envs.append(_env(ArtifactStored(run_id=run_id, path="model/model.onnx", sha256=stored.sha256,
                                                size_bytes=stored.size_bytes, uri=stored.uri, kind="onnx")))
            if i == count - 1 and experiment == "digits":
                continue  # still training: the live run
            if i == count - 2 and experiment == "digits":
                failed = RunFailed(run_id=run_id, error_type="RuntimeError", error="CUDA out of memory")
                envs.append(_env(failed, ended))
            else:
                envs.append(_env(RunFinished(run_id=run_id), ended))
    digits = runs["digits"]
    envs += [_env(ModelVersionRegistered(model_name="digits-mlp", version=v, run_id=digits[v - 1],
                                         artifact_path="model/model.onnx", artifact_sha256="a" * 64,
                                         registered_by="alice")) for v in (1, 2, 3)]
    envs.append(_env(ModelAliasSet(model_name="digits-mlp", alias="staging", version=1, actor="alice",
                                   reason="first candidate")))
    envs.append(_env(ModelAliasSet(model_name="digits-mlp", alias="production", version=1, actor="alice",
                                   reason="launch")))
    await log.append_many(envs, max_in_flight=64)
    config = validate_config(yaml.safe_load(CONFIG.read_text()), str(CONFIG))
    jobs = [(await submit(log, config, producer="ui-test")).job_id for _ in range(2)]
    # jobs that workers took: one retried on another worker after its first worker was lost, one succeeded
    retried, done = [await submit(log, config, producer="ui-test") for _ in range(2)]
    await log.append_many([_env(e) for e in (
        JobStarted(job_id=retried.job_id, run_id=retried.run_id, attempt=1, worker_id="gpu-node-1/worker-0"),
        JobFailed(job_id=retried.job_id, attempt=1, error_type="WorkerLost", error="no heartbeat for 60 s",
                  retryable=True),
        JobStarted(job_id=retried.job_id, run_id=retried.run_id, attempt=2, worker_id="gpu-node-2/worker-1"),
        JobStarted(job_id=done.job_id, run_id=done.run_id, attempt=1, worker_id="cpu-node-1/worker-0"),
        JobSucceeded(job_id=done.job_id, attempt=1),
    )])
    return {"runs": runs, "live_run": digits[-1], "provenance_run": digits[0], "jobs": jobs,
            "retried_job": retried.job_id, "done_job": done.job_id, "model": "digits-mlp"}


async def seed_scale(log: EventLog, settings: Settings, runs: int = 10_000, points: int = 100_000,
                     long_runs: int = 10) -> dict[str, Any]:
    """`runs` small runs in one experiment, one run of `points` points for each of two keys, and `long_runs` - 1
    more runs of `points` points of "loss" (a compare of 10 runs x 100,000 points)."""
    envs: list[Envelope] = [_env(ExperimentCreated(experiment_id="scale", name="scale")),
                            _env(MetricDefined(name="val_acc", spec=MetricSpec(direction="max")))]
    for i in range(runs):
        run_id = f"s{i:05d}{uuid.uuid4().hex[:8]}"
        envs += [_env(e) for e in (
            RunCreated(run_id=run_id, experiment_id="scale", name=f"run-{i}", source="sdk"),
            ParamsLogged(run_id=run_id, params={"lr": str(10 ** -(i % 4)), "width": str(32 * (1 + i % 8))}),
            RunStarted(run_id=run_id),
            MetricsLogged.from_points(run_id, [("val_acc", (i % 100) / 100 + s / 1000, s, 0, T0 + s)
                                               for s in range(5)]),
            RunFinished(run_id=run_id),
        )]
    long_ids = []
    for number in range(long_runs):  # the first has two keys of `points` points, the others one ("loss")
        long_id = f"long{number:02d}{uuid.uuid4().hex[:10]}"
        long_ids.append(long_id)
        envs += [_env(RunCreated(run_id=long_id, experiment_id="scale", name=f"long-{number}", source="sdk")),
                 _env(RunStarted(run_id=long_id))]
        for start in range(0, points, 4000):
            n = min(4000, points - start)
            series = [curve(n, "loss", 2.0 + number / 5, start=start, steps_per_epoch=1000)]
            if number == 0:
                series.append(curve(n, "val_acc", 0.95, start=start, steps_per_epoch=1000))
            envs.append(_env(MetricsLogged(run_id=long_id, series=tuple(series))))
        envs.append(_env(RunFinished(run_id=long_id)))
    await log.append_many(envs, max_in_flight=256)
    return {"long_run": long_ids[0], "long_runs": long_ids, "runs": runs, "points": points}


def _settings(tmp: Path, nats_url: str, **extra: Any) -> Settings:
    return Settings(data_dir=tmp / "data", nats_url=nats_url, database_url=f"sqlite:///{tmp / 'readmodel.db'}",
                    api_tokens=TOKENS, api_min_seq_wait_s=10.0, api_metrics_refresh_s=0.2, **extra)


async def _seed_and_project(settings: Settings, seeder: Seeder) -> dict[str, Any]:
    log = EventLog(settings.nats_url or "", ack_timeout_s=10.0, append_deadline_s=120.0)
    await log.connect()
    try:
        await log.ensure_stream()
        seeded = await seeder(log, settings)
        engine = create_engine(settings.resolved_database_url, writer=True)
        try:
            migrate(engine)
            await run_until(log, build_projectors(settings, engine), max_batch=5000)
        finally:
            engine.dispose()
        return seeded
    finally:
        await log.close()


class _ServerThread(threading.Thread):
    """uvicorn serving the app, and the projectors following the log, on one event loop of their own."""

    def __init__(self, settings: Settings, port: int) -> None:
        super().__init__(name="mlhub-ui-stack", daemon=True)
        self.settings = settings
        self.port = port
        self.server: uvicorn.Server | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported to the waiting test
            self.error = e

    async def _main(self) -> None:
        log = EventLog(self.settings.nats_url or "", ack_timeout_s=10.0, append_deadline_s=60.0)
        await log.connect()
        engine = create_engine(self.settings.resolved_database_url, writer=True)
        projecting = asyncio.create_task(run_projectors(log, build_projectors(self.settings, engine)))
        try:
            app = create_app(self.settings, event_log=log)
            self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                        lifespan="on"))
            await self.server.serve()
        finally:
            projecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await projecting
            engine.dispose()
            await log.close()


def _in_a_thread(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run work in a thread of its own: Playwright's sync API keeps an event loop in the calling thread."""
    result: dict[str, Any] = {}
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.update(work())
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=target, name="mlhub-ui-seed")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result


@contextlib.contextmanager
def serve_stack(tmp: Path, seeder: Seeder, **settings: Any) -> Iterator[Stack]:
    """Start nats-server, seed and project, serve the API and dashboard; stop everything on exit."""
    with EmbeddedNats(tmp / "nats", sync=None) as nats:
        assert nats.url is not None
        config = _settings(tmp, nats.url, **settings)
        seeded = _in_a_thread(lambda: asyncio.run(_seed_and_project(config, seeder)))
        port = _free_port()
        thread = _ServerThread(config, port)
        thread.start()
        deadline = time.monotonic() + 60
        while not (thread.server is not None and thread.server.started):
            if thread.error is not None or not thread.is_alive():
                raise RuntimeError(f"the API did not start: {thread.error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start within 60 s")
            time.sleep(0.05)
        try:
            yield Stack(url=f"http://127.0.0.1:{port}", settings=config, seeded=seeded)
        finally:
            assert thread.server is not None
            thread.server.should_exit = True
            thread.join(timeout=30)
