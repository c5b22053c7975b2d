"""Built-in plugin `diabetes-regression`: MLP regression on scikit-learn's bundled diabetes data.

442 patients, 10 standardized features; the target is disease progression one year later.

Config (see configs/diabetes-regression.yaml):
- model: hidden_sizes ([] gives a linear model), dropout, activation, optimizer (adam|adamw|sgd), lr,
  weight_decay, momentum (sgd), loss (mse); input_size (10) may be given and must match the data.
- data: name `sklearn-diabetes`; params val_fraction, test_fraction (the fixed held-out split, default 0.2),
  batch_size, standardize_target (train on the target standardized by the train split's mean and standard
  deviation; the model still predicts in the target's own units); split_seed.

Logs train_loss and val_loss (MSE, in standardized units when standardize_target) and val_rmse, val_mae,
val_r2 (target units) per epoch; `evaluate` gives test_rmse, test_mae and test_r2.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlhub.plugins._data import array_datamodule_class, dataset_version, split_indices
from mlhub.plugins._nn import export_verified_onnx, mlp_module_class
from mlhub.plugins._params import MLP_KEYS, SPLIT_KEYS, MLPParams, Section, SplitParams, data_name, data_section
from mlhub.plugins._params import run_seed as _run_seed
from mlhub.plugins.protocol import DataModuleSpec, Plugin

DATASET = "sklearn-diabetes"
NUM_FEATURES = 10
LOSSES = ("mse",)


@dataclass(frozen=True)
class DiabetesParams:
    """The plugin's settings, read from a config snapshot."""

    mlp: MLPParams
    split: SplitParams
    standardize_target: bool

    @classmethod
    def read(cls, config: Mapping[str, Any]) -> DiabetesParams:
        """Read and check `model` and `data` of `config` (PluginConfigError names the bad field)."""
        model = Section(config.get("model", {}), "model", MLP_KEYS | {"input_size", "loss"})
        model.fixed("input_size", NUM_FEATURES)
        model.choice("loss", "mse", LOSSES)
        data_name(config, DATASET)
        data = Section(data_section(config).get("params", {}), "data.params", SPLIT_KEYS | {"standardize_target"})
        return cls(
            mlp=MLPParams.read(model, hidden_sizes=(32,), dropout=0.0, optimizer="adam", lr=5e-3),
            split=SplitParams.read(config, data, batch_size=32),
            standardize_target=data.boolean("standardize_target", True),
        )


def regression_metrics(predictions: Any, targets: Any, prefix: str) -> dict[str, Any]:
    """RMSE, MAE and R^2 of 1-d tensors (computed in float64), as 0-d tensors named `<prefix>_rmse` etc."""
    predictions, targets = predictions.double(), targets.double()
    errors = predictions - targets
    total = ((targets - targets.mean()) ** 2).sum()
    return {
        f"{prefix}_rmse": (errors**2).mean().sqrt(),
        f"{prefix}_mae": errors.abs().mean(),
        f"{prefix}_r2": 1.0 - (errors**2).sum() / total,
    }


@functools.cache
def diabetes_module_class() -> type[Any]:
    """The `DiabetesRegressor` LightningModule class (made on first use)."""
    import torch
    from torch.nn import functional as F

    class DiabetesRegressor(mlp_module_class()):  # type: ignore[misc]
        """MLP regressor: the net predicts the standardized target, `forward` gives target units."""

        def __init__(self, *, target_mean: float = 0.0, target_std: float = 1.0, **hparams: Any) -> None:
            super().__init__(target_mean=target_mean, target_std=target_std, **hparams)
            self.register_buffer("target_mean", torch.tensor(target_mean, dtype=torch.float32))
            self.register_buffer("target_std", torch.tensor(target_std, dtype=torch.float32))
            self._val_outputs: list[tuple[Any, Any]] = []

        def forward(self, features: Any) -> Any:
            """Predictions (batch,) in target units for features (batch, 10)."""
            return self.net(features).squeeze(-1) * self.target_std + self.target_mean

        def _loss(self, features: Any, targets: Any) -> Any:
            standardized = (targets - self.target_mean) / self.target_std
            return F.mse_loss(self.net(features).squeeze(-1), standardized)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            features, targets = batch
            loss = self._loss(features, targets)
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(targets))
            return loss

        def on_validation_epoch_start(self) -> None:
            self._val_outputs = []

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            features, targets = batch
            self.log("val_loss", self._loss(features, targets), on_step=False, on_epoch=True,
                     batch_size=len(targets))
            self._val_outputs.append((self(features).detach(), targets))

        def on_validation_epoch_end(self) -> None:
            # RMSE and R^2 do not average over batches, so they are computed over the whole epoch's outputs.
            if not self._val_outputs:
                return
            predictions = torch.cat([p for p, _ in self._val_outputs])
            targets = torch.cat([t for _, t in self._val_outputs])
            self._val_outputs = []
            for name, value in regression_metrics(predictions, targets, "val").items():
                self.log(name, value.float(), on_epoch=True)

    return DiabetesRegressor


