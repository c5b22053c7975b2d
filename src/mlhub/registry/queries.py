"""Read queries of the model registry on the SQL read model: models, versions, alias history and lineage.

These read what the SQL projector has applied (`mlhub projector`); the commands in service.py read the log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from mlhub.errors import InvalidInput
from mlhub.readmodel import tables as t
from mlhub.registry.errors import AliasNotFound, ModelNotFound, ModelVersionNotFound


@dataclass(frozen=True)
class ModelSummary:
    """One registered model: how many versions, the latest, and where its aliases point."""

    model_name: str
    latest_version: int | None
    version_count: int
    aliases: dict[str, int]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class VersionInfo:
    """One model version: its run and artifact, who registered it, and the aliases pointing to it."""

    model_name: str
    version: int
    run_id: str
    artifact_path: str
    artifact_sha256: str
    description: str
    registered_by: str | None
    registered_at: datetime
    aliases: tuple[str, ...]
    run_status: str | None


@dataclass(frozen=True)
class ModelDetails:
    """A model with every version and alias."""

    summary: ModelSummary
    versions: tuple[VersionInfo, ...]


@dataclass(frozen=True)
class AliasChange:
    """One change of an alias: who, when, from which version to which (None: unset/removed), and why."""

    seq: int
    model_name: str
    alias: str
    action: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    occurred_at: datetime


@dataclass(frozen=True)
class RunLink:
    """The run a version came from."""

    run_id: str
    name: str | None
    experiment_id: str | None
    status: str
    job_id: str | None
    reproduces_run_id: str | None
    started_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class ConfigLink:
    """The run's config snapshot: its sha256, the snapshot itself and the overrides applied."""

    sha256: str
    snapshot: dict[str, Any]
    overrides: list[str]


@dataclass(frozen=True)
class SeedLink:
    """The seed the run used and whether the config gave it or it was drawn."""

    seed: int
    source: str | None


@dataclass(frozen=True)
class DatasetLink:
    """The exact data the run saw."""

    name: str | None
    fingerprint: str
    size_bytes: int | None
    num_examples: int | None


@dataclass(frozen=True)
class CodeLink:
    """The code the run ran: commit, dirty flag, sha256 of the uncommitted diff, repository."""

    git_commit: str | None
    dirty: bool
    diff_sha256: str | None
    repository: str | None


@dataclass(frozen=True)
class EnvironmentLink:
    """The software and hardware the run ran on."""

    python: str | None
    platform: str | None
    torch: str | None
    lightning: str | None
    cuda: str | None
    device_name: str | None
    packages_sha256: str


@dataclass(frozen=True)
class Lineage:
    """The chain behind a model version: version -> run -> config snapshot -> seed -> dataset -> code ->
    environment. A link the run never recorded is None and named in `missing`."""

    model_name: str
    version: int
    alias: str | None
    artifact_path: str
    artifact_sha256: str
    artifact_uri: str | None
    run: RunLink
    config: ConfigLink | None
    seed: SeedLink | None
    dataset: DatasetLink | None
    code: CodeLink | None
    environment: EnvironmentLink | None
    final_metrics: dict[str, float | None]
    missing: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """Whether every link of the chain is known."""
        return not self.missing


def to_json(value: Any) -> Any:
    """A query result (dataclass, list of them) as JSON-ready data: times as ISO 8601 text."""
    if hasattr(value, "__dataclass_fields__"):
        return to_json(asdict(value))
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _aliases_of(conn: sa.Connection, names: list[str] | None = None) -> dict[str, dict[str, int]]:
    query = sa.select(t.model_aliases.c.model_name, t.model_aliases.c.alias, t.model_aliases.c.version)
    if names is not None:
        query = query.where(t.model_aliases.c.model_name.in_(names))
    result: dict[str, dict[str, int]] = {}
    for name, alias, version in conn.execute(query.order_by(t.model_aliases.c.alias)):
        result.setdefault(name, {})[alias] = int(version)
    return result


def list_models(conn: sa.Connection) -> list[ModelSummary]:
    """Every registered model, by name."""
    counts: dict[str, int] = dict(conn.execute(sa.select(t.model_versions.c.model_name, sa.func.count())
                               .group_by(t.model_versions.c.model_name)).all())
    aliases = _aliases_of(conn)
    return [
        ModelSummary(r.model_name, r.latest_version, int(counts.get(r.model_name, 0)), aliases.get(r.model_name, {}),
                     r.created_at, r.updated_at)
        for r in conn.execute(sa.select(t.registered_models).order_by(t.registered_models.c.model_name))
    ]


def _summary(conn: sa.Connection, model_name: str) -> ModelSummary:
    row = conn.execute(sa.select(t.registered_models).where(t.registered_models.c.model_name == model_name)).first()
    if row is None:
        raise ModelNotFound(f"no model {model_name} in the read model (registered models appear once "
                            f"`mlhub projector` has applied them)")
    count = conn.execute(sa.select(sa.func.count()).select_from(t.model_versions)
                         .where(t.model_versions.c.model_name == model_name)).scalar_one()
    return ModelSummary(row.model_name, row.latest_version, int(count),
                        _aliases_of(conn, [model_name]).get(model_name, {}), row.created_at, row.updated_at)


