"""`mlhub runs`, `mlhub runs end RUN_ID` and `mlhub show RUN`: search runs, end one by hand, show one (by id, id
prefix or name), through the hub (GET /api/v1/runs, POST /runs/{id}/end, GET /run-lookup and /runs/{id}) or,
with MLHUB_NATS_URL set or --direct, on the read model and the event log themselves (the same queries and the
same tracking service, the same JSON)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mlhub.commands.common import fail, load_settings, read_model
from mlhub.commands.hubclient import DIRECT, HubClient, json_float, use_client, with_hub
from mlhub.errors import MlhubError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from mlhub.settings import Settings

T = TypeVar("T")




def _direct(settings: Settings, query: Callable[[sa.Connection], T]) -> T:
    try:
        with read_model(settings) as conn:
            return query(conn)
    except MlhubError as e:
        fail(e)


@click.group("runs", invoke_without_command=True)
@click.option("--experiment", "experiments", multiple=True, metavar="NAME",
              help="Only runs of this experiment (its name or id; repeatable).")
@click.option("--filter", "filter_text", default=None, metavar="FILTER",
              help="e.g. \"metrics.val_acc > 0.9 and params.lr = '0.001' and status = 'finished'\" (docs/api.md).")
@click.option("--order-by", "order_by", default=None, help="e.g. 'created_at DESC' (the default), 'name ASC'.")
@click.option("--max-results", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@DIRECT
@click.pass_context
def runs(ctx: click.Context, experiments: tuple[str, ...], filter_text: str | None, order_by: str | None,
         max_results: int, fmt: str, direct: bool) -> None:
    """Search runs: newest first, with status and last metric values (the filter language of docs/api.md).

    `mlhub runs end RUN_ID` ends a run by hand."""
    if ctx.invoked_subcommand is not None:
        return
    from mlhub.scheduler import experiment_id_for

    settings = load_settings()
    ids = [experiment_id_for(name) for name in experiments]
    if use_client(settings, direct):
        page = with_hub(settings, lambda client: client.get(
            "/runs", experiment_id=ids or None, filter=filter_text, order_by=order_by, max_results=max_results))
    else:
        from mlhub.api.queries import search_runs
        from mlhub.api.schemas import RunsPublic

        found = _direct(settings, lambda conn: search_runs(conn, experiment_ids=ids, filter_text=filter_text,
                                                           order_by=order_by, max_results=max_results,
                                                           page_token=None))
        page = RunsPublic.model_validate(found).model_dump(mode="json")
    if fmt == "json":
        click.echo(json.dumps(page["data"], indent=2))
        return
    rows = [("RUN_ID", "NAME", "EXPERIMENT", "STATUS", "CREATED", "METRICS (last)")]
    for run in page["data"]:
        metrics = " ".join(f"{k}={_num(v)}" for k, v in sorted(run["metrics"].items()))
        rows.append((run["run_id"], run.get("name") or "-", run.get("experiment_id") or "-", run["status"],
                     (run.get("created_at") or "-")[:19], metrics))
    click.echo(_table(rows))
    more = " (more: raise --max-results or narrow the filter)" if page.get("next_page_token") else ""
    click.echo(f"({page['count']} run{'s' if page['count'] != 1 else ''}{more})")


@runs.command("end")
@click.argument("run_id")
@click.option("--status", type=click.Choice(["killed", "failed", "finished"]), default="killed", show_default=True,
              help="How the run ended.")
@click.option("--reason", default="", help="Why (recorded with the run's end).")
@DIRECT
def end(run_id: str, status: str, reason: str, direct: bool) -> None:
    """End run RUN_ID by hand: a script's run left running (or crashed) ends with STATUS, recorded with who
    ended it. A job's run is refused while its job is queued or running: `mlhub cancel JOB_ID` instead."""
    settings = load_settings()
    if use_client(settings, direct):
        answer = with_hub(settings, lambda client: client.post(f"/runs/{run_id}/end",
                                                                {"status": status, "reason": reason}))
        seq = int(answer["seq"])
    else:
        seq = _end_direct(settings, run_id, status, reason)
    click.echo(f"run {run_id} ended: {status} (seq {seq})")


