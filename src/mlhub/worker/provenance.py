"""What a run records about where it ran: code version (git), software environment, flattened params."""

from __future__ import annotations

import hashlib
import logging
import platform
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

#: A param value longer than this is cut (ParamsLogged's limit).
log = logging.getLogger(__name__)
#: How many untracked files CodeVersionRecorded lists (it counts them all); longer paths are counted only.
MAX_UNTRACKED_LISTED = 1000
MAX_UNTRACKED_PATH = 1000


@dataclass(frozen=True)
class CodeVersion:
    """The git commit of the working tree; whether tracked files differ from it (`dirty`) and the sha256 of
    that difference (`git diff HEAD --binary`); the untracked files, not ignored, listed apart."""

    git_commit: str | None
    dirty: bool
    diff_sha256: str | None
    repository: str | None
    #: The first MAX_UNTRACKED_LISTED untracked, not ignored files, relative to the repository root, sorted.
    untracked: tuple[str, ...] = ()
    untracked_count: int = 0


def _git(cwd: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def code_version(cwd: Path | None = None) -> CodeVersion:
    """The code version of the git repository around `cwd` (default: the current folder).

    `dirty` means tracked files differ from the commit (staged or not); an untracked file does not make a tree
    dirty, it is listed in `untracked` instead. `diff_sha256` is the sha256 of the exact bytes of
    `git diff HEAD --binary` (binary files included), so the same changes always hash alike.
    Outside a repository (or without git) everything is None/False: a run never fails for lack of git.
    """
    where = cwd or Path.cwd()
    commit = _git(where, "rev-parse", "HEAD")
    if commit is None:
        return CodeVersion(None, False, None, None)
    status = _git(where, "status", "--porcelain", "--untracked-files=no") or b""
    dirty = bool(status.strip())
    diff = _git(where, "diff", "HEAD", "--binary") if dirty else None
    top = _git(where, "rev-parse", "--show-toplevel")
    root = Path(top.decode().strip()) if top else where
    # From the root (ls-files lists only below its folder), NUL-separated so any file name survives.
    others = _git(root, "ls-files", "--others", "--exclude-standard", "-z") or b""
    untracked = sorted(p for p in others.decode(errors="surrogateescape").split("\0") if p)
    listed = tuple(p for p in untracked if len(p) <= MAX_UNTRACKED_PATH and p.isprintable())[:MAX_UNTRACKED_LISTED]
    return CodeVersion(
        git_commit=commit.decode().strip() or None,
        dirty=dirty,
        diff_sha256=hashlib.sha256(diff).hexdigest() if diff is not None else None,
        repository=str(root) if top else None,
        untracked=listed,
        untracked_count=len(untracked),
    )


def packages_sha256() -> str:
    """sha256 over the sorted `name==version` lines of every installed distribution."""
    lines = sorted({f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in metadata.distributions()})
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def environment_info(accelerator: str = "gpu") -> dict[str, Any]:
    """Python, platform, torch, lightning, CUDA and the device the run trains on (imports torch: call in a job).

    accelerator: what the Trainer uses ("gpu" or "cpu"); a CPU run on a machine with a GPU records the CPU.
    """
    import lightning
    import torch

    on_gpu = accelerator == "gpu" and torch.cuda.is_available()
    cuda = torch.version.cuda if on_gpu else None
    device = torch.cuda.get_device_name(0) if on_gpu else f"cpu ({platform.machine()})"
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "cuda": cuda,
        "device_name": device,
        "packages_sha256": packages_sha256(),
    }


def flatten_params(config: Mapping[str, Any]) -> dict[str, str]:
    """`model`, `data` and `trainer` of a config snapshot, and its seed, as flat `section.key` -> string params,
    by the SDK's one rule (mlhub.client.values: nested mappings flattened with dots, non-strings as JSON).

    A key the one validation refuses, or a value longer than a param may be, is left out with a warning rather
    than failing the run: the config snapshot (run.config_snapshotted) holds every value in full.
    """
    from mlhub.client.values import string_values

    sections = {name: config[name] for name in ("model", "data", "trainer") if name in config}
    flat, problems = string_values({**sections, "seed": config.get("seed")}, "param")
    for problem in problems:
        log.warning("a param of the config is not logged (the config snapshot keeps it): %s", problem)
    return flat
