"""Opening a store from a URI: `file://` roots now; other schemes (s3://) name themselves as unsupported."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from mlhub.artifacts.base import ArtifactStore, validate_sha256
from mlhub.artifacts.errors import UnsupportedArtifactUri
from mlhub.artifacts.local import LocalArtifactStore
from mlhub.errors import InvalidInput

#: Schemes a later backend is planned for; named in the error so the message says "not yet", not "never".
PLANNED_SCHEMES = frozenset({"s3"})


def _local_path(uri: str) -> Path:
    """The absolute path of a `file://` URI (or of a plain path); errors name the URI."""
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidInput(f"artifact store URI must be a non-empty string, got {uri!r}")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "":
        # A plain path, as MLflow accepts for a local artifact root; relative ones are made absolute.
        return Path(uri).absolute()
    if scheme != "file":
        hint = "is not supported yet" if scheme in PLANNED_SCHEMES else "is not supported"
        raise UnsupportedArtifactUri(f"artifact store URI {uri!r}: {scheme}:// {hint} (supported: file://)")
    if parts.netloc not in ("", "localhost"):
        raise InvalidInput(f"artifact store URI {uri!r}: file:// URIs on another host ({parts.netloc}) "
                           "are not supported; mount it and use a local path")
    if parts.query or parts.fragment:
        raise InvalidInput(f"artifact store URI {uri!r}: a file:// URI takes no query or fragment")
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise InvalidInput(f"artifact store URI {uri!r}: the path must be absolute (file:///...)")
    return path


def store_from_uri(uri: str) -> ArtifactStore:
    """The store whose root is `uri`: a LocalArtifactStore for `file:///abs/root` (or a plain path).

    Any other scheme raises UnsupportedArtifactUri naming it, e.g. "s3:// is not supported yet". No I/O.
    """
    return LocalArtifactStore(_local_path(uri))


def resolve_object_uri(uri: str) -> tuple[ArtifactStore, str]:
    """(store, sha256) for an object URI as `uri()` returns it and an `ArtifactStored` event carries."""
    path = _local_path(uri)
    prefix, rest = path.parent.name, path.name
    if path.parent.parent.name != "objects" or len(prefix) != 2:
        raise InvalidInput(f"artifact URI {uri!r} does not name an object (<root>/objects/<2 hex>/<62 hex>)")
    sha256 = validate_sha256(prefix + rest)
    return LocalArtifactStore(path.parent.parent.parent), sha256
