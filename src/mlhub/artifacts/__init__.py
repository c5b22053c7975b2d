"""Content-addressed artifact store: local files by default, S3-compatible for scale. Imports nothing of mlhub.

Objects are named by the sha256 of their bytes; writes are atomic and deduplicated, and every read checks the
bytes against the name. `store_from_uri("file:///data/artifacts")` or `store_from_uri("s3://bucket/prefix")`
opens a store, `store_from_settings(settings)` the configured one (MLHUB_ARTIFACT_URI); see `ArtifactStore`.
boto3 is imported only when an S3 store first talks to S3.
(Only the leaf modules `mlhub.errors` and `mlhub.settings` are imported, as the boundaries allow.)
"""

from mlhub.artifacts.base import CHUNK_SIZE, ArtifactStore, Readable, StoredArtifact, validate_sha256
from mlhub.artifacts.errors import (
    ArtifactBucketNotFound,
    ArtifactIntegrityError,
    ArtifactNotFound,
    ArtifactStoreAccessDenied,
    ArtifactStoreError,
    ArtifactStoreUnavailable,
    UnsupportedArtifactUri,
)
from mlhub.artifacts.local import LocalArtifactStore
from mlhub.artifacts.s3 import S3ArtifactStore
from mlhub.artifacts.uri import resolve_object_uri, store_from_settings, store_from_uri

__all__ = [
    "CHUNK_SIZE",
    "ArtifactBucketNotFound",
    "ArtifactIntegrityError",
    "ArtifactNotFound",
    "ArtifactStore",
    "ArtifactStoreAccessDenied",
    "ArtifactStoreError",
    "ArtifactStoreUnavailable",
    "LocalArtifactStore",
    "Readable",
    "S3ArtifactStore",
    "StoredArtifact",
    "UnsupportedArtifactUri",
    "resolve_object_uri",
    "store_from_settings",
    "store_from_uri",
    "validate_sha256",
]
