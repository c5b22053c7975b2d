"""Helpers shared by the CLI subcommands: settings, the event log endpoint, clean error exits."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, NoReturn, TypeVar

import click

from mlhub.errors import MlhubError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from mlhub.eventlog import EventLog
    from mlhub.settings import Settings

T = TypeVar("T")


def load_settings() -> Settings:
    """The settings, or a usage error naming the bad MLHUB_* variable."""
    from pydantic import ValidationError

    from mlhub.settings import Settings

    try:
        return Settings()
    except ValidationError as e:
        raise click.UsageError(f"invalid MLHUB_* setting: {e}") from e


def fail(e: MlhubError) -> NoReturn:
    """Print an mlhub error as one line with its code and exit 1."""
    click.echo(f"error [{error_code(e)}]: {e}", err=True)
    sys.exit(1)


def error_code(e: MlhubError) -> str:
    """The code the CLI prints: for an error the hub answered with (the SDK's HubRequestError, HubAuthError or
    HubUnavailable), the hub's own code (e.g. RUN_NOT_FOUND, UNAUTHENTICATED), else the error's own."""
    from mlhub.client.errors import HubAuthError, HubRequestError, HubUnavailable

    api_code = e.api_code if isinstance(e, HubRequestError | HubAuthError | HubUnavailable) else None
    return api_code or e.code


@contextmanager
def event_log_url(settings: Settings) -> Iterator[str]:
    """MLHUB_NATS_URL, a running embedded server of the data dir, or an embedded server for this command (an
    embedded server's URL carries the data dir's admin credentials unless MLHUB_NATS_CREDS names others)."""
    from mlhub.eventlog import nats_endpoint

    with nats_endpoint(settings.nats_url, settings.nats_dir, port=settings.nats_port, sync=settings.nats_sync,
                       as_admin=settings.nats_creds is None) as url:
        yield url


@asynccontextmanager
async def open_event_log(settings: Settings, url: str, name: str) -> AsyncIterator[EventLog]:
    """A connected EventLog with the stream checked, closed on exit."""
    from mlhub.eventlog import EventLog

    async with EventLog.from_settings(url, settings, name=name) as log:
        yield log


def cli_user() -> str:
    """The actor of a direct-mode command: `cli:<login name>` (every event it appends records it)."""
    import getpass

    from mlhub.events import cli_actor

    try:
        login: str | None = getpass.getuser()
    except (OSError, KeyError):
        login = None
    return cli_actor(login)


def run_with_event_log(settings: Settings, name: str, work: Callable[[EventLog], Awaitable[T]], *,
                       stream_setup: bool = True) -> T:
    """Run `work` against the event log the settings name, acting as `cli_user()`; an mlhub error exits 1
    with one line. stream_setup=False: connected only, the stream neither checked nor created (a restore
    needs the stream absent)."""
    from mlhub.eventlog import EventLog
    from mlhub.events import CURRENT_ACTOR

    CURRENT_ACTOR.set(cli_user())  # asyncio.run below copies this context

    async def main(url: str) -> T:
        if stream_setup:
            async with open_event_log(settings, url, name) as log:
                return await work(log)
        log = EventLog.from_settings(url, settings, name=name)
        await log.connect()
        try:
            return await work(log)
        finally:
            await log.close()

    try:
        with event_log_url(settings) as url:
            return asyncio.run(main(url))
    except MlhubError as e:
        fail(e)


@contextmanager
def progress_bar(desc: str) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar on stderr, updated by calling the yielded function with (done, total)."""
    from tqdm import tqdm

    bar = tqdm(total=0, unit="ev", desc=desc, dynamic_ncols=True, file=sys.stderr)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


@contextmanager
def read_model(settings: Settings) -> Iterator[sa.Connection]:
    """A connection to the read model, or one clear error when there is none yet."""
    import sqlalchemy as sa

    from mlhub.readmodel import ReadModelError, create_engine, sqlite_path

    engine = create_engine(settings.resolved_database_url)
    try:
        path = sqlite_path(engine)
        if path is not None and not path.exists():
            raise ReadModelError(f"no read model at {path} yet: run `mlhub projector --until-caught-up` first")
        try:
            with engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as e:
            raise ReadModelError(f"cannot read the read model at {engine.url!r} (was it migrated by "
                                 f"`mlhub projector`?): {getattr(e, 'orig', None) or e}") from e
    finally:
        engine.dispose()
