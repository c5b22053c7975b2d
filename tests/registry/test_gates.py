"""Promotion gates: the file is validated naming field paths; failed gates refuse and append nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.registry.helpers import CONFIG, add_run

from mlhub.eventlog import EventLog
from mlhub.registry import GateFailed, GatesConfigError, load_gates, parse_gates, promote, register

ROOT = Path(__file__).resolve().parents[2]
GATES = parse_gates({
    "aliases": {
        "staging": [{"metric": "val_acc", "op": ">=", "value": 0.8}],
        "production": [{"metric": "val_acc", "op": ">=", "value": 0.9}, {"reproduced": True}],
    },
    "models": {"lenient": {"production": []}},
})


def test_the_shipped_gates_file_is_valid() -> None:
    gates = load_gates(ROOT / "configs" / "registry.yaml")
    assert [c.describe() for c in gates.conditions("digits", "production")] == [
        "val_acc >= 0.9", "reproduced (val_acc, val_loss within 0)"]
    assert gates.conditions("diabetes", "staging") == []
    assert gates.conditions("digits", "canary") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("aliases:\n  production:\n    - {metric: val_acc, op: '=>', value: 0.9}\n",
         "aliases.production[0].op: Input should be '>=', '>', '<=', '<', '==' or '!='"),
        ("aliases:\n  production:\n    - {metric: val_acc, op: '>='}\n",
         "aliases.production[0].value: Field required"),
        ("aliases:\n  production:\n    - {reproduced: true, tolerance: -1}\n",
         "aliases.production[0].tolerance: Input should be greater than or equal to 0"),
        ("aliases:\n  production:\n    - {reproduced: false}\n",
         "aliases.production[0].reproduced: Input should be True"),
        ("models:\n  m:\n    prod uction: []\n", "models.m.prod uction.[key]: String should match pattern"),
        ("alias:\n  production: []\n", "alias: Extra inputs are not permitted"),
        ("aliases:\n  production:\n    - 3\n", "aliases.production[0]: a condition is a mapping"),
        ("aliases: [\n", "line 2, column 1: invalid YAML"),
    ],
)
def test_a_bad_gates_file_names_the_file_and_field_path(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    with pytest.raises(GatesConfigError) as raised:
        load_gates(path)
    assert f"{path}: {expected}" in str(raised.value)
    assert raised.value.code == "INVALID_PARAMETER_VALUE"


def test_a_missing_gates_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(GatesConfigError, match="absent.yaml: cannot read the promotion gates file"):
        load_gates(tmp_path / "absent.yaml")


async def test_a_failing_metric_gate_refuses_naming_condition_and_value(event_log: EventLog) -> None:
    run_id = await add_run(event_log, metrics={"val_acc": 0.85, "val_loss": 0.4})
    await register(event_log, "digits", run_id, "model.onnx")
    before = await event_log.last_sequence()
    with pytest.raises(GateFailed) as raised:
        await promote(event_log, "digits", "production", 1, None, actor="ana", gates=GATES)
    message = str(raised.value)
    assert message.startswith("model digits version 1 cannot become 'production': ")
    assert f"val_acc >= 0.9 failed: val_acc of run {run_id} is 0.85" in message
    assert "no other run has config sha256 " in message
    assert raised.value.code == "PROMOTION_GATE_FAILED" and len(raised.value.failures) == 2
    assert await event_log.last_sequence() == before

    staged = await promote(event_log, "digits", "staging", 1, None, actor="ana", gates=GATES)
    assert staged.changed and [(g.condition, g.passed) for g in staged.gates] == [("val_acc >= 0.8", True)]
    lenient = await register(event_log, "lenient", run_id, "model.onnx")
    assert (await promote(event_log, "lenient", "production", lenient.version, None, actor="ana",
                          gates=GATES)).changed


async def test_a_metric_the_run_never_logged_fails_the_gate(event_log: EventLog) -> None:
    run_id = await add_run(event_log, metrics={"val_loss": 0.1})
    await register(event_log, "digits", run_id, "model.onnx")
    with pytest.raises(GateFailed, match=f"val_acc >= 0.8 failed: run {run_id} has no metric val_acc"):
        await promote(event_log, "digits", "staging", 1, None, actor="ana", gates=GATES)


async def test_reproduced_needs_a_finished_run_of_the_same_config_with_the_same_final_metrics(
    event_log: EventLog,
) -> None:
    original = await add_run(event_log, metrics={"val_acc": 0.95, "val_loss": 0.2})
    await register(event_log, "digits", original, "model.onnx")
    other_config = {**CONFIG, "seed": 43}
    await add_run(event_log, config=other_config, metrics={"val_acc": 0.95, "val_loss": 0.2})  # other config
    failed = await add_run(event_log, metrics={"val_acc": 0.95, "val_loss": 0.2}, end="failed")
    differs = await add_run(event_log, metrics={"val_acc": 0.95, "val_loss": 0.25})
    with pytest.raises(GateFailed) as raised:
        await promote(event_log, "digits", "production", 1, None, actor="ana", gates=GATES)
    message = str(raised.value)
    assert f"no run with the same config reproduces run {original}" in message
    assert f"run {failed} is failed" in message and f"run {differs}: val_loss 0.25 vs 0.2" in message

    close = await add_run(event_log, metrics={"val_acc": 0.95, "val_loss": 0.2 + 1e-9})  # close is not identical
    with pytest.raises(GateFailed, match=f"run {close}: val_loss 0.200000001 vs 0.2\\)"):
        await promote(event_log, "digits", "production", 1, None, actor="ana", gates=GATES)
    same = await add_run(event_log, metrics={"val_acc": 0.95, "val_loss": 0.2})
    result = await promote(event_log, "digits", "production", 1, None, actor="ana", gates=GATES)
    assert [(g.condition, g.passed) for g in result.gates] == [
        ("val_acc >= 0.9", True), ("reproduced (every metric within 0)", True)]
    assert result.gates[1].detail == f"run {same} reproduces run {original}"
