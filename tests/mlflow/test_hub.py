"""MLflow code against mlhub alone: Lightning's MLFlowLogger, sklearn models registered and loaded through
`models:/name@alias`, MLflow's error format and auth, and what the client wrote seen through mlhub's own API,
CLI, DuckDB views and audit."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.mlflow.conftest import ADMIN, READER, WRITER, Server, mlhub_cli, tracking


def _walk(client: Any, run_id: str, path: str | None = None) -> list[str]:
    found: list[str] = []
    for a in client.list_artifacts(run_id, path):
        found += _walk(client, run_id, a.path) if a.is_dir else [a.path]
    return found


def test_lightning_mlflow_logger_trains_into_mlhub(hub: Server, tmp_path: Path) -> None:
    import lightning as L
    import torch
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.save_hyperparameters({"lr": 0.05, "hidden": 4})

        def training_step(self, batch: Any, index: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, index: int) -> None:
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    with tracking(hub):
        logger = MLFlowLogger(experiment_name="lightning", tracking_uri=hub.url, log_model=True)
        trainer = L.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=2, logger=logger,
                            default_root_dir=tmp_path,
                            enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
        trainer.fit(Tiny(), data, data)
        client = MlflowClient()
        run = client.get_run(logger.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params == {"lr": "0.05", "hidden": "4"}
        assert {"train_loss", "val_loss", "epoch"} <= set(run.data.metrics)
        assert len(client.get_metric_history(logger.run_id, "train_loss")) == 8  # 2 epochs x 4 batches
        checkpoints = [p for p in _walk(client, logger.run_id) if p.endswith(".ckpt")]
        assert checkpoints == ["epoch=1-step=8/epoch=1-step=8.ckpt"]
    # The checkpoint is an artifact of the run in mlhub's store, and it loads.
    detail = httpx.get(f"{hub.url}/api/v1/runs/{logger.run_id}", headers={"Authorization": f"Bearer {READER}"},
                       timeout=30).json()
    assert {a["path"]: a["kind"] for a in detail["artifacts"]}[checkpoints[0]] == "checkpoint"
    assert detail["run"]["status"] == "finished"


def test_sklearn_model_registered_aliased_and_loaded_through_models_uri(hub: Server) -> None:
    import mlflow
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    rng = np.random.RandomState(0)
    x = rng.rand(60, 3)
    y = (x[:, 0] + x[:, 1] > 1).astype(int)
    with tracking(hub):
        mlflow.set_experiment("registry")
        versions = []
        for c in (1.0, 0.1):
            with mlflow.start_run():
                model = LogisticRegression(C=c).fit(x, y)
                mlflow.log_metric("train_acc", float(model.score(x, y)))
                info = mlflow.sklearn.log_model(model, name="model", registered_model_name="churn")
                versions.append((info.registered_model_version, model))
        assert [str(v) for v, _ in versions] == ["1", "2"]
        client = MlflowClient()
        # The hub's promotion gates apply to MLflow's alias calls (configs/registry.yaml gates staging).
        with pytest.raises(mlflow.exceptions.MlflowException) as gated:
            client.set_registered_model_alias("churn", "staging", "1")
        assert "PROMOTION_GATE_FAILED" in str(gated.value) and "val_acc" in str(gated.value)
        client.set_registered_model_alias("churn", "challenger", "1")
        loaded = mlflow.pyfunc.load_model("models:/churn@challenger")
        assert (loaded.predict(x) == versions[0][1].predict(x)).all()
        client.set_registered_model_alias("churn", "challenger", "2")
        assert client.get_model_version_by_alias("churn", "challenger").version == "2"
        loaded = mlflow.pyfunc.load_model("models:/churn@challenger")
        assert (loaded.predict(x) == versions[1][1].predict(x)).all()
        model_info = client.get_registered_model("churn")
        assert model_info.aliases == {"challenger": "2"}
        client.set_registered_model_tag("churn", "team", "growth")
        client.set_model_version_tag("churn", "1", "checked", "yes")
        assert client.get_registered_model("churn").tags == {"team": "growth"}
        assert client.get_model_version("churn", "1").tags == {"checked": "yes"}
        assert [m.version for m in client.search_model_versions("name = 'churn'")] == ["2", "1"]
        # A protected alias (production) needs an admin token: a writer gets MLflow's PERMISSION_DENIED.
        with tracking(hub, WRITER):
            with pytest.raises(mlflow.exceptions.MlflowException) as refused:
                MlflowClient().set_registered_model_alias("churn", "production", "2")
            assert refused.value.error_code == "PERMISSION_DENIED"
        client.delete_registered_model_alias("churn", "challenger")
        assert client.get_registered_model("churn").aliases == {}
    # mlhub's own registry shows the moves, made through mlhub.registry.promote.
    history = mlhub_cli(hub, ["models", "history", "churn", "--alias", "challenger", "--json"])
    assert history.returncode == 0, history.stderr
    moves = [(h["alias"], h["from_version"], h["to_version"]) for h in json.loads(history.stdout)]
    assert [m for m in moves if m[0] == "challenger"] == [("challenger", None, 1), ("challenger", 1, 2),
                                                           ("challenger", 2, None)]


def test_errors_come_in_mlflows_format_with_its_statuses(hub: Server) -> None:
    import mlflow
    from mlflow import MlflowClient

    api = f"{hub.url}/api/2.0/mlflow"
    auth = {"Authorization": f"Bearer {WRITER}"}
    missing = httpx.get(f"{api}/runs/get", params={"run_id": "0" * 32}, headers=auth, timeout=30)
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    bad = httpx.post(f"{api}/runs/search", json={"experiment_ids": ["0"], "filter": "metrics.x >"}, headers=auth,
                     timeout=30)
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "Invalid filter" in bad.json()["message"]
    unknown = httpx.get(f"{hub.url}/api/2.0/mlflow/traces/abc/info", headers=auth, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    nobody = httpx.post(f"{api}/experiments/create", json={"name": "x"}, timeout=30)
    assert nobody.status_code == 401 and nobody.json()["error_code"] == "UNAUTHENTICATED"
    reader = httpx.post(f"{api}/experiments/create", json={"name": "x"},
                        headers={"Authorization": f"Bearer {READER}"}, timeout=30)
    assert reader.status_code == 403 and reader.json()["error_code"] == "PERMISSION_DENIED"
    with tracking(hub, WRITER):
        client = MlflowClient()
        experiment = client.create_experiment("errors")
        with pytest.raises(mlflow.exceptions.MlflowException) as exists:
            client.create_experiment("errors")
        assert exists.value.error_code == "RESOURCE_ALREADY_EXISTS"
        run = client.create_run(experiment)
        client.log_param(run.info.run_id, "p", "1")
        with pytest.raises(mlflow.exceptions.MlflowException) as changed:
            client.log_param(run.info.run_id, "p", "2")
        assert changed.value.error_code == "INVALID_PARAMETER_VALUE"
        with pytest.raises(mlflow.exceptions.MlflowException) as bad_key:
            client.log_metric(run.info.run_id, "bad\nkey", 1.0)
        assert bad_key.value.error_code == "INVALID_PARAMETER_VALUE"
        # Nothing of a refused batch was stored.
        with pytest.raises(mlflow.exceptions.MlflowException):
            client.log_batch(run.info.run_id, metrics=[mlflow.entities.Metric("ok", 1.0, 0, 0),
                                                       mlflow.entities.Metric("x", float("nan"), 0, -1)])
        assert "ok" not in client.get_run(run.info.run_id).data.metrics
        client.set_terminated(run.info.run_id)
        with pytest.raises(mlflow.exceptions.MlflowException) as ended:
            client.log_metric(run.info.run_id, "late", 1.0)
        assert ended.value.error_code == "INVALID_PARAMETER_VALUE" and "ended" in str(ended.value)
        # Deleted and restored, experiments and runs alike.
        client.delete_run(run.info.run_id)
        assert client.search_runs([experiment]) == []
        assert [r.info.lifecycle_stage for r in client.search_runs([experiment], run_view_type=2)] == ["deleted"]
        client.restore_run(run.info.run_id)
        client.rename_experiment(experiment, "errors-renamed")
        client.delete_experiment(experiment)
        assert client.get_experiment(experiment).lifecycle_stage == "deleted"
        with pytest.raises(mlflow.exceptions.MlflowException):
            client.create_run(experiment)
        client.restore_experiment(experiment)
        assert client.get_experiment_by_name("errors-renamed").experiment_id == experiment


def test_basic_auth_maps_the_password_to_a_token_and_records_the_user(hub: Server,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ana")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", WRITER)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", hub.url)
    client = MlflowClient(hub.url)
    experiment = client.create_experiment("basic-auth")
    run = client.create_run(experiment)
    assert client.get_run(run.info.run_id).data.tags["mlhub.caller"].startswith("ana (token:env-2)")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-a-token")
    with pytest.raises(mlflow.exceptions.MlflowException) as refused:
        MlflowClient(hub.url).get_run(run.info.run_id)
    assert refused.value.error_code == "UNAUTHENTICATED"
    wrong = base64.b64encode(b"ana:nope-nope").decode()
    answer = httpx.get(f"{hub.url}/api/2.0/mlflow/runs/get", params={"run_id": run.info.run_id},
                       headers={"Authorization": f"Basic {wrong}"}, timeout=30)
    assert answer.status_code == 401 and answer.json()["error_code"] == "UNAUTHENTICATED"


def test_what_mlflow_wrote_is_in_mlhubs_api_cli_views_and_audit(hub: Server) -> None:
    import mlflow

    with tracking(hub):
        mlflow.set_experiment("visible")
        with mlflow.start_run(run_name="seen") as run:
            mlflow.log_params({"lr": "0.1"})
            mlflow.log_metrics({"loss": 0.5}, step=1)
            mlflow.log_metrics({"loss": 0.25}, step=2)
            mlflow.log_text("x", "out/x.txt")
            mlflow.log_input(mlflow.data.from_numpy(np.arange(6.0).reshape(3, 2), name="tiny"), context="train")
    run_id = run.info.run_id
    native = httpx.get(f"{hub.url}/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {READER}"},
                       timeout=30).json()
    assert native["run"]["status"] == "finished" and native["params"] == {"lr": "0.1"}
    assert {m["key"]: m["last_value"] for m in native["metrics"]} == {"loss": 0.25}
    assert [a["path"] for a in native["artifacts"]] == ["out/x.txt"]
    assert native["lineage"]["dataset"]["name"] == "tiny"
    runs = mlhub_cli(hub, ["runs", "--experiment", "visible", "--format", "json"])
    assert runs.returncode == 0, runs.stderr
    assert [r["run_id"] for r in json.loads(runs.stdout)] == [run_id]
    shown = mlhub_cli(hub, ["show", run_id])
    assert shown.returncode == 0 and run_id in shown.stdout and "loss" in shown.stdout, shown.stderr
    query = mlhub_cli(hub, ["query", f"SELECT step, value FROM metrics WHERE run_id = '{run_id}' ORDER BY step",
                            "--format", "json"])
    assert query.returncode == 0, query.stderr
    assert [(r["step"], r["value"]) for r in json.loads(query.stdout)] == [(1, 0.5), (2, 0.25)]
    assert hub.data_dir is not None
    audit = mlhub_cli(hub, ["audit", "verify"], timeout=300, MLHUB_DATA_DIR=str(hub.data_dir))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert ADMIN  # the admin token is what the module's MLflow calls use by default
