"""API tokens (admin only): issue (`POST /tokens`, the token is in that answer only), list, revoke.

Thin over mlhub.tokens (the same functions `mlhub tokens --direct` uses). An issue or revoke is folded into
this replica's token table before the answer, so the next request here already sees it; other replicas see
it through their live subscription (milliseconds).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from mlhub.api.deps import AdminDep, StateDep
from mlhub.tokens import token_json as token_public

router = APIRouter(tags=["tokens"])

TokenNamePath = Annotated[str, Path(min_length=1, max_length=64, description="the token's name")]


class TokenCreate(BaseModel):
    """A token to issue: its role and (optionally) its name; default `<role>-<6 hex digits>`."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["reader", "writer", "admin"]
    name: str | None = Field(default=None, min_length=1, max_length=64,
                             description="1 to 64 letters, digits, '_' and '-'; unique for good")


class TokenRevoke(BaseModel):
    """Why a token is revoked (recorded)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000)


class TokenPublic(BaseModel):
    """An issued token as listed: never its text (nor its hash)."""

    name: str
    role: str
    created_at: datetime
    created_by: str | None
    revoked: bool
    revoked_at: datetime | None
    revoked_by: str | None


class TokenIssuedPublic(TokenPublic):
    """A new token: `token` is its text, shown in this answer only (store it now)."""

    token: str
    seq: int


class TokensPublic(BaseModel):
    """Every token issued on the event log, oldest first (the configured MLHUB_API_TOKENS are not listed)."""

    data: list[TokenPublic]
    count: int


class TokenRevokedPublic(TokenPublic):
    """A revoked token; `changed` is false when it had been revoked before (then `seq` is null)."""

    changed: bool
    seq: int | None


@router.post("/tokens", response_model=TokenIssuedPublic, status_code=201, operation_id="create_token")
async def create_token(body: TokenCreate, state: StateDep, who: AdminDep) -> Any:
    """Issue a token (stored as its sha256); 409 TOKEN_NAME_TAKEN when the name was used before, 400 a bad
    name."""
    from mlhub.tokens import issue_token

    issued = await issue_token(state.event_log, body.role, body.name, issued_by=who.name,
                               producer=state.settings.producer, reserved=state.tokens.configured_names)
    state.tokens.apply(issued.seq, issued.envelope)  # usable here at once
    return {**token_public(issued.record), "token": issued.token, "seq": issued.seq}


@router.get("/tokens", response_model=TokensPublic, operation_id="list_tokens")
async def list_tokens(state: StateDep, _: AdminDep) -> Any:
    """Every issued token with its role, creation and revocation (from this replica's table)."""
    data = [token_public(r) for r in state.tokens.issued()]
    return {"data": data, "count": len(data)}


@router.post("/tokens/{name}/revoke", response_model=TokenRevokedPublic, operation_id="revoke_token")
async def revoke_token(name: TokenNamePath, state: StateDep, who: AdminDep, body: TokenRevoke | None = None) -> Any:
    """Revoke a token: from the next request on it gets 401 here, within milliseconds on every replica.
    404 TOKEN_NOT_FOUND; revoking a revoked token changes nothing (`changed: false`)."""
    from mlhub.tokens import revoke_token as revoke

    result = await revoke(state.event_log, name, revoked_by=who.name, reason=body.reason if body else "",
                          producer=state.settings.producer)
    if result.envelope is not None and result.seq is not None:
        state.tokens.apply(result.seq, result.envelope)  # refused here before this answer leaves
    return {**token_public(result.record), "changed": result.changed, "seq": result.seq}
