"""Content-addressed artifact store: local files by default, S3-compatible for scale. Imports nothing of mlhub.

Objects are named by the sha256 of their bytes; writes are atomic and deduplicated, and every read checks the
bytes against the name. `store_from_uri("file:///data/artifacts")` opens a store; see `ArtifactStore`.
(Only the leaf modules `mlhub.errors` and `mlhub.settings` are imported, as the boundaries allow.)
"""

from mlhub.artifacts.base import CHUNK_SIZE, ArtifactStore, Readable, StoredArtifact, validate_sha256
from mlhub.artifacts.errors import ArtifactIntegrityError, ArtifactNotFound, UnsupportedArtifactUri
from mlhub.artifacts.local import LocalArtifactStore
from mlhub.artifacts.uri import resolve_object_uri, store_from_uri

__all__ = [
    "CHUNK_SIZE",
    "ArtifactIntegrityError",
    "ArtifactNotFound",
    "ArtifactStore",
    "LocalArtifactStore",
    "Readable",
    "StoredArtifact",
    "UnsupportedArtifactUri",
    "resolve_object_uri",
    "store_from_uri",
    "validate_sha256",
]