def _versions(conn: sa.Connection, summary: ModelSummary, version: int | None = None) -> list[VersionInfo]:
    v = t.model_versions
    query = (sa.select(v, t.runs.c.status).select_from(v.outerjoin(t.runs, t.runs.c.run_id == v.c.run_id))
             .where(v.c.model_name == summary.model_name).order_by(v.c.version))
    if version is not None:
        query = query.where(v.c.version == version)
    by_version: dict[int, list[str]] = {}
    for alias, target in summary.aliases.items():
        by_version.setdefault(target, []).append(alias)
    return [
        VersionInfo(r.model_name, int(r.version), r.run_id, r.artifact_path, r.artifact_sha256, r.description,
                    r.registered_by, r.registered_at, tuple(sorted(by_version.get(int(r.version), []))), r.status)
        for r in conn.execute(query)
    ]


def model_details(conn: sa.Connection, model_name: str) -> ModelDetails:
    """A model with all its versions (oldest first) and aliases; ModelNotFound when it is not there."""
    summary = _summary(conn, model_name)
    return ModelDetails(summary, tuple(_versions(conn, summary)))


def version_info(conn: sa.Connection, model_name: str, version: int) -> VersionInfo:
    """One version of a model; ModelNotFound or ModelVersionNotFound when it is not there."""
    summary = _summary(conn, model_name)
    found = _versions(conn, summary, version)
    if not found:
        raise ModelVersionNotFound(f"model {model_name} has no version {version} (latest: {summary.latest_version})")
    return found[0]


def alias_history(conn: sa.Connection, model_name: str, alias: str | None = None) -> list[AliasChange]:
    """Every change of the model's aliases (or of one alias), oldest first."""
    _summary(conn, model_name)
    h = t.model_alias_history
    query = sa.select(h).where(h.c.model_name == model_name).order_by(h.c.seq)
    if alias is not None:
        query = query.where(h.c.alias == alias)
    return [AliasChange(int(r.seq), r.model_name, r.alias, r.action, r.from_version, r.to_version, r.actor,
                        r.reason, r.occurred_at) for r in conn.execute(query)]


def resolve_version(conn: sa.Connection, model_name: str, *, alias: str | None = None,
                    version: int | None = None) -> int:
    """The version an alias points to, or version itself once checked to exist (exactly one of the two)."""
    if (alias is None) == (version is None):
        raise InvalidInput("name exactly one of alias and version")
    summary = _summary(conn, model_name)
    if alias is not None:
        if alias not in summary.aliases:
            known = ", ".join(sorted(summary.aliases)) or "none"
            raise AliasNotFound(f"model {model_name} has no alias {alias!r} (aliases: {known})")
        return summary.aliases[alias]
    assert version is not None
    version_info(conn, model_name, version)
    return version


def lineage(conn: sa.Connection, model_name: str, *, alias: str | None = None,
            version: int | None = None) -> Lineage:
    """The whole chain behind the version an alias points to (or a version): run, config snapshot and hash,
    seed, dataset fingerprint, code commit and dirty flag, environment, plus the run's final metrics."""
    number = resolve_version(conn, model_name, alias=alias, version=version)
    v = t.model_versions
    mv = conn.execute(sa.select(v).where(v.c.model_name == model_name, v.c.version == number)).one()
    run = conn.execute(sa.select(t.runs).where(t.runs.c.run_id == mv.run_id)).first()
    uri = conn.execute(sa.select(t.artifacts.c.uri).where(t.artifacts.c.run_id == mv.run_id,
                                                          t.artifacts.c.path == mv.artifact_path)).scalar()
    metrics = {k: val for k, val in conn.execute(
        sa.select(t.metric_summaries.c.key, t.metric_summaries.c.last_value)
        .where(t.metric_summaries.c.run_id == mv.run_id).order_by(t.metric_summaries.c.key))}
    missing: list[str] = []
    if run is None:
        missing = ["run", "config", "seed", "dataset", "code", "environment"]
        return Lineage(model_name, number, alias, mv.artifact_path, mv.artifact_sha256, uri,
                       RunLink(mv.run_id, None, None, "unknown", None, None, None, None),
                       None, None, None, None, None, metrics, tuple(missing))
    config = seed = dataset = code = environment = None
    if run.config_sha256 is not None:
        config = ConfigLink(run.config_sha256, run.config or {}, list(run.config_overrides or []))
    if run.seed is not None:
        seed = SeedLink(int(run.seed), run.seed_source)
    if run.dataset_fingerprint is not None:
        dataset = DatasetLink(run.dataset_name, run.dataset_fingerprint, run.dataset_size_bytes,
                              run.dataset_num_examples)
    if run.git_dirty is not None:
        code = CodeLink(run.git_commit, bool(run.git_dirty), run.git_diff_sha256, run.git_repository)
    if run.env_packages_sha256 is not None:
        environment = EnvironmentLink(run.env_python, run.env_platform, run.env_torch, run.env_lightning,
                                      run.env_cuda, run.env_device_name, run.env_packages_sha256)
    links = {"config": config, "seed": seed, "dataset": dataset, "code": code, "environment": environment}
    missing = [name for name, link in links.items() if link is None]
    return Lineage(
        model_name, number, alias, mv.artifact_path, mv.artifact_sha256, uri,
        RunLink(run.run_id, run.name, run.experiment_id, run.status, run.job_id, run.reproduces_run_id,
                run.started_at, run.ended_at),
        config, seed, dataset, code, environment, metrics, tuple(missing),
    )
