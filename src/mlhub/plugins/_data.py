"""Data helpers of the built-ins: a seeded three-way split, the dataset fingerprint and an array DataModule.

numpy, torch and lightning are imported inside the functions; the DataModule class is made on first use.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlhub.plugins.protocol import DatasetVersion

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

#: Version of the fingerprint's layout; part of what is hashed, so a new layout never collides with an old one.
FINGERPRINT_FORMAT = "mlhub-dataset-v1"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Indices of the train, validation and fixed held-out test examples."""

    train: npt.NDArray[np.int64]
    val: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]


def split_indices(num_examples: int, *, val_fraction: float, test_fraction: float, split_seed: int) -> Split:
    """A permutation seeded by split_seed, cut into test (first), val, then train; the same inputs give
    the same split on every machine (numpy's PCG64 is platform independent)."""
    import numpy as np

    order = np.random.default_rng(split_seed).permutation(num_examples).astype(np.int64)
    n_test = max(1, round(num_examples * test_fraction))
    n_val = max(1, round(num_examples * val_fraction))
    return Split(train=np.sort(order[n_test + n_val:]), val=np.sort(order[n_test:n_test + n_val]),
                 test=np.sort(order[:n_test]))


def dataset_version(name: str, arrays: Mapping[str, npt.NDArray[Any]], params: Mapping[str, Any]) -> DatasetVersion:
    """The fingerprint of `arrays` (in the given order) and the parameters that split and shape them.

    Hashed: a JSON header (format, each array's name, dtype with byte order, shape, and `params`), then each
    array's C-order bytes. size_bytes is the arrays' size; num_examples the length of the first one.
    """
    import numpy as np

    header = {
        "format": FINGERPRINT_FORMAT,
        "name": name,
        "arrays": [[key, a.dtype.str, list(a.shape)] for key, a in arrays.items()],
        "params": dict(params),
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    digest.update(b"\n")
    for a in arrays.values():
        digest.update(np.ascontiguousarray(a).tobytes(order="C"))
    first = next(iter(arrays.values()))
    return DatasetVersion(name=name, fingerprint=digest.hexdigest(),
                          size_bytes=sum(int(a.nbytes) for a in arrays.values()), num_examples=int(first.shape[0]))


@functools.cache
def array_datamodule_class() -> type[Any]:
    """The `ArrayDataModule` class (made on first use, so importing this module imports no lightning)."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class ArrayDataModule(L.LightningDataModule):
        """Serves in-memory arrays split into train (shuffled by a generator seeded from the run's seed),
        val and the fixed held-out test split (both in a fixed order)."""

        def __init__(self, features: npt.NDArray[Any], targets: npt.NDArray[Any], split: Split, *,
                     batch_size: int, loader_seed: int) -> None:
            super().__init__()
            self.features = features
            self.targets = targets
            self.split = split
            self.batch_size = batch_size
            self.loader_seed = loader_seed
            self._datasets: dict[str, Any] = {}

        def setup(self, stage: str | None = None) -> None:
            """Make the tensor datasets (once; every stage uses the same ones)."""
            if self._datasets:
                return
            for part in ("train", "val", "test"):
                index = getattr(self.split, part)
                self._datasets[part] = TensorDataset(torch.from_numpy(self.features[index]),
                                                     torch.from_numpy(self.targets[index]))
            logger.info("data split: features %s, train %d, val %d, test %d", tuple(self.features.shape),
                        len(self.split.train), len(self.split.val), len(self.split.test))

        def _loader(self, part: str, shuffle: bool) -> Any:
            self.setup()
            generator = torch.Generator().manual_seed(self.loader_seed) if shuffle else None
            return DataLoader(self._datasets[part], batch_size=self.batch_size, shuffle=shuffle,
                              generator=generator, num_workers=0)

        def train_dataloader(self) -> Any:
            """Shuffled batches of the train split."""
            return self._loader("train", shuffle=True)

        def val_dataloader(self) -> Any:
            """Batches of the validation split, in a fixed order."""
            return self._loader("val", shuffle=False)

        def test_dataloader(self) -> Any:
            """Batches of the held-out test split, in a fixed order."""
            return self._loader("test", shuffle=False)

        def test_tensors(self) -> tuple[Any, Any]:
            """The whole held-out test split as (features, targets) tensors."""
            self.setup()
            features, targets = self._datasets["test"].tensors
            return features, targets

    return ArrayDataModule
