"""Lineage from the read model: the whole chain behind the version production points to."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from tests.registry.helpers import COMMIT, CONFIG, add_run, append, project, sha
from tests.worker.helpers import RunningWorker, submit_digits, wait_for

from mlhub.eventlog import EventLog
from mlhub.events import ArtifactStored, RunCreated, RunFinished, sha256_of
from mlhub.readmodel import create_engine, migrate
from mlhub.registry import AliasNotFound, ModelNotFound, ModelVersionNotFound, promote, read_run, register
from mlhub.registry.queries import lineage, to_json


async def test_lineage_of_production_is_the_whole_chain(event_log: EventLog, database: Engine) -> None:
    old, new = await add_run(event_log), await add_run(event_log, metrics={"val_acc": 0.97, "val_loss": 0.1})
    await register(event_log, "digits", old, "model.onnx")
    await register(event_log, "digits", new, "model.onnx")
    await promote(event_log, "digits", "production", 1, None, actor="ana")
    await promote(event_log, "digits", "production", 2, 1, actor="ana")
    await project(event_log, database)

    with database.connect() as conn:
        chain = lineage(conn, "digits", alias="production")
        by_version = lineage(conn, "digits", version=1)
    assert (chain.version, chain.alias, chain.run.run_id, chain.run.status) == (2, "production", new, "finished")
    assert chain.artifact_sha256 == sha(new) and chain.artifact_uri == f"file:///artifacts/{sha(new)}"
    assert chain.config is not None and chain.config.sha256 == sha256_of(CONFIG)
    assert chain.config.snapshot == CONFIG and chain.config.overrides == ["model.lr=0.01"]
    assert chain.seed is not None and (chain.seed.seed, chain.seed.source) == (42, "config")
    assert chain.dataset is not None and (chain.dataset.name, chain.dataset.fingerprint) == (
        "sklearn-digits", sha("digits"))
    assert chain.code is not None and (chain.code.git_commit, chain.code.dirty, chain.code.diff_sha256) == (
        COMMIT, True, sha("diff"))
    assert chain.environment is not None and (chain.environment.python, chain.environment.torch,
                                              chain.environment.packages_sha256) == ("3.11.9", "2.5.1",
                                                                                      sha("packages"))
    assert chain.final_metrics == {"val_acc": 0.97, "val_loss": 0.1}
    assert chain.complete and chain.missing == ()
    assert by_version.run.run_id == old and by_version.alias is None
    assert to_json(chain)["code"]["dirty"] is True


async def test_links_a_run_never_recorded_are_named_missing(event_log: EventLog, database: Engine) -> None:
    run_id = "sdk-run-1"
    await append(event_log, RunCreated(run_id=run_id, experiment_id="e", name="script", source="sdk"))
    await append(event_log, ArtifactStored(run_id=run_id, path="model.pt", sha256=sha("x"), size_bytes=1,
                                           uri="file:///x"), RunFinished(run_id=run_id))
    await register(event_log, "script-model", run_id, "model.pt")
    await project(event_log, database)
    with database.connect() as conn:
        chain = lineage(conn, "script-model", version=1)
    assert chain.missing == ("config", "seed", "dataset", "code", "environment") and not chain.complete


async def test_unknown_names_in_a_lineage_query_are_named(event_log: EventLog, database: Engine) -> None:
    run_id = await add_run(event_log)
    await register(event_log, "digits", run_id, "model.onnx")
    await promote(event_log, "digits", "staging", 1, None, actor="ana")
    await project(event_log, database)
    with database.connect() as conn:
        with pytest.raises(ModelNotFound, match="no model nope in the read model"):
            lineage(conn, "nope", alias="production")
        with pytest.raises(AliasNotFound, match="model digits has no alias 'production' \\(aliases: staging\\)"):
            lineage(conn, "digits", alias="production")
        with pytest.raises(ModelVersionNotFound, match="model digits has no version 4 \\(latest: 1\\)"):
            lineage(conn, "digits", version=4)


async def test_a_really_trained_run_registered_and_promoted_has_a_complete_lineage(
    event_log: EventLog, tmp_path: Path
) -> None:
    """End to end with a real (tiny) training: the worker records every provenance link itself."""
    submitted = await submit_digits(event_log)
    async with RunningWorker(event_log, tmp_path / "worker"):
        await wait_for(event_log, [submitted.job_id], timeout_s=120)
    facts = await read_run(event_log, submitted.run_id)
    assert facts.status == "finished" and "val_acc" in facts.final_metrics
    onnx = next(path for path, a in facts.artifacts.items() if a.kind == "onnx")
    version = await register(event_log, "digits", submitted.run_id, onnx)
    await promote(event_log, "digits", "production", version.version, None, actor="ana", reason="e2e")

    engine = create_engine(f"sqlite:///{tmp_path / 'readmodel.db'}", writer=True)
    try:
        migrate(engine)
        await project(event_log, engine)
        with engine.connect() as conn:
            chain = lineage(conn, "digits", alias="production")
    finally:
        engine.dispose()
    assert chain.missing == (), chain
    assert chain.run.run_id == submitted.run_id and chain.config is not None
    assert chain.config.sha256 == submitted.config_sha256 and chain.seed is not None
    assert chain.seed.seed == submitted.seed and chain.dataset is not None and chain.code is not None
    assert chain.environment is not None and chain.environment.torch
    assert chain.artifact_sha256 == facts.artifacts[onnx].sha256
    assert chain.final_metrics["val_acc"] == pytest.approx(facts.final_metrics["val_acc"])
