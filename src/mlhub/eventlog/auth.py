"""Who may do what on the event log: the parts' NATS users and permissions, credentials, TLS.

The embedded nats-server refuses anonymous clients. Each part of mlhub connects as a user of its own with
least privilege (ROLE_PERMISSIONS): `admin` (operators' commands, stream creation: everything), `api` (the API
and the registry: every event type), `projector` (reads; appends only the audit seals and the reaper's
`run.*.crashed`) and `worker` (reads, its pool's durable consumer, `run.*` and `job.*` events; never
`model.*`, `metric.*` or `audit.*`). The embedded server's passwords are generated once per data dir into
`<nats dir>/credentials/<role>` (one line `user:password`, mode 0600, in a 0700 folder) and reused by every later
start; its config holds only their bcrypt hashes.

A client names its credentials with MLHUB_NATS_CREDS (a file: a NATS `.creds` file or one line
`user:password`) or in the URL (`nats://user:password@host:4222`), and TLS with MLHUB_NATS_TLS_CA/_CERT/_KEY.
`NatsAuth` carries them to `EventLog.connect`, the one place a connection is made. Secrets never appear in a
message: `redact_url` strips a URL's userinfo, and NatsAuth's repr hides the password.
"""

from __future__ import annotations

import os
import re
import secrets
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args
from urllib.parse import urlsplit, urlunsplit

from mlhub.errors import InvalidInput
from mlhub.eventlog.stream import STREAM_NAME, worker_consumer_name
from mlhub.events import SUBJECT_PREFIX, JobQueued, aggregate_subject_filter

if TYPE_CHECKING:
    from mlhub.settings import Settings

#: The users of the embedded server, one per kind of part.
ROLES = ("admin", "api", "projector", "worker")
#: bcrypt cost of the hashes in the server config. The passwords are 256-bit random tokens, so no cost factor
#: is needed against guessing; the hash keeps the secret itself out of the config, and a low cost keeps each
#: (re)connect cheap for the server (it checks the hash on every connect).
BCRYPT_ROUNDS = 6
#: The folder below the embedded server's nats dir that holds one credential file per role.
CREDENTIALS_DIR = "credentials"
_JWT_MARKER = "-----BEGIN NATS USER JWT-----"


@dataclass(frozen=True)
class Permissions:
    """A NATS user's publish allow/deny lists and subscribe allow list (None: no restriction)."""

    publish_allow: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_allow: tuple[str, ...] = ("_INBOX.>",)


def _reader_subjects() -> tuple[str, ...]:
    """What every part needs to read the stream: its info, direct gets (concurrency checks, last events),
    ephemeral ordered consumers (replay) with their flow-control replies."""
    api = "$JS.API"
    return (
        f"{api}.INFO",
        f"{api}.STREAM.INFO.{STREAM_NAME}",
        f"{api}.STREAM.MSG.GET.{STREAM_NAME}",
        f"{api}.DIRECT.GET.{STREAM_NAME}",
        f"{api}.DIRECT.GET.{STREAM_NAME}.>",
        f"{api}.CONSUMER.CREATE.{STREAM_NAME}",  # an ephemeral (ordered) consumer has no name in the subject
        f"$JS.FC.{STREAM_NAME}.>",
    )


def _worker_consumer_subjects() -> tuple[str, ...]:
    """The worker pools' shared durable consumers: create/update, info, fetch, ack (and nak, in-progress)."""
    subjects: list[str] = []
    pools = get_args(JobQueued.model_fields["pool"].annotation)
    for pool in pools:
        name = worker_consumer_name(pool)
        subjects += [
            f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM_NAME}.{name}",
            f"$JS.API.CONSUMER.CREATE.{STREAM_NAME}.{name}",
            f"$JS.API.CONSUMER.CREATE.{STREAM_NAME}.{name}.>",
            f"$JS.API.CONSUMER.INFO.{STREAM_NAME}.{name}",
            f"$JS.API.CONSUMER.MSG.NEXT.{STREAM_NAME}.{name}",
            f"$JS.ACK.{STREAM_NAME}.{name}.>",
        ]
    return tuple(subjects)


def _events(aggregate: str) -> str:
    return f"{SUBJECT_PREFIX}.{aggregate}.>"


