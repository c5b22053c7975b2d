"""`mlhub import mlflow SOURCE`: experiments, runs (params, tags, full metric histories, artifacts, datasets,
logged models, original times and end statuses) and registered models (versions, tags, aliases) from an
MLflow store (`sqlite:///mlflow.db`, a `./mlruns` folder, an `http(s)://` MLflow server), read with the mlflow
client library (the `mlhub[mlflow]` extra).

Every event's id derives from the source and the source's ids, and each aggregate's history is appended by
`TrackingService.import_history` (prefix-checked atomic batches): a second import adds nothing, and an import
killed at any point and started again ends with the same events. Each event's producer is
`mlflow-import:<source>`; runs keep their MLflow run ids and get the tags mlhub.import.source and
mlhub.import.run_id.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from mlhub.commands.common import fail, load_settings
from mlhub.errors import MlhubError

_ENTITY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_RUN_ARTIFACT = re.compile(r"/(?P<run>[0-9a-f]{32})/artifacts/(?P<path>.+)$")


def normalize_source(source: str) -> str:
    """The tracking URI of a source: a folder (./mlruns) as an absolute file: URI, a sqlite path absolute."""
    if source.startswith(("http://", "https://", "file:")):
        return source.rstrip("/")
    if source.startswith("sqlite:///"):
        path = source.removeprefix("sqlite:///")
        return f"sqlite:///{Path(path).resolve()}"
    return Path(source).resolve().as_uri()


def _at(ms: int | None) -> datetime:
    return datetime.fromtimestamp((ms or 0) / 1000, UTC)


class MlflowImporter:
    """One import of one source into the hub's event log (see the module docstring)."""

    def __init__(self, source: str, event_log: Any, store: Any, *, echo: Any = click.echo) -> None:
        from mlflow import MlflowClient

        from mlhub.tracking import TrackingService

        self.source = normalize_source(source)
        self.client = MlflowClient(tracking_uri=self.source, registry_uri=self.source)
        self.namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"mlflow-import:{self.source}")
        self.producer = f"mlflow-import:{self.source}"[:200]
        self.service = TrackingService(event_log, producer=self.producer)
        self.event_log = event_log
        self.store = store
        self.echo = echo
        self.experiments: dict[str, str] = {}
        self.counts = {"experiments": 0, "runs": 0, "runs_skipped": 0, "events": 0, "metric_points": 0,
                       "artifacts": 0, "models": 0, "model_versions": 0}

    def _id(self, *parts: object) -> uuid.UUID:
        return uuid.uuid5(self.namespace, "/".join(map(str, parts)))

    def _envelope(self, event: Any, at: datetime, *parts: object) -> Any:
        from mlhub.events import Envelope

        return Envelope(event=event, producer=self.producer, event_id=self._id(*parts), occurred_at=at)

    async def _append(self, kind: str, aggregate_id: str, envelopes: list[Any]) -> int:
        appended, _ = await self.service.import_history(kind, aggregate_id, envelopes)
        self.counts["events"] += appended
        return appended

    # -- experiments ------------------------------------------------------------------------------------

    async def experiments_(self) -> list[Any]:
        from mlflow.entities import ViewType

        from mlhub.events import ExperimentCreated, ExperimentDeleted, ExperimentTagsSet, experiment_id_for
        from mlhub.tracking import experiment_state

        found = list(self.client.search_experiments(view_type=ViewType.ALL, max_results=50_000))
        for exp in found:
            mlhub_id = experiment_id_for(exp.name)
            self.experiments[exp.experiment_id] = mlhub_id
            state = await experiment_state(self.event_log, mlhub_id)
            created_id = str(self._id("experiment", exp.experiment_id, "created"))
            if state.exists and created_id not in await self.event_log.find_events(
                    f"mlhub.ev.experiment.{mlhub_id}.created", [created_id]):
                continue  # this hub has an experiment of that name already: the runs go into it
            at = _at(exp.creation_time)
            tags = {k: v for k, v in exp.tags.items() if len(v) <= 8000}
            envelopes = [self._envelope(ExperimentCreated(experiment_id=mlhub_id, name=exp.name), at,
                                        "experiment", exp.experiment_id, "created")]
            if tags:
                envelopes.append(self._envelope(ExperimentTagsSet(experiment_id=mlhub_id, tags=tags), at,
                                                "experiment", exp.experiment_id, "tags"))
            if exp.lifecycle_stage == "deleted":
                envelopes.append(self._envelope(ExperimentDeleted(experiment_id=mlhub_id),
                                                _at(exp.last_update_time), "experiment", exp.experiment_id,
                                                "deleted"))
            if await self._append("experiment", mlhub_id, envelopes):
                self.counts["experiments"] += 1
        return found

    # -- runs -------------------------------------------------------------------------------------------

    def runs(self, experiment_ids: list[str]) -> Iterator[Any]:
        """Every run of the experiments (deleted ones too), oldest first."""
        from mlflow.entities import ViewType

        token = None
        while True:
            page = self.client.search_runs(experiment_ids, run_view_type=ViewType.ALL, max_results=1000,
                                           order_by=["attributes.start_time ASC"], page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    async def run(self, run: Any) -> None:
        """Import one run (skipped when its last event is stored: imported before)."""
        info = run.info
        plan = self._run_plan(run)
        if len(plan) > 1:  # an ended run: its end is its import's last event, so once stored, all is
            last = str(plan[-1].event_id)
            if last in await self.event_log.find_events(f"mlhub.ev.run.{info.run_id}.>", [last]):
                self.counts["runs_skipped"] += 1
                return
        envelopes = await asyncio.to_thread(self._run_events, run)
        if await self._append("run", info.run_id, envelopes):
            self.counts["runs"] += 1
        else:
            self.counts["runs_skipped"] += 1

    def _run_plan(self, run: Any) -> list[Any]:
        """The run's lifecycle envelopes only (cheap: no history read), the last of which ends its import."""
        return self._lifecycle(run, head=False)

    def _lifecycle(self, run: Any, *, head: bool) -> list[Any]:
        from mlhub.events import RunCancelled, RunCreated, RunDeleted, RunFailed, RunFinished, RunStarted

        info = run.info
        start = _at(info.start_time)
        end = _at(info.end_time or info.start_time)
        name = (info.run_name or f"run-{info.run_id[:8]}")[:250]
        if head:
            return [self._envelope(RunCreated(run_id=info.run_id, experiment_id=self.experiments[info.experiment_id],
                                              name=name, source="sdk"), start, "run", info.run_id, "created")]
        tail: list[Any] = [self._envelope(RunStarted(run_id=info.run_id, attempt=1), start, "run", info.run_id,
                                          "started")]
        ends = {"FINISHED": RunFinished(run_id=info.run_id), "KILLED": RunCancelled(
            run_id=info.run_id, reason="KILLED in MLflow (imported)"), "FAILED": RunFailed(
            run_id=info.run_id, error_type="MlflowRunFailed", error="FAILED in MLflow (imported)")}
        if info.status in ends:
            tail.append(self._envelope(ends[info.status], end, "run", info.run_id, "ended"))
        if info.lifecycle_stage == "deleted":
            tail.append(self._envelope(RunDeleted(run_id=info.run_id), end, "run", info.run_id, "deleted"))
        return tail

    def _run_events(self, run: Any) -> list[Any]:
        """Every envelope of a run, in order: created, params, tags, started, metrics, datasets, artifacts,
        logged models, then the end (read from the source: histories, artifacts)."""
        from mlhub.events import ParamsLogged, TagsSet
        from mlhub.tracking.validation import SeriesInput

        info = run.info
        start = _at(info.start_time)
        envelopes = self._lifecycle(run, head=True)
        params = dict(run.data.params)
        tags = {**run.data.tags, "mlhub.import.source": self.source[:8000], "mlhub.import.run_id": info.run_id}
        for i, chunk in enumerate(_chunks(params)):
            envelopes.append(self._envelope(ParamsLogged(run_id=info.run_id, params=chunk), start, "run", info.run_id,
                                            "params", i))
        for i, chunk in enumerate(_chunks(tags)):
            envelopes.append(self._envelope(TagsSet(run_id=info.run_id, tags=chunk), start, "run", info.run_id,
                                            "tags", i))
        tail = self._lifecycle(run, head=False)
        envelopes.append(tail[0])  # started
        series = []
        for key in sorted(run.data.metrics):
            history = sorted(self.client.get_metric_history(info.run_id, key), key=lambda m: (m.step, m.timestamp))
            series.append(SeriesInput(key, [float(m.value) for m in history], [max(0, int(m.step)) for m in history],
                                      None, [int(m.timestamp) for m in history]))
            self.counts["metric_points"] += len(history)
        from mlhub.tracking import metric_events

        for i, event in enumerate(metric_events(info.run_id, series, 1, 0)):
            envelopes.append(self._envelope(event, start, "run", info.run_id, "metrics", i))
        envelopes += self._datasets(run, start)
        envelopes += self._artifacts(info.run_id, start)
        envelopes += tail[1:]
        return envelopes

    def _datasets(self, run: Any, at: datetime) -> list[Any]:
        import hashlib
        import json

        from mlhub.events import DatasetVersionRecorded

        found = []
        for i, item in enumerate(run.inputs.dataset_inputs if run.inputs else []):
            d = item.dataset
            context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), None)
            described = {"name": d.name, "digest": d.digest, "source_type": d.source_type, "source": d.source,
                         "schema": d.schema, "profile": d.profile}
            event = DatasetVersionRecorded(
                run_id=run.info.run_id, name=d.name or "dataset",
                fingerprint=hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest(),
                size_bytes=None, digest=d.digest, source_type=d.source_type, source=d.source, schema_text=d.schema,
                profile=d.profile, context=context)
            found.append(self._envelope(event, at, "run", run.info.run_id, "dataset", i))
        return found

    def _walk(self, run_id: str, path: str | None = None) -> Iterator[Any]:
        for item in self.client.list_artifacts(run_id, path):
            if item.is_dir:
                yield from self._walk(run_id, item.path)
            else:
                yield item

    def _store_tree(self, local_root: Path, prefix: str, run_id: str, at: datetime, kind: str) -> list[Any]:
        from mlhub.events import ArtifactStored

        found = []
        for file in sorted(p for p in local_root.rglob("*") if p.is_file()):
            rel = file.relative_to(local_root).as_posix()
            stored = self.store.put_file(file)
            path = f"{prefix}/{rel}" if prefix else rel
            event = ArtifactStored(run_id=run_id, path=path, sha256=stored.sha256, size_bytes=stored.size_bytes,
                                   uri=stored.uri, kind="checkpoint" if path.endswith(".ckpt") else kind)  # type: ignore[arg-type]
            found.append(self._envelope(event, at, "run", run_id, "artifact", path))
            self.counts["artifacts"] += 1
        return found

    def _artifacts(self, run_id: str, at: datetime) -> list[Any]:
        import mlflow.artifacts

        from mlhub.events import LoggedModelRecorded

        found = []
        with tempfile.TemporaryDirectory(prefix="mlhub-import-") as tmp:
            if any(True for _ in self._walk(run_id)):
                local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=os.path.join(tmp, "run"),
                                                                 tracking_uri=self.source))
                found += self._store_tree(local, "", run_id, at, "file")
            run = self.client.get_run(run_id)
            models = self.client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                                      filter_string=f"source_run_id = '{run_id}'")
            for model in models:
                if not _ENTITY.fullmatch(model.model_id):
                    continue
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location,
                                                                 dst_path=os.path.join(tmp, model.model_id),
                                                                 tracking_uri=self.source))
                path = f"logged-models/{model.model_id}"
                found += self._store_tree(local, path, run_id, at, "model")
                status = {"READY": "ready", "PENDING": "pending"}.get(str(model.status).rsplit(".", 1)[-1], "failed")
                event = LoggedModelRecorded(run_id=run_id, model_id=model.model_id, name=model.name[:250],
                                            artifact_path=path, status=status,  # type: ignore[arg-type]
                                            model_type=model.model_type or None,
                                            params=dict(model.params), tags=dict(model.tags))
                found.append(self._envelope(event, _at(model.creation_timestamp), "run", run_id, "model",
                                            model.model_id))
        return found

    # -- registered models ------------------------------------------------------------------------------

    async def registered_models(self) -> None:
        """Import registered models (names mlhub can hold), their versions, tags and aliases."""
        from mlhub.events import ModelAliasSet, ModelCreated, ModelUpdated, ModelVersionRegistered
        from mlhub.registry import artifact_digest, read_run

        for model in self.client.search_registered_models(max_results=1000):
            name = model.name
            if not _ENTITY.fullmatch(name):
                self.echo(f"skipped registered model {name!r}: mlhub model names are letters, digits, '_' and '-'",
                          err=True)
                continue
            at = _at(model.creation_timestamp)
            envelopes = [self._envelope(ModelCreated(model_name=name, description=(model.description or "")[:5000],
                                                     tags={k: v[:5000] for k, v in model.tags.items()}), at,
                                        "model", name, "created")]
            versions = sorted(self.client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
            for v in versions:
                run_id, path = self._version_source(v)
                facts = await read_run(self.event_log, run_id) if run_id else None
                sha256 = artifact_digest(facts.artifacts, path) if facts is not None and path else None
                if sha256 is None or run_id is None or path is None:
                    self.echo(f"skipped {name} version {v.version}: its source {v.source!r} is not an imported "
                              "run's artifact", err=True)
                    continue
                envelopes.append(self._envelope(ModelVersionRegistered(
                    model_name=name, version=int(v.version), run_id=run_id, artifact_path=path, artifact_sha256=sha256,
                    description=(v.description or "")[:5000], registered_by=v.user_id or None),
                    _at(v.creation_timestamp), "model", name, "version", v.version))
                if v.tags:
                    envelopes.append(self._envelope(ModelUpdated(model_name=name, version=int(v.version),
                                                                 tags={k: x[:5000] for k, x in v.tags.items()}),
                                                    _at(v.creation_timestamp), "model", name, "version-tags",
                                                    v.version))
                self.counts["model_versions"] += 1
            registered = {int(v.version) for v in versions}
            for alias, version in sorted(model.aliases.items()):
                if int(version) in registered and _ENTITY.fullmatch(alias):
                    envelopes.append(self._envelope(ModelAliasSet(
                        model_name=name, alias=alias, version=int(version), actor=self.producer[:200],
                        reason="imported from MLflow"), _at(model.last_updated_timestamp), "model", name, "alias",
                        alias))
            if await self._append("model", name, envelopes):
                self.counts["models"] += 1

    def _version_source(self, version: Any) -> tuple[str | None, str | None]:
        source = version.source or ""
        model_id = getattr(version, "model_id", None) or (source[len("models:/"):] if source.startswith(
            "models:/m-") else None)
        if model_id:
            try:
                model = self.client.get_logged_model(model_id.strip("/"))
                return model.source_run_id, f"logged-models/{model.model_id}"
            except Exception:  # noqa: BLE001  (a logged model the source no longer has)
                return None, None
        if source.startswith("runs:/"):
            run_id, _, path = source[len("runs:/"):].partition("/")
            return run_id, path.strip("/")
        match = _RUN_ARTIFACT.search(source)
        if match:
            return match.group("run"), match.group("path").strip("/")
        return version.run_id or None, None


def _chunks(values: dict[str, str]) -> list[dict[str, str]]:
    items = list(values.items())
    return [dict(items[i:i + 200]) for i in range(0, len(items), 200)]


async def run_import(source: str, event_log: Any, store: Any, *, progress: bool = True,
                     echo: Any = click.echo) -> dict[str, int]:
    """Import a source; the counts of what was added (and skipped)."""
    from tqdm import tqdm

    importer = MlflowImporter(source, event_log, store, echo=echo)
    experiments = await importer.experiments_()
    runs = list(importer.runs([e.experiment_id for e in experiments])) if experiments else []
    for run in tqdm(runs, desc="runs", unit="run", disable=not progress):
        await importer.run(run)
    await importer.registered_models()
    return importer.counts


@click.group("import")
def import_group() -> None:
    """Import history from other tools (mlhub import mlflow SOURCE)."""


@import_group.command("mlflow")
@click.argument("source")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def import_mlflow(source: str, no_progress: bool) -> None:
    """Import an MLflow store: SOURCE is sqlite:///mlflow.db, a ./mlruns folder or an http(s):// MLflow server.

    Experiments, runs (params, tags, every metric point with its step and timestamp, artifacts, datasets,
    logged models, original start and end times and end status) and registered models (versions, tags,
    aliases) are appended to the event log of this hub (MLHUB_NATS_URL or the data dir's). Idempotent and
    resumable: run it again after an interruption, or to pick up new runs.
    """
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise click.ClickException("the mlflow client library is needed: pip install 'mlhub[mlflow]'") from None
    from mlhub.artifacts import store_from_settings
    from mlhub.commands.common import event_log_url, open_event_log

    settings = load_settings()

    async def main(url: str) -> dict[str, int]:
        async with open_event_log(settings, url, "mlhub-import") as event_log:
            return await run_import(source, event_log, store_from_settings(settings), progress=not no_progress)

    try:
        with event_log_url(settings) as url:
            counts = asyncio.run(main(url))
    except MlhubError as e:
        fail(e)
    click.echo("imported: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
