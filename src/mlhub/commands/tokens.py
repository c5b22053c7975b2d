"""`mlhub tokens create|list|revoke`: API tokens, issued as events on the log (stored as their sha256).

One implementation over two back ends with one answer shape (the API's JSON): the hub's REST API with an admin
token (client mode, the default), or the event log itself (`--direct`, or MLHUB_NATS_URL set), acting as
`cli:<login>`. A token's text is printed once, by `create`; nothing stores it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import click

from mlhub.commands.common import cli_user, load_settings, run_with_event_log
from mlhub.commands.hubclient import DIRECT, HubClient, use_client, with_hub
from mlhub.events import TOKEN_ROLES

if TYPE_CHECKING:
    from mlhub.settings import Settings


class TokenStore(Protocol):
    """Where tokens are issued, listed and revoked; every answer in the API's JSON form."""

    def create(self, role: str, name: str | None) -> dict[str, Any]: ...
    def list(self) -> list[dict[str, Any]]: ...
    def revoke(self, name: str, reason: str) -> dict[str, Any]: ...


class HubTokens:
    """The hub's REST API (POST /tokens, GET /tokens, POST /tokens/{name}/revoke; an admin token)."""

    def __init__(self, client: HubClient) -> None:
        self.client = client

    def create(self, role: str, name: str | None) -> dict[str, Any]:
        """Issue a token through the hub."""
        answer: dict[str, Any] = self.client.post("/tokens", {"role": role, "name": name})
        return answer

    def list(self) -> list[dict[str, Any]]:
        """The hub's issued tokens."""
        return list(self.client.get("/tokens")["data"])

    def revoke(self, name: str, reason: str) -> dict[str, Any]:
        """Revoke through the hub."""
        answer: dict[str, Any] = self.client.post(f"/tokens/{quote(name, safe='')}/revoke", {"reason": reason})
        return answer


class LogTokens:
    """The event log itself (mlhub.tokens), as `cli:<login>`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def create(self, role: str, name: str | None) -> dict[str, Any]:
        """Append token.issued."""
        from mlhub.tokens import issue_token, token_json

        issued = run_with_event_log(self.settings, "mlhub-tokens", lambda log: issue_token(
            log, role, name, issued_by=cli_user(), producer=self.settings.producer))
        return {**token_json(issued.record), "token": issued.token, "seq": issued.seq}

    def list(self) -> list[dict[str, Any]]:
        """Fold the token events of the log."""
        from mlhub.tokens import list_tokens, token_json

        return [token_json(r) for r in run_with_event_log(self.settings, "mlhub-tokens", list_tokens)]

    def revoke(self, name: str, reason: str) -> dict[str, Any]:
        """Append token.revoked."""
        from mlhub.tokens import revoke_token, token_json

        result = run_with_event_log(self.settings, "mlhub-tokens", lambda log: revoke_token(
            log, name, revoked_by=cli_user(), reason=reason, producer=self.settings.producer))
        return {**token_json(result.record), "changed": result.changed, "seq": result.seq}


def _with_store(direct: bool, work: Any) -> Any:
    settings = load_settings()
    if use_client(settings, direct):
        return with_hub(settings, lambda client: work(HubTokens(client)))
    return work(LogTokens(settings))


@click.group("tokens")
def tokens() -> None:
    """API tokens: create (printed once, stored as its sha256 on the event log), list, revoke.

    Through the hub at MLHUB_URL with an admin MLHUB_TOKEN (or the local `mlhub up`'s admin token), or with
    --direct on the event log. A revoke takes effect on the next request, on every API replica. Tokens of
    MLHUB_API_TOKENS / MLHUB_API_TOKENS_FILE are not listed here: they live in those settings.
    """


@tokens.command("create")
@click.option("--role", type=click.Choice(TOKEN_ROLES), required=True, help="What the token may do.")
@click.option("--name", default=None, help="Its name, recorded as the actor `token:<name>` of its writes (1 to "
                                           "64 letters, digits, '_', '-'; unique for good). Default: <role>-<hex>.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the token included).")
@DIRECT
def create(role: str, name: str | None, as_json: bool, direct: bool) -> None:
    """Issue a token with --role; the token is printed once: store it now."""
    answer = _with_store(direct, lambda store: store.create(role, name))
    if as_json:
        click.echo(json.dumps(answer))
        return
    click.echo(f"token {answer['name']} ({answer['role']}) created; it is shown only now:")
    click.echo(answer["token"])


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@DIRECT
def list_tokens(as_json: bool, direct: bool) -> None:
    """Every issued token: name, role, created, created by, revoked (never the token)."""
    found = _with_store(direct, lambda store: store.list())
    if as_json:
        click.echo(json.dumps(found))
        return
    if not found:
        click.echo("no issued tokens")
        return
    rows = [("NAME", "ROLE", "CREATED", "CREATED_BY", "REVOKED")]
    rows += [(t["name"], t["role"], t["created_at"][:19], t["created_by"] or "-",
              f"{t['revoked_at'][:19]} by {t['revoked_by'] or '-'}" if t["revoked"] else "no") for t in found]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[4])


@tokens.command("revoke")
@click.argument("name")
@click.option("--reason", default="", help="Why (recorded).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@DIRECT
def revoke(name: str, reason: str, as_json: bool, direct: bool) -> None:
    """Revoke the token NAME: from the next request on, the hub answers it 401."""
    answer = _with_store(direct, lambda store: store.revoke(name, reason))
    if as_json:
        click.echo(json.dumps(answer))
        return
    if not answer["changed"]:
        click.echo(f"token {name} was revoked already ({answer['revoked_at'][:19]} by {answer['revoked_by']})")
        return
    click.echo(f"token {name} revoked (seq {answer['seq']})")
