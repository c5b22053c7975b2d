"""Dependencies of the routes: the app state, the caller (a bearer token, or Basic auth with a token as the
password, as MLflow clients send it -> role), and role checks."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mlhub.api.auth import ANONYMOUS, Principal, Revoked, Role
from mlhub.api.errors import PermissionDenied, Unauthenticated
from mlhub.api.state import AppState
from mlhub.events import CURRENT_ACTOR

_bearer = HTTPBearer(auto_error=False, description="An mlhub API token (`mlhub tokens create`, or one of "
                     "MLHUB_API_TOKENS; roles reader, writer, admin)")


def get_state(request: Request) -> AppState:
    """The state the lifespan built."""
    state: AppState = request.app.state.mlhub
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def _principal(state: AppState, credentials: HTTPAuthorizationCredentials | None,
               authorization: str | None = None) -> Principal:
    if (credentials is None or not credentials.credentials) and authorization:
        return basic_principal(state, authorization)
    if credentials is None or not credentials.credentials:
        return ANONYMOUS
    principal = _lookup(state, credentials.credentials)
    if principal is None:
        raise Unauthenticated("the bearer token is not one of the hub's API tokens")
    return principal


def _lookup(state: AppState, token: str) -> Principal | None:
    try:
        return state.tokens.lookup(token)
    except Revoked as e:
        r = e.record
        when = r.revoked_at.isoformat(timespec="seconds") if r.revoked_at else "?"
        raise Unauthenticated(f"the token {r.name!r} was revoked ({when} by {r.revoked_by or 'unknown'}): ask an "
                              "admin for a new one (`mlhub tokens create`) and set MLHUB_TOKEN to it",
                              details={"token_name": r.name, "revoked": True}) from None


def basic_principal(state: AppState, authorization: str) -> Principal:
    """HTTP Basic auth as the MLflow client sends it (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD): the
    password is an mlhub token, whose role applies; the user name is recorded with the token's name."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return ANONYMOUS
    try:
        username, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthenticated("the Basic credentials are not base64 of user:password") from None
    principal = _lookup(state, password) if sep else None
    if principal is None:
        raise Unauthenticated("the Basic password is not one of the hub's API tokens (give an mlhub token "
                              "as MLFLOW_TRACKING_PASSWORD, or as MLFLOW_TRACKING_TOKEN)")
    return Principal(role=principal.role, name=principal.name, user=username[:100] or None)


def _require(role: Role, *, open_when_reads_are_open: bool = False,
             open_when_query_is_open: bool = False) -> object:
    # async: an in-memory lookup, run on the request's own task, so the actor it sets is the handler's
    async def check(state: StateDep,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                    authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> Principal:
        principal = _principal(state, credentials, authorization)
        if principal.role is not None:
            CURRENT_ACTOR.set(principal.name)  # every event this request appends records who acted
        if principal.role is None:
            if open_when_reads_are_open and state.settings.api_open_reads:
                return principal
            if open_when_query_is_open and state.settings.api_open_query:
                return principal
            raise Unauthenticated("this endpoint needs a bearer token (Authorization: Bearer <token>)")
        if principal.role < role:
            raise PermissionDenied(f"a {principal.role.name} token may not do this; it needs the {role.name} role",
                                   details={"role": principal.role.name, "required": role.name})
        return principal

    return check


ReaderDep = Annotated[Principal, Depends(_require(Role.reader, open_when_reads_are_open=True))]
#: POST /query: a reader, or anyone with MLHUB_API_OPEN_QUERY (MLHUB_API_OPEN_READS opens GETs only).
QueryReaderDep = Annotated[Principal, Depends(_require(Role.reader, open_when_query_is_open=True))]
WriterDep = Annotated[Principal, Depends(_require(Role.writer))]
AdminDep = Annotated[Principal, Depends(_require(Role.admin))]
MinSeq = Annotated[int | None, Query(ge=1, le=2**62, description="wait (bounded) until the projections have "
                                     "applied this stream sequence, e.g. the seq a write answered with")]
