"""One contract suite run against every built-in plugin: real Lightning training (2 tiny epochs on CPU),
reproducibility, the dataset fingerprint, final evaluation and a verified ONNX export."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.plugins.helpers import CONFIGS, EPOCHS, TrainedRun, snapshot, train

from mlhub.plugins import load_plugin

PLUGINS = sorted(CONFIGS)
#: Metrics each plugin logs every epoch, and the ones its evaluate() returns.
EPOCH_METRICS = {"digits-mlp": {"train_loss", "val_loss", "val_acc"},
                 "diabetes-regression": {"train_loss", "val_loss", "val_rmse", "val_mae", "val_r2"}}
TEST_METRICS = {"digits-mlp": {"test_acc", "test_loss"}, "diabetes-regression": {"test_rmse", "test_mae", "test_r2"}}
OTHER_SEED = 12345


@pytest.mark.parametrize("name", PLUGINS)
def test_training_logs_finite_metrics_every_epoch(name: str, trained: Any) -> None:
    run: TrainedRun = trained(name)
    assert len(run.history) == EPOCHS
    for epoch in run.history:
        assert set(epoch) == EPOCH_METRICS[name]
        assert all(math.isfinite(v) for v in epoch.values()), epoch
    # Learning happened: the epoch-mean training loss fell.
    assert run.history[1]["train_loss"] < run.history[0]["train_loss"]


def test_digits_learns_above_chance_in_two_epochs(trained: Any) -> None:
    final = trained("digits-mlp").history[-1]
    assert final["val_acc"] > 0.3, final  # chance is 0.1
    assert 0.0 <= final["val_acc"] <= 1.0


def test_diabetes_improves_in_target_units(trained: Any) -> None:
    run = trained("diabetes-regression")
    first, final = run.history
    # Two tiny epochs only start to learn: the fit must improve, not be good yet.
    assert final["val_loss"] < first["val_loss"] and final["val_rmse"] < first["val_rmse"]
    assert final["val_r2"] > first["val_r2"]
    # val_rmse is in the target's units (progression scores ~25..346), not standardized ones.
    assert 30.0 < final["val_rmse"] < 200.0 and final["val_mae"] <= final["val_rmse"]


@pytest.mark.parametrize("name", PLUGINS)
def test_same_seed_same_metrics_and_weights(name: str, trained: Any) -> None:
    first: TrainedRun = trained(name)
    again = train(name)  # a fresh run, not the cached one
    assert again.history == first.history  # exact float equality
    assert again.state_dict.keys() == first.state_dict.keys()
    for key, tensor in first.state_dict.items():
        assert tensor.equal(again.state_dict[key]), key


@pytest.mark.parametrize("name", PLUGINS)
def test_another_seed_gives_another_run(name: str, trained: Any) -> None:
    first, other = trained(name), trained(name, OTHER_SEED)
    assert other.history != first.history
    assert any(not t.equal(other.state_dict[k]) for k, t in first.state_dict.items())
    # The run's seed does not move the data: same fingerprint, same held-out split.
    assert other.spec.dataset_version == first.spec.dataset_version
    for mine, theirs in zip(first.spec.datamodule.test_tensors(), other.spec.datamodule.test_tensors(), strict=True):
        assert mine.equal(theirs)


@pytest.mark.parametrize("name", PLUGINS)
def test_evaluate_is_deterministic_on_the_held_out_split(name: str, trained: Any) -> None:
    run: TrainedRun = trained(name)
    run.module.train()
    metrics = run.plugin.evaluate(run.module, run.spec.datamodule)
    assert set(metrics) == TEST_METRICS[name]
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert run.module.training, "evaluate must leave the module's mode as it found it"
    assert run.plugin.evaluate(run.module, run.spec.datamodule) == metrics
    assert load_plugin(name).evaluate(run.module, build_fresh_datamodule(name)) == metrics
    if name == "digits-mlp":
        assert metrics["test_acc"] > 0.3
    else:
        assert metrics["test_mae"] <= metrics["test_rmse"] and -1.0 < metrics["test_r2"] < 1.0


def build_fresh_datamodule(name: str) -> Any:
    return load_plugin(name).build_datamodule(snapshot(name)).datamodule


@pytest.mark.parametrize("name", PLUGINS)
def test_splits_are_disjoint_cover_everything_and_follow_split_seed(name: str) -> None:
    plugin, config = load_plugin(name), snapshot(name)
    split = plugin.build_datamodule(config).datamodule.split
    parts = [split.train, split.val, split.test]
    everything = np.concatenate(parts)
    num_examples = plugin.build_datamodule(config).dataset_version.num_examples
    assert len(everything) == len(set(everything.tolist())) == num_examples
    fraction = config["data"]["params"]["val_fraction"]
    assert abs(len(split.val) / len(everything) - fraction) < 0.01
    moved = copy.deepcopy(config)
    moved["data"]["split_seed"] += 1
    assert not np.array_equal(plugin.build_datamodule(moved).datamodule.split.test, split.test)


@pytest.mark.parametrize("name", PLUGINS)
def test_fingerprint_is_stable_and_tracks_data_and_split(name: str) -> None:
    plugin, config = load_plugin(name), snapshot(name)
    version = plugin.build_datamodule(config).dataset_version
    assert version == plugin.build_datamodule(copy.deepcopy(config)).dataset_version
    assert len(version.fingerprint) == 64 and int(version.fingerprint, 16) >= 0
    assert version.name == config["data"]["name"]
    moved = copy.deepcopy(config)
    moved["data"]["split_seed"] += 1
    assert plugin.build_datamodule(moved).dataset_version.fingerprint != version.fingerprint
    resized = copy.deepcopy(config)
    resized["data"]["params"]["val_fraction"] = 0.25
    assert plugin.build_datamodule(resized).dataset_version.fingerprint != version.fingerprint
    rebatched = copy.deepcopy(config)
    rebatched["data"]["params"]["batch_size"] = 7  # batching does not change the data
    assert plugin.build_datamodule(rebatched).dataset_version == version


def test_fingerprint_sizes_and_content(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlhub.plugins import diabetes, digits

    digits_version = load_plugin("digits-mlp").build_datamodule(snapshot("digits-mlp")).dataset_version
    assert (digits_version.num_examples, digits_version.size_bytes) == (1797, 1797 * 64 * 4 + 1797 * 8)
    diabetes_version = load_plugin("diabetes-regression").build_datamodule(
        snapshot("diabetes-regression")).dataset_version
    assert (diabetes_version.num_examples, diabetes_version.size_bytes) == (442, 442 * 10 * 4 + 442 * 4)
    # One changed pixel is another data set.
    original = digits.load_digits_arrays

    def one_pixel_off() -> tuple[Any, Any]:
        features, labels = original()
        features = features.copy()
        features[100, 10] += 1.0
        return features, labels

    monkeypatch.setattr(digits, "load_digits_arrays", one_pixel_off)
    changed = load_plugin("digits-mlp").build_datamodule(snapshot("digits-mlp")).dataset_version
    assert changed.fingerprint != digits_version.fingerprint and changed.size_bytes == digits_version.size_bytes
    assert diabetes.DATASET == diabetes_version.name


@pytest.mark.parametrize("name", PLUGINS)
def test_onnx_export_matches_torch(name: str, trained: Any, tmp_path: Path) -> None:
    import onnx
    import onnxruntime
    import torch

    run: TrainedRun = trained(name)
    path = tmp_path / "model" / f"{name}.onnx"
    assert run.plugin.export_onnx(run.module, path) is True
    onnx.checker.check_model(onnx.load(str(path)))
    # Our own check, on real held-out data and a batch size the export never saw.
    features, _ = run.spec.datamodule.test_tensors()
    batch = features[:13]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {session.get_inputs()[0].name: batch.numpy()})
    run.module.eval()
    with torch.no_grad():
        expected = run.module(batch).numpy()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)


def test_onnx_export_that_does_not_verify_leaves_no_file(trained: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from mlhub.plugins import _nn

    monkeypatch.setattr(_nn, "ONNX_ATOL", -1.0)  # no difference can be within a negative tolerance
    run: TrainedRun = trained("diabetes-regression")
    path = tmp_path / "bad.onnx"
    assert run.plugin.export_onnx(run.module, path) is False
    assert not path.exists()
