"""The same MLflow script against mlhub and against a real `mlflow server`: the answers of the fluent API and of
MlflowClient, compared field by field.

Ignored, because they must differ between two servers: run and experiment ids (and so mlflow.parentRunId,
compared as the parent's name instead), artifact URIs, start and end times and metric timestamps (each
script run stamps its own), the mlflow.source.* tags, the run names the servers make up for unnamed runs,
and mlhub's own tags (mlhub.*: who created the run)."""

from __future__ import annotations

import math
from typing import Any

from tests.mlflow.conftest import Server, tracking


def script(experiment: str) -> None:
    """What a team's training script does with MLflow's fluent API."""
    import mlflow

    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="baseline", tags={"team": "vision"}):
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"batch_size": 32, "optimizer": "adam", "layers": [64, 32]})
        for step in range(20):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.91, "f1": 0.875}, step=19)
        mlflow.log_metric("weird", math.nan, step=0)
        mlflow.set_tag("stage", "dev")
        mlflow.set_tags({"owner": "ana", "priority": "2"})
        mlflow.log_dict({"layers": [64, 32], "dropout": 0.1}, "config/model.json")
        mlflow.log_text("the notes", "notes.txt")
        with mlflow.start_run(run_name="fold-0", nested=True):
            mlflow.log_param("fold", 0)
            mlflow.log_metrics({"loss": 0.3, "acc": 0.8}, step=1)
        with mlflow.start_run(run_name="fold-1", nested=True):
            mlflow.log_param("fold", 1)
            mlflow.log_metrics({"loss": 0.2, "acc": 0.85}, step=1)
    with mlflow.start_run(run_name="wide", tags={"team": "nlp"}):
        mlflow.log_params({"lr": "0.1", "batch_size": 64})
        for step in range(5):
            mlflow.log_metrics({"loss": 2.0 - step * 0.1, "acc": 0.5 + step * 0.01}, step=step)
        mlflow.end_run(status="FAILED")
    with mlflow.start_run(run_name="stopped"):
        mlflow.log_metric("loss", 5.0)
        mlflow.end_run(status="KILLED")


def _tags(run: Any, names: dict[str, str]) -> dict[str, str]:
    tags = {k: v for k, v in run.data.tags.items()
            if not k.startswith(("mlflow.source.", "mlhub.")) and k != "mlflow.parentRunId"}
    if "mlflow.parentRunId" in run.data.tags:
        tags["parent"] = names[run.data.tags["mlflow.parentRunId"]]
    return tags


def snapshot(experiment: str) -> dict[str, Any]:
    """Everything the client answers about the script's runs, with what must differ left out."""
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None and client.get_experiment(exp.experiment_id).name == experiment
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.run_name ASC"])
    names = {r.info.run_id: r.info.run_name for r in runs}

    def history(run_id: str, key: str) -> list[tuple[int, float | str]]:
        points = client.get_metric_history(run_id, key)
        return sorted((m.step, "NaN" if math.isnan(m.value) else m.value) for m in points)

    def artifacts(run_id: str, path: str | None = None) -> list[tuple[str, bool, int | None]]:
        found = []
        for a in client.list_artifacts(run_id, path):
            found.append((a.path, a.is_dir, a.file_size))
            if a.is_dir:
                found += artifacts(run_id, a.path)
        return found

    described = {}
    for run in runs:
        again = client.get_run(run.info.run_id)
        assert again.info.run_id == run.info.run_id and again.data.params == run.data.params
        assert (again.info.end_time is None) == (run.info.status == "RUNNING")
        assert again.info.start_time is not None and again.info.start_time <= (again.info.end_time or 2**62)
        described[run.info.run_name] = {
            "status": run.info.status, "lifecycle": run.info.lifecycle_stage, "user": run.info.user_id,
            "params": run.data.params,
            "metrics": {k: "NaN" if math.isnan(v) else v for k, v in run.data.metrics.items()},
            "tags": _tags(run, names),
            "histories": {k: history(run.info.run_id, k) for k in sorted(run.data.metrics)},
            "artifacts": artifacts(run.info.run_id),
        }

    def search(flt: str, order: list[str] | None = None) -> list[str]:
        return [r.info.run_name for r in client.search_runs([exp.experiment_id], flt, order_by=order)]

    searches = {
        "metric and param": search("metrics.loss < 0.5 and params.lr = '0.01'", ["metrics.loss DESC"]),
        "status": search("attributes.status = 'FINISHED'", ["attributes.run_name DESC"]),
        # (mlhub sorts a run that lacks the key as the lowest value, MLflow last: DESC agrees; docs/mlflow.md)
        "not finished": search("status != 'FINISHED'", ["params.batch_size DESC"]),
        "tag like": search("tags.team LIKE 'vis%'", ["metrics.acc ASC"]),
        "double quotes": search('params.optimizer = "adam"'),
        "by metric desc": search("", ["metrics.acc DESC"]),
        "run name": search("attributes.run_name = 'fold-1'"),
        "nested": search("params.fold LIKE '%'", ["params.fold DESC"]),
    }
    paged = client.search_runs([exp.experiment_id], max_results=2, order_by=["attributes.run_name ASC"])
    second = client.search_runs([exp.experiment_id], max_results=2, order_by=["attributes.run_name ASC"],
                                page_token=paged.token)
    experiments = sorted(e.name for e in client.search_experiments(filter_string=f"name = '{experiment}'"))
    return {"runs": described, "searches": searches, "pages": [[r.info.run_name for r in paged],
                                                               [r.info.run_name for r in second]],
            "experiments": experiments}


def test_fluent_api_and_client_answer_as_mlflow_server_does(hub: Server, mlflow_server: Server) -> None:
    answers = {}
    for name, server in (("mlhub", hub), ("mlflow", mlflow_server)):
        with tracking(server):
            script("parity")
            answers[name] = snapshot("parity")
    mine, theirs = answers["mlhub"], answers["mlflow"]
    assert mine["runs"].keys() == theirs["runs"].keys()
    for run_name in theirs["runs"]:
        for field in theirs["runs"][run_name]:
            assert mine["runs"][run_name][field] == theirs["runs"][run_name][field], (run_name, field)
    assert mine["searches"] == theirs["searches"]
    assert mine["pages"] == theirs["pages"]
    assert mine["experiments"] == theirs["experiments"] == ["parity"]
    assert theirs["runs"]["baseline"]["histories"]["loss"][:2] == [(0, 1.0), (1, 0.5)]
