"""Errors of the artifact store, each with a stable code (see `mlhub.errors`)."""

from __future__ import annotations

from pathlib import Path

from mlhub.errors import InvalidInput, MlhubError


class ArtifactNotFound(MlhubError):
    """No object with this sha256 is in the store."""

    code = "ARTIFACT_NOT_FOUND"

    def __init__(self, sha256: str, location: str) -> None:
        super().__init__(f"artifact {sha256} not found (looked for {location})")
        self.sha256 = sha256
        self.location = location


class ArtifactIntegrityError(MlhubError):
    """An object's bytes do not hash to its name: it was changed or damaged after it was stored."""

    code = "ARTIFACT_INTEGRITY_ERROR"

    def __init__(self, sha256: str, location: str | Path, actual_sha256: str, size_bytes: int) -> None:
        super().__init__(
            f"artifact {sha256} is corrupt: the object at {location} hashes to {actual_sha256} "
            f"({size_bytes} bytes); refusing to use it"
        )
        self.sha256 = sha256
        self.location = str(location)
        self.actual_sha256 = actual_sha256
        self.size_bytes = size_bytes


class UnsupportedArtifactUri(InvalidInput):
    """An artifact store URI whose scheme mlhub cannot (yet) open."""

    code = "UNSUPPORTED_ARTIFACT_URI"


class ArtifactStoreError(MlhubError):
    """A storage backend refused or failed an operation; the message names the store's URI and the operation."""

    code = "ARTIFACT_STORE_ERROR"

    def __init__(self, message: str, *, uri: str) -> None:
        super().__init__(message)
        self.uri = uri


class ArtifactStoreUnavailable(ArtifactStoreError):
    """The store's endpoint could not be reached, or kept failing (timeouts, connection resets, 5xx)."""

    code = "ARTIFACT_STORE_UNAVAILABLE"


class ArtifactStoreAccessDenied(ArtifactStoreError):
    """The store refused the credentials (missing, unknown, wrong secret, expired) or the permission."""

    code = "ARTIFACT_STORE_ACCESS_DENIED"


class ArtifactBucketNotFound(ArtifactStoreError):
    """The bucket named by an `s3://` store URI does not exist (mlhub never creates buckets)."""

    code = "ARTIFACT_BUCKET_NOT_FOUND"
