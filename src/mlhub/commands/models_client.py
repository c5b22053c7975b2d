"""`mlhub models` reads and promotion through the hub's REST API (the CLI's client mode).

The answers are turned into the registry's own result classes (mlhub.registry.queries), so the text and the
--json output are those of the direct mode. Differences: a version's artifact URI is not part of the API's
answers (lineage shows none), and `history` without --alias covers the aliases set now (an alias that was
removed again is shown with --alias NAME).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from mlhub.commands.hubclient import HubClient, HubRequestError, json_float
from mlhub.registry.errors import AliasNotFound
from mlhub.registry.queries import (
    AliasChange,
    CodeLink,
    ConfigLink,
    DatasetLink,
    EnvironmentLink,
    Lineage,
    ModelDetails,
    ModelSummary,
    RunLink,
    SeedLink,
    VersionInfo,
)


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def _model(client: HubClient, name: str) -> dict[str, Any]:
    model: dict[str, Any] = client.get(f"/models/{quote(name, safe='')}")
    return model


def _summary(model: dict[str, Any]) -> ModelSummary:
    created, updated = _dt(model["created_at"]), _dt(model["updated_at"])
    assert created is not None and updated is not None
    return ModelSummary(model["model_name"], model["latest_version"], len(model["versions"]),
                        {a["alias"]: a["version"] for a in model["aliases"]}, created, updated)


def _run_status(client: HubClient, run_id: str) -> str | None:
    try:
        return str(client.get(f"/runs/{run_id}")["run"]["status"])
    except HubRequestError as e:
        if e.status == 404:
            return None
        raise


def _version(client: HubClient, model: dict[str, Any], v: dict[str, Any]) -> VersionInfo:
    aliases = tuple(sorted(a["alias"] for a in model["aliases"] if a["version"] == v["version"]))
    registered = _dt(v["registered_at"])
    assert registered is not None
    return VersionInfo(v["model_name"], v["version"], v["run_id"], v["artifact_path"], v["artifact_sha256"],
                       v["description"], v["registered_by"], registered, aliases, _run_status(client, v["run_id"]))


def list_models(client: HubClient) -> list[ModelSummary]:
    """Every registered model with its version count and aliases."""
    return [_summary(_model(client, m["model_name"])) for m in client.get("/models")["data"]]


def model_details(client: HubClient, name: str) -> ModelDetails:
    """A model with its versions (oldest first) and aliases."""
    model = _model(client, name)
    return ModelDetails(_summary(model), tuple(_version(client, model, v) for v in model["versions"]))


def version_info(client: HubClient, name: str, version: int) -> VersionInfo:
    """One version of a model."""
    model = _model(client, name)
    return _version(client, model, client.get(f"/models/{quote(name, safe='')}/versions/{version}"))


def alias_history(client: HubClient, name: str, alias: str | None) -> list[AliasChange]:
    """Changes of one alias, or of every alias set now, oldest first."""
    aliases = [alias] if alias is not None else [a["alias"] for a in _model(client, name)["aliases"]]
    changes = []
    for one in aliases:
        answer = client.get(f"/models/{quote(name, safe='')}/aliases/{quote(one, safe='')}/history")
        for c in answer["data"]:
            occurred = _dt(c["occurred_at"])
            assert occurred is not None
            changes.append(AliasChange(c["seq"], name, one, c["action"], c["from_version"], c["to_version"],
                                       c["actor"], c["reason"], occurred))
    return sorted(changes, key=lambda c: c.seq)


def lineage(client: HubClient, name: str, *, alias: str | None, version: int | None) -> Lineage:
    """The chain behind a version: from GET /models/{name}[/versions/{v}] and GET /runs/{run_id}."""
    model = _model(client, name)
    if alias is not None:
        found = {a["alias"]: a["version"] for a in model["aliases"]}
        if alias not in found:
            raise AliasNotFound(f"model {name} has no alias {alias!r} (aliases: {', '.join(sorted(found)) or 'none'})")
        version = found[alias]
    assert version is not None
    v = client.get(f"/models/{quote(name, safe='')}/versions/{version}")
    try:
        detail = client.get(f"/runs/{v['run_id']}")
    except HubRequestError as e:
        if e.status != 404:
            raise
        return Lineage(name, version, alias, v["artifact_path"], v["artifact_sha256"], None,
                       RunLink(v["run_id"], None, None, "unknown", None, None, None, None), None, None, None,
                       None, None, {}, ("run", "config", "seed", "dataset", "code", "environment"))
    r = detail["run"]
    config = ConfigLink(r["config_sha256"], r.get("config") or {}, list(r.get("config_overrides") or [])) \
        if r.get("config_sha256") else None
    seed = SeedLink(int(r["seed"]), r.get("seed_source")) if r.get("seed") is not None else None
    dataset = DatasetLink(r.get("dataset_name"), r["dataset_fingerprint"], r.get("dataset_size_bytes"),
                          r.get("dataset_num_examples")) if r.get("dataset_fingerprint") else None
    code = CodeLink(r.get("git_commit"), bool(r["git_dirty"]), r.get("git_diff_sha256"), r.get("git_repository")) \
        if r.get("git_dirty") is not None else None
    environment = EnvironmentLink(r.get("env_python"), r.get("env_platform"), r.get("env_torch"),
                                  r.get("env_lightning"), r.get("env_cuda"), r.get("env_device_name"),
                                  r["env_packages_sha256"]) if r.get("env_packages_sha256") else None
    links = {"config": config, "seed": seed, "dataset": dataset, "code": code, "environment": environment}
    metrics = {m["key"]: json_float(m["last_value"]) for m in sorted(detail["metrics"], key=lambda m: m["key"])}
    return Lineage(name, version, alias, v["artifact_path"], v["artifact_sha256"], None,
                   RunLink(r["run_id"], r.get("name"), r.get("experiment_id"), r["status"], r.get("job_id"),
                           r.get("reproduces_run_id"), _dt(r.get("started_at")), _dt(r.get("ended_at"))),
                   config, seed, dataset, code, environment, metrics,
                   tuple(k for k, link in links.items() if link is None))


def promote(client: HubClient, name: str, alias: str, version: int, reason: str) -> dict[str, Any]:
    """POST /models/{name}/aliases/{alias}: the hub checks the role, the gates and concurrency."""
    answer: dict[str, Any] = client.post(f"/models/{quote(name, safe='')}/aliases/{quote(alias, safe='')}",
                                         {"version": version, "reason": reason})
    return answer
