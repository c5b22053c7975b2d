"""The S3-compatible backend: objects at `s3://<bucket>/<prefix>/objects/ab/cdef…`, uploaded atomically.

boto3 is imported inside the functions that talk to S3, so `import mlhub.artifacts` does not import it.
Endpoint, region and credentials come from the standard AWS sources (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_PROFILE`,
`AWS_ENDPOINT_URL_S3`, `~/.aws/…`); an explicit `endpoint_url` (mlhub's `MLHUB_S3_ENDPOINT_URL`) wins.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

from mlhub.artifacts.base import (
    CHUNK_SIZE,
    ArtifactStore,
    Readable,
    StoredArtifact,
    validate_sha256,
    verifying_reader,
)
from mlhub.artifacts.errors import (
    ArtifactBucketNotFound,
    ArtifactIntegrityError,
    ArtifactNotFound,
    ArtifactStoreAccessDenied,
    ArtifactStoreError,
    ArtifactStoreUnavailable,
)
from mlhub.errors import InvalidInput

MiB = 1024 * 1024
#: Bytes per multipart part: content up to this size is one PUT; larger content is a multipart upload whose
#: parts are read (and held in memory) one at a time. S3 allows at most 10,000 parts, so 8 MiB parts allow
#: objects up to ~78 GiB; pass a larger `part_size` for larger ones.
DEFAULT_PART_SIZE = 8 * MiB
#: S3's smallest part (every part but the last must be at least this big) and most parts per upload.
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
#: The largest object a single CopyObject copies; larger ones are copied part by part (UploadPartCopy).
MAX_COPY_SIZE = 5 * 1024 * MiB
#: Bucket names as S3 accepts them (3-63 lowercase letters, digits, dots, hyphens; letter or digit at the ends).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
#: Temp keys carry their start time (ms since the epoch), so `gc_temp` can tell a live upload from a leftover
#: without trusting the server's clock or its `Initiated` field.
_TEMP_NAME = re.compile(r"put-(\d+)-[0-9a-f]+\.partial")
_ACCESS_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                           "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "403"})
_UNAVAILABLE_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"})


def validate_bucket(bucket: str, uri: str) -> str:
    """`bucket` if it is a valid S3 bucket name; InvalidInput naming `uri` otherwise."""
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InvalidInput(f"artifact store URI {uri!r}: {bucket!r} is not a valid S3 bucket name "
                           "(3-63 lowercase letters, digits, dots and hyphens)")
    return bucket


def validate_prefix(prefix: str, uri: str) -> str:
    """The key prefix without slashes at the ends; InvalidInput naming `uri` for empty, `.` or `..` segments."""
    prefix = prefix.strip("/")
    if prefix and any(segment in ("", ".", "..") for segment in prefix.split("/")):
        raise InvalidInput(f"artifact store URI {uri!r}: the key prefix {prefix!r} has an empty, '.' or '..' "
                           "segment")
    return prefix


def _b64_sha256(data: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


class S3ArtifactStore(ArtifactStore):
    """Content-addressed artifacts in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, R2, moto, ...).

    Layout under `s3://bucket/prefix/`: `objects/ab/cdef…` is the object whose sha256 is `abcdef…` (as in a
    local store, so a local store's `objects/` can be synced there as is); `tmp/put-<ms>-<hex>.partial` are
    multipart uploads in progress (or leftovers of killed ones, which `gc_temp` removes). The constructor
    does no I/O and builds the boto3 client on first use. The bucket must exist: mlhub never creates one.
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 part_size: int = DEFAULT_PART_SIZE, client: Any = None) -> None:
        uri = f"s3://{bucket}/{prefix}"
        self.bucket = validate_bucket(bucket, uri)
        self.prefix = validate_prefix(prefix, uri)
        if part_size < MIN_PART_SIZE:
            raise InvalidInput(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's smallest part), "
                               f"got {part_size}")
        self.endpoint_url = endpoint_url or None
        self.part_size = part_size
        #: CopyObject's limit; an instance attribute so that tests can exercise the part-by-part copy.
        self.max_copy_size = MAX_COPY_SIZE
        self._base = f"{self.prefix}/" if self.prefix else ""
        self._client = client
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        endpoint = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3ArtifactStore({self.bucket!r}, {self.prefix!r}{endpoint})"

    @property
    def root_uri(self) -> str:
        """The `s3://bucket/prefix` URI of the store (what `store_from_uri` takes)."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def client(self) -> Any:
        """The boto3 S3 client (created on first use, shared by threads: boto3 clients are thread-safe)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def object_key(self, sha256: str) -> str:
        """The key of the object with this sha256 (whether or not it is present)."""
        validate_sha256(sha256)
        return f"{self._base}objects/{sha256[:2]}/{sha256[2:]}"

    def uri(self, sha256: str) -> str:
        """The object's `s3://bucket/key` URI."""
        return f"s3://{self.bucket}/{self.object_key(sha256)}"

    def exists(self, sha256: str) -> bool:
        """Whether the object is present (not whether it is intact: see `verify`)."""
        return self._size_of(self.object_key(sha256)) is not None

    def open(self, sha256: str) -> BinaryIO:
        """The object as a buffered binary stream that checks the hash when it reaches the end."""
        key = self.object_key(sha256)
        location = self.uri(sha256)
        from botocore.exceptions import ClientError

        with self._translated(f"reading {location}"):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise ArtifactNotFound(sha256, location) from None
                raise
        return verifying_reader(cast(BinaryIO, _Body(self, body, location)), sha256, location)

    def put_stream(self, source: Readable) -> StoredArtifact:
        """Store the bytes of `source`, streamed part by part while hashing; atomically (see module docs).

        Up to `part_size` bytes: one PUT straight to the object's key, with the sha256 for S3 to check the
        body against (a PUT is all-or-nothing). More: a multipart upload to a temp key, each part with its
        sha256; once the whole hash is known and the temp object has the size hashed, a server-side copy to
        the object's key, then the temp object is deleted. On any error the multipart upload is aborted (or
        the temp object deleted), so no object, partial or not, appears under a sha256 key. An existing
        object of the same size is kept (same name, same content); one of another size is replaced.
        """
        digest = hashlib.sha256()
        first = self._read_part(source, digest)
        if len(first) < self.part_size:
            sha256 = digest.hexdigest()
            key = self.object_key(sha256)
            if self._size_of(key) != len(first):
                with self._translated(f"uploading {self.uri(sha256)}"):
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(first),
                                           ChecksumSHA256=base64.b64encode(digest.digest()).decode("ascii"),
                                           ContentType="application/octet-stream")
            return StoredArtifact(sha256=sha256, size_bytes=len(first), uri=self.uri(sha256))
        return self._put_multipart(source, digest, first)

    def iter_sha256(self) -> Iterator[str]:
        """The sha256 of every object present (by key; nothing is read), in key order."""
        objects = f"{self._base}objects/"
        for key, _ in self._list(objects):
            rest = key[len(objects):]
            name = rest[:2] + rest[3:]
            if len(rest) == 65 and rest[2] == "/" and all(c in "0123456789abcdef" for c in name):
                yield name

    def pending_uploads(self) -> list[str]:
        """Keys of the multipart uploads in progress under the store's prefix (live ones or leftovers)."""
        return [key for key, _, _ in self._multipart_uploads()]

    def temp_keys(self) -> list[str]:
        """Keys of the completed temp objects under `tmp/` (present only between an upload and its copy)."""
        return [key for key, _ in self._list(f"{self._base}tmp/")]

    def gc_temp(self, older_than_s: float = 3600.0) -> int:
        """Abort multipart uploads and delete temp objects older than `older_than_s`; how many were removed.

        The age of a temp key is read from its name (its upload's start time), so a live upload is never
        removed while it is younger than the given age. Keys without a time in their name (a multipart copy
        into `objects/` killed midway) fall back to the server's `Initiated`/`LastModified` time.
        A bucket lifecycle rule "AbortIncompleteMultipartUpload" does the same server-side.
        """
        if older_than_s < 0:
            raise InvalidInput(f"older_than_s must be >= 0, got {older_than_s}")
        cutoff = time.time() - older_than_s
        removed = 0
        for key, upload_id, started in list(self._multipart_uploads()):  # listed first: aborting changes pages
            if self._started(key, started) <= cutoff:
                with self._translated(f"aborting the upload of {self._key_uri(key)}"):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                removed += 1
        for key, modified in list(self._list(f"{self._base}tmp/")):
            if self._started(key, modified) <= cutoff:
                with self._translated(f"deleting {self._key_uri(key)}"):
                    self.client.delete_object(Bucket=self.bucket, Key=key)
                removed += 1
        return removed

    # -- internals -----------------------------------------------------------------------------------------

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        # Reads are checked against the sha256 by VerifyingReader (an ArtifactIntegrityError naming the object),
        # so botocore's own response checksums (CRC of whatever the server stored) are not validated on top.
        options: dict[str, Any] = {"retries": {"mode": "standard", "max_attempts": 3},
                                   "connect_timeout": 10, "read_timeout": 60,
                                   "response_checksum_validation": "when_required"}
        if self.endpoint_url:  # S3-compatible servers (MinIO, moto, Ceph) address buckets by path
            options["s3"] = {"addressing_style": "path"}
        with self._translated("connecting"):
            return boto3.session.Session().client("s3", endpoint_url=self.endpoint_url, config=Config(**options))

    def _where(self) -> str:
        return f"artifact store {self.root_uri}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def _bucket_not_found(self, doing: str) -> ArtifactBucketNotFound:
        return ArtifactBucketNotFound(f"{self._where()}: bucket {self.bucket!r} does not exist ({doing}; "
                                      "mlhub does not create buckets)", uri=self.root_uri)

    def _key_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """Turn boto3/botocore errors into ArtifactStoreError subclasses naming the store and the operation."""
        from botocore import exceptions as bex

        where = self._where()
        try:
            yield
        except bex.ClientError as e:
            error = e.response.get("Error", {})
            code = str(error.get("Code", "?"))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{where}: {doing} failed: {code}: {error.get('Message', '')}".rstrip(": ")
            if code == "NoSuchBucket":
                raise self._bucket_not_found(doing) from e
            if code in _ACCESS_CODES or status == 403:
                raise ArtifactStoreAccessDenied(f"{detail} (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                                                "and the bucket's permissions)", uri=self.root_uri) from e
            if code in _UNAVAILABLE_CODES or (isinstance(status, int) and status >= 500):
                raise ArtifactStoreUnavailable(detail, uri=self.root_uri) from e
            raise ArtifactStoreError(detail, uri=self.root_uri) from e
        except (bex.NoCredentialsError, bex.PartialCredentialsError, bex.CredentialRetrievalError,
                bex.ProfileNotFound) as e:
            raise ArtifactStoreAccessDenied(f"{where}: {doing} failed: no usable AWS credentials ({e})",
                                            uri=self.root_uri) from e
        except (bex.ConnectionError, bex.HTTPClientError, bex.IncompleteReadError,
                bex.ResponseStreamingError) as e:
            raise ArtifactStoreUnavailable(f"{where}: {doing} failed: cannot reach the endpoint ({e})",
                                           uri=self.root_uri) from e
        except bex.BotoCoreError as e:
            raise ArtifactStoreError(f"{where}: {doing} failed: {e}", uri=self.root_uri) from e

    def _size_of(self, key: str) -> int | None:
        """The size of the object at `key`, or None if absent (a missing bucket raises ArtifactBucketNotFound)."""
        from botocore.exceptions import ClientError

        with self._translated(f"looking up {self._key_uri(key)}"):
            try:
                return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
                    raise
        # A HEAD has no body, so a 404 does not say whether the key or the bucket is missing: ask the bucket.
        with self._translated(f"looking up bucket {self.bucket!r}"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                    raise self._bucket_not_found(f"looking up {self._key_uri(key)}") from e
                raise
        return None

    def _read_part(self, source: Readable, digest: Any) -> bytearray:
        """Up to `part_size` bytes of `source` (less only at its end), read in chunks and hashed."""
        part = bytearray()
        while len(part) < self.part_size:
            chunk = source.read(min(CHUNK_SIZE, self.part_size - len(part)))
            if not chunk:
                break
            digest.update(chunk)
            part += chunk
        return part

    def _put_multipart(self, source: Readable, digest: Any, first: bytearray) -> StoredArtifact:
        temp_key = f"{self._base}tmp/put-{time.time_ns() // 1_000_000}-{secrets.token_hex(8)}.partial"
        doing = f"uploading to {self._key_uri(temp_key)}"
        with self._translated(doing):
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=temp_key, ChecksumAlgorithm="SHA256",
                ContentType="application/octet-stream")["UploadId"]
        completed = False
        try:
            parts: list[dict[str, Any]] = []
            size = 0
            part = first
            while part:
                if len(parts) == MAX_PARTS:
                    raise InvalidInput(f"artifact too large for part_size {self.part_size}: S3 allows "
                                       f"{MAX_PARTS} parts; use a larger part_size")
                checksum = _b64_sha256(part)
                with self._translated(doing):
                    etag = self.client.upload_part(Bucket=self.bucket, Key=temp_key, UploadId=upload_id,
                                                   PartNumber=len(parts) + 1, Body=bytes(part),
                                                   ChecksumSHA256=checksum)["ETag"]
                parts.append({"PartNumber": len(parts) + 1, "ETag": etag, "ChecksumSHA256": checksum})
                size += len(part)
                part = self._read_part(source, digest)
            with self._translated(doing):
                self.client.complete_multipart_upload(Bucket=self.bucket, Key=temp_key, UploadId=upload_id,
                                                      MultipartUpload={"Parts": parts})
            completed = True
            sha256 = digest.hexdigest()
            stored = self._size_of(temp_key)
            if stored != size:  # S3 checked every part's sha256; this checks that none is missing
                raise ArtifactStoreError(f"{self._where()}: {doing}: the completed temp object has {stored} "
                                         f"bytes, {size} were uploaded; not storing it", uri=self.root_uri)
            key = self.object_key(sha256)
            if self._size_of(key) != size:
                try:
                    self._copy(temp_key, key, size, sha256)
                except ArtifactStoreError:
                    # Uploads of the same content race to copy to the same key; a copy that failed while
                    # another one succeeded has nothing left to do (its reads are verified like any).
                    if self._size_of(key) != size:
                        raise
            return StoredArtifact(sha256=sha256, size_bytes=size, uri=self.uri(sha256))
        except BaseException:
            if not completed:
                self._quietly(lambda: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=temp_key, UploadId=upload_id))
            raise
        finally:
            if completed:  # a failed delete leaves a temp object for gc_temp, never a wrong object
                self._quietly(lambda: self.client.delete_object(Bucket=self.bucket, Key=temp_key))

    def _copy(self, temp_key: str, key: str, size: int, sha256: str) -> None:
        """Server-side copy of the verified temp object to its final key: all-or-nothing, like a PUT."""
        doing = f"copying {self._key_uri(temp_key)} to {self.uri(sha256)}"
        source = {"Bucket": self.bucket, "Key": temp_key}
        if size <= self.max_copy_size:
            # S3 computes the copy's full-object sha256: a last check that the object under the name is right.
            with self._translated(doing):
                result = self.client.copy_object(Bucket=self.bucket, Key=key, CopySource=source,
                                                 ChecksumAlgorithm="SHA256", ContentType="application/octet-stream")
            reported = result.get("CopyObjectResult", {}).get("ChecksumSHA256")
            if isinstance(reported, str) and "-" not in reported:
                actual = base64.b64decode(reported).hex()
                if actual != sha256:
                    self._quietly(lambda: self.client.delete_object(Bucket=self.bucket, Key=key))
                    raise ArtifactIntegrityError(sha256, self.uri(sha256), actual, size)
            return
        # Too large for one CopyObject: a multipart copy, which is invisible until completed and aborted on error.
        with self._translated(doing):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key,
                                                            ContentType="application/octet-stream")["UploadId"]
        try:
            parts = []
            step = max(self.part_size, -(-size // MAX_PARTS))
            for number, start in enumerate(range(0, size, step), start=1):
                byte_range = f"bytes={start}-{min(start + step, size) - 1}"
                with self._translated(doing):
                    result = self.client.upload_part_copy(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                          PartNumber=number, CopySource=source,
                                                          CopySourceRange=byte_range)
                parts.append({"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]})
            with self._translated(doing):
                self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                      MultipartUpload={"Parts": parts})
        except BaseException:
            self._quietly(lambda: self.client.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                                     UploadId=upload_id))
            raise

    def _list(self, prefix: str) -> Iterator[tuple[str, float]]:
        """(key, last modified as epoch seconds) of every object under `prefix`."""
        with self._translated(f"listing {self._key_uri(prefix)}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"], item["LastModified"].timestamp()

    def _multipart_uploads(self) -> Iterator[tuple[str, str, float]]:
        """(key, upload id, initiated as epoch seconds) of the multipart uploads in `tmp/` and `objects/`."""
        with self._translated(f"listing uploads under {self.root_uri}"):
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                     Prefix=self._base):
                for item in page.get("Uploads", []):
                    # Only the store's own areas: with no prefix, the rest of the bucket belongs to others.
                    if item["Key"].startswith((f"{self._base}tmp/", f"{self._base}objects/")):
                        yield item["Key"], item["UploadId"], item["Initiated"].timestamp()

    @staticmethod
    def _started(key: str, fallback: float) -> float:
        """When the upload to `key` started: the time in a temp key's name, else the server's time."""
        match = _TEMP_NAME.fullmatch(key.rsplit("/", 1)[-1])
        return int(match.group(1)) / 1000 if match else fallback

    def _quietly(self, cleanup: Any) -> None:
        """Run a cleanup after a failure; its own error must not hide the first (gc_temp catches leftovers)."""
        try:
            cleanup()
        except Exception:  # best effort by design: the first error is the one to raise
            pass


class _Body:
    """A GetObject body whose read errors (a connection cut midway) become ArtifactStoreUnavailable."""

    def __init__(self, store: S3ArtifactStore, body: Any, location: str) -> None:
        self._store = store
        self._body = body
        self._location = location

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes of the object."""
        with self._store._translated(f"reading {self._location}"):
            return bytes(self._body.read(size if size >= 0 else None))

    def close(self) -> None:
        """Release the HTTP connection."""
        self._body.close()
