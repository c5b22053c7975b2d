"""S3ArtifactStore against a real S3 API (moto's server on loopback): how uploads travel (one PUT or multipart
plus a server-side copy), atomicity when an upload fails or its process is killed, leftovers and gc_temp, and
errors (missing bucket, bad or no credentials, unreachable endpoint) that name the store."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests.artifacts.conftest import PREFIX, s3_objects, s3_uploads, start_moto

from mlhub.artifacts import (
    ArtifactBucketNotFound,
    ArtifactStoreAccessDenied,
    ArtifactStoreError,
    ArtifactStoreUnavailable,
    S3ArtifactStore,
)
from mlhub.artifacts.s3 import MIN_PART_SIZE
from mlhub.errors import InvalidInput, MlhubError

MiB = 1024 * 1024
OBJECTS = f"{PREFIX}/objects/"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FailingSource:
    """Gives `good` bytes in 1 MiB chunks, then fails as a dropped network source would."""

    def __init__(self, good: int) -> None:
        self.sent = 0
        self.good = good

    def read(self, size: int, /) -> bytes:
        if self.sent >= self.good:
            raise OSError("connection reset while uploading")
        chunk = bytes([self.sent // MiB % 256]) * min(size, MiB, self.good - self.sent)
        self.sent += len(chunk)
        return chunk


def _record_calls(store: S3ArtifactStore) -> list[str]:
    """The S3 operations the store sends from now on, in order (botocore's own event hooks: observed, not faked)."""
    calls: list[str] = []
    store.client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    return calls


def test_small_content_is_one_put_straight_under_its_hash(s3_store: S3ArtifactStore, s3: Any) -> None:
    data = os.urandom(MIN_PART_SIZE - 1)
    calls = _record_calls(s3_store)
    stored = s3_store.put_bytes(data)
    assert calls == ["HeadObject", "HeadBucket", "PutObject"]  # absent? then one PUT, with its sha256
    key = s3_store.object_key(stored.sha256)
    assert key == f"{OBJECTS}{stored.sha256[:2]}/{stored.sha256[2:]}"
    assert s3_objects(s3, s3_store.bucket) == [key] and s3_uploads(s3, s3_store.bucket) == []
    head = s3.head_object(Bucket=s3_store.bucket, Key=key)
    assert head["ContentLength"] == len(data) and head["ContentType"] == "application/octet-stream"
    assert s3.get_object(Bucket=s3_store.bucket, Key=key)["Body"].read() == data
    calls.clear()
    assert s3_store.put_bytes(data) == stored and calls == ["HeadObject"]  # present: nothing uploaded


@pytest.mark.parametrize(("size", "parts"), [(MIN_PART_SIZE, 1), (2 * MIN_PART_SIZE + 123, 3)],
                         ids=["one-part", "three-parts"])
def test_large_content_goes_multipart_then_is_copied_to_its_hash(
    s3_store: S3ArtifactStore, s3: Any, size: int, parts: int
) -> None:
    data = os.urandom(size)
    calls = _record_calls(s3_store)
    stored = s3_store.put_bytes(data)
    assert stored.sha256 == _sha(data) and stored.size_bytes == size
    assert calls == ["CreateMultipartUpload", *["UploadPart"] * parts, "CompleteMultipartUpload",
                     "HeadObject", "HeadObject", "HeadBucket", "CopyObject", "DeleteObject"]
    # Only the object is left: the temp object is deleted, no multipart upload is pending.
    assert s3_objects(s3, s3_store.bucket) == [s3_store.object_key(stored.sha256)]
    assert s3_uploads(s3, s3_store.bucket) == []
    assert s3_store.read_bytes(stored.sha256) == data
    calls.clear()
    assert s3_store.put_bytes(data) == stored and "CopyObject" not in calls  # present: the upload is dropped
    assert s3_objects(s3, s3_store.bucket) == [s3_store.object_key(stored.sha256)]


def test_objects_too_large_for_one_copy_are_copied_part_by_part(s3_store: S3ArtifactStore, s3: Any) -> None:
    s3_store.max_copy_size = MIN_PART_SIZE  # as if 12 MiB were over CopyObject's 5 GiB limit
    data = os.urandom(12 * MiB)
    calls = _record_calls(s3_store)
    stored = s3_store.put_bytes(data)
    assert "CopyObject" not in calls and calls.count("UploadPartCopy") == 3
    assert s3_store.read_bytes(stored.sha256) == data
    assert s3_objects(s3, s3_store.bucket) == [s3_store.object_key(stored.sha256)]
    assert s3_uploads(s3, s3_store.bucket) == []


@pytest.mark.parametrize("good", [2 * MiB, 3 * MIN_PART_SIZE + MiB], ids=["in-the-first-part", "after-3-parts"])
def test_a_source_failing_mid_stream_leaves_nothing(s3_store: S3ArtifactStore, s3: Any, good: int) -> None:
    with pytest.raises(OSError, match="connection reset"):
        s3_store.put_stream(FailingSource(good))
    # No object under any hash, no temp object, and the multipart upload was aborted.
    assert s3_objects(s3, s3_store.bucket) == [] and s3_uploads(s3, s3_store.bucket) == []
    assert list(s3_store.iter_sha256()) == []


def test_a_failed_copy_leaves_no_object_and_no_temp(bucket: str, moto_url: str, s3: Any) -> None:
    class CopyFails(S3ArtifactStore):
        def _copy(self, temp_key: str, key: str, size: int, sha256: str) -> None:
            assert s3_objects(s3, bucket) == [temp_key]  # the completed temp object, not yet under its hash
            raise ArtifactStoreUnavailable("endpoint went away during the copy", uri=self.root_uri)

    store = CopyFails(bucket, PREFIX, endpoint_url=moto_url, part_size=MIN_PART_SIZE)
    data = os.urandom(MIN_PART_SIZE + 1)
    with pytest.raises(ArtifactStoreUnavailable, match="during the copy"):
        store.put_bytes(data)
    assert s3_objects(s3, bucket) == [] and s3_uploads(s3, bucket) == []
    assert not store.exists(_sha(data))


def test_a_copy_that_fails_after_a_rival_copy_succeeded_is_not_an_error(
    bucket: str, moto_url: str, s3: Any
) -> None:
    class RivalWins(S3ArtifactStore):
        def _copy(self, temp_key: str, key: str, size: int, sha256: str) -> None:
            super()._copy(temp_key, key, size, sha256)  # as if a concurrent upload of the same content copied
            raise ArtifactStoreUnavailable("this copy timed out", uri=self.root_uri)

    store = RivalWins(bucket, PREFIX, endpoint_url=moto_url, part_size=MIN_PART_SIZE)
    data = os.urandom(MIN_PART_SIZE + 1)
    stored = store.put_bytes(data)
    assert store.verify(stored.sha256).size_bytes == len(data)
    assert s3_objects(s3, bucket) == [store.object_key(stored.sha256)] and s3_uploads(s3, bucket) == []


#: A child that uploads a slow source to S3: 1 MiB chunks, 20 ms apart after the first part, up to 1000 MiB.
SLOW_UPLOAD = """
import sys, time
from mlhub.artifacts import S3ArtifactStore

class SlowSource:
    def __init__(self):
        self.sent = 0
    def read(self, size):
        if self.sent == 1000:
            return b""
        if self.sent >= 6:
            time.sleep(0.02)
        self.sent += 1
        return bytes([self.sent % 256]) * (1024 * 1024)

S3ArtifactStore(sys.argv[1], sys.argv[2], endpoint_url=sys.argv[3], part_size=5 * 1024 * 1024).put_stream(SlowSource())
print("FINISHED", flush=True)
"""


@pytest.mark.timeout(60)
def test_sigkill_mid_upload_leaves_no_object(s3_store: S3ArtifactStore, s3: Any, moto_url: str) -> None:
    bucket = s3_store.bucket
    child = subprocess.Popen([sys.executable, "-c", SLOW_UPLOAD, bucket, PREFIX, moto_url])
    try:
        deadline = time.monotonic() + 30
        while True:  # wait until at least one part of the upload is on the server
            uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            if uploads and s3.list_parts(Bucket=bucket, Key=uploads[0]["Key"],
                                         UploadId=uploads[0]["UploadId"]).get("Parts"):
                break
            assert child.poll() is None and time.monotonic() < deadline, "the upload never sent a part"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    # Nothing is visible as an object: the parts sent so far belong to an unfinished upload to a temp key.
    assert s3_objects(s3, bucket) == [] and list(s3_store.iter_sha256()) == []
    (pending,) = s3_store.pending_uploads()
    assert pending.startswith(f"{PREFIX}/tmp/put-") and pending.endswith(".partial")
    assert s3_uploads(s3, bucket) == [pending]

    # A young upload may be live: kept. Once old enough it is a leftover: aborted.
    assert s3_store.gc_temp(older_than_s=3600) == 0 and s3_store.pending_uploads() == [pending]
    assert s3_store.gc_temp(older_than_s=0) == 1
    assert s3_uploads(s3, bucket) == [] and s3_objects(s3, bucket) == []

    # The store still works.
    stored = s3_store.put_bytes(b"after the crash")
    assert s3_store.verify(stored.sha256).size_bytes == len(b"after the crash")


def test_gc_temp_judges_age_by_the_time_in_the_temp_name(s3_store: S3ArtifactStore, s3: Any) -> None:
    bucket = s3_store.bucket
    now_ms = int(time.time() * 1000)
    old_ms = now_ms - 2 * 3600 * 1000
    young, old = f"{PREFIX}/tmp/put-{now_ms}-aaaa.partial", f"{PREFIX}/tmp/put-{old_ms}-bbbb.partial"
    for key in (young, old):
        s3.put_object(Bucket=bucket, Key=key, Body=b"completed, never copied")  # killed between the two steps
        s3.create_multipart_upload(Bucket=bucket, Key=key)
    outside = "elsewhere/tmp/put-0-cccc.partial"  # not under the store's prefix: never touched
    s3.put_object(Bucket=bucket, Key=outside, Body=b"someone else's")
    s3.create_multipart_upload(Bucket=bucket, Key=outside)
    assert sorted(s3_store.temp_keys()) == [old, young]

    assert s3_store.gc_temp(older_than_s=3600) == 2  # the old upload and the old temp object
    assert s3_objects(s3, bucket) == [outside, young] and s3_uploads(s3, bucket) == [outside, young]
    assert s3_store.gc_temp(older_than_s=0) == 2
    assert s3_objects(s3, bucket) == [outside] and s3_uploads(s3, bucket) == [outside]
    # A store at the bucket's root owns only its tmp/ and objects/: other keys and uploads are not its own.
    root_store = S3ArtifactStore(bucket, endpoint_url=s3_store.endpoint_url)
    assert root_store.gc_temp(older_than_s=0) == 0 and root_store.pending_uploads() == []
    assert s3_objects(s3, bucket) == [outside] and s3_uploads(s3, bucket) == [outside]
    with pytest.raises(InvalidInput, match="older_than_s"):
        s3_store.gc_temp(-1)


@pytest.mark.timeout(120)
def test_concurrent_puts_of_the_same_content_end_with_one_valid_object(s3_store: S3ArtifactStore, s3: Any) -> None:
    data = os.urandom(MIN_PART_SIZE + MiB)  # multipart: every upload has its own temp key
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: s3_store.put_bytes(data), range(6)))
    assert {r.sha256 for r in results} == {_sha(data)}
    assert s3_objects(s3, s3_store.bucket) == [s3_store.object_key(_sha(data))]
    assert s3_uploads(s3, s3_store.bucket) == []
    assert s3_store.verify(_sha(data)).size_bytes == len(data)