def _end_direct(settings: Settings, run_id: str, status: str, reason: str) -> int:
    from mlhub.commands.common import cli_user, run_with_event_log
    from mlhub.eventlog import EventLog
    from mlhub.events import RunStatus
    from mlhub.tracking import TrackingService

    async def work(event_log: EventLog) -> int:
        service = TrackingService(event_log, producer=settings.producer)
        written = await service.end_by_hand(run_id, RunStatus(status), reason=reason, actor=cli_user())
        return written.seq

    return run_with_event_log(settings, "mlhub-cli", work)


def _num(value: Any) -> str:
    """A metric value in a table: 4 significant digits; NaN and infinities as their JSON (never nan, inf)."""
    from mlhub.analytics.cells import text_cell

    number = json_float(value)
    if number is None:
        return "-"
    return f"{number:.4g}" if math.isfinite(number) else text_cell(number)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


@click.command("show")
@click.argument("ref", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print the whole document (GET /api/v1/runs/{id}) as JSON.")
@DIRECT
def show(ref: str, as_json: bool, direct: bool) -> None:
    """Everything known about RUN: status, times, provenance, params, tags, metrics, artifacts, lineage.

    RUN is a run id, a unique prefix of one, or a run's exact name; one that matches several runs is an error
    listing them."""
    settings = load_settings()
    if use_client(settings, direct):
        def fetch(client: HubClient) -> Any:
            run_id = client.get("/run-lookup", ref=ref)["run_id"]
            return client.get(f"/runs/{run_id}")

        detail = with_hub(settings, fetch)
    else:
        from mlhub.api.queries import get_run, resolve_run_ref
        from mlhub.api.schemas import RunDetail

        found = _direct(settings, lambda conn: get_run(conn, resolve_run_ref(conn, ref)["run_id"]))
        detail = RunDetail.model_validate(found).model_dump(mode="json")
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    click.echo("\n".join(describe(detail)))


def describe(detail: dict[str, Any]) -> list[str]:
    """The text form of a run document (every value through `text_cell`: JSON, never a Python repr)."""
    from mlhub.analytics.cells import text_cell

    run, lineage = detail["run"], detail["lineage"]
    lines = [f"run {run['run_id']} ({run.get('name') or 'unnamed'}): {run['status']}"]
    lines.append(f"  experiment  {run.get('experiment_id') or '-'}, job {run.get('job_id') or '-'}, "
                 f"source {run.get('source') or '-'}")
    lines.append(f"  times       created {_t(run.get('created_at'))}, started {_t(run.get('started_at'))}, "
                 f"ended {_t(run.get('ended_at'))}")
    if run.get("error"):
        lines.append(f"  error       {run.get('error_type') or 'Error'}: {run['error']}")
    lines.append(f"  config      sha256 {run.get('config_sha256') or '-'}, seed {text_cell(run.get('seed'))}")
    dataset = lineage.get("dataset") or {}
    if dataset.get("fingerprint"):
        lines.append(f"  dataset     {dataset.get('name')} fingerprint {dataset['fingerprint']}")
    code = lineage.get("code") or {}
    if code.get("git_commit"):
        lines.append(f"  code        {code['git_commit']}{' (dirty)' if code.get('git_dirty') else ''}")
    if lineage.get("reproduces_run_id"):
        lines.append(f"  reproduces  {lineage['reproduces_run_id']}")
    if lineage.get("reproduced_by"):
        lines.append(f"  reproduced  by {', '.join(lineage['reproduced_by'])}")
    for title, mapping in (("params", detail["params"]), ("tags", detail["tags"])):
        if mapping:
            lines.append(f"{title}:")
            lines += [f"  {k} = {text_cell(v, quote=False)}" for k, v in sorted(mapping.items())]
    if detail["metrics"]:
        lines.append("metrics:")
        rows = [("  KEY", "LAST", "STEP", "MIN", "MAX", "POINTS")]
        rows += [(f"  {m['key']}", _num(m["last_value"]), text_cell(m["last_step"]), _num(m["min_value"]),
                  _num(m["max_value"]), text_cell(m["count"])) for m in detail["metrics"]]
        lines.append(_table(rows))
    if detail["artifacts"]:
        lines.append("artifacts:")
        lines += [f"  {a['path']}  {a['kind']}  {a['size_bytes']} bytes  sha256 {a['sha256'][:12]}"
                  for a in detail["artifacts"]]
    for version in lineage.get("model_versions") or []:
        lines.append(f"registered as model {version['model_name']} v{version['version']}")
    return lines


def _t(value: Any) -> str:
    return str(value)[:19] if value else "-"
