"""Fixtures of the artifact store tests: a fresh local store, and a real S3 API (moto's server, in a process of
its own on a free loopback port) with a fresh bucket per test; `backend` runs a contract test on both."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlhub.artifacts import LocalArtifactStore, S3ArtifactStore
from mlhub.artifacts.s3 import MIN_PART_SIZE

#: Fake credentials: moto accepts any unless started with authentication (see `start_moto`).
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "mlhub-test", "AWS_SECRET_ACCESS_KEY": "mlhub-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1"}
#: AWS variables that would point the tests at a real account or endpoint: removed in every S3 test.
AWS_LEAKS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
             "AWS_SECURITY_TOKEN", "AWS_DEFAULT_PROFILE")
#: The key prefix of the S3 stores under test (a prefix with a slash, as teams share buckets).
PREFIX = "team/artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: moto's server (as `python -m moto.server` runs it) answering one request at a time: moto's in-memory objects
#: are not thread-safe when two requests overwrite the same key (its threaded server then fails with 500
#: "seek of closed file"), which concurrent uploads of the same content do. Each S3 request stays atomic, as
#: on real S3; the clients' requests still interleave.
MOTO_SERVER = """
import os, sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
os.environ["MOTO_PORT"] = sys.argv[1]
run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False,
           request_handler=MotoRequestHandler)
"""


def start_moto(env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start moto's S3 server on 127.0.0.1 and a free port; (process, endpoint URL) once it answers."""
    for _ in range(5):  # the free port may be taken between the probe and the server's bind: try another
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-c", MOTO_SERVER, str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    return proc, url
            except OSError:
                time.sleep(0.1)
        proc.kill()
        proc.wait()
    raise RuntimeError("moto server did not start")


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """The endpoint of a moto S3 server shared by the session (each test gets its own bucket)."""
    proc, url = start_moto()
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Fake credentials in the environment, and nothing that could reach a real AWS account."""
    for name in AWS_LEAKS:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return dict(FAKE_AWS)


@pytest.fixture
def s3(aws_env: dict[str, str], moto_url: str) -> Any:
    """A plain boto3 client of the moto server: the tests' way to look at (and tamper with) the bucket."""
    import boto3

    return boto3.client("s3", endpoint_url=moto_url)


@pytest.fixture
def bucket(s3: Any) -> str:
    """A new, empty bucket for this test."""
    name = f"mlhub-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_store(bucket: str, moto_url: str) -> S3ArtifactStore:
    """An S3 store under `PREFIX` in the test's bucket; 5 MiB parts, so large-file tests go multipart."""
    return S3ArtifactStore(bucket, PREFIX, endpoint_url=moto_url, part_size=MIN_PART_SIZE)


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    """An empty local store under tmp_path/store (not created yet: the constructor does no I/O)."""
    return LocalArtifactStore(tmp_path / "store")


Corrupt = Callable[..., None]


def _corrupt(path: Path, *, truncate: bool = False) -> None:
    path.chmod(0o644)
    path.write_bytes(_changed(path.read_bytes(), truncate))


def _changed(data: bytes, truncate: bool) -> bytes:
    changed = bytearray(data)
    if truncate:
        del changed[-1]
    else:
        changed[len(changed) // 2] ^= 0xFF
    return bytes(changed)


@pytest.fixture
def corrupt() -> Corrupt:
    """Changes an object's bytes on disk behind the store's back: `corrupt(path, truncate=False)` flips one
    byte in the middle, `truncate=True` drops the last one."""
    return _corrupt


def s3_objects(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every key in the bucket under `prefix`, as the S3 API lists them."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def s3_uploads(s3: Any, bucket: str) -> list[str]:
    """Keys of the multipart uploads in progress in the bucket."""
    return sorted(u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


@dataclass
class Backend:
    """A store under test with the means to inspect and damage it behind its back."""

    name: str
    store: LocalArtifactStore | S3ArtifactStore
    #: Change the bytes of an object directly in the backend (flip a byte, or drop the last one).
    corrupt: Callable[[str, bool], None]
    #: Where the backend keeps an object: what errors must name (a file path or an s3:// URI).
    location: Callable[[str], str]
    #: Names of everything in the backend's object area (files under objects/, keys under objects/).
    object_names: Callable[[], list[str]]
    #: Leftovers of uploads: temp files, temp keys, multipart uploads in progress.
    leftovers: Callable[[], list[str]]


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The same contract test on a local store and on an S3 store (moto)."""
    if request.param == "local":
        local = LocalArtifactStore(tmp_path / "store")
        return Backend(
            name="local", store=local,
            corrupt=lambda sha, truncate: _corrupt(local.object_path(sha), truncate=truncate),
            location=lambda sha: str(local.object_path(sha)),
            object_names=lambda: sorted(str(p.relative_to(local.objects_dir))
                                        for p in local.objects_dir.rglob("*") if p.is_file()),
            leftovers=lambda: sorted(p.name for p in local.tmp_dir.glob("*")) if local.tmp_dir.exists() else [],
        )
    s3 = request.getfixturevalue("s3")
    store: S3ArtifactStore = request.getfixturevalue("s3_store")
    name = store.bucket

    def corrupt_s3(sha: str, truncate: bool) -> None:
        key = store.object_key(sha)
        data = s3.get_object(Bucket=name, Key=key)["Body"].read()
        s3.put_object(Bucket=name, Key=key, Body=_changed(data, truncate))

    objects = f"{PREFIX}/objects/"
    return Backend(
        name="s3", store=store, corrupt=corrupt_s3, location=store.uri,
        object_names=lambda: [key[len(objects):] for key in s3_objects(s3, name, objects)],
        leftovers=lambda: [k for k in s3_objects(s3, name) if not k.startswith(objects)] + s3_uploads(s3, name),
    )
