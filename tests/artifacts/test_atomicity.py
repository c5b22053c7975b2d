"""Atomic uploads: a process killed mid-upload leaves no object, only a temp file gc_temp removes; concurrent
uploads of the same content from threads and processes end with one valid object."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlhub.artifacts import LocalArtifactStore

MiB = 1024 * 1024

#: A child that uploads an endless-looking, slow source: 1 MiB chunks, 20 ms apart, up to 1000 MiB.
SLOW_UPLOAD = """
import sys, time
from mlhub.artifacts import LocalArtifactStore

class SlowSource:
    def __init__(self):
        self.sent = 0
    def read(self, size):
        if self.sent == 1000:
            return b""
        if self.sent == 3:
            print("WRITING", flush=True)
        if self.sent >= 3:
            time.sleep(0.02)
        self.sent += 1
        return bytes([self.sent % 256]) * (1024 * 1024)

LocalArtifactStore(sys.argv[1]).put_stream(SlowSource())
print("FINISHED", flush=True)
"""

#: A child that stores a file once it is told to go (so that all children race).
PUT_FILE = """
import sys
from mlhub.artifacts import LocalArtifactStore
sys.stdin.readline()
print(LocalArtifactStore(sys.argv[1]).put_file(sys.argv[2]).sha256, flush=True)
"""


def _temp_files(store: LocalArtifactStore) -> list[Path]:
    return sorted(store.tmp_dir.glob("*")) if store.tmp_dir.exists() else []


@pytest.mark.timeout(60)
def test_sigkill_mid_upload_leaves_no_object(store: LocalArtifactStore) -> None:
    child = subprocess.Popen([sys.executable, "-c", SLOW_UPLOAD, str(store.root)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "WRITING"
        deadline = time.monotonic() + 10
        while not any(p.stat().st_size >= 3 * MiB for p in _temp_files(store)):
            assert time.monotonic() < deadline, "the upload never reached its temp file"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    # Nothing is visible under any hash, in particular not under the hash of what was written so far.
    (temp,) = _temp_files(store)
    partial = temp.read_bytes()
    assert len(partial) >= 3 * MiB
    assert not store.exists(hashlib.sha256(partial).hexdigest())
    assert list(store.iter_sha256()) == []
    assert temp.name.startswith("put-") and temp.name.endswith(".partial")

    # A young temp file may be a live upload: kept. An old one is a leftover: removed.
    assert store.gc_temp(older_than_s=3600) == 0 and temp.exists()
    old = time.time() - 7200
    os.utime(temp, (old, old))
    assert store.gc_temp(older_than_s=3600) == 1 and _temp_files(store) == []

    # The store still works, for the very content the killed upload was writing.
    stored = store.put_bytes(partial)
    assert store.verify(stored.sha256).size_bytes == len(partial)
    assert list(store.iter_sha256()) == [stored.sha256]


def test_a_failing_source_leaves_nothing(store: LocalArtifactStore) -> None:
    class BrokenSource:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int, /) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("connection reset while uploading")
            return b"x" * size

    with pytest.raises(OSError, match="connection reset"):
        store.put_stream(BrokenSource())
    assert _temp_files(store) == [] and list(store.iter_sha256()) == []


@pytest.mark.timeout(60)
def test_concurrent_puts_of_the_same_content_end_with_one_valid_object(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    source = tmp_path / "shared.bin"
    source.write_bytes(os.urandom(4 * MiB))
    expected = hashlib.sha256(source.read_bytes()).hexdigest()

    children = [subprocess.Popen([sys.executable, "-c", PUT_FILE, str(store.root), str(source)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        for child in children:  # all started (imports done or nearly): let them race with the threads
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        with ThreadPoolExecutor(max_workers=8) as pool:
            thread_results = list(pool.map(lambda _: store.put_file(source).sha256, range(16)))
        outputs = [child.communicate(timeout=30)[0].strip() for child in children]
    finally:
        for child in children:
            child.kill()
            child.wait()

    assert set(thread_results) == {expected} and set(outputs) == {expected}
    assert [child.returncode for child in children] == [0] * 4
    assert list(store.iter_sha256()) == [expected]
    assert store.verify(expected).size_bytes == 4 * MiB
    assert _temp_files(store) == []
