"""The optional extras of the mlhub distribution, and the one check that a command's extra is installed.

`pip install mlhub` is the light install: the SDK, the CLI, the API and the projectors. Training needs the
`worker` extra (torch, lightning, ONNX, scikit-learn for the built-in plugins' data). What an extra holds is
read from mlhub's own installed metadata (its `Requires-Dist` lines, written from pyproject.toml), so the list
lives in one place. This module imports nothing of mlhub but errors, so every package may use it.
"""

from __future__ import annotations

import re
from importlib import metadata

from mlhub.errors import ExtraMissing

WORKER = "worker"

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _extra_marker(extra: str) -> re.Pattern[str]:
    return re.compile(r"""extra\s*==\s*["']""" + re.escape(extra) + r"""["']""")


def requirements(extra: str) -> list[str]:
    """The distribution names the extra `extra` adds, from mlhub's installed metadata ([] when mlhub is not
    installed as a distribution, e.g. run from a source tree on sys.path: nothing can be told then)."""
    try:
        lines = metadata.requires("mlhub") or []
    except metadata.PackageNotFoundError:
        return []
    marker = _extra_marker(extra)
    names: list[str] = []
    for line in lines:
        requirement, _, markers = line.partition(";")
        match = _NAME.match(requirement)
        if match and marker.search(markers):
            names.append(match.group(1))
    return names


def missing(extra: str) -> list[str]:
    """The distributions of the extra `extra` that are not installed."""
    absent: list[str] = []
    for name in requirements(extra):
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            absent.append(name)
    return absent


def require(extra: str, what: str, hint: str = "") -> None:
    """Raise ExtraMissing, naming the pip command that installs it, when `what` (e.g. "mlhub worker") needs
    the extra `extra` and some of it is not installed; `hint` adds another way out."""
    absent = missing(extra)
    if absent:
        raise ExtraMissing(f"{what} needs the {extra!r} extra of mlhub, which is not installed (missing: "
                           f"{', '.join(absent)}): pip install 'mlhub[{extra}]'" + (f", {hint}" if hint else ""))
