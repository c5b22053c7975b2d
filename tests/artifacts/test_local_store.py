"""LocalArtifactStore specifics: no I/O in the constructor, the on-disk layout, read-only objects.

The store contract (round trips, dedup, integrity on every read path, ...) is in test_store_contract.py,
run on this backend and on S3."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from mlhub.artifacts import LocalArtifactStore, StoredArtifact


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_constructor_does_no_io(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "absent")
    assert not (tmp_path / "absent").exists()
    assert not store.exists("0" * 64)
    assert list(store.iter_sha256()) == []
    assert store.gc_temp(0) == 0
    assert not (tmp_path / "absent").exists()


def test_bytes_round_trip_and_layout(store: LocalArtifactStore) -> None:
    data = b"weights \x00\x01\x02" * 1000
    stored = store.put_bytes(data)
    sha = _sha(data)
    path = store.root / "objects" / sha[:2] / sha[2:]
    assert stored == StoredArtifact(sha256=sha, size_bytes=len(data), uri=path.as_uri())
    assert stored.uri.startswith("file:///") and store.uri(sha) == stored.uri
    assert path.read_bytes() == data
    assert store.exists(sha)
    assert store.read_bytes(sha) == data
    with store.open(sha) as stream:
        assert stream.read() == data
    assert store.verify(sha) == stored
    assert list(store.iter_sha256()) == [sha]
    assert list((store.root / "tmp").iterdir()) == []  # no temp left behind


def test_objects_are_read_only_on_disk(store: LocalArtifactStore) -> None:
    stored = store.put_bytes(b"frozen")
    mode = store.object_path(stored.sha256).stat().st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
