"""Which promotion gates file applies: one resolution (Settings.gates_file) for the API and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlhub.settings import Settings


def test_the_setting_wins_and_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings(registry_gates=Path("gates.yaml")).gates_file() == tmp_path / "gates.yaml"


def test_unset_it_is_the_working_directory_s_configs_registry_yaml_when_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLHUB_REGISTRY_GATES", raising=False)
    monkeypatch.chdir(tmp_path)
    assert Settings().gates_file() is None
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "registry.yaml").write_text("gates: {}\n")
    resolved = Settings().gates_file()
    assert resolved == tmp_path / "configs" / "registry.yaml" and resolved.is_absolute()
    monkeypatch.chdir(tmp_path / "configs")  # a reader that resolved it once still names the same file
    assert resolved.is_file()
