"""store_from_uri / resolve_object_uri: file:// and s3:// roots and object URIs; other schemes are named and
refused; store_from_settings opens the store MLHUB_ARTIFACT_URI names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlhub.artifacts import (
    LocalArtifactStore,
    S3ArtifactStore,
    UnsupportedArtifactUri,
    resolve_object_uri,
    store_from_settings,
    store_from_uri,
)
from mlhub.errors import InvalidInput
from mlhub.settings import Settings


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
        ("gs://bucket/artifacts", "gs:// is not supported (supported: file://, s3://)"),
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


def test_an_s3_uri_opens_an_s3_store_without_io() -> None:
    # Port 9 (discard) on loopback: nothing answers, and nothing is asked: the constructor does no I/O.
    store = store_from_uri("s3://my-bucket/team/artifacts/", s3_endpoint_url="http://127.0.0.1:9")
    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix, store.endpoint_url) == ("my-bucket", "team/artifacts", "http://127.0.0.1:9")
    assert store.root_uri == "s3://my-bucket/team/artifacts"
    sha = "ab" + "c" * 62
    assert store.uri(sha) == f"s3://my-bucket/team/artifacts/objects/ab/{'c' * 62}"
    bare = store_from_uri("s3://my-bucket")
    assert isinstance(bare, S3ArtifactStore) and bare.prefix == "" and bare.endpoint_url is None
    assert bare.uri(sha) == f"s3://my-bucket/objects/ab/{'c' * 62}"


def test_importing_the_artifacts_package_does_not_import_boto3() -> None:
    code = ("import sys; from mlhub.artifacts import store_from_uri; store_from_uri('s3://b-1/p'); "
            "print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://", "names a bucket"),
        ("s3:///prefix", "names a bucket"),
        ("s3://Bad_Bucket/p", "'Bad_Bucket' is not a valid S3 bucket name"),
        ("s3://ab/p", "'ab' is not a valid S3 bucket name"),
        ("s3://bucket/a//b", "empty, '.' or '..' segment"),
        ("s3://bucket/a/../b", "empty, '.' or '..' segment"),
        ("s3://bucket/p?versionId=1", "no query or fragment"),
    ],
)
def test_malformed_s3_uris_are_invalid_input(uri: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        store_from_uri(uri)
    assert message in str(caught.value) and repr(uri) in str(caught.value)


def test_an_s3_object_uri_resolves_to_its_store_and_sha256(s3_store: S3ArtifactStore, moto_url: str) -> None:
    stored = s3_store.put_bytes(b"model bytes in s3")
    store, sha256 = resolve_object_uri(stored.uri, s3_endpoint_url=moto_url)
    assert isinstance(store, S3ArtifactStore) and sha256 == stored.sha256
    assert (store.bucket, store.prefix) == (s3_store.bucket, s3_store.prefix)
    assert store.read_bytes(sha256) == b"model bytes in s3"
    with pytest.raises(InvalidInput, match="does not name an object"):
        resolve_object_uri(s3_store.root_uri)
    with pytest.raises(InvalidInput, match="does not name an object"):
        resolve_object_uri(f"s3://{s3_store.bucket}/objects/abc/{'0' * 61}")
    with pytest.raises(InvalidInput, match="sha256 must be"):
        resolve_object_uri(f"s3://{s3_store.bucket}/p/objects/ab/not-hex")


def test_settings_default_to_the_local_store_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLHUB_ARTIFACT_URI", raising=False)
    monkeypatch.delenv("MLHUB_S3_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("MLHUB_DATA_DIR", str(tmp_path / "data"))
    settings = Settings(_env_file=None)
    assert settings.resolved_artifact_uri == (tmp_path / "data" / "artifacts").as_uri()
    store = store_from_settings(settings)
    assert isinstance(store, LocalArtifactStore) and store.root == tmp_path / "data" / "artifacts"


def test_settings_open_the_s3_store_mlhub_artifact_uri_names(
    s3_store: S3ArtifactStore, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLHUB_ARTIFACT_URI", f"s3://{s3_store.bucket}/from-settings")
    monkeypatch.setenv("MLHUB_S3_ENDPOINT_URL", moto_url)
    store = store_from_settings(Settings(_env_file=None))
    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix, store.endpoint_url) == (s3_store.bucket, "from-settings", moto_url)
    stored = store.put_bytes(b"configured")
    assert stored.uri == f"s3://{s3_store.bucket}/from-settings/objects/{stored.sha256[:2]}/{stored.sha256[2:]}"
    assert s3_store.client.get_object(Bucket=s3_store.bucket, Key=stored.uri.split("/", 3)[3])["Body"].read() \
        == b"configured"


@pytest.mark.parametrize("bad", ["127.0.0.1:9000", "ftp://host", "http://host/path"])
def test_a_bad_s3_endpoint_setting_is_named(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLHUB_S3_ENDPOINT_URL", bad)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert "s3_endpoint_url" in str(caught.value) and bad in str(caught.value)
