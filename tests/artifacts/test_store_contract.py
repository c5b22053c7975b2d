"""The ArtifactStore contract, run on every backend (local files and S3 through a real moto server): round
trips, dedup, streaming of large files, integrity on every read path, missing objects, bad input."""

from __future__ import annotations

import hashlib
import random
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.artifacts.conftest import Backend

from mlhub.artifacts import CHUNK_SIZE, ArtifactIntegrityError, ArtifactNotFound, ArtifactStore, StoredArtifact
from mlhub.errors import InvalidInput, MlhubError

MiB = 1024 * 1024


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def test_bytes_round_trip(backend: Backend) -> None:
    store = backend.store
    data = b"weights \x00\x01\x02" * 1000
    stored = store.put_bytes(data)
    sha = _sha(data)
    assert stored == StoredArtifact(sha256=sha, size_bytes=len(data), uri=store.uri(sha))
    assert stored.uri.startswith({"local": "file:///", "s3": "s3://"}[backend.name])
    assert store.exists(sha)
    assert store.read_bytes(sha) == data
    with store.open(sha) as stream:
        assert stream.read() == data
    assert store.verify(sha) == stored
    assert list(store.iter_sha256()) == [sha]
    assert backend.object_names() == [f"{sha[:2]}/{sha[2:]}"]  # the same layout on both backends
    assert backend.leftovers() == []


def test_empty_content(backend: Backend) -> None:
    stored = backend.store.put_bytes(b"")
    assert stored.sha256 == _sha(b"") and stored.size_bytes == 0
    assert backend.store.read_bytes(stored.sha256) == b""


