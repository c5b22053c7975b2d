"""`mlhub models`: the model registry. Writes (register, promote) append to the event log and check against
it; reads (list, show, history, lineage) come from the SQL read model, so they show what `mlhub projector` has
applied (run `mlhub projector --until-caught-up` first when it is not running)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mlhub.commands.common import cli_user, fail, load_settings, read_model, run_with_event_log
from mlhub.commands.hubclient import DIRECT, HubClient, use_client, with_hub
from mlhub.errors import MlhubError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from mlhub.registry import GatesConfig
    from mlhub.settings import Settings

T = TypeVar("T")


@click.group("models")
def models() -> None:
    """The model registry: register versions from run artifacts, promote aliases, read lineage.

    register and promote write events (checked against the event log); list, show, history and lineage read
    the SQL read model, i.e. what `mlhub projector` has applied so far.
    """


def _echo_json(value: Any) -> None:
    from mlhub.registry.queries import to_json

    click.echo(json.dumps(to_json(value), indent=2, sort_keys=False))




def _read(query: Callable[[sa.Connection], T], via_hub: Callable[[HubClient], T], direct: bool) -> T:
    """The read model's answer, or (client mode) the hub's."""
    settings = load_settings()
    if use_client(settings, direct):
        return with_hub(settings, via_hub)
    try:
        with read_model(settings) as conn:
            return query(conn)
    except MlhubError as e:
        fail(e)


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def _v(version: int | None) -> str:
    return "(none)" if version is None else f"v{version}"


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@DIRECT
def list_models(as_json: bool, direct: bool) -> None:
    """Every registered model: latest version, number of versions, aliases."""
    from mlhub.commands import models_client
    from mlhub.registry.queries import list_models as query

    found = _read(query, models_client.list_models, direct)
    if as_json:
        _echo_json(found)
        return
    if not found:
        click.echo("no registered models")
    for m in found:
        aliases = ", ".join(f"{a}={_v(v)}" for a, v in m.aliases.items()) or "no aliases"
        click.echo(f"{m.model_name}: {m.version_count} version(s), latest {_v(m.latest_version)}, {aliases}")


@models.command("show")
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(min=1), help="Show this version only.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@DIRECT
def show(name: str, version: int | None, as_json: bool, direct: bool) -> None:
    """The model NAME with its versions and aliases (or one version with --version)."""
    from mlhub.commands import models_client
    from mlhub.registry.queries import VersionInfo, model_details, version_info

    if version is not None:
        one = _read(lambda conn: version_info(conn, name, version),
                    lambda client: models_client.version_info(client, name, version), direct)
        if as_json:
            _echo_json(one)
        else:
            _print_version(one)
        return
    details = _read(lambda conn: model_details(conn, name),
                    lambda client: models_client.model_details(client, name), direct)
    if as_json:
        _echo_json(details)
        return
    s = details.summary
    aliases = ", ".join(f"{a}={_v(v)}" for a, v in s.aliases.items()) or "none"
    click.echo(f"model {s.model_name}: latest {_v(s.latest_version)}, aliases: {aliases}")
    for info in details.versions:
        assert isinstance(info, VersionInfo)
        _print_version(info)


def _print_version(v: Any) -> None:
    aliases = f" [{', '.join(v.aliases)}]" if v.aliases else ""
    click.echo(f"  v{v.version}{aliases}: run {v.run_id} ({v.run_status or 'not projected'}), artifact "
               f"{v.artifact_path} sha256 {v.artifact_sha256[:12]}, registered {_when(v.registered_at)} by "
               f"{v.registered_by or '-'}{': ' + v.description if v.description else ''}")


@models.command("register")
@click.argument("name")
@click.option("--run", "run_id", required=True, help="The finished run whose artifact becomes the version.")
@click.option("--artifact", "artifact_path", required=True,
              help="The artifact's logical path in the run, e.g. model.onnx.")
@click.option("--description", default="", help="Free text stored with the version.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@DIRECT
def register(name: str, run_id: str, artifact_path: str, description: str, as_json: bool, direct: bool) -> None:
    """Register the next version of model NAME from an artifact of a finished run.

    The REST API has no registration endpoint yet: this command needs the event log (MLHUB_NATS_URL, or
    --direct on the hub's machine, where the running `mlhub up` is found through MLHUB_DATA_DIR)."""
    from mlhub.registry import register as register_version

    settings = load_settings()
    if use_client(settings, direct):
        raise click.UsageError("model registration is not part of the hub's REST API yet: run it with --direct "
                               "(on the hub's machine, with its MLHUB_DATA_DIR) or with MLHUB_NATS_URL set")
    result = run_with_event_log(settings, "mlhub-models", lambda log: register_version(
        log, name, run_id, artifact_path, description=description, registered_by=cli_user(),
        producer=settings.producer))
    if as_json:
        _echo_json(result)
        return
    click.echo(f"registered model {result.model_name} version {result.version} from run {result.run_id} "
               f"({result.artifact_path}, sha256 {result.artifact_sha256[:12]}) at seq {result.seq}")


def _expected(value: str | None) -> int | None:
    if value is None or value.lower() == "none":
        return None
    try:
        number = int(value.removeprefix("v"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a version number nor 'none'",
                                 param_hint="--expect-current") from None
    if number < 1:
        raise click.BadParameter(f"a version is >= 1, got {number}", param_hint="--expect-current")
    return number


def _gates(settings: Settings, path: Path | None) -> GatesConfig | None:
    """The gates file named by --gates or MLHUB_REGISTRY_GATES (must exist), else configs/registry.yaml if any."""
    from mlhub.registry import GatesConfigError, load_gates
    from mlhub.settings import DEFAULT_REGISTRY_GATES

    chosen = path or settings.gates_file()
    if chosen is None:
        click.echo(f"note: no promotion gates ({DEFAULT_REGISTRY_GATES} not found and MLHUB_REGISTRY_GATES unset)",
                   err=True)
        return None
    try:
        return load_gates(chosen)
    except GatesConfigError as e:
        for line in str(e).splitlines():
            click.echo(f"error [{e.code}]: {line}", err=True)
        sys.exit(2)


@models.command("promote")
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@click.option("--alias", required=True, help="The alias to point at VERSION, e.g. staging or production.")
@click.option("--expect-current", "expect_current", metavar="V|none",
              help="The version the alias must point to now ('none': not set). Default: whatever it points to "
                   "when the command reads it; a promotion that lands in between is still refused.")
@click.option("--reason", default="", help="Why (recorded in the alias history).")
@click.option("--actor", default=None, help="Who promotes (recorded); default: cli:<login name>.")
@click.option("--gates", "gates_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Promotion gates file (default: MLHUB_REGISTRY_GATES, else configs/registry.yaml if present).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@DIRECT
def promote(name: str, version: int, alias: str, expect_current: str | None, reason: str, actor: str | None,
            gates_path: Path | None, as_json: bool, direct: bool) -> None:
    """Point alias --alias of model NAME at VERSION, if its gates allow and nobody moved it meanwhile.

    In client mode this is POST /api/v1/models/NAME/aliases/ALIAS: the hub applies its own gates and checks
    the token's role (an admin token for a protected alias); --expect-current, --actor and --gates need
    --direct."""
    from mlhub.eventlog import EventLog
    from mlhub.registry import PromoteResult, current_alias
    from mlhub.registry import promote as promote_alias

    settings = load_settings()
    if use_client(settings, direct):
        if expect_current is not None or actor is not None or gates_path is not None:
            raise click.UsageError("--expect-current, --actor and --gates need --direct (or MLHUB_NATS_URL); "
                                   "through the hub, its own gates apply and the token names the actor")
        from mlhub.commands import models_client

        answer = with_hub(settings, lambda client: models_client.promote(client, name, alias, version, reason))
        if as_json:
            click.echo(json.dumps(answer))
        else:
            click.echo(f"model {name}: alias {alias} -> v{version} at seq {answer.get('seq')}")
        return
    expected = _expected(expect_current)
    gates = _gates(settings, gates_path)
    who = actor or cli_user()

    async def work(log: EventLog) -> PromoteResult:
        current = expected if expect_current is not None else await current_alias(log, name, alias)
        return await promote_alias(log, name, alias, version, current, actor=who, reason=reason, gates=gates,
                                   producer=settings.producer)

    result = run_with_event_log(settings, "mlhub-models", work)
    if as_json:
        _echo_json(result)
        return
    if not result.changed:
        click.echo(f"model {name}: alias {alias} already points to v{version}; nothing to do")
        return
    click.echo(f"model {name}: alias {alias} -> v{version} (was {_v(result.previous_version)}) at seq {result.seq}")
    for gate in result.gates:
        click.echo(f"  gate {gate.condition}: ok ({gate.detail})")


@models.command("history")
@click.argument("name")
@click.option("--alias", default=None, help="Only this alias.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@DIRECT
def history(name: str, alias: str | None, as_json: bool, direct: bool) -> None:
    """Every alias change of model NAME, oldest first: when, who, from which version to which, why."""
    from mlhub.commands import models_client
    from mlhub.registry.queries import alias_history

    changes = _read(lambda conn: alias_history(conn, name, alias),
                    lambda client: models_client.alias_history(client, name, alias), direct)
    if as_json:
        _echo_json(changes)
        return
    if not changes:
        click.echo(f"model {name}: no alias changes{f' of {alias}' if alias else ''}")
    for c in changes:
        click.echo(f"{_when(c.occurred_at)} {c.alias}: {_v(c.from_version)} -> {_v(c.to_version)} "
                   f"({c.action} by {c.actor}){': ' + c.reason if c.reason else ''}")


@models.command("lineage")
@click.argument("name")
@click.option("--alias", default=None, help="The version this alias points to (e.g. production).")
@click.option("--version", "version", type=click.IntRange(min=1), default=None, help="This version.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@DIRECT
def lineage(name: str, alias: str | None, version: int | None, as_json: bool, direct: bool) -> None:
    """The chain behind a version of model NAME: run -> config snapshot (sha256) -> seed -> dataset fingerprint
    -> code commit and dirty flag -> environment. Name exactly one of --alias and --version."""
    from mlhub.commands import models_client
    from mlhub.registry.queries import lineage as query

    if (alias is None) == (version is None):
        raise click.UsageError("name exactly one of --alias and --version")
    chain = _read(lambda conn: query(conn, name, alias=alias, version=version),
                  lambda client: models_client.lineage(client, name, alias=alias, version=version), direct)
    if as_json:
        _echo_json(chain)
        return
    from mlhub.analytics.cells import text_cell

    head = f"model {chain.model_name} v{chain.version}" + (f" ({chain.alias})" if chain.alias else "")
    lines = [f"{head}: artifact {chain.artifact_path} sha256 {chain.artifact_sha256}"
             + (f" at {chain.artifact_uri}" if chain.artifact_uri else "")]
    r = chain.run
    lines.append(f"  run         {r.run_id} ({r.status}) of experiment {r.experiment_id}, job {r.job_id or '-'}")
    if chain.config:
        lines.append(f"  config      sha256 {chain.config.sha256}"
                     + (f", overrides {' '.join(chain.config.overrides)}" if chain.config.overrides else ""))
    if chain.seed:
        lines.append(f"  seed        {text_cell(chain.seed.seed)} ({chain.seed.source})")
    if chain.dataset:
        lines.append(f"  dataset     {chain.dataset.name} fingerprint {chain.dataset.fingerprint}")
    if chain.code:
        lines.append(f"  code        {chain.code.git_commit or '(no commit)'}"
                     f"{' dirty, diff sha256 ' + text_cell(chain.code.diff_sha256) if chain.code.dirty else ' clean'}")
    if chain.environment:
        e = chain.environment
        lines.append(f"  environment python {e.python}, torch {e.torch or '-'}, lightning {e.lightning or '-'}, "
                     f"cuda {e.cuda or '-'}, {e.platform}, packages sha256 {e.packages_sha256[:12]}")
    if chain.final_metrics:
        lines.append("  metrics     " + ", ".join(  # a NaN final value is stored as None
            f"{k}={text_cell(math.nan if v is None else v)}" for k, v in chain.final_metrics.items()))
    if chain.missing:
        lines.append(f"  missing     {', '.join(chain.missing)} (the run never recorded them)")
    click.echo("\n".join(lines))
