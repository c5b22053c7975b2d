"""The verdict of a reproduction (pure): training results must be bit-identical; system/ samples are not results."""

from __future__ import annotations

from mlhub.events import RunStatus
from mlhub.scheduler.reproduce import RunRecord, compare


def _run(run_id: str, metrics: dict[str, float]) -> RunRecord:
    return RunRecord(run_id=run_id, experiment_id="e", status=RunStatus.FINISHED, snapshot={"seed": 7},
                     config_sha256="abc", overrides=(), seed=7, dataset_fingerprint="d", git_commit=None, dirty=None,
                     torch_version=None, reproduces_run_id=None, final_metrics=metrics)


def test_system_samples_are_left_out_of_the_verdict() -> None:
    """A short job may end before the worker's first CPU/memory sample: the gate run saw a bit-identical
    reproduction judged NOT reproduced for `system/cpu_percent: 25.2 vs None`."""
    original = _run("a", {"val_loss": 0.5, "system/cpu_percent": 25.2, "system/memory_mb": 609.6})
    reproduced = _run("b", {"val_loss": 0.5})
    verdict = compare(original, reproduced)
    assert [m.key for m in verdict.metrics] == ["val_loss"]
    assert verdict.all_match and verdict.problems() == []


def test_a_result_that_differs_or_is_missing_is_named() -> None:
    verdict = compare(_run("a", {"val_loss": 0.5, "acc": 0.9}), _run("b", {"val_loss": 0.50000001}))
    assert not verdict.all_match
    assert verdict.problems() == ["acc: 0.9 vs None", "val_loss: 0.5 vs 0.50000001"]


def test_only_system_samples_is_not_a_reproduction() -> None:
    verdict = compare(_run("a", {"system/cpu_percent": 1.0}), _run("b", {"system/cpu_percent": 1.0}))
    assert not verdict.all_match and verdict.problems() == ["neither run logged any metric"]