@pytest.mark.timeout(120)
def test_large_file_round_trip_streams(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    source = tmp_path / "model.ckpt"
    rng = random.Random(7)
    digest = hashlib.sha256()
    with source.open("wb") as f:
        for _ in range(50):
            chunk = rng.randbytes(MiB)
            digest.update(chunk)
            f.write(chunk)
    expected = digest.hexdigest()

    store.exists(expected)  # builds the S3 client first: loading boto3's service model is not streaming
    tracemalloc.start()
    try:
        stored = store.put_file(source)
        dest = store.get_to(stored.sha256, tmp_path / "out" / "model.ckpt")
        size = 0
        with store.open(stored.sha256) as stream:
            while chunk := stream.read(CHUNK_SIZE):
                size += len(chunk)
        verified = store.verify(stored.sha256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert stored.sha256 == expected and stored.size_bytes == 50 * MiB
    assert size == 50 * MiB and verified == stored
    assert dest == tmp_path / "out" / "model.ckpt" and _file_sha(dest) == expected
    # Local files stream in 1 MiB chunks; S3 holds one 5 MiB part at a time (and botocore copies of it).
    limit = {"local": 8 * MiB, "s3": 4 * 5 * MiB}[backend.name]
    assert peak < limit, f"peak Python memory {peak / MiB:.1f} MiB: the 50 MiB file was not streamed"
    assert backend.leftovers() == []


def test_same_content_is_stored_once(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    (tmp_path / "a.bin").write_bytes(b"same content")
    first = store.put_bytes(b"same content")
    second = store.put_file(tmp_path / "a.bin")
    third = store.put_bytes(b"same content")
    assert first == second == third
    assert list(store.iter_sha256()) == [first.sha256]
    assert backend.object_names() == [f"{first.sha256[:2]}/{first.sha256[2:]}"]
    assert backend.leftovers() == []


def test_get_to_replaces_an_existing_file(backend: Backend, tmp_path: Path) -> None:
    stored = backend.store.put_bytes(b"new")
    (tmp_path / "dest").write_bytes(b"old content")
    backend.store.get_to(stored.sha256, tmp_path / "dest")
    assert (tmp_path / "dest").read_bytes() == b"new"


def test_put_dir_stores_every_file(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    folder = tmp_path / "checkpoint"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"model")
    (folder / "sub" / "optimizer.pt").write_bytes(b"optim")
    (folder / "sub" / "copy.pt").write_bytes(b"model")
    stored = store.put_dir(folder)
    assert [rel for rel, _ in stored] == ["model.pt", "sub/copy.pt", "sub/optimizer.pt"]
    assert {rel: store.read_bytes(a.sha256) for rel, a in stored} == {
        "model.pt": b"model", "sub/copy.pt": b"model", "sub/optimizer.pt": b"optim"}
    assert len(list(store.iter_sha256())) == 2
    with pytest.raises(InvalidInput, match="not a directory"):
        store.put_dir(folder / "model.pt")


def _read_bytes(store: ArtifactStore, sha: str, tmp: Path) -> Any:
    return store.read_bytes(sha)


def _read_open_all(store: ArtifactStore, sha: str, tmp: Path) -> Any:
    with store.open(sha) as stream:
        return stream.read()


def _read_open_chunks(store: ArtifactStore, sha: str, tmp: Path) -> Any:
    with store.open(sha) as stream:
        while stream.read(4096):
            pass


def _get_to(store: ArtifactStore, sha: str, tmp: Path) -> Any:
    return store.get_to(sha, tmp / "restored.bin")


def _verify(store: ArtifactStore, sha: str, tmp: Path) -> Any:
    return store.verify(sha)


READ_PATHS: list[Callable[[ArtifactStore, str, Path], Any]] = [
    _read_bytes, _read_open_all, _read_open_chunks, _get_to, _verify]


@pytest.mark.parametrize("read", READ_PATHS, ids=lambda f: f.__name__.lstrip("_"))
@pytest.mark.parametrize("truncate", [False, True], ids=["flipped", "truncated"])
def test_a_changed_object_is_refused_on_every_read_path(
    backend: Backend, tmp_path: Path, read: Callable[[ArtifactStore, str, Path], Any], truncate: bool,
) -> None:
    data = bytes(range(256)) * 40  # 10 KiB: more than one 4 KiB read
    stored = backend.store.put_bytes(data)
    backend.corrupt(stored.sha256, truncate)
    (tmp_path / "restored.bin").write_bytes(b"previous")

    with pytest.raises(ArtifactIntegrityError) as caught:
        read(backend.store, stored.sha256, tmp_path)

    error = caught.value
    location = backend.location(stored.sha256)
    assert error.code == "ARTIFACT_INTEGRITY_ERROR" and isinstance(error, MlhubError)
    assert stored.sha256 in str(error) and location in str(error)
    assert error.sha256 == stored.sha256 and error.location == location
    changed = bytearray(data)
    if truncate:
        del changed[-1]
    else:
        changed[len(changed) // 2] ^= 0xFF
    assert error.actual_sha256 == _sha(bytes(changed)) and error.size_bytes == len(changed)
    # get_to left the destination as it was, and no temp file beside it.
    assert (tmp_path / "restored.bin").read_bytes() == b"previous"
    assert not list(tmp_path.glob(".restored.bin.*"))


def test_a_reader_keeps_refusing_after_the_mismatch(backend: Backend) -> None:
    stored = backend.store.put_bytes(b"x" * 100)
    backend.corrupt(stored.sha256, False)
    with backend.store.open(stored.sha256) as stream:
        assert len(stream.read(100)) == 100  # the bytes come through; the check is at the end
        for _ in range(2):
            with pytest.raises(ArtifactIntegrityError):
                stream.read(1)


def test_putting_again_heals_an_object_of_the_wrong_size(backend: Backend) -> None:
    stored = backend.store.put_bytes(b"precious" * 10)
    backend.corrupt(stored.sha256, True)
    assert backend.store.put_bytes(b"precious" * 10) == stored
    assert backend.store.verify(stored.sha256) == stored


@pytest.mark.parametrize("read", READ_PATHS, ids=lambda f: f.__name__.lstrip("_"))
def test_a_missing_object_is_not_found(
    backend: Backend, tmp_path: Path, read: Callable[[ArtifactStore, str, Path], Any]
) -> None:
    backend.store.put_bytes(b"something else")
    sha = _sha(b"never stored")
    assert not backend.store.exists(sha)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ArtifactNotFound) as caught:
        read(backend.store, sha, dest)
    assert caught.value.code == "ARTIFACT_NOT_FOUND" and sha in str(caught.value)
    assert backend.location(sha) in str(caught.value)
    assert list(dest.iterdir()) == []  # get_to created nothing


BAD_SHAS = ["", "abc", "A" * 64, "g" * 64, "0" * 63, "0" * 65, "../" + "0" * 61, None, 12]


@pytest.mark.parametrize("bad", BAD_SHAS, ids=repr)
def test_a_malformed_sha256_is_invalid_input(backend: Backend, tmp_path: Path, bad: Any) -> None:
    store = backend.store
    calls: list[Callable[[], object]] = [
        lambda: store.read_bytes(bad), lambda: store.open(bad), lambda: store.exists(bad),
        lambda: store.uri(bad), lambda: store.verify(bad), lambda: store.get_to(bad, tmp_path / "x"),
    ]
    for call in calls:
        with pytest.raises(InvalidInput, match="sha256 must be 64 lowercase hex digits") as caught:
            call()
        assert repr(bad) in str(caught.value)
    assert not (tmp_path / "x").exists()


def test_bad_sources_and_destinations_are_invalid_input(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    with pytest.raises(InvalidInput, match="is a directory, not a file"):
        store.put_file(tmp_path)
    with pytest.raises(InvalidInput, match="does not exist"):
        store.put_file(tmp_path / "missing.bin")
    with pytest.raises(InvalidInput, match="must be bytes"):
        store.put_bytes("text")  # type: ignore[arg-type]
    stored = store.put_bytes(b"data")
    with pytest.raises(InvalidInput, match="is a directory; name the file"):
        store.get_to(stored.sha256, tmp_path)
    with pytest.raises(InvalidInput, match="older_than_s"):
        store.gc_temp(-1)
