"""A plain Lightning script (tiny model, CPU) logging through the SDK's MLHubLogger to a real hub; and the
SDK imports no torch, lightning, event log, read model or worker code until the logger is asked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.client.conftest import WRITER, HubStack
from tests.client.tiny_fit import EXPECTED, fit_tiny, tiny_module

from mlhub.client import Hub

PROBE = """
import sys
attempts = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning'):
            attempts.append(name)
        return None
sys.meta_path.insert(0, Spy())
import mlhub.client
from mlhub.client import Hub, Run, HubUnavailable
forbidden = ('mlhub.eventlog', 'mlhub.readmodel', 'mlhub.worker', 'mlhub.projections', 'mlhub.api', 'nats',
             'sqlalchemy', 'torch', 'lightning')
loaded = sorted(m for m in sys.modules if m.split('.')[0] in forbidden or m.startswith(forbidden))
print('ATTEMPTS', attempts, 'LOADED', loaded)
try:
    mlhub.client.MLHubLoger
except AttributeError as e:
    print('TYPO', e)
"""


def test_importing_the_sdk_loads_no_heavy_or_server_side_package() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ATTEMPTS [] LOADED []" in result.stdout, result.stdout
    assert "TYPO module 'mlhub.client' has no attribute 'MLHubLoger'" in result.stdout


def test_a_lightning_script_logs_through_the_sdk(hub_stack: HubStack, spool_dir: Path, tmp_path: Path) -> None:
    """The tiny fit through an SDK Run; tests/worker/test_job_metrics.py runs it through the worker's sink and
    expects the same points (tiny_fit.EXPECTED)."""
    from mlhub.client import MLHubLogger

    with Hub(hub_stack.url, WRITER, spool_dir=spool_dir) as hub:
        logger = MLHubLogger(hub=hub, experiment="lightning-sdk", run_name="tiny")
        fit_tiny(logger, tmp_path)
        run = logger.run
        assert run.status == "finished", "finalize('success') finishes a run the logger started"
        assert run.errors == [] and run.points_logged == run.points_delivered == 12

    events = hub_stack.run_events(run.run_id)
    detail = hub_stack.get(f"/runs/{run.run_id}", min_seq=events[-1]["seq"])
    assert detail["run"]["status"] == "finished" and detail["run"]["name"] == "tiny"
    assert detail["params"] == {"lr": "0.05", "hidden": "4"}
    points = [(s["key"], step, epoch) for e in events if e["type"] == "run.metrics_logged"
              for s in e["payload"]["series"] for step, epoch in zip(s["steps"], s["epochs"], strict=True)]
    assert {key: sorted((step, epoch) for k, step, epoch in points if k == key)
            for key in {k for k, _, _ in points}} == EXPECTED  # "epoch" is no metric


def test_a_logger_given_a_run_leaves_finishing_to_the_script(hub_stack: HubStack, spool_dir: Path,
                                                            tmp_path: Path) -> None:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from mlhub.client import MLHubLogger

    x = torch.randn(32, 3)
    data = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)
    with Hub(hub_stack.url, WRITER, spool_dir=spool_dir) as hub, hub.start_run("lightning-sdk") as run:
        trainer = L.Trainer(max_epochs=1, limit_train_batches=4, log_every_n_steps=1, logger=MLHubLogger(run),
                            accelerator="cpu", enable_progress_bar=False, enable_checkpointing=False,
                            enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(tiny_module()(), data)
        assert run.status is None and run.pending == 0, "finalize flushed, and left the run open"
        run.log_metrics({"test_loss": 0.5}, step=4)
    assert run.status == "finished" and run.points_delivered == 5


def test_lightning_keys_with_slashes_and_at_signs_and_nested_hparams_are_stored(hub_stack: HubStack,
                                                                                spool_dir: Path,
                                                                                tmp_path: Path) -> None:
    """The logger goes through the SDK's one validation and flattening: `val/acc@top1` and `train/loss` are
    stored as logged; nested hyperparameters become dotted params written as JSON; fit then test logging
    the same hyperparameters again is a no-op, not a changed param."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from mlhub.client import MLHubLogger

    class Keys(L.LightningModule):
        def __init__(self, optim: dict[str, Any], layers: list[int]) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Linear(3, 2)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("train/loss", loss)
            return loss

        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val/acc@top1", (self.net(x).argmax(dim=1) == y).float().mean())

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams["optim"]["lr"])

    torch.manual_seed(0)
    x = torch.randn(32, 3)
    data = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)
    with Hub(hub_stack.url, WRITER, spool_dir=spool_dir) as hub, hub.start_run("lightning-keys") as run:
        trainer = L.Trainer(max_epochs=1, limit_train_batches=3, limit_test_batches=2, log_every_n_steps=1,
                            logger=MLHubLogger(run), accelerator="cpu", enable_progress_bar=False,
                            enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path)
        model = Keys(optim={"lr": 0.1, "momentum": {"beta": 0.9}}, layers=[64, 32])
        trainer.fit(model, data)
        trainer.test(model, data)
    assert run.status == "finished" and run.rejected == [] and run.errors == []

    events = hub_stack.run_events(run.run_id)
    keys: dict[str, list[int]] = {}
    for e in events:
        for series in e["payload"]["series"] if e["type"] == "run.metrics_logged" else ():
            keys.setdefault(series["key"], []).extend(series["steps"])
    assert {key: sorted(steps) for key, steps in keys.items()} == {"train/loss": [0, 1, 2], "val/acc@top1": [3]}
    detail = hub_stack.get(f"/runs/{run.run_id}", min_seq=events[-1]["seq"])
    assert detail["params"] == {"optim.lr": "0.1", "optim.momentum.beta": "0.9", "layers": "[64, 32]"}
    series = hub_stack.get(f"/runs/{run.run_id}/metrics/val/acc@top1", min_seq=events[-1]["seq"])
    assert series["steps"] == [3] and len(series["values"]) == 1