#: The permissions of each role; admin is unrestricted (None).
ROLE_PERMISSIONS: dict[str, Permissions | None] = {
    "admin": None,
    "api": Permissions(publish_allow=(*_reader_subjects(), f"{SUBJECT_PREFIX}.>")),
    "projector": Permissions(
        publish_allow=(*_reader_subjects(),
                       aggregate_subject_filter("audit", "seals").removesuffix(">") + "sealed",  # the sealer's seals
                       f"{SUBJECT_PREFIX}.run.*.crashed"),  # the reaper ends silent runs
    ),
    "worker": Permissions(
        publish_allow=(*_reader_subjects(), *_worker_consumer_subjects(), _events("run"), _events("job")),
        publish_deny=(_events("model"), _events("metric"), _events("audit"), _events("experiment")),
    ),
}


@dataclass(frozen=True)
class UserPassword:
    """A NATS user and password (the password never shows in a repr)."""

    user: str
    password: str = field(repr=False)


def read_credentials(path: Path, setting: str = "MLHUB_NATS_CREDS") -> UserPassword | Path:
    """A credentials file: a NATS `.creds` file (returned as its path, for nats-py) or one line
    `user:password` (returned parsed). InvalidInput names the file (never its content) when it is neither."""
    label = f"{setting}={path}" if setting.startswith("MLHUB_") else f"{setting} ({path})"
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidInput(f"{label}: cannot read the credentials file ({e.strerror or e}); it names a "
                           "file holding one line user:password, or a NATS .creds file") from None
    if _JWT_MARKER in text:
        return path
    line = text.strip()
    user, sep, password = line.partition(":")
    if not sep or not user or not password or "\n" in line or any(c.isspace() for c in user):
        raise InvalidInput(f"{label}: the file is neither a NATS .creds file nor one line "
                           "user:password")
    return UserPassword(user, password)


def credentials_file(nats_dir: Path, role: str) -> Path:
    """Where the embedded server's credentials of a role live (one line user:password, mode 0600)."""
    if role not in ROLES:
        raise ValueError(f"unknown event-log role {role!r} (roles: {', '.join(ROLES)})")
    return nats_dir / CREDENTIALS_DIR / role


def private_dir(path: Path) -> Path:
    """Create `path` (and its parents) and make it readable by its owner only (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (0600), replacing it atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def embedded_credentials(nats_dir: Path) -> dict[str, UserPassword]:
    """Every role's credentials of the embedded server of nats_dir: read when there, generated (once) when not,
    so parts and scripts that hold a credential file keep working across restarts of the server."""
    private_dir(nats_dir / CREDENTIALS_DIR)
    found: dict[str, UserPassword] = {}
    for role in ROLES:
        path = credentials_file(nats_dir, role)
        if path.exists():
            os.chmod(path, 0o600)
            read = read_credentials(path, setting=f"the embedded server's {role} credentials")
            if isinstance(read, UserPassword) and read.user == role:
                found[role] = read
                continue
        found[role] = UserPassword(role, secrets.token_urlsafe(32))
        write_private(path, f"{role}:{found[role].password}\n")
    return found


def server_authorization(users: dict[str, UserPassword]) -> str:
    """The `authorization { users = [...] }` block of the server config: bcrypt hashes and permissions."""
    import bcrypt

    lines = ["authorization {", "  users = ["]
    for role, cred in users.items():
        hashed = bcrypt.hashpw(cred.password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()
        entry = f'    {{ user: {_q(cred.user)}, password: {_q(hashed)}'
        perms = ROLE_PERMISSIONS[role]
        if perms is not None:
            publish = f"allow: {_list(perms.publish_allow)}"
            if perms.publish_deny:
                publish += f", deny: {_list(perms.publish_deny)}"
            subscribe = f"allow: {_list(perms.subscribe_allow)}"
            entry += f", permissions: {{ publish: {{ {publish} }}, subscribe: {{ {subscribe} }} }}"
        lines.append(entry + " }")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(_q(i) for i in items) + "]"


def redact_url(url: str) -> str:
    """A URL (or comma-separated URLs) without user and password, for messages and files."""
    return ",".join(_redact_one(u.strip()) for u in url.split(","))


def _redact_one(url: str) -> str:
    if "@" not in url:
        return url
    try:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
    except ValueError:
        return "<a NATS URL>"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def has_userinfo(url: str) -> bool:
    """True when a NATS URL carries a user (and maybe a password)."""
    return any("@" in (urlsplit(u.strip()).netloc if "://" in u else u) for u in url.split(","))


def with_userinfo(url: str, cred: UserPassword) -> str:
    """The URL with this user and password in it (for a process that may hold the secret, never to print)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{cred.user}:{cred.password}@{parts.netloc}", parts.path, parts.query,
                       parts.fragment))


