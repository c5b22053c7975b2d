"""store_from_uri / resolve_object_uri: file:// roots and object URIs; other schemes are named and refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlhub.artifacts import (
    LocalArtifactStore,
    UnsupportedArtifactUri,
    resolve_object_uri,
    store_from_uri,
)
from mlhub.errors import InvalidInput


def test_a_file_uri_opens_the_local_store(tmp_path: Path) -> None:
    original = LocalArtifactStore(tmp_path / "with space")
    stored = original.put_bytes(b"hello")
    assert original.root_uri.startswith("file:///") and "%20" in original.root_uri

    reopened = store_from_uri(original.root_uri)
    assert isinstance(reopened, LocalArtifactStore) and reopened.root == original.root
    assert reopened.read_bytes(stored.sha256) == b"hello"
    assert store_from_uri(f"file://localhost{original.root}").read_bytes(stored.sha256) == b"hello"


def test_a_plain_path_is_a_local_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = store_from_uri("artifacts")
    assert isinstance(store, LocalArtifactStore) and store.root == tmp_path / "artifacts"


def test_an_object_uri_resolves_to_its_store_and_sha256(tmp_path: Path) -> None:
    stored = LocalArtifactStore(tmp_path / "store").put_bytes(b"model bytes")
    store, sha256 = resolve_object_uri(stored.uri)
    assert sha256 == stored.sha256 and store.read_bytes(sha256) == b"model bytes"
    with pytest.raises(InvalidInput, match="does not name an object"):
        resolve_object_uri((tmp_path / "store").as_uri())
    with pytest.raises(InvalidInput, match="sha256 must be"):
        resolve_object_uri((tmp_path / "objects" / "ab" / "not-hex").as_uri())


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://bucket/artifacts", "s3:// is not supported yet (supported: file://)"),
        ("gs://bucket/artifacts", "gs:// is not supported (supported: file://)"),
        ("https://example.com/a", "https:// is not supported"),
    ],
)
def test_other_schemes_are_refused_by_name(uri: str, message: str) -> None:
    with pytest.raises(UnsupportedArtifactUri) as caught:
        store_from_uri(uri)
    assert message in str(caught.value) and uri in str(caught.value)
    assert caught.value.code == "UNSUPPORTED_ARTIFACT_URI" and isinstance(caught.value, InvalidInput)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file://server/share/artifacts", "on another host"),
        ("file:relative/path", "must be absolute"),
        ("file:///tmp/a?x=1", "no query or fragment"),
        ("", "non-empty string"),
    ],
)
def test_malformed_file_uris_are_invalid_input(uri: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        store_from_uri(uri)
