"""The artifact store interface, shared by every backend (local files, S3-compatible object storage).

A backend implements four primitives (`put_stream`, `open`, `exists`, `uri`); everything else (`put_file`,
`put_bytes`, `read_bytes`, `get_to`, `verify`, `put_dir`) is built here on top of them, so every backend gets
the same streaming, hashing and integrity checks.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from mlhub.artifacts.errors import ArtifactIntegrityError
from mlhub.errors import InvalidInput

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: Bytes read or written at a time: large files are streamed, never loaded whole.
CHUNK_SIZE = 1024 * 1024

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class Readable(Protocol):
    """A source of bytes: anything with `read(size)` (an open binary file, a socket stream, BytesIO)."""

    def read(self, size: int, /) -> bytes:
        """Return up to `size` bytes; b"" at the end."""
        ...


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    """An object in the store: what an `ArtifactStored` event carries besides its logical path and kind."""

    sha256: str
    size_bytes: int
    uri: str


def validate_sha256(sha256: object) -> str:
    """Return `sha256` if it is 64 lowercase hex digits; raise InvalidInput naming it otherwise."""
    if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
        raise InvalidInput(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    return sha256


class VerifyingReader(io.RawIOBase):
    """Reads an object through, hashing as it goes; at the end raises ArtifactIntegrityError on a mismatch.

    Only a reader that reaches the end has checked anything: `read_bytes`, `get_to` and `verify` always do.
    Once a mismatch is found, every further read raises it again.
    """

    def __init__(self, inner: BinaryIO, sha256: str, location: str) -> None:
        super().__init__()
        self._inner = inner
        self._sha256 = sha256
        self._location = location
        self._hash = hashlib.sha256()
        self._size = 0
        self._error: ArtifactIntegrityError | None = None

    def readable(self) -> bool:
        """Always true: this is a reader."""
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        """Fill `buffer` from the object, hashing the bytes; at the end, check the hash."""
        if self._error is not None:
            raise self._error
        view = memoryview(buffer).cast("B")
        data = self._inner.read(len(view))
        if not data:
            actual = self._hash.hexdigest()
            if actual != self._sha256:
                self._error = ArtifactIntegrityError(self._sha256, self._location, actual, self._size)
                raise self._error
            return 0
        self._hash.update(data)
        self._size += len(data)
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Close the underlying stream too."""
        if not self.closed:
            self._inner.close()
        super().close()


def verifying_reader(inner: BinaryIO, sha256: str, location: str) -> BinaryIO:
    """Wrap a backend's raw stream of object `sha256` so reading it to the end checks its hash."""
    return io.BufferedReader(VerifyingReader(inner, sha256, location), buffer_size=CHUNK_SIZE)


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename or a new entry in it survives a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_temp(folder: Path, prefix: str, suffix: str, mode: int) -> tuple[int, Path]:
    """Create a new, uniquely named file in `folder` opened for writing; (fd, path). `mode` is umask-filtered.

    Unlike `tempfile.mkstemp` (always 0600) the file gets the permissions a normal file (or a read-only object)
    would get; the descriptor is writable whatever `mode` says.
    """
    while True:
        path = folder / f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode), path
        except FileExistsError:
            continue


def _regular_file(path: Path, what: str) -> Path:
    """`path` if it is an existing regular file (symlinks followed); InvalidInput naming it otherwise."""
    if path.is_dir():
        raise InvalidInput(f"{what} {str(path)!r} is a directory, not a file")
    if not path.is_file():
        raise InvalidInput(f"{what} {str(path)!r} does not exist or is not a regular file")
    return path


class ArtifactStore(ABC):
    """A content-addressed store: an object is named by the sha256 of its bytes and never changes.

    Writes are atomic (an object is complete or absent under its name) and idempotent (the same content is
    stored once). Every read checks the bytes against the name and refuses a changed object with
    ArtifactIntegrityError; a missing one raises ArtifactNotFound; a malformed sha256 raises InvalidInput.
    """

    # -- primitives a backend implements -------------------------------------------------------------------

    @abstractmethod
    def put_stream(self, source: Readable) -> StoredArtifact:
        """Store the bytes read from `source` until its end (streamed in chunks, hashed on the way)."""

    @abstractmethod
    def open(self, sha256: str) -> BinaryIO:
        """A binary stream of the object; reading it to the end raises ArtifactIntegrityError if it changed."""

    @abstractmethod
    def exists(self, sha256: str) -> bool:
        """Whether an object with this sha256 is present (its content is not checked: see `verify`)."""

    @abstractmethod
    def uri(self, sha256: str) -> str:
        """The absolute URI of the object (whether or not it is present)."""

    # -- built on the primitives ---------------------------------------------------------------------------

    def put_file(self, path: str | os.PathLike[str]) -> StoredArtifact:
        """Store a file's content, streamed; InvalidInput if `path` is missing or a directory."""
        source = _regular_file(Path(path), "artifact source")
        with source.open("rb") as stream:
            return self.put_stream(stream)

    def put_bytes(self, data: bytes) -> StoredArtifact:
        """Store `data`."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidInput(f"artifact data must be bytes, got {type(data).__name__}")
        return self.put_stream(io.BytesIO(data))

    def put_dir(self, path: str | os.PathLike[str]) -> list[tuple[str, StoredArtifact]]:
        """Store every regular file under a folder (e.g. a checkpoint); (relative POSIX path, object), sorted.

        Symlinked files are stored by their content; symlinked folders are not descended into.
        """
        root = Path(path)
        if not root.is_dir():
            raise InvalidInput(f"artifact folder {str(root)!r} does not exist or is not a directory")
        return [(relative, self.put_file(root / relative)) for relative in _files_under(root)]

    def read_bytes(self, sha256: str) -> bytes:
        """The object's whole content, checked against its sha256 before it is returned."""
        with self.open(sha256) as stream:
            return stream.read()

    def get_to(self, sha256: str, dest: str | os.PathLike[str]) -> Path:
        """Copy the object to `dest` (parents created), streamed; checked before it is renamed into place.

        A corrupt or missing object leaves `dest` untouched; an existing file at `dest` is replaced.
        """
        target = Path(dest)
        if target.is_dir():
            raise InvalidInput(f"destination {str(target)!r} is a directory; name the file to write")
        with self.open(sha256) as stream:  # first: a missing object or a bad sha256 creates nothing
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temp_path = create_temp(target.parent, f".{target.name}.", ".mlhub-partial", 0o666)
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := stream.read(CHUNK_SIZE):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp_path, target)
            except BaseException:
                temp_path.unlink(missing_ok=True)
                raise
        fsync_dir(target.parent)
        return target

    def verify(self, sha256: str) -> StoredArtifact:
        """Read the whole object and check its hash; its description if intact, else the error."""
        size = 0
        with self.open(sha256) as stream:
            while chunk := stream.read(CHUNK_SIZE):
                size += len(chunk)
        return StoredArtifact(sha256=sha256, size_bytes=size, uri=self.uri(sha256))


def _files_under(root: Path) -> list[str]:
    """Relative POSIX paths of the regular files under `root`, sorted, without following folder symlinks."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            full = Path(folder) / name
            if full.is_file():
                found.append(full.relative_to(root).as_posix())
    return sorted(found)
