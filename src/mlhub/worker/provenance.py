"""What a run records about where it ran: code version (git), software environment, flattened params."""

from __future__ import annotations

import hashlib
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

#: A param value longer than this is cut (ParamsLogged allows 6,000 characters).
MAX_PARAM_CHARS = 6000
#: What a param key may look like (events.base.Key); keys outside it are left out rather than failing the run.
_KEY = re.compile(r"^[A-Za-z0-9_\-./ :]{1,250}$")


@dataclass(frozen=True)
class CodeVersion:
    """The git commit of the working tree, whether it was dirty, and the sha256 of `git diff HEAD`."""

    git_commit: str | None
    dirty: bool
    diff_sha256: str | None
    repository: str | None


def _git(cwd: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def code_version(cwd: Path | None = None) -> CodeVersion:
    """The code version of the git repository around `cwd` (default: the current folder).

    Outside a repository (or without git) everything is None/False: a run never fails for lack of git.
    """
    where = cwd or Path.cwd()
    commit = _git(where, "rev-parse", "HEAD")
    if commit is None:
        return CodeVersion(None, False, None, None)
    status = _git(where, "status", "--porcelain") or b""
    dirty = bool(status.strip())
    diff = _git(where, "diff", "HEAD") if dirty else None
    top = _git(where, "rev-parse", "--show-toplevel")
    return CodeVersion(
        git_commit=commit.decode().strip() or None,
        dirty=dirty,
        diff_sha256=hashlib.sha256(diff).hexdigest() if diff is not None else None,
        repository=top.decode().strip() if top else None,
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
    """`model`, `data` and `trainer` of a config snapshot as flat `section.key` -> string params.

    Lists and nested mappings below the first level are flattened with dots (lists as their JSON-ish repr);
    None becomes "None", as MLflow writes it.
    """
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner)
        elif _KEY.fullmatch(prefix):
            flat[prefix] = str(value)[:MAX_PARAM_CHARS]

    for section in ("model", "data", "trainer"):
        if section in config:
            walk(section, config[section])
    flat["seed"] = str(config.get("seed"))
    return flat