@dataclass(frozen=True)
class NatsAuth:
    """How EventLog.connect authenticates and encrypts: a user and password or a NATS .creds file, TLS files.

    Empty: no credentials beyond what the URLs carry, no client TLS beyond the system's CAs for tls:// URLs.
    """

    user: UserPassword | None = None
    creds_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> NatsAuth:
        """MLHUB_NATS_CREDS and MLHUB_NATS_TLS_*; InvalidInput names a bad setting (never a secret)."""
        user: UserPassword | None = None
        creds_file: Path | None = None
        if settings.nats_creds is not None:
            if settings.nats_url and has_userinfo(settings.nats_url):
                raise InvalidInput("MLHUB_NATS_CREDS is set and MLHUB_NATS_URL carries a user too: give the "
                                   "event log's credentials in one of them")
            path = settings.nats_creds
            if not path.is_file():
                shown = "(a value that is not a file)" if ":" in str(path) else str(path)
                raise InvalidInput(f"MLHUB_NATS_CREDS={shown}: no such file; it names a file holding one line "
                                   "user:password, or a NATS .creds file (credentials inline go in the URL: "
                                   "nats://user:password@host:4222)")
            read = read_credentials(path)
            user, creds_file = (read, None) if isinstance(read, UserPassword) else (None, read)
        tls_files = (("MLHUB_NATS_TLS_CA", settings.nats_tls_ca), ("MLHUB_NATS_TLS_CERT", settings.nats_tls_cert),
                     ("MLHUB_NATS_TLS_KEY", settings.nats_tls_key))
        for name, value in tls_files:
            if value is not None and not value.is_file():
                raise InvalidInput(f"{name}={value}: no such file")
        if (settings.nats_tls_cert is None) != (settings.nats_tls_key is None):
            raise InvalidInput("MLHUB_NATS_TLS_CERT and MLHUB_NATS_TLS_KEY go together (the client certificate "
                               "and its key): set both or neither")
        return cls(user=user, creds_file=creds_file, tls_ca=settings.nats_tls_ca, tls_cert=settings.nats_tls_cert,
                   tls_key=settings.nats_tls_key)

    @property
    def uses_tls(self) -> bool:
        """True when a CA or a client certificate is configured."""
        return self.tls_ca is not None or self.tls_cert is not None

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments of nats-py's connect() for these credentials and TLS settings."""
        options: dict[str, Any] = {}
        if self.user is not None:
            options.update(user=self.user.user, password=self.user.password)
        if self.creds_file is not None:
            options["user_credentials"] = str(self.creds_file)
        if self.uses_tls:
            context = ssl.create_default_context(cafile=str(self.tls_ca) if self.tls_ca else None)
            if self.tls_cert is not None and self.tls_key is not None:
                try:
                    context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
                except (OSError, ssl.SSLError) as e:
                    raise InvalidInput(f"MLHUB_NATS_TLS_CERT={self.tls_cert} / MLHUB_NATS_TLS_KEY={self.tls_key}: "
                                       f"not a certificate and its key ({e})") from None
            options["tls"] = context
        return options

    def describe(self, servers: list[str]) -> str:
        """Who this client says it is, for messages: a user name or a file, never a secret."""
        if self.user is not None:
            return f"as user {self.user.user!r}"
        if self.creds_file is not None:
            return f"with the NATS credentials file {self.creds_file}"
        users = sorted({urlsplit(s).username or "" for s in servers if "://" in s} - {""})
        if users:
            return f"as user {', '.join(repr(u) for u in users)} (from the URL)"
        return "without credentials"


_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.IGNORECASE)


def permission_violation(message: str) -> tuple[str, str] | None:
    """("publish" or "subscription", subject) of a server's permissions violation error, else None."""
    found = _VIOLATION.search(message)
    return (found.group(1).lower(), found.group(2)) if found else None
