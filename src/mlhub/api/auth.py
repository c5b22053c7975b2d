"""Bearer-token auth: who a token is, and with which role (reader < writer < admin).

Tokens come from two places: the settings (MLHUB_API_TOKENS / MLHUB_API_TOKENS_FILE, read at start) and the
event log (`mlhub tokens create`, `POST /tokens`: `token.issued` / `token.revoked` events). The table keeps the
configured ones as given and the issued ones by the sha256 of their text (never the text); it is loaded from
the log when the app starts and kept current by a live subscription (TokenFeed), so a revoke by any replica
or by the CLI reaches every replica within milliseconds, and one made through this replica before it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import threading
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from mlhub.errors import InvalidInput
from mlhub.eventlog import EventLog
from mlhub.events import TOKEN_SUBJECTS, Envelope, TokenRecord, apply_token_event, check_token_name, token_actor
from mlhub.settings import Settings

log = logging.getLogger(__name__)


class Role(IntEnum):
    """What a token may do; each role may do everything of the roles below it."""

    reader = 1
    writer = 2
    admin = 3


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's role and its actor name `token:<name>` (never the token); `user` is the
    user name an MLflow client sent with Basic auth, if any."""

    role: Role | None
    name: str
    user: str | None = None


ANONYMOUS = Principal(role=None, name="anonymous")


class Revoked(Exception):
    """The token was issued and then revoked (its record says when and by whom)."""

    def __init__(self, record: TokenRecord) -> None:
        super().__init__(record.name)
        self.record = record


@dataclass(frozen=True)
class ConfiguredToken:
    """A token of MLHUB_API_TOKENS / MLHUB_API_TOKENS_FILE: its name (given, or `env-N` / `file-N`) and role."""

    name: str
    role: Role


class TokenTable:
    """The tokens the API takes. `lookup` compares configured tokens in constant time and finds issued ones
    by their sha256; `apply` folds a token event in (thread-safe: lookups run in worker threads)."""

    def __init__(self, tokens: dict[str, Role | ConfiguredToken]) -> None:
        self._configured: list[tuple[bytes, ConfiguredToken]] = []
        for index, (token, value) in enumerate(tokens.items()):
            entry = value if isinstance(value, ConfiguredToken) else ConfiguredToken(f"env-{index + 1}", value)
            self._configured.append((token.encode(), entry))
        self._issued: dict[str, TokenRecord] = {}
        self._by_hash: dict[str, str] = {}
        self._lock = threading.Lock()
        #: The stream sequence of the last token event applied (0: none).
        self.position = 0

    def __len__(self) -> int:
        return len(self._configured) + len(self._issued)

    @property
    def configured_names(self) -> frozenset[str]:
        """Names of the configured tokens (an issued token may not take one)."""
        return frozenset(entry.name for _, entry in self._configured)

    def lookup(self, token: str) -> Principal | None:
        """The principal of a token, or None when it is unknown; Revoked when it was revoked."""
        given = token.encode()
        found: Principal | None = None
        for known, entry in self._configured:
            if hmac.compare_digest(known, given):
                found = Principal(role=entry.role, name=token_actor(entry.name))
        if found is not None:
            return found
        digest = hashlib.sha256(given).hexdigest()
        with self._lock:
            name = self._by_hash.get(digest)
            record = self._issued.get(name) if name is not None else None
        if record is None:
            return None
        if record.revoked:
            raise Revoked(record)
        return Principal(role=Role[record.role], name=token_actor(record.name))

    def issued(self) -> list[TokenRecord]:
        """Every issued token, oldest first."""
        with self._lock:
            return sorted(self._issued.values(), key=lambda r: (r.created_at, r.name))

    def apply(self, seq: int, envelope: Envelope) -> None:
        """Fold one token event in (again: a no-op)."""
        with self._lock:
            record = apply_token_event(self._issued, seq, envelope)
            if record is not None:
                self._by_hash[record.token_sha256] = record.name
                if record.name in self.configured_names and not record.revoked:
                    log.warning("issued token %r has the name of a configured token: its writes are recorded "
                                "under the same actor name", record.name)
            self.position = max(self.position, seq)


