"""One tiny Lightning fit (CPU, 2 epochs of 5 batches, 2 validation batches each) that the tests of the one
MLHubLogger run through each of its sinks (an SDK Run, the worker's JobMetrics), and what each must store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: (step, epoch) of every point of each key the fit logs: Lightning's global step, its "epoch" entry.
EXPECTED = {"train_loss": [(s, s // 5) for s in range(10)], "val_loss": [(4, 0), (9, 1)]}


def tiny_module() -> Any:
    """A LightningModule class: a 3-4-1 MLP logging train_loss and val_loss; hyperparameters lr and hidden."""
    import lightning as L
    import torch

    class Tiny(L.LightningModule):
        def __init__(self, lr: float = 0.05, hidden: int = 4) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])

    return Tiny


def fit_tiny(logger: Any, root: Path) -> None:
    """Run the tiny fit with `logger` (seeded: the same data every time)."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    x = torch.randn(64, 3)
    data = TensorDataset(x, x.sum(dim=1, keepdim=True))
    trainer = L.Trainer(max_epochs=2, limit_train_batches=5, limit_val_batches=2, log_every_n_steps=1,
                        logger=logger, accelerator="cpu", enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=root)
    trainer.fit(tiny_module()(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
