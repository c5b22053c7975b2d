"""How the events of MLflow's model (soft deletes, renames, tag removal, dataset inputs, logged models, model
descriptions and tags) change the SQL read model. The handlers run inside `ReadModelChanges` like its own: on
rows it loaded, in stream order, written by its flush."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlhub.events import (
    DatasetVersionRecorded,
    Envelope,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagsSet,
    LoggedModelRecorded,
    ModelCreated,
    ModelDeleted,
    ModelUpdated,
    ModelVersionDeleted,
    RunDeleted,
    RunRenamed,
    RunRestored,
    TagsDeleted,
)
from mlhub.readmodel import tables as t

if TYPE_CHECKING:
    from mlhub.projections.sql_changes import ReadModelChanges

Handler = Callable[["ReadModelChanges", int, Envelope, Any], None]


def _experiment(ch: ReadModelChanges, seq: int, env: Envelope, experiment_id: str) -> dict[str, Any] | None:
    row = ch.rows[t.experiments].get((experiment_id,))
    if not row:  # an event of an experiment the read model never saw created: nothing to change
        return None
    row["last_seq"] = seq
    row["updated_at"] = env.occurred_at
    return row


def experiment_changed(ch: ReadModelChanges, seq: int, env: Envelope,
                       e: ExperimentRenamed | ExperimentDeleted | ExperimentRestored | ExperimentTagsSet) -> None:
    """Rename, delete, restore or tag an experiment."""
    row = _experiment(ch, seq, env, e.experiment_id)
    if row is None:
        return
    if isinstance(e, ExperimentRenamed):
        row["name"] = e.name
    elif isinstance(e, ExperimentDeleted):
        row["lifecycle_stage"] = "deleted"
    elif isinstance(e, ExperimentRestored):
        row["lifecycle_stage"] = "active"
    else:
        tags = {k: v for k, v in dict(row["tags"] or {}).items() if k not in e.removed}
        row["tags"] = {**tags, **e.tags}


def run_changed(ch: ReadModelChanges, seq: int, env: Envelope, e: RunDeleted | RunRestored | RunRenamed) -> None:
    """Delete, restore or rename a run."""
    row = ch.run_row(e.run_id, seq, env.occurred_at)
    if isinstance(e, RunRenamed):
        row["name"] = e.name
    else:
        row["lifecycle_stage"] = "deleted" if isinstance(e, RunDeleted) else "active"


def tags_deleted(ch: ReadModelChanges, seq: int, env: Envelope, e: TagsDeleted) -> None:
    """Remove tags of a run."""
    for key in e.keys:
        ch.rows[t.tags][(e.run_id, key)] = ch.DELETED


def dataset_recorded(ch: ReadModelChanges, seq: int, env: Envelope, e: DatasetVersionRecorded) -> None:
    """The run's dataset columns (the last dataset recorded) and one run_inputs row per dataset."""
    ch.run_fields(seq, env, e)
    digest = e.digest or e.fingerprint
    ch.rows[t.run_inputs][(e.run_id, e.name, digest)] = {
        "run_id": e.run_id, "name": e.name, "digest": digest, "fingerprint": e.fingerprint,
        "source_type": e.source_type, "source": e.source, "schema_text": e.schema_text, "profile": e.profile,
        "context": e.context, "num_examples": e.num_examples, "last_seq": seq}


def logged_model(ch: ReadModelChanges, seq: int, env: Envelope, e: LoggedModelRecorded) -> None:
    """The last record of a logged model."""
    old = ch.rows[t.logged_models].get((e.model_id,))
    run = ch.rows[t.runs].get((e.run_id,)) or {}
    ch.rows[t.logged_models][(e.model_id,)] = {
        "model_id": e.model_id, "run_id": e.run_id, "experiment_id": run.get("experiment_id"), "name": e.name,
        "artifact_path": e.artifact_path, "status": e.status, "model_type": e.model_type, "params": dict(e.params),
        "tags": dict(e.tags), "lifecycle_stage": "deleted" if e.deleted else "active",
        "created_at": old["created_at"] if old else env.occurred_at, "updated_at": env.occurred_at, "last_seq": seq}


def model_changed(ch: ReadModelChanges, seq: int, env: Envelope,
                  e: ModelCreated | ModelUpdated | ModelVersionDeleted | ModelDeleted) -> None:
    """Create, describe, tag or delete a registered model or one of its versions."""
    models, versions = ch.rows[t.registered_models], ch.rows[t.model_versions]
    key = (e.model_name,)
    if isinstance(e, ModelDeleted):
        models[key] = ch.DELETED
        for version_key in list(versions):
            if version_key[0] == e.model_name:
                versions[version_key] = ch.DELETED
        return
    if isinstance(e, ModelVersionDeleted):
        versions[(e.model_name, e.version)] = ch.DELETED
        return
    model = models.get(key) or None
    if model is None:
        model = ch.template(t.registered_models, model_name=e.model_name, created_at=env.occurred_at, tags={},
                            description="")
        models[key] = model
    model.update(updated_at=env.occurred_at, last_seq=seq)
    if isinstance(e, ModelCreated):
        model.update(description=e.description, tags=dict(e.tags))
        return
    target = model if e.version is None else versions.get((e.model_name, e.version)) or None
    if target is None:
        return  # a version the read model does not have (deleted in between)
    if e.description is not None:
        target["description"] = e.description
    tags = {k: v for k, v in dict(target.get("tags") or {}).items() if k not in e.removed}
    target["tags"] = {**tags, **e.tags}
    target["last_seq"] = seq


HANDLERS: dict[type[Any], Handler] = {
    ExperimentRenamed: experiment_changed,
    ExperimentDeleted: experiment_changed,
    ExperimentRestored: experiment_changed,
    ExperimentTagsSet: experiment_changed,
    RunDeleted: run_changed,
    RunRestored: run_changed,
    RunRenamed: run_changed,
    TagsDeleted: tags_deleted,
    DatasetVersionRecorded: dataset_recorded,
    LoggedModelRecorded: logged_model,
    ModelCreated: model_changed,
    ModelUpdated: model_changed,
    ModelVersionDeleted: model_changed,
    ModelDeleted: model_changed,
}