def load_diabetes_arrays() -> tuple[Any, Any]:
    """The diabetes data in scikit-learn's order: features as little-endian float32 (n, 10), target (n,)."""
    import numpy as np
    from sklearn.datasets import load_diabetes  # type: ignore[import-untyped]

    data = load_diabetes()
    return np.asarray(data.data, dtype="<f4"), np.asarray(data.target, dtype="<f4")


class DiabetesRegressionPlugin(Plugin):
    """`diabetes-regression`: predict diabetes progression with an MLP (MSE loss)."""

    name = "diabetes-regression"

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Check `model` and `data` (no torch)."""
        DiabetesParams.read(config)

    @staticmethod
    def _split(params: DiabetesParams, num_examples: int) -> Any:
        split = params.split
        return split_indices(num_examples, val_fraction=split.val_fraction, test_fraction=split.test_fraction,
                             split_seed=split.split_seed)

    def build_datamodule(self, config: Mapping[str, Any]) -> DataModuleSpec:
        """The data split by data.split_seed; the fingerprint covers the arrays and the split parameters."""
        params = DiabetesParams.read(config)
        features, targets = load_diabetes_arrays()
        split = params.split
        version = dataset_version(DATASET, {"features": features, "target": targets}, {
            "split_seed": split.split_seed, "val_fraction": split.val_fraction,
            "test_fraction": split.test_fraction, "standardize_target": params.standardize_target,
        })
        datamodule = array_datamodule_class()(features, targets, self._split(params, len(targets)),
                                              batch_size=split.batch_size, loader_seed=_run_seed(config))
        return DataModuleSpec(datamodule=datamodule, dataset_version=version)

    def build_module(self, config: Mapping[str, Any]) -> Any:
        """A fresh DiabetesRegressor (weights drawn from torch's global RNG: seed it first).

        With standardize_target, the target's mean and standard deviation over the train split (the same
        split build_datamodule makes) become buffers of the module, so a checkpoint or ONNX file carries them.
        """
        params = DiabetesParams.read(config)
        mean, std = 0.0, 1.0
        if params.standardize_target:
            _, targets = load_diabetes_arrays()
            train = targets[self._split(params, len(targets)).train].astype("float64")
            mean, std = float(train.mean()), float(train.std()) or 1.0
        return diabetes_module_class()(input_size=NUM_FEATURES, output_size=1, target_mean=mean, target_std=std,
                                       **params.mlp.as_dict())

    def evaluate(self, module: Any, datamodule: Any) -> dict[str, float]:
        """test_rmse, test_mae and test_r2 on the fixed held-out split (one batch, eval mode)."""
        import torch

        features, targets = datamodule.test_tensors()
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                predictions = module(features.to(module.device)).cpu()
        finally:
            module.train(was_training)
        return {name: float(value) for name, value in regression_metrics(predictions, targets, "test").items()}

    def export_onnx(self, module: Any, path: Path) -> bool:
        """ONNX with input (batch, 10) features and output (batch,) predictions, verified against torch."""
        return export_verified_onnx(module, path, NUM_FEATURES)
