"""Torch helpers of the built-ins: the MLP, its optimizer, a base LightningModule and a verified ONNX export.

torch and lightning are imported inside the functions; classes are made on first use (functools.cache).
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: What an ONNX export's outputs may differ from torch's by, element-wise.
ONNX_ATOL = 1e-4

logger = logging.getLogger(__name__)


def build_mlp(input_size: int, hidden_sizes: list[int], output_size: int, *, dropout: float,
              activation: str) -> Any:
    """Linear -> activation -> dropout per hidden layer, then a linear output layer (a torch.nn.Sequential)."""
    from torch import nn

    activations: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}
    layers: list[nn.Module] = []
    width = input_size
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), activations[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, output_size))
    return nn.Sequential(*layers)


def build_optimizer(parameters: Any, hparams: Mapping[str, Any]) -> Any:
    """The optimizer named by hparams["optimizer"] (adam, adamw, sgd) with lr, weight_decay (and momentum)."""
    import torch

    name, lr, decay = hparams["optimizer"], hparams["lr"], hparams["weight_decay"]
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, weight_decay=decay, momentum=hparams["momentum"])
    raise ValueError(f"unknown optimizer {name!r}")  # the params reader refuses it first


@functools.cache
def mlp_module_class() -> type[Any]:
    """The `MLPModule` base class: an MLP in `self.net`, its hyperparameters saved, its optimizer built."""
    import lightning as L

    class MLPModule(L.LightningModule):
        """Base of the built-in modules: `self.net` is the MLP described by the hyperparameters."""

        def __init__(self, *, input_size: int, output_size: int, hidden_sizes: list[int], dropout: float,
                     activation: str, optimizer: str, lr: float, weight_decay: float, momentum: float,
                     **extra: Any) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = build_mlp(input_size, hidden_sizes, output_size, dropout=dropout, activation=activation)

        def configure_optimizers(self) -> Any:
            """One optimizer over all parameters, as the config names it."""
            return build_optimizer(self.parameters(), self.hparams)

    return MLPModule


def _probe_batch(batch: int, input_size: int) -> Any:
    """A fixed, seed-free input batch (a smooth pattern in [-2, 2]) to compare torch and onnxruntime on."""
    import torch

    steps = torch.arange(batch * input_size, dtype=torch.float32).reshape(batch, input_size)
    return 2.0 * torch.sin(steps * 0.37)


def _export(module: Any, example: Any, path: Path) -> None:
    """torch.onnx.export with a dynamic batch axis: the default exporter, else the legacy (TorchScript) one.

    The default (dynamo) exporter needs onnxscript, which an offline machine may lack.
    """
    import torch

    options: dict[str, Any] = {"input_names": ["input"], "output_names": ["output"],
                               "dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}}}
    try:
        torch.onnx.export(module, (example,), str(path), **options)
        return
    except Exception as e:  # ModuleNotFoundError (onnxscript) or an unsupported construct: try the legacy one
        logger.info("default ONNX exporter failed (%s: %s); using the legacy exporter", type(e).__name__, e)
    with warnings.catch_warnings():  # the legacy exporter warns that it is deprecated
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(module, (example,), str(path), dynamo=False, **options)


def export_verified_onnx(module: Any, path: Path, input_size: int) -> bool:
    """Export `module` (in eval mode) to `path` and check onnxruntime against torch on a fixed batch.

    True when every output matches within ONNX_ATOL, on a batch size other than the one exported with (so the
    batch axis is really dynamic). On a failure or a mismatch the file is removed and False is returned.
    """
    import numpy as np
    import onnxruntime  # type: ignore[import-untyped]
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = module.training
    device = module.device
    module.eval()
    try:
        module.cpu()
        with torch.no_grad():
            _export(module, _probe_batch(2, input_size), path)
            probe = _probe_batch(7, input_size)
            expected = module(probe).numpy()
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (actual,) = session.run(None, {session.get_inputs()[0].name: probe.numpy()})
        matches = actual.shape == expected.shape and bool(np.allclose(actual, expected, rtol=0.0, atol=ONNX_ATOL))
        worst = float(np.max(np.abs(actual - expected))) if actual.shape == expected.shape else math.inf
        logger.info("ONNX export %s: output %s, max abs difference %.3g", path.name, tuple(actual.shape), worst)
    except Exception as e:
        logger.warning("ONNX export to %s failed: %s: %s", path, type(e).__name__, e)
        matches = False
    finally:
        module.to(device)
        module.train(was_training)
    if not matches:
        path.unlink(missing_ok=True)  # never leave an unverified model behind
    return matches