def test_the_constructor_checks_its_arguments_and_does_no_io() -> None:
    with pytest.raises(InvalidInput, match="part_size must be at least"):
        S3ArtifactStore("bucket", part_size=MiB)
    with pytest.raises(InvalidInput, match="not a valid S3 bucket name"):
        S3ArtifactStore("No_Such")
    store = S3ArtifactStore("bucket", "/p/q/", endpoint_url="http://127.0.0.1:9")
    assert store.prefix == "p/q" and store._client is None and repr(store).startswith("S3ArtifactStore(")


def _error_names_the_store(error: MlhubError, store: S3ArtifactStore) -> None:
    assert isinstance(error, ArtifactStoreError)
    assert store.root_uri in str(error) and error.uri == store.root_uri  # type: ignore[attr-defined]


def _every_operation(store: S3ArtifactStore) -> list[Any]:
    sha = _sha(b"x")
    return [lambda: store.put_bytes(b"x"), lambda: store.put_bytes(os.urandom(MIN_PART_SIZE)),
            lambda: store.exists(sha), lambda: store.read_bytes(sha), lambda: list(store.iter_sha256()),
            lambda: store.gc_temp()]


def test_a_missing_bucket_is_named(aws_env: dict[str, str], moto_url: str) -> None:
    store = S3ArtifactStore("mlhub-no-such-bucket", PREFIX, endpoint_url=moto_url, part_size=MIN_PART_SIZE)
    for operation in _every_operation(store):
        with pytest.raises(ArtifactBucketNotFound) as caught:
            operation()
        assert caught.value.code == "ARTIFACT_BUCKET_NOT_FOUND"
        assert "bucket 'mlhub-no-such-bucket' does not exist" in str(caught.value)
        _error_names_the_store(caught.value, store)


