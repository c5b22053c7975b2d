"""mlhub's read-model rows in MLflow's JSON shapes (service.proto and model_registry.proto): experiments, runs
(info, data, inputs, outputs), metrics, logged models, registered models and model versions."""

from __future__ import annotations

from typing import Any

from mlhub.api.mlflow.common import (
    STATUS_TO_MLFLOW,
    artifact_root,
    millis,
    mlflow_experiment_id,
    pairs,
)


def experiment(row: dict[str, Any]) -> dict[str, Any]:
    """An experiments row as MLflow's Experiment."""
    experiment_id = mlflow_experiment_id(row["experiment_id"])
    created = millis(row["created_at"])
    return {"experiment_id": experiment_id, "name": row["name"],
            "artifact_location": f"mlflow-artifacts:/{experiment_id}",
            "lifecycle_stage": row.get("lifecycle_stage") or "active", "creation_time": created,
            "last_update_time": millis(row.get("updated_at")) or created, "tags": pairs(row.get("tags"))}


def default_experiment() -> dict[str, Any]:
    """MLflow's experiment 0, before mlhub made its experiment "Default" (with the first run in it)."""
    return {"experiment_id": "0", "name": "Default", "artifact_location": "mlflow-artifacts:/0",
            "lifecycle_stage": "active", "tags": []}


def run(row: dict[str, Any], params: dict[str, str], tags: dict[str, str], metrics: list[dict[str, Any]],
        inputs: list[dict[str, Any]], models: list[dict[str, Any]]) -> dict[str, Any]:
    """A run (its full row, params, tags, metric summaries, inputs, logged models) as MLflow's Run."""
    status = row["status"]
    tags = dict(tags)
    if status == "crashed":  # FAILED in MLflow's words; the tags say what happened
        tags.setdefault("mlhub.status", "crashed")
        tags.setdefault("mlhub.status_reason", "the run's producer went silent and the hub ended it as crashed; "
                                               "`mlhub runs end` or a resume can change that")
    name = row.get("name") or tags.get("mlflow.runName") or row["run_id"][:8]
    tags["mlflow.runName"] = name
    info: dict[str, Any] = {
        "run_id": row["run_id"], "run_uuid": row["run_id"], "run_name": name,
        "experiment_id": mlflow_experiment_id(row.get("experiment_id")),
        "user_id": tags.get("mlflow.user") or row.get("created_by") or "",
        "status": STATUS_TO_MLFLOW.get(status, "RUNNING"),
        "start_time": millis(row.get("started_at") or row.get("created_at")),
        "artifact_uri": artifact_root(row.get("experiment_id"), row["run_id"]),
        "lifecycle_stage": row.get("lifecycle_stage") or "active",
    }
    if row.get("ended_at") is not None and status not in ("running", "queued"):
        info["end_time"] = millis(row["ended_at"])
    data = {
        "metrics": [{"key": m["key"], "value": "NaN" if m["last_value"] is None else m["last_value"],
                     "timestamp": m["last_timestamp"], "step": m["last_step"]} for m in metrics],
        "params": pairs(params), "tags": pairs(tags),
    }
    dataset_inputs = [{"tags": [{"key": "mlflow.data.context", "value": i["context"]}] if i.get("context") else [],
                       "dataset": {k: v for k, v in (("name", i["name"]), ("digest", i["digest"]),
                                                     ("source_type", i.get("source_type") or "unknown"),
                                                     ("source", i.get("source") or ""),
                                                     ("schema", i.get("schema_text")),
                                                     ("profile", i.get("profile"))) if v is not None}}
                      for i in inputs]
    return {"info": info, "data": data, "inputs": {"dataset_inputs": dataset_inputs},
            "outputs": {"model_outputs": [{"model_id": m["model_id"], "step": 0} for m in models]}}


def logged_model(row: dict[str, Any]) -> dict[str, Any]:
    """A logged_models row as MLflow 3's LoggedModel."""
    status = {"pending": "LOGGED_MODEL_PENDING", "ready": "LOGGED_MODEL_READY",
              "failed": "LOGGED_MODEL_UPLOAD_FAILED"}[row["status"]]
    location = f"{artifact_root(row.get('experiment_id'), row['run_id'])}/{row['artifact_path']}"
    return {"info": {"model_id": row["model_id"], "experiment_id": mlflow_experiment_id(row.get("experiment_id")),
                     "name": row["name"], "creation_timestamp_ms": millis(row["created_at"]),
                     "last_updated_timestamp_ms": millis(row["updated_at"]), "artifact_uri": location,
                     "status": status, "model_type": row.get("model_type") or "", "source_run_id": row["run_id"],
                     "tags": pairs(row.get("tags"))},
            "data": {"params": pairs(row.get("params")), "metrics": []}}


def registered_model(row: dict[str, Any], latest: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A registered model (reads.registered_models) as MLflow's RegisteredModel."""
    answer: dict[str, Any] = {
        "name": row["model_name"], "creation_timestamp": millis(row["created_at"]),
        "last_updated_timestamp": millis(row["updated_at"]), "description": row.get("description") or "",
        "tags": pairs(row.get("tags")),
        "aliases": [{"alias": a, "version": str(v)} for a, v in sorted((row.get("aliases") or {}).items())],
    }
    if latest:
        answer["latest_versions"] = [model_version(v) for v in latest]
    return answer


def model_version(row: dict[str, Any]) -> dict[str, Any]:
    """A model version (reads.model_versions) as MLflow's ModelVersion; its source is the artifact's URI."""
    registered = millis(row["registered_at"])
    return {"name": row["model_name"], "version": str(row["version"]), "creation_timestamp": registered,
            "last_updated_timestamp": registered, "current_stage": "None",
            "description": row.get("description") or "", "user_id": row.get("registered_by") or "",
            "source": f"{artifact_root(row.get('experiment_id'), row['run_id'])}/{row['artifact_path']}",
            "run_id": row["run_id"], "status": "READY", "tags": pairs(row.get("tags")),
            "aliases": list(row.get("aliases") or []),
            "run_link": ""}
