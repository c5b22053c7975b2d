"""Helpers of the metric-definition tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def edit(path: Path, old: str, new: str) -> None:
    """Replace one exact occurrence of old in a file."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    path.write_text(text.replace(old, new))


VAL_ACC_BLOCK = """  val_acc:
    direction: max
    unit: fraction
    description: Share of validation examples classified correctly (digits-mlp).
    min_value: 0
    max_value: 1
"""
