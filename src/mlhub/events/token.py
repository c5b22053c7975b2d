"""Events of API tokens (subject mlhub.ev.token.<name>.*) and the one fold of them.

A token is stored as the sha256 of its text, never the text: the token itself is shown once, to whoever issued
it. Every API replica folds these events into its in-memory token table; `mlhub tokens list` folds the same.
A name is taken for good once issued (a revoked name is not issued again), so an actor name in the log always
means one token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from mlhub.errors import InvalidInput
from mlhub.events.base import SUBJECT_PREFIX, DomainEvent, Sha256Hex

if TYPE_CHECKING:
    from mlhub.events.envelope import Envelope

#: The roles a token may have, lowest first (each may do everything of the roles before it).
TOKEN_ROLES = ("reader", "writer", "admin")
TokenRole = Literal["reader", "writer", "admin"]
#: Every token event; what an API replica subscribes to.
TOKEN_SUBJECTS = f"{SUBJECT_PREFIX}.token.>"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_NAME = re.compile(_NAME_PATTERN)
#: A token's name: 1 to 64 letters, digits, '_' and '-', starting with a letter or digit (it is a subject token).
TokenName = Annotated[str, StringConstraints(pattern=_NAME_PATTERN)]


def check_token_name(name: str) -> str:
    """The name, or InvalidInput saying what is wrong with it."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"token name {name[:80]!r} is not valid: use 1 to 64 letters, digits, '_' and '-', "
                           "starting with a letter or digit")
    if name in TOKEN_ROLES:
        raise InvalidInput(f"token name {name!r} is a role's name; choose another")
    return name


def check_token_role(role: str) -> TokenRole:
    """The role, or InvalidInput naming the roles there are."""
    if role not in TOKEN_ROLES:
        raise InvalidInput(f"token role {role!r} is not one of {', '.join(TOKEN_ROLES)}")
    return role  # type: ignore[return-value]


class TokenEvent(DomainEvent):
    """Base of the events about one named API token."""

    aggregate_type: ClassVar[str] = "token"
    aggregate_field: ClassVar[str] = "name"

    name: TokenName


class TokenIssued(TokenEvent):
    """A token was issued: its role and the sha256 of its text (the text itself is never stored)."""

    event_type: ClassVar[str] = "token.issued"

    role: TokenRole
    token_sha256: Sha256Hex
    issued_by: str | None = Field(default=None, max_length=300)


class TokenRevoked(TokenEvent):
    """A token was revoked: every API replica refuses it from then on (401)."""

    event_type: ClassVar[str] = "token.revoked"

    revoked_by: str | None = Field(default=None, max_length=300)
    reason: str = Field(default="", max_length=2000)


@dataclass(frozen=True)
class TokenRecord:
    """One issued token as the log tells it (never the token's text)."""

    name: str
    role: str
    token_sha256: str
    created_at: datetime
    created_by: str | None
    seq: int
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @property
    def revoked(self) -> bool:
        """Whether the token was revoked."""
        return self.revoked_at is not None


def apply_token_event(tokens: dict[str, TokenRecord], seq: int, envelope: Envelope) -> TokenRecord | None:
    """Fold one event into the table (in place); the record it changed, or None. Applying an event again, or
    an issue after the name's revoke was applied, changes nothing."""
    event = envelope.event
    if isinstance(event, TokenIssued):
        if event.name in tokens:
            return None
        record = TokenRecord(event.name, event.role, event.token_sha256, envelope.occurred_at,
                             envelope.actor or event.issued_by, seq)
        tokens[event.name] = record
        return record
    if isinstance(event, TokenRevoked):
        old = tokens.get(event.name)
        if old is None or old.revoked:
            return None
        tokens[event.name] = record = replace(old, revoked_at=envelope.occurred_at,
                                              revoked_by=envelope.actor or event.revoked_by, seq=max(old.seq, seq))
        return record
    return None


def fold_tokens(events: Iterable[tuple[int, Envelope]]) -> dict[str, TokenRecord]:
    """Every token the events issue, by name, with its revocation."""
    tokens: dict[str, TokenRecord] = {}
    for seq, envelope in events:
        apply_token_event(tokens, seq, envelope)
    return tokens
