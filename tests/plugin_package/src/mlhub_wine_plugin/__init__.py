"""`wine-logreg`: softmax regression on scikit-learn's bundled wine data, as a third-party mlhub plugin.

Only mlhub's public plugin API is used (mlhub.plugins); torch and lightning are imported inside the methods, as
the protocol asks, so that listing or validating plugins stays cheap.

Config: model.lr (float > 0), model.weight_decay (float >= 0); data.name "sklearn-wine";
data.params.batch_size (int > 0), data.params.test_fraction and val_fraction (0 < f < 0.5); data.split_seed.
Two knobs for tests of the worker: model.metric_names maps the plugin's metric names (train_loss, val_loss,
val_acc, test_loss, test_acc) to the keys it logs instead (`train/loss`, `val/acc@top1`: any string, checked by
the worker as every key is), and model.fail_when names a file: once it exists, the next training epoch ends
with a RuntimeError (a plugin that fails mid-run, at a moment the test chooses).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlhub.plugins import DataModuleSpec, DatasetVersion, Plugin, PluginConfigError

DATASET = "sklearn-wine"
MODEL_KEYS = {"lr", "weight_decay", "metric_names", "fail_when"}
METRICS = ("train_loss", "val_loss", "val_acc", "test_loss", "test_acc")
DATA_KEYS = {"batch_size", "test_fraction", "val_fraction"}


def _read(config: Mapping[str, Any]) -> dict[str, Any]:
    model = dict(config.get("model") or {})
    data = dict(config.get("data") or {})
    params = dict(data.get("params") or {})
    for section, keys, known in (("model", model, MODEL_KEYS), ("data.params", params, DATA_KEYS)):
        for key in keys:
            if key not in known:
                raise PluginConfigError(f"{section}.{key}: unknown key (known: {', '.join(sorted(known))})")
    if data.get("name") != DATASET:
        raise PluginConfigError(f"data.name: must be {DATASET!r}, got {data.get('name')!r}")
    out = {"lr": model.get("lr", 0.05), "weight_decay": model.get("weight_decay", 0.0),
           "batch_size": params.get("batch_size", 32), "test_fraction": params.get("test_fraction", 0.2),
           "val_fraction": params.get("val_fraction", 0.2), "split_seed": int(data.get("split_seed", 0)),
           "metric_names": dict(model.get("metric_names") or {}), "fail_when": model.get("fail_when")}
    for name, key in out["metric_names"].items():
        if name not in METRICS or not isinstance(key, str):
            raise PluginConfigError(f"model.metric_names.{name}: maps one of {', '.join(METRICS)} to a string key")
    if out["fail_when"] is not None and not isinstance(out["fail_when"], str):
        raise PluginConfigError(f"model.fail_when: must be a file path, got {out['fail_when']!r}")
    if not isinstance(out["lr"], int | float) or isinstance(out["lr"], bool) or out["lr"] <= 0:
        raise PluginConfigError(f"model.lr: must be a number > 0, got {out['lr']!r}")
    if not isinstance(out["weight_decay"], int | float) or out["weight_decay"] < 0:
        raise PluginConfigError(f"model.weight_decay: must be a number >= 0, got {out['weight_decay']!r}")
    if not isinstance(out["batch_size"], int) or isinstance(out["batch_size"], bool) or out["batch_size"] < 1:
        raise PluginConfigError(f"data.params.batch_size: must be an integer > 0, got {out['batch_size']!r}")
    for key in ("test_fraction", "val_fraction"):
        if not isinstance(out[key], int | float) or not 0 < out[key] < 0.5:
            raise PluginConfigError(f"data.params.{key}: must be between 0 and 0.5, got {out[key]!r}")
    return out


def _arrays(settings: dict[str, Any]) -> tuple[Any, Any, dict[str, Any], DatasetVersion]:
    """Standardized features, labels, the split's index arrays and the data's version (fingerprint)."""
    import numpy as np
    from sklearn.datasets import load_wine  # type: ignore[import-untyped]

    wine = load_wine()
    features = np.asarray(wine.data, dtype="<f4")
    labels = np.asarray(wine.target, dtype="<i8")
    order = np.random.default_rng(settings["split_seed"]).permutation(len(labels))
    n_test = int(round(len(labels) * settings["test_fraction"]))
    n_val = int(round(len(labels) * settings["val_fraction"]))
    split = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    mean, std = features[split["train"]].mean(0), features[split["train"]].std(0) + 1e-6
    features = ((features - mean) / std).astype("<f4")
    digest = hashlib.sha256()
    for array in (features, labels, *(split[k] for k in ("train", "val", "test"))):
        digest.update(np.ascontiguousarray(array).tobytes())
    version = DatasetVersion(name=DATASET, fingerprint=digest.hexdigest(),
                             size_bytes=int(features.nbytes + labels.nbytes), num_examples=len(labels))
    return features, labels, split, version


class WineLogRegPlugin(Plugin):
    """Multinomial logistic regression on the 13 wine measurements (3 classes)."""

    name = "wine-logreg"

    def validate_config(self, config: Mapping[str, Any]) -> None:
        _read(config)

    def build_datamodule(self, config: Mapping[str, Any]) -> DataModuleSpec:
        import lightning as L
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        settings = _read(config)
        features, labels, split, version = _arrays(settings)

        def loader(part: str, shuffle: bool) -> Any:
            index = split[part]
            dataset = TensorDataset(torch.from_numpy(features[index]), torch.from_numpy(labels[index]))
            generator = torch.Generator().manual_seed(settings["split_seed"])
            return DataLoader(dataset, batch_size=settings["batch_size"], shuffle=shuffle, generator=generator)

        class WineData(L.LightningDataModule):
            def train_dataloader(self) -> Any:
                return loader("train", True)

            def val_dataloader(self) -> Any:
                return loader("val", False)

            def test_dataloader(self) -> Any:
                return loader("test", False)

        return DataModuleSpec(datamodule=WineData(), dataset_version=version)

    def build_module(self, config: Mapping[str, Any]) -> Any:
        import lightning as L
        import torch
        from torch.nn import functional as F

        settings = _read(config)
        names = {name: settings["metric_names"].get(name, name) for name in METRICS}
        fail_when = settings["fail_when"]

        class WineLogReg(L.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.save_hyperparameters({"lr": settings["lr"], "weight_decay": settings["weight_decay"]})
                self.linear = torch.nn.Linear(13, 3)

            def forward(self, x: Any) -> Any:
                return self.linear(x)

            def training_step(self, batch: Any, batch_idx: int) -> Any:
                x, y = batch
                loss = F.cross_entropy(self(x), y)
                self.log(names["train_loss"], loss, on_step=False, on_epoch=True, batch_size=len(y))
                return loss

            def on_train_epoch_end(self) -> None:
                if fail_when is not None and Path(fail_when).exists():
                    raise RuntimeError(f"failing as asked: {fail_when} exists")

            def validation_step(self, batch: Any, batch_idx: int) -> None:
                x, y = batch
                logits = self(x)
                self.log(names["val_loss"], F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y))
                self.log(names["val_acc"], (logits.argmax(-1) == y).float().mean(), on_epoch=True,
                         batch_size=len(y))

            def configure_optimizers(self) -> Any:
                return torch.optim.SGD(self.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])

        module = WineLogReg()
        module.metric_names = names  # for evaluate()
        return module

    def evaluate(self, module: Any, datamodule: Any) -> dict[str, float]:
        import torch
        from torch.nn import functional as F

        module.eval()
        xs, ys = zip(*datamodule.test_dataloader(), strict=True)
        x, y = torch.cat(xs), torch.cat(ys)
        with torch.no_grad():
            logits = module(x)
        accuracy = (logits.argmax(-1) == y).float().mean()
        names = getattr(module, "metric_names", {})
        return {names.get("test_loss", "test_loss"): float(F.cross_entropy(logits, y)),
                names.get("test_acc", "test_acc"): float(accuracy)}
