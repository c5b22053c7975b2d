"""Opening a store from a URI: `file://` roots (or plain paths) and `s3://bucket/prefix`; or from the Settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from mlhub.artifacts.base import ArtifactStore, validate_sha256
from mlhub.artifacts.errors import UnsupportedArtifactUri
from mlhub.artifacts.local import LocalArtifactStore
from mlhub.artifacts.s3 import S3ArtifactStore, validate_bucket, validate_prefix
from mlhub.errors import InvalidInput

if TYPE_CHECKING:
    from mlhub.settings import Settings

SUPPORTED = "file://, s3://"


def _split(uri: str) -> tuple[str, str, str]:
    """(scheme, netloc, path) of a store or object URI; InvalidInput or UnsupportedArtifactUri naming it."""
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidInput(f"artifact store URI must be a non-empty string, got {uri!r}")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in ("", "file", "s3"):
        raise UnsupportedArtifactUri(f"artifact store URI {uri!r}: {scheme}:// is not supported "
                                     f"(supported: {SUPPORTED})")
    if scheme and (parts.query or parts.fragment):
        raise InvalidInput(f"artifact store URI {uri!r}: a {scheme}:// URI takes no query or fragment")
    return scheme, parts.netloc, parts.path


def _local_path(uri: str, netloc: str, path: str) -> Path:
    """The absolute path of a `file://` URI; errors name the URI."""
    if netloc not in ("", "localhost"):
        raise InvalidInput(f"artifact store URI {uri!r}: file:// URIs on another host ({netloc}) "
                           "are not supported; mount it and use a local path")
    local = Path(unquote(path))
    if not local.is_absolute():
        raise InvalidInput(f"artifact store URI {uri!r}: the path must be absolute (file:///...)")
    return local


def _s3_location(uri: str, netloc: str, path: str) -> tuple[str, str]:
    """(bucket, key prefix) of an `s3://bucket/prefix` URI; errors name the URI."""
    if not netloc:
        raise InvalidInput(f"artifact store URI {uri!r}: an s3:// URI names a bucket (s3://bucket/prefix)")
    return validate_bucket(netloc, uri), validate_prefix(unquote(path), uri)


def store_from_uri(uri: str, *, s3_endpoint_url: str | None = None) -> ArtifactStore:
    """The store whose root is `uri`; no I/O.

    `file:///abs/root` (or a plain path, made absolute) opens a LocalArtifactStore; `s3://bucket/prefix` an
    S3ArtifactStore (at `s3_endpoint_url` if given, else where boto3's standard AWS_* configuration points).
    Any other scheme raises UnsupportedArtifactUri naming it.
    """
    scheme, netloc, path = _split(uri)
    if scheme == "":  # a plain path, as MLflow accepts for a local artifact root; relative ones made absolute
        return LocalArtifactStore(Path(uri).absolute())
    if scheme == "file":
        return LocalArtifactStore(_local_path(uri, netloc, path))
    bucket, prefix = _s3_location(uri, netloc, path)
    return S3ArtifactStore(bucket, prefix, endpoint_url=s3_endpoint_url)


def store_from_settings(settings: Settings) -> ArtifactStore:
    """The configured store: MLHUB_ARTIFACT_URI (default file://<data_dir>/artifacts), MLHUB_S3_ENDPOINT_URL."""
    return store_from_uri(settings.resolved_artifact_uri, s3_endpoint_url=settings.s3_endpoint_url)


def resolve_object_uri(uri: str, *, s3_endpoint_url: str | None = None) -> tuple[ArtifactStore, str]:
    """(store, sha256) for an object URI as `uri()` returns it and an `ArtifactStored` event carries.

    `<root>/objects/<2 hex>/<62 hex>` with a `file://` root (or a plain path) or an `s3://bucket/prefix` root.
    """
    scheme, netloc, path = _split(uri)
    if scheme == "s3":
        bucket, key = _s3_location(uri, netloc, path)
        segments = key.split("/")
        if len(segments) < 3 or segments[-3] != "objects" or len(segments[-2]) != 2:
            raise InvalidInput(f"artifact URI {uri!r} does not name an object "
                               "(s3://bucket/<prefix>/objects/<2 hex>/<62 hex>)")
        sha256 = validate_sha256(segments[-2] + segments[-1])
        return S3ArtifactStore(bucket, "/".join(segments[:-3]), endpoint_url=s3_endpoint_url), sha256
    local = Path(uri).absolute() if scheme == "" else _local_path(uri, netloc, path)
    prefix, rest = local.parent.name, local.name
    if local.parent.parent.name != "objects" or len(prefix) != 2:
        raise InvalidInput(f"artifact URI {uri!r} does not name an object (<root>/objects/<2 hex>/<62 hex>)")
    sha256 = validate_sha256(prefix + rest)
    return LocalArtifactStore(local.parent.parent.parent), sha256
