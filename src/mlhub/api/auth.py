"""Bearer-token auth: tokens come from the settings with a role each (reader < writer < admin)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from mlhub.errors import InvalidInput
from mlhub.settings import Settings


class Role(IntEnum):
    """What a token may do; each role may do everything of the roles below it."""

    reader = 1
    writer = 2
    admin = 3


@dataclass(frozen=True)
class Principal:
    """Who is calling: a configured token's role and a short name for records (never the token)."""

    role: Role | None
    name: str


ANONYMOUS = Principal(role=None, name="anonymous")


class TokenTable:
    """The configured tokens; `lookup` compares in constant time per token."""

    def __init__(self, tokens: dict[str, Role]) -> None:
        self._tokens = [(token.encode(), role) for token, role in tokens.items()]

    def __len__(self) -> int:
        return len(self._tokens)

    def lookup(self, token: str) -> Principal | None:
        """The principal of a token, or None when it is not configured."""
        given = token.encode()
        found: Principal | None = None
        for index, (known, role) in enumerate(self._tokens):
            if hmac.compare_digest(known, given):
                found = Principal(role=role, name=f"token#{index + 1}:{role.name}")
        return found


def parse_tokens(text: str, source: str) -> dict[str, Role]:
    """Parse "token:role" entries separated by commas or new lines; InvalidInput names the bad entry."""
    tokens: dict[str, Role] = {}
    entries = [e.split("#", 1)[0].strip() for line in text.splitlines() for e in line.split(",")]
    for number, entry in enumerate((e for e in entries if e), start=1):
        token, sep, role = entry.rpartition(":")
        if not sep or not token.strip():
            raise InvalidInput(f"{source}: entry {number} must look like token:role (role: reader, writer, admin)")
        role = role.strip().lower()
        if role not in Role.__members__:
            raise InvalidInput(f"{source}: entry {number} has role {role!r}; expected reader, writer or admin")
        if len(token.strip()) < 8:
            raise InvalidInput(f"{source}: entry {number}: a token must be at least 8 characters long")
        tokens[token.strip()] = Role[role]
    return tokens


def load_tokens(settings: Settings) -> TokenTable:
    """Tokens from MLHUB_API_TOKENS and MLHUB_API_TOKENS_FILE (both may be used)."""
    tokens: dict[str, Role] = {}
    if settings.api_tokens:
        tokens.update(parse_tokens(settings.api_tokens, "MLHUB_API_TOKENS"))
    if settings.api_tokens_file is not None:
        path = Path(settings.api_tokens_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise InvalidInput(f"MLHUB_API_TOKENS_FILE {str(path)!r} cannot be read: {e.strerror or e}") from e
        tokens.update(parse_tokens(text, str(path)))
    return TokenTable(tokens)