@pytest.mark.timeout(60)
def test_an_unreachable_endpoint_is_named(aws_env: dict[str, str]) -> None:
    with __import__("socket").socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    store = S3ArtifactStore("some-bucket", PREFIX, endpoint_url=endpoint)
    for operation in _every_operation(store)[:4]:
        with pytest.raises(ArtifactStoreUnavailable) as caught:
            operation()
        assert caught.value.code == "ARTIFACT_STORE_UNAVAILABLE" and endpoint in str(caught.value)
        assert "cannot reach the endpoint" in str(caught.value)
        _error_names_the_store(caught.value, store)


@pytest.fixture(scope="module")
def moto_with_auth() -> Any:
    """A moto server that checks credentials (it knows none, so every key is refused)."""
    proc, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_credentials_are_named(aws_env: dict[str, str], moto_with_auth: str) -> None:
    store = S3ArtifactStore("some-bucket", PREFIX, endpoint_url=moto_with_auth, part_size=MIN_PART_SIZE)
    for operation in _every_operation(store):
        with pytest.raises(ArtifactStoreAccessDenied) as caught:
            operation()
        assert caught.value.code == "ARTIFACT_STORE_ACCESS_DENIED" and "AWS_ACCESS_KEY_ID" in str(caught.value)
        _error_names_the_store(caught.value, store)


def test_no_credentials_at_all_are_named(
    aws_env: dict[str, str], moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3ArtifactStore("some-bucket", PREFIX, endpoint_url=moto_url)
    with pytest.raises(ArtifactStoreAccessDenied, match="no usable AWS credentials") as caught:
        store.exists(_sha(b"x"))
    _error_names_the_store(caught.value, store)
