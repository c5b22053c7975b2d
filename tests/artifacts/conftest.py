"""Fixtures of the artifact store tests: a fresh store in the test's temporary folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mlhub.artifacts import LocalArtifactStore


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    """An empty local store under tmp_path/store (not created yet: the constructor does no I/O)."""
    return LocalArtifactStore(tmp_path / "store")


Corrupt = Callable[..., None]


def _corrupt(path: Path, *, truncate: bool = False) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    if truncate:
        del data[-1]
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def corrupt() -> Corrupt:
    """Changes an object's bytes on disk behind the store's back: `corrupt(path, truncate=False)` flips one
    byte in the middle, `truncate=True` drops the last one."""
    return _corrupt
