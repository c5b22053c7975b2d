"""The local-files backend: objects under `<root>/objects/<first 2 hex>/<other 62 hex>`, written atomically."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mlhub.artifacts.base import (
    CHUNK_SIZE,
    ArtifactStore,
    Readable,
    StoredArtifact,
    create_temp,
    fsync_dir,
    validate_sha256,
    verifying_reader,
)
from mlhub.artifacts.errors import ArtifactNotFound
from mlhub.errors import InvalidInput

#: Suffix of upload temp files (in `<root>/tmp/`); an object's name is hex only, so it never ends like this.
TEMP_SUFFIX = ".partial"
#: Objects are read-only on disk (before the umask): a stray write to one is refused by the OS, not just
#: detected later by the hash check.
OBJECT_MODE = 0o444


class LocalArtifactStore(ArtifactStore):
    """Content-addressed artifacts as files under `root` (a folder on a local or network filesystem).

    Layout: `root/objects/ab/cdef...` holds the object whose sha256 is `abcdef...`; `root/tmp/` holds uploads in
    progress (`put-*.partial`), which `gc_temp` removes once they are old. The constructor does no I/O: the
    folders are created by the first upload.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        # Absolute now, so that a later chdir does not move the store; no filesystem access here.
        self.root = Path(os.path.abspath(root))
        self.objects_dir = self.root / "objects"
        self.tmp_dir = self.root / "tmp"

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    @property
    def root_uri(self) -> str:
        """The `file://` URI of the store's root (what `store_from_uri` takes)."""
        return self.root.as_uri()

    def object_path(self, sha256: str) -> Path:
        """Where the object with this sha256 lives (or would live)."""
        validate_sha256(sha256)
        return self.objects_dir / sha256[:2] / sha256[2:]

    def uri(self, sha256: str) -> str:
        """The object's `file://` URI."""
        return self.object_path(sha256).as_uri()

    def exists(self, sha256: str) -> bool:
        """Whether the object's file is present (not whether it is intact: see `verify`)."""
        return self.object_path(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        """The object as a buffered binary stream that checks the hash when it reaches the end."""
        path = self.object_path(sha256)
        try:
            raw = path.open("rb", buffering=0)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ArtifactNotFound(sha256, str(path)) from None
        return verifying_reader(raw, sha256, str(path))

    def put_stream(self, source: Readable) -> StoredArtifact:
        """Store the bytes of `source`: stream to a temp file while hashing, fsync, rename, fsync the folder.

        A process killed at any point leaves at most a temp file in `root/tmp/`, never a partial object.
        If the object is already there the upload is discarded (same content, same name). An existing object
        of the wrong size (damaged on disk) is replaced by the fresh, verified copy.
        """
        self._ensure_dir(self.tmp_dir)
        fd, temp_path = create_temp(self.tmp_dir, "put-", TEMP_SUFFIX, OBJECT_MODE)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK_SIZE):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            target = self.object_path(sha256)
            if self._is_present(target, size):
                temp_path.unlink()
            else:
                self._ensure_dir(target.parent)
                os.replace(temp_path, target)
                fsync_dir(target.parent)
        except BaseException:
            temp_path.unlink(missing_ok=True)
            raise
        return StoredArtifact(sha256=sha256, size_bytes=size, uri=target.as_uri())

    def iter_sha256(self) -> Iterator[str]:
        """The sha256 of every object present (by name; nothing is read), in no particular order."""
        if not self.objects_dir.is_dir():
            return
        for prefix in self.objects_dir.iterdir():
            if len(prefix.name) != 2 or not prefix.is_dir():
                continue
            for entry in prefix.iterdir():
                name = prefix.name + entry.name
                if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
                    yield name

    def gc_temp(self, older_than_s: float = 3600.0) -> int:
        """Remove upload temp files last modified more than `older_than_s` ago; how many were removed.

        Uploads in progress keep writing to their temp file, so a generous age never removes a live one;
        the leftovers are from processes killed mid-upload.
        """
        if older_than_s < 0:
            raise InvalidInput(f"older_than_s must be >= 0, got {older_than_s}")
        if not self.tmp_dir.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in self.tmp_dir.iterdir():
            if not entry.name.endswith(TEMP_SUFFIX):
                continue
            try:
                if entry.stat().st_mtime <= cutoff:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:  # finished (renamed) or removed by a concurrent gc meanwhile
                continue
        return removed

    @staticmethod
    def _is_present(target: Path, size: int) -> bool:
        """Whether an object of the expected size is already at `target` (a cheap check, not a hash)."""
        try:
            return target.stat().st_size == size
        except (FileNotFoundError, NotADirectoryError):
            return False

    @staticmethod
    def _ensure_dir(folder: Path) -> None:
        """Create `folder` (and parents) if missing, fsyncing each parent that gained an entry."""
        if folder.is_dir():
            return
        LocalArtifactStore._ensure_dir(folder.parent)
        try:
            folder.mkdir()
        except FileExistsError:  # created by a concurrent upload
            return
        fsync_dir(folder.parent)