class TokenFeed:
    """Keeps a TokenTable current from the event log: `start()` loads every token event stored so far, then
    a task follows new ones (an ordered consumer on mlhub.ev.token.>), resuming after the last applied one when
    the connection drops."""

    def __init__(self, event_log: EventLog, table: TokenTable, *, start_timeout_s: float = 60.0) -> None:
        self.event_log = event_log
        self.table = table
        self.start_timeout_s = start_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._target = 0

    async def start(self) -> None:
        """Load the stored token events (the app serves only after this) and start following."""
        self._target = await self.event_log.last_sequence(TOKEN_SUBJECTS)
        if self._target <= self.table.position:
            self._caught_up.set()
        self._task = asyncio.create_task(self._follow(), name="mlhub-token-feed")
        waiter = asyncio.ensure_future(self._caught_up.wait())
        done, _ = await asyncio.wait({waiter, self._task}, timeout=self.start_timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            await self.stop()
            raise TimeoutError(f"the API tokens of the event log ({TOKEN_SUBJECTS}) were not loaded within "
                               f"{self.start_timeout_s:g} s")

    async def _follow(self) -> None:
        delay = 0.1
        while True:
            try:
                async for recorded in self.event_log.replay(self.table.position + 1, subject_filter=TOKEN_SUBJECTS,
                                                            follow=True):
                    self.table.apply(recorded.seq, recorded.envelope)
                    if recorded.seq >= self._target:
                        self._caught_up.set()
                    delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the event log went away: try again after its last applied event
                log.warning("token feed: %s: %s; resuming after seq %d in %.1f s", type(e).__name__, e,
                            self.table.position, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


def parse_tokens(text: str, source: str, *, unnamed_prefix: str = "env") -> dict[str, ConfiguredToken]:
    """Parse "token:role" or "token:role:name" entries separated by commas or new lines; an entry without a name
    is named `<unnamed_prefix>-<its number>`. InvalidInput names the bad entry."""
    tokens: dict[str, ConfiguredToken] = {}
    entries = [e.split("#", 1)[0].strip() for line in text.splitlines() for e in line.split(",")]
    for number, entry in enumerate((e for e in entries if e), start=1):
        token, sep, role = entry.rpartition(":")
        name = f"{unnamed_prefix}-{number}"
        if sep and role.strip().lower() not in Role.__members__:
            head, sep2, maybe_role = token.rpartition(":")
            if sep2 and maybe_role.strip().lower() in Role.__members__:  # token:role:name
                try:
                    name = check_token_name(role.strip())
                except InvalidInput as e:
                    raise InvalidInput(f"{source}: entry {number}: {e}") from None
                token, role = head, maybe_role
        if not sep or not token.strip():
            raise InvalidInput(f"{source}: entry {number} must look like token:role or token:role:name "
                               "(role: reader, writer, admin)")
        role = role.strip().lower()
        if role not in Role.__members__:
            raise InvalidInput(f"{source}: entry {number} has role {role!r}; expected reader, writer or admin")
        if len(token.strip()) < 8:
            raise InvalidInput(f"{source}: entry {number}: a token must be at least 8 characters long")
        tokens[token.strip()] = ConfiguredToken(name, Role[role])
    return tokens


def load_tokens(settings: Settings) -> TokenTable:
    """Tokens from MLHUB_API_TOKENS and MLHUB_API_TOKENS_FILE (both may be used); the issued ones are added
    by a TokenFeed."""
    tokens: dict[str, Role | ConfiguredToken] = {}
    if settings.api_tokens:
        tokens.update(parse_tokens(settings.api_tokens, "MLHUB_API_TOKENS"))
    if settings.api_tokens_file is not None:
        path = Path(settings.api_tokens_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise InvalidInput(f"MLHUB_API_TOKENS_FILE {str(path)!r} cannot be read: {e.strerror or e}") from e
        tokens.update(parse_tokens(text, str(path), unnamed_prefix="file"))
    names = [t.name for t in tokens.values() if isinstance(t, ConfiguredToken)]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise InvalidInput(f"MLHUB_API_TOKENS / MLHUB_API_TOKENS_FILE name more than one token {doubled[0]!r}")
    return TokenTable(tokens)
