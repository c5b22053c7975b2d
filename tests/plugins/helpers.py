"""Helpers for the plugin tests: config snapshots from the example configs and a real (tiny) Lightning run."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlhub.plugins import DataModuleSpec, Plugin, load_plugin
from mlhub.scheduler import load_config

ROOT = Path(__file__).resolve().parents[2]
#: Plugin name -> the example config that uses it.
CONFIGS = {"digits-mlp": "digits-mlp.yaml", "diabetes-regression": "diabetes-regression.yaml"}
EPOCHS = 2


def snapshot(plugin: str) -> dict[str, Any]:
    """The resolved config snapshot of the plugin's example config, as the worker will get it."""
    return load_config(ROOT / "configs" / CONFIGS[plugin]).config.model_dump(mode="json")


@dataclass
class TrainedRun:
    """What one smoke run left: per-epoch metrics, the final weights, the module and its data."""

    plugin: Plugin
    config: dict[str, Any]
    history: list[dict[str, float]]
    state_dict: dict[str, Any]
    module: Any
    spec: DataModuleSpec


def train(plugin_name: str, seed: int | None = None) -> TrainedRun:
    """Seed everything from the config, build data and module, fit EPOCHS epochs on CPU as the worker will."""
    import lightning as L

    config = copy.deepcopy(snapshot(plugin_name))
    if seed is not None:
        config["seed"] = seed
    plugin = load_plugin(plugin_name)
    L.seed_everything(config["seed"], workers=True)
    spec = plugin.build_datamodule(config)
    module = plugin.build_module(config)
    history: list[dict[str, float]] = []

    class History(L.Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            history.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    settings = {k: v for k, v in config["trainer"].items() if k not in ("accelerator", "max_epochs")}
    trainer = L.Trainer(**settings, accelerator="cpu", max_epochs=EPOCHS, enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[History()])
    trainer.fit(module, spec.datamodule)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return TrainedRun(plugin, config, history, state, module, spec)
