"""Plugin discovery, config checking and the lazy-import promise (none of these tests trains anything)."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from tests.plugins.helpers import ROOT, snapshot

from mlhub.errors import InvalidInput
from mlhub.plugins import (
    ENTRY_POINT_GROUP,
    Plugin,
    PluginConfigError,
    PluginLoadError,
    PluginNotFound,
    available_plugins,
    load_plugin,
    protocol,
)
from mlhub.plugins.diabetes import DiabetesRegressionPlugin
from mlhub.plugins.digits import DigitsMLPPlugin


def test_the_built_ins_are_installed_entry_points() -> None:
    assert {"digits-mlp", "diabetes-regression"} <= set(available_plugins())
    digits, diabetes = load_plugin("digits-mlp"), load_plugin("diabetes-regression")
    assert isinstance(digits, DigitsMLPPlugin) and digits.name == "digits-mlp"
    assert isinstance(diabetes, DiabetesRegressionPlugin) and diabetes.name == "diabetes-regression"
    assert isinstance(digits, Plugin)


def test_an_unknown_plugin_is_named_with_the_available_ones() -> None:
    with pytest.raises(PluginNotFound) as caught:
        load_plugin("digits-mpl")
    message = str(caught.value)
    assert "'digits-mpl'" in message and "digits-mlp" in message and "diabetes-regression" in message
    assert ENTRY_POINT_GROUP in message
    assert isinstance(caught.value, InvalidInput) and caught.value.code == "PLUGIN_NOT_FOUND"


def test_an_entry_point_that_is_not_a_plugin_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fakes = {"not-a-plugin": EntryPoint("not-a-plugin", "mlhub.errors:InvalidInput", ENTRY_POINT_GROUP),
             "broken": EntryPoint("broken", "mlhub.no_such_module:Thing", ENTRY_POINT_GROUP)}
    monkeypatch.setattr(protocol, "_entry_points", lambda: fakes)
    with pytest.raises(PluginLoadError, match="not a subclass of mlhub.plugins.Plugin"):
        load_plugin("not-a-plugin")
    with pytest.raises(PluginLoadError, match="failed to load: ModuleNotFoundError"):
        load_plugin("broken")


def test_the_hooks_default_to_nothing() -> None:
    class Bare(Plugin):
        name = "bare"

        def build_datamodule(self, config: Any) -> Any:
            raise NotImplementedError

        def build_module(self, config: Any) -> Any:
            raise NotImplementedError

    bare = Bare()
    bare.validate_config({})
    assert bare.evaluate(object(), object()) == {}
    assert bare.export_onnx(object(), None) is False  # type: ignore[arg-type]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


@pytest.mark.parametrize(
    ("plugin", "edit", "expected"),
    [
        ("digits-mlp", _set("model.hiden_sizes", [3]), "model.hiden_sizes: unknown key; did you mean 'hidden_sizes'?"),
        ("digits-mlp", _set("model.optimizer", "rmsprop"), "model.optimizer: must be one of adam, adamw, sgd"),
        ("digits-mlp", _set("model.lr", "fast"), "model.lr: must be a number"),
        ("digits-mlp", _set("model.lr", 0), "model.lr: must be in (0.0, inf]"),
        ("digits-mlp", _set("model.dropout", 1.0), "model.dropout: must be in [0.0, 1.0)"),
        ("digits-mlp", _set("model.hidden_sizes", [64, 0]), "model.hidden_sizes: must be a list of integers >= 1"),
        ("digits-mlp", _set("model.input_size", 32), "model.input_size: this data set needs 64"),
        ("digits-mlp", _set("data.name", "mnist"), "data.name: this plugin serves 'sklearn-digits'"),
        ("digits-mlp", _set("data.params.normalize", "yes"), "data.params.normalize: must be true or false"),
        ("digits-mlp", _set("data.params.batch_size", 0), "data.params.batch_size: must be an integer >= 1"),
        ("digits-mlp", _set("data.params.test_fraction", 0.75), "must leave at least 10% of the examples"),
        ("diabetes-regression", _set("model.loss", "huber"), "model.loss: must be one of mse"),
        ("diabetes-regression", _set("data.params.standardise_target", True), "did you mean 'standardize_target'"),
    ],
)
def test_a_bad_config_names_the_field(plugin: str, edit: Callable[[dict[str, Any]], None], expected: str) -> None:
    config = copy.deepcopy(snapshot(plugin))
    edit(config)
    with pytest.raises(PluginConfigError) as caught:
        load_plugin(plugin).validate_config(config)
    assert expected in str(caught.value)
    assert caught.value.code == "INVALID_PLUGIN_CONFIG"


@pytest.mark.parametrize("plugin", ["digits-mlp", "diabetes-regression"])
def test_the_example_configs_are_valid_and_a_snapshot_needs_its_seed(plugin: str) -> None:
    config = snapshot(plugin)
    load_plugin(plugin).validate_config(config)
    config["seed"] = None
    with pytest.raises(PluginConfigError, match="seed: must be an integer"):
        load_plugin(plugin).build_datamodule(config)


def test_importing_and_checking_plugins_imports_no_torch() -> None:
    """One subprocess: an import hook records even failed attempts to import a heavy package."""
    probe = """
import sys
attempts = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning', 'sklearn', 'onnxruntime', 'onnx'):
            attempts.append(name)
        return None
sys.meta_path.insert(0, Spy())
import mlhub.plugins.digits, mlhub.plugins.diabetes
from mlhub.plugins import load_plugin
from mlhub.scheduler import load_config
for name in ('digits-mlp', 'diabetes-regression'):
    load_plugin(name).validate_config(load_config(f'configs/{name}.yaml').config.model_dump(mode='json'))
print('ATTEMPTS', attempts)
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            cwd=str(ROOT))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ATTEMPTS []" in result.stdout, result.stdout

