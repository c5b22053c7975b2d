"""Validation at the call (one rule set, mlhub.events.keys), automatic steps, params flattened and kept,
directory uploads: each against a real hub (one per module), read back from the event log and the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.client.conftest import READER, WRITER, HubStack

from mlhub.client import Hub, InvalidMetric
from mlhub.client.values import flatten_params, param_value
from mlhub.errors import InvalidInput


@pytest.fixture
def hub(shared_hub: HubStack, spool_dir: Path) -> Iterator[Hub]:
    with Hub(shared_hub.url, WRITER, spool_dir=spool_dir, interval_s=0.05) as hub:
        yield hub


def test_a_bad_key_raises_in_the_caller_and_the_call_s_other_keys_are_stored(shared_hub: HubStack,
                                                                             hub: Hub) -> None:
    run = hub.start_run("validation")
    with pytest.raises(InvalidMetric) as bad:
        run.log_metrics({"loss": 0.5, "bad\nkey": 1.0, "acc": True, "lr": "0.1", "val/acc@top1": 0.9,
                         "grad": float("nan")}, step=3)
    message = str(bad.value)
    assert "3 keys refused" in message and "the call's 3 other key(s) were logged" in message, message
    assert "metric key 'bad\\nkey' has U+000A at position 3" in message
    assert "metric 'acc': value True is a bool" in message
    assert "metric 'lr': value '0.1' (str) is not a number" in message
    with pytest.raises(InvalidMetric, match=r"^metric 'x': value \[1, 2\] \(list\) is not a number \(run "):
        run.log_metrics({"x": [1, 2]}, step=4)
    with pytest.raises(InvalidMetric, match="timestamp_ms must be milliseconds"):
        run.log_metrics({"loss": 1.0}, step=5, timestamp_ms=10**20)

    with pytest.raises(InvalidMetric) as params:
        run.log_params({"lr": 0.1, "bad\tkey": 1, "prompt": "x" * 6001})
    assert "param key 'bad\\tkey'" in str(params.value)
    assert "param 'prompt': value is 6001 characters long; 6000 at most" in str(params.value)
    with pytest.raises(InvalidMetric, match="tag 'notes': value is 8001 characters long; 8000 at most"):
        run.set_tags({"team": "vision", "notes": "y" * 8001})
    assert run.finish(timeout_s=30)

    assert shared_hub.series(run.run_id) == {"loss": [3], "val/acc@top1": [3], "grad": [3]}
    detail = shared_hub.run_detail(run.run_id)
    assert detail["params"] == {"lr": "0.1"} and detail["tags"] == {"team": "vision"}
    assert run.points_logged == run.points_delivered == 3 and run.rejected == []


def test_log_metrics_without_a_step_takes_the_run_s_next_step(shared_hub: HubStack, hub: Hub) -> None:
    run = hub.start_run("validation")
    for value in (1.0, 2.0, 3.0):
        run.log_metrics({"loss": value})  # 0, 1, 2
    run.log_metrics({"loss": 4.0}, step=10)  # an explicit step moves the counter
    run.log_metrics({"loss": 5.0})  # 11
    run.log_metrics({"loss": 6.0, "acc": 0.5}, step=5)  # a lower explicit step does not move it back
    run.log_metric("acc", 0.7)  # 12
    with pytest.raises(InvalidMetric):
        run.log_metrics({"": 1.0})  # nothing logged: no step used
    run.log_metric("loss", 7.0)  # 13
    assert run.next_step == 14
    assert run.finish(timeout_s=30)
    assert shared_hub.series(run.run_id) == {"loss": [0, 1, 2, 10, 11, 5, 13], "acc": [5, 12]}


def test_params_are_flattened_written_as_json_and_keep_their_value(shared_hub: HubStack, hub: Hub) -> None:
    with pytest.raises(InvalidMetric, match="param 'big': value is 6002 characters long"):
        hub.start_run("validation", params={"big": "z" * 6002})  # nothing is created
    run = hub.start_run("validation", params={"model": {"hidden": 4, "act": "relu", "opt": {"lr": 0.01}},
                                              "layers": [64, 32], "dropout": None, "use_bn": True, "name": "ü"},
                        tags={"cfg": {"source": "yaml"}})
    run.log_params({"model": {"hidden": 4}})  # the same value again: nothing is sent
    with pytest.raises(InvalidMetric) as changed:
        run.log_params({"model": {"hidden": 8}, "seed": 7})
    assert "param 'model.hidden' was logged as '4' already" in str(changed.value)
    assert "the call's 1 other key(s) were logged" in str(changed.value)
    run.log_params({"seed": 7})  # the value this Run logged: a no-op
    assert run.finish(timeout_s=30)

    detail = shared_hub.run_detail(run.run_id)
    assert detail["params"] == {"model.hidden": "4", "model.act": "relu", "model.opt.lr": "0.01",
                                "layers": "[64, 32]", "dropout": "null", "use_bn": "true", "name": "ü", "seed": "7"}
    assert detail["tags"] == {"cfg.source": "yaml"}
    params_events = [e for e in shared_hub.run_events(run.run_id) if e["type"] == "run.params_logged"]
    assert len(params_events) == 2, "a param logged again with its own value is not sent again"


def test_the_value_rules_match_lightning_s_flattening_without_lightning() -> None:
    import argparse
    import dataclasses

    @dataclasses.dataclass
    class Optim:
        lr: float = 0.1
        betas: tuple[float, float] = (0.9, 0.99)

    flat = flatten_params({"optim": Optim(), "ns": argparse.Namespace(k=3), "empty": {}, 5: "five"})
    assert flat == {"optim.lr": 0.1, "optim.betas": (0.9, 0.99), "ns.k": 3, "5": "five"}
    assert [param_value(v) for v in flat.values()] == ["0.1", "[0.9, 0.99]", "3", "five"]
    assert param_value(Path("/data/x")) == "/data/x" and param_value({"a": [Path("p")]}) == '{"a": ["p"]}'
    assert param_value(float("nan")) == "NaN" and param_value(False) == "false"
    with pytest.raises(InvalidMetric, match="params must be a mapping"):
        flatten_params([1, 2])  # type: ignore[arg-type]


def test_log_artifacts_uploads_a_tree_under_its_relative_paths(shared_hub: HubStack, hub: Hub,
                                                              tmp_path: Path) -> None:
    tree = tmp_path / "export"
    (tree / "sub" / "deeper").mkdir(parents=True)
    files = {"a.txt": b"alpha", "sub/b.bin": bytes(range(256)), "sub/deeper/c.json": json.dumps({"c": 1}).encode()}
    for rel, data in files.items():
        (tree / rel).write_bytes(data)
    run = hub.start_run("validation")
    infos = run.log_artifacts(tree, artifact_path="model/")
    assert [i.path for i in infos] == ["model/a.txt", "model/sub/b.bin", "model/sub/deeper/c.json"]
    assert all(i.uploaded for i in infos)
    assert [i.path for i in run.log_artifacts(tree / "sub")] == ["b.bin", "deeper/c.json"]
    with pytest.raises(InvalidInput, match="not a directory"):
        run.log_artifacts(tree / "a.txt")
    assert run.finish(timeout_s=30)

    detail = shared_hub.run_detail(run.run_id)
    assert sorted(a["path"] for a in detail["artifacts"]) == [
        "b.bin", "deeper/c.json", "model/a.txt", "model/sub/b.bin", "model/sub/deeper/c.json"]
    for rel, data in files.items():
        download = httpx.get(f"{shared_hub.url}/api/v1/runs/{run.run_id}/artifacts/model/{rel}",
                             headers={"Authorization": f"Bearer {READER}"})
        assert download.status_code == 200 and download.content == data
