"""Experiment configs: the schema, YAML loading, `--set` overrides, and errors that name file and field path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlhub.events import sha256_of
from mlhub.scheduler import ConfigError, ExperimentConfig, experiment_id_for, load_config, resolve_snapshot

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MINIMAL: dict[str, Any] = {"experiment": "exp", "plugin": "digits-mlp", "data": {"name": "sklearn-digits"}}


def write(tmp_path: Path, content: dict[str, Any] | str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def problems_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    assert info.value.code == "INVALID_PARAMETER_VALUE"
    return str(info.value)


@pytest.mark.parametrize(("name", "plugin"), [("digits-mlp.yaml", "digits-mlp"),
                                              ("diabetes-regression.yaml", "diabetes-regression")])
def test_the_example_configs_validate(name: str, plugin: str) -> None:
    loaded = load_config(CONFIGS / name)
    config = loaded.config
    assert config.plugin == plugin
    assert config.seed is not None, "example configs set their seed"
    assert config.trainer.limit_train_batches is not None and config.trainer.max_epochs <= 50
    assert isinstance(config.model["lr"], float)  # written 1.0e-3 / 5.0e-3, read as numbers
    assert loaded.overrides == ()


def test_defaults_are_filled_so_the_snapshot_is_fully_resolved(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL)).config
    snapshot = resolve_snapshot(config, 5)
    assert snapshot["seed"] == 5 and snapshot["pool"] == "cpu" and snapshot["max_attempts"] == 3
    assert snapshot["timeout_s"] == 3600.0 and snapshot["data"] == {"name": "sklearn-digits", "params": {},
                                                                      "split_seed": 0}
    assert snapshot["trainer"] == {
        "max_epochs": 10, "accelerator": "auto", "devices": 1, "precision": "32-true", "deterministic": True,
        "limit_train_batches": None, "limit_val_batches": None, "gradient_clip_val": None,
        "accumulate_grad_batches": 1, "check_val_every_n_epoch": 1, "log_every_n_steps": 50,
    }
    # The snapshot round-trips: validating it again gives the same config, hence the same hash.
    assert sha256_of(resolve_snapshot(ExperimentConfig.model_validate(snapshot), 5)) == sha256_of(snapshot)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"trainer": {"max_epochs": 0}}, "x.yaml: trainer.max_epochs: Input should be greater than 0"),
        ({"trainer": {"max_epochs": "5"}}, "x.yaml: trainer.max_epochs: Input should be a valid integer"),
        ({"trainer": {"max_epoch": 5}}, "x.yaml: trainer.max_epoch: unknown key; did you mean 'max_epochs'?"),
        ({"modle": {}}, "x.yaml: modle: unknown key; did you mean 'model'?"),
        ({"trainer": {"accelerator": "tpu"}}, "x.yaml: trainer.accelerator: Input should be 'auto', 'cpu' or 'gpu'"),
        ({"trainer": {"limit_train_batches": 0}}, "x.yaml: trainer.limit_train_batches: must be a number of batches"),
        ({"trainer": {"accelerator": "gpu"}}, "x.yaml: pool: trainer.accelerator is 'gpu', so pool must be 'gpu'"),
        ({"seed": 2**32}, "x.yaml: seed: Input should be less than or equal to 4294967295"),
        ({"data": {"name": "d", "split_seed": -1}}, "x.yaml: data.split_seed: Input should be greater than or equal"),
        ({"data": None}, "x.yaml: data: Input should be a valid dictionary"),
        ({"tags": {"owner": 5}}, "x.yaml: tags.owner: Input should be a valid string"),
        ({"model": {"layers": [1, float("nan")]}}, "x.yaml: model.layers[1]: nan is not a finite number"),
        ({"model": {1: "a"}}, "x.yaml: model: key 1 must be a string"),
    ],
)
def test_a_bad_field_is_named_with_its_path(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    assert expected in problems_of(write(tmp_path, {**MINIMAL, **change}))


def test_a_missing_key_and_every_other_problem_are_listed(tmp_path: Path) -> None:
    path = write(tmp_path, {"plugin": "p", "trainer": {"max_epochs": -1}})
    assert problems_of(path).splitlines() == [
        f"{path}: experiment: required key is missing",
        f"{path}: data: required key is missing",
        f"{path}: trainer.max_epochs: Input should be greater than 0",
    ]


def test_yaml_syntax_errors_name_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "experiment: exp\nplugin: p\ntrainer:\n  max_epochs: [1, 2\n", name="broken.yaml")
    message = problems_of(path)
    assert message.startswith(f"{path}: line 5,") and "invalid YAML" in message


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    message = problems_of(write(tmp_path, "experiment: exp\nplugin: p\nseed: 1\nseed: 2\n"))
    assert re.search(r"line 4, column 1: invalid YAML: found key 'seed' a second time \(first on line 3\)", message)


def test_yaml_values_without_a_json_form_are_refused(tmp_path: Path) -> None:
    text = "experiment: exp\nplugin: p\ndata: {name: d}\nmodel:\n  since: 2024-01-01\n"
    assert "x.yaml: model.since: a date (datetime.date(2024, 1, 1)) is not a JSON value" in problems_of(
        write(tmp_path, text))


def test_exponents_without_a_dot_are_numbers(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "experiment: e\nplugin: p\ndata: {name: d}\nmodel: {lr: 1e-3}\n")).config
    assert config.model == {"lr": 0.001}


@pytest.mark.parametrize(("content", "expected"), [
    ("", "a config must be a mapping of keys (experiment, plugin, ...), got nothing (the file is empty)"),
    ("- a\n- b\n", "got a list"),
])
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path, content: str, expected: str) -> None:
    assert expected in problems_of(write(tmp_path, content))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.yaml").startswith(f"{tmp_path / 'nope.yaml'}: cannot read the file")


def test_overrides_are_applied_validated_and_recorded(tmp_path: Path) -> None:
    path = write(tmp_path, {**MINIMAL, "model": {"lr": 0.1, "layers": [8]}})
    overrides = ("trainer.max_epochs=3", "model.lr=1e-3", "model.layers=[16, 8]", "seed=7", "trainer.precision=bf16",
                 "+model.dropout=0.5", "+tags.owner=ana", "data.params={}")
    loaded = load_config(path, overrides)
    config = loaded.config
    assert loaded.overrides == overrides
    assert config.trainer.max_epochs == 3 and config.seed == 7 and config.trainer.precision == "bf16-mixed"
    assert config.model == {"lr": 0.001, "layers": [16, 8], "dropout": 0.5} and config.tags == {"owner": "ana"}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.max_epoch=3", "x.yaml: trainer.max_epoch: unknown key (--set trainer.max_epoch=3); did you mean "
                                "'max_epochs'?"),
        ("model.lrr=0.1", "x.yaml: model.lrr: unknown key (--set model.lrr=0.1); did you mean 'lr'?; to add a key "
                          "here, write --set +model.lrr=0.1"),
        ("+trainer.foo=1", "x.yaml: trainer.foo: unknown key (--set +trainer.foo=1)"),
        ("nothing=1", "x.yaml: nothing: unknown key (--set nothing=1)"),
        ("data.name.x=1", "x.yaml: data.name: is not a mapping, so 'data.name.x=1' cannot set a key inside it"),
        ("trainer.max_epochs=0", "x.yaml: trainer.max_epochs: Input should be greater than 0 (set by --set "
                                 "trainer.max_epochs=0)"),
        ("seed=.nan", "x.yaml: seed: nan is not a finite number"),
        ("seed", "x.yaml: override 'seed' must look like key.path=value"),
        ("trainer..x=1", "must look like key.path=value"),
        ("model.lr=[1", "x.yaml: model.lr: the value of 'model.lr=[1' is not valid YAML"),
    ],
)
def test_a_bad_override_is_named(tmp_path: Path, override: str, expected: str) -> None:
    assert expected in problems_of(write(tmp_path, {**MINIMAL, "model": {"lr": 0.1}}), (override,))


def test_an_override_may_fix_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, {**MINIMAL, "trainer": {"max_epochs": 0}})
    assert load_config(path, ("trainer.max_epochs=2",)).config.trainer.max_epochs == 2


@pytest.mark.parametrize("name", ["digits", "Digits_v2-final", "a" * 128])
def test_a_name_that_is_a_valid_id_is_its_own_experiment_id(name: str) -> None:
    assert experiment_id_for(name) == name


@pytest.mark.parametrize("name", ["My experiment", "my-experiment!", "ünïcode ☃", "a.b>c", "x" * 200, " "])
def test_other_names_get_a_slug_and_a_hash(name: str) -> None:
    experiment_id = experiment_id_for(name)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,128}", experiment_id)
    assert experiment_id == experiment_id_for(name) and re.search(r"-[0-9a-f]{10}$", experiment_id)
    assert experiment_id_for("My experiment") != experiment_id_for("my-experiment!")
