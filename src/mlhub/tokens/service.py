"""Issue, revoke and list API tokens on the event log (events `token.issued`, `token.revoked`).

A name is unique for good: the issue is appended only while the name's subject is empty (expected version 0),
so of two racing issues of one name exactly one wins and the other is TokenNameTaken; a revoked name stays
taken. A revoke is guarded by the version it read.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from mlhub.errors import ConcurrencyError, MlhubError
from mlhub.eventlog import EventLog
from mlhub.events import (
    TOKEN_SUBJECTS,
    Envelope,
    TokenIssued,
    TokenRecord,
    TokenRevoked,
    apply_token_event,
    check_token_name,
    check_token_role,
    fold_tokens,
)

#: Issued tokens start with this (secret scanners and people can tell what they are); 256 random bits follow.
TOKEN_PREFIX = "mlhub_"


class TokenNameTaken(MlhubError):
    """A token of that name was issued before (revoked or not), or is configured in the API's settings."""

    code = "TOKEN_NAME_TAKEN"


class TokenNotFound(MlhubError):
    """No token of that name was ever issued on the event log."""

    code = "TOKEN_NOT_FOUND"


@dataclass(frozen=True)
class IssuedToken:
    """A new token: its record and its text (shown once, stored nowhere)."""

    record: TokenRecord
    token: str
    seq: int
    envelope: Envelope


@dataclass(frozen=True)
class RevokeResult:
    """A revoked token's record; `changed` is false when it had been revoked before (then seq is None)."""

    record: TokenRecord
    changed: bool
    seq: int | None
    envelope: Envelope | None


def token_json(record: TokenRecord) -> dict[str, Any]:
    """A token record as the API and `mlhub tokens list --json` show it: never its text nor its hash."""
    return {"name": record.name, "role": record.role, "created_at": record.created_at.isoformat(),
            "created_by": record.created_by, "revoked": record.revoked,
            "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
            "revoked_by": record.revoked_by}


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    """What is stored of a token: the sha256 of its text, lowercase hex."""
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_token(event_log: EventLog, role: str, name: str | None = None, *, issued_by: str | None = None,
                      producer: str = "mlhub", reserved: Collection[str] = ()) -> IssuedToken:
    """Issue a token with `role` under `name` (default: `<role>-<6 hex digits>`); `reserved` are names taken
    elsewhere (the API's configured tokens). InvalidInput for a bad name or role, TokenNameTaken."""
    role = check_token_role(role)
    name = check_token_name(name if name is not None else f"{role}-{secrets.token_hex(3)}")
    if name in reserved:
        raise TokenNameTaken(f"token name {name!r} is taken by a token configured in MLHUB_API_TOKENS / "
                             "MLHUB_API_TOKENS_FILE; choose another")
    token = new_token()
    envelope = Envelope(event=TokenIssued(name=name, role=role, token_sha256=token_sha256(token),
                                          issued_by=issued_by), producer=producer)
    try:
        result = await event_log.append(envelope, expected_version=0)
    except ConcurrencyError:
        raise TokenNameTaken(f"a token named {name!r} was issued before (names are never reused, even after a "
                             "revoke); choose another name") from None
    record = apply_token_event({}, result.seq, envelope)
    assert record is not None
    return IssuedToken(record, token, result.seq, envelope)


async def revoke_token(event_log: EventLog, name: str, *, revoked_by: str | None = None, reason: str = "",
                       producer: str = "mlhub") -> RevokeResult:
    """Revoke the token `name` (a no-op, changed=False, when it was revoked before); TokenNotFound."""
    check_token_name(name)
    for _ in range(3):  # a concurrent revoke of the same token: read again and see it revoked
        aggregate = await event_log.read_aggregate("token", name)
        record = fold_tokens((r.seq, r.envelope) for r in aggregate.events).get(name)
        if record is None:
            raise TokenNotFound(f"no token named {name!r} was issued (`mlhub tokens list` shows them; tokens of "
                                "MLHUB_API_TOKENS are removed from that setting instead)")
        if record.revoked:
            return RevokeResult(record, False, None, None)
        envelope = Envelope(event=TokenRevoked(name=name, revoked_by=revoked_by, reason=reason[:2000]),
                            producer=producer)
        try:
            result = await event_log.append(envelope, expected_version=aggregate.version)
        except ConcurrencyError:
            continue
        tokens = {name: record}
        changed = apply_token_event(tokens, result.seq, envelope)
        assert changed is not None
        return RevokeResult(changed, True, result.seq, envelope)
    raise ConcurrencyError(f"token {name!r} kept changing while it was being revoked; try again")


async def list_tokens(event_log: EventLog) -> list[TokenRecord]:
    """Every token issued on the event log, oldest first, with its revocation."""
    tokens = fold_tokens([(r.seq, r.envelope) async for r in event_log.replay(subject_filter=TOKEN_SUBJECTS)])
    return sorted(tokens.values(), key=lambda r: (r.created_at, r.name))
