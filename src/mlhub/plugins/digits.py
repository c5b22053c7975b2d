"""Built-in plugin `digits-mlp`: an MLP classifier on scikit-learn's bundled digits (8x8 images, 10 classes).

Config (see configs/digits-mlp.yaml):
- model: hidden_sizes, dropout, activation (relu|gelu|tanh|silu), optimizer (adam|adamw|sgd), lr,
  weight_decay, momentum (sgd); input_size (64) and num_classes (10) may be given and must match the data.
- data: name `sklearn-digits`; params val_fraction, test_fraction (the fixed held-out split, default 0.2),
  batch_size, normalize (scale pixels 0..16 to 0..1, inside the model so an ONNX export takes raw pixels);
  split_seed.

Logs train_loss, val_loss and val_acc per epoch; `evaluate` gives test_acc and test_loss.
torch, lightning and scikit-learn are imported only when a method needs them.
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

DATASET = "sklearn-digits"
NUM_FEATURES = 64
NUM_CLASSES = 10
#: The largest pixel value of the digits images (normalize divides by it).
MAX_PIXEL = 16.0


@dataclass(frozen=True)
class DigitsParams:
    """The plugin's settings, read from a config snapshot."""

    mlp: MLPParams
    split: SplitParams
    normalize: bool

    @classmethod
    def read(cls, config: Mapping[str, Any]) -> DigitsParams:
        """Read and check `model` and `data` of `config` (PluginConfigError names the bad field)."""
        model = Section(config.get("model", {}), "model", MLP_KEYS | {"input_size", "num_classes"})
        model.fixed("input_size", NUM_FEATURES)
        model.fixed("num_classes", NUM_CLASSES)
        data_name(config, DATASET)
        data = Section(data_section(config).get("params", {}), "data.params", SPLIT_KEYS | {"normalize"})
        return cls(
            mlp=MLPParams.read(model, hidden_sizes=(128, 64), dropout=0.1, optimizer="adamw", lr=1e-3),
            split=SplitParams.read(config, data, batch_size=64),
            normalize=data.boolean("normalize", True),
        )


@functools.cache
def digits_module_class() -> type[Any]:
    """The `DigitsMLP` LightningModule class (made on first use)."""
    import torch
    from torch.nn import functional as F

    class DigitsMLP(mlp_module_class()):  # type: ignore[misc]
        """MLP over the 64 pixels (scaled by `input_scale`), cross-entropy loss, logits out."""

        def __init__(self, *, input_scale: float = 1.0, **hparams: Any) -> None:
            super().__init__(input_scale=input_scale, **hparams)
            self.register_buffer("input_scale", torch.tensor(input_scale, dtype=torch.float32))

        def forward(self, pixels: Any) -> Any:
            """Logits (batch, 10) for raw pixel values (batch, 64)."""
            return self.net(pixels * self.input_scale)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            pixels, labels = batch
            loss = F.cross_entropy(self(pixels), labels)
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(labels))
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            pixels, labels = batch
            logits = self(pixels)
            self.log("val_loss", F.cross_entropy(logits, labels), on_step=False, on_epoch=True,
                     batch_size=len(labels))
            accuracy = (logits.argmax(dim=1) == labels).float().mean()
            self.log("val_acc", accuracy, on_step=False, on_epoch=True, batch_size=len(labels))

    return DigitsMLP


def load_digits_arrays() -> tuple[Any, Any]:
    """The digits in scikit-learn's order: pixels as little-endian float32 (n, 64), labels as int64 (n,)."""
    import numpy as np
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    digits = load_digits()
    return np.asarray(digits.data, dtype="<f4"), np.asarray(digits.target, dtype="<i8")


class DigitsMLPPlugin(Plugin):
    """`digits-mlp`: classify scikit-learn's 8x8 digits with an MLP."""

    name = "digits-mlp"

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Check `model` and `data` (no torch)."""
        DigitsParams.read(config)

    def build_datamodule(self, config: Mapping[str, Any]) -> DataModuleSpec:
        """The digits split by data.split_seed; the fingerprint covers the arrays and the split parameters."""
        params = DigitsParams.read(config)
        features, labels = load_digits_arrays()
        split = params.split
        version = dataset_version(DATASET, {"features": features, "labels": labels}, {
            "split_seed": split.split_seed, "val_fraction": split.val_fraction,
            "test_fraction": split.test_fraction, "normalize": params.normalize,
        })
        indices = split_indices(len(labels), val_fraction=split.val_fraction, test_fraction=split.test_fraction,
                                split_seed=split.split_seed)
        datamodule = array_datamodule_class()(features, labels, indices, batch_size=split.batch_size,
                                              loader_seed=_run_seed(config))
        return DataModuleSpec(datamodule=datamodule, dataset_version=version)

    def build_module(self, config: Mapping[str, Any]) -> Any:
        """A fresh DigitsMLP (weights drawn from torch's global RNG: seed it first)."""
        params = DigitsParams.read(config)
        return digits_module_class()(input_size=NUM_FEATURES, output_size=NUM_CLASSES,
                                     input_scale=1.0 / MAX_PIXEL if params.normalize else 1.0,
                                     **params.mlp.as_dict())

    def evaluate(self, module: Any, datamodule: Any) -> dict[str, float]:
        """test_acc and test_loss on the fixed held-out split (one batch, eval mode, no randomness)."""
        import torch
        from torch.nn import functional as F

        pixels, labels = datamodule.test_tensors()
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                logits = module(pixels.to(module.device)).cpu()
        finally:
            module.train(was_training)
        return {
            "test_acc": float((logits.argmax(dim=1) == labels).double().mean()),
            "test_loss": float(F.cross_entropy(logits, labels)),
        }

    def export_onnx(self, module: Any, path: Path) -> bool:
        """ONNX with input (batch, 64) raw pixels and output (batch, 10) logits, verified against torch."""
        return export_verified_onnx(module, path, NUM_FEATURES)
