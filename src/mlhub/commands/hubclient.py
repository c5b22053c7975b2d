"""The CLI as an API client: which mode a command uses, and its client of the hub's REST API (the SDK's one
HTTP transport and error types, mlhub.client.transport and mlhub.client.errors).

The rule: a client command (submit, cancel, reproduce, runs, show, models, query) talks to the hub at
MLHUB_URL with MLHUB_TOKEN, unless MLHUB_NATS_URL is set (an operator inside a deployment) or --direct is given;
then it uses the event log and the read model directly, as before. MLHUB_URL unset: the hub that
MLHUB_DATA_DIR/hub.json names (a running `mlhub up` of that data dir writes it), else http://127.0.0.1:8000.
MLHUB_TOKEN unset: the admin token of a local `mlhub up` serving that URL from MLHUB_DATA_DIR is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mlhub.client.errors import HubAuthError, HubRequestError, HubUnavailable
from mlhub.client.transport import Transport
from mlhub.errors import MlhubError
from mlhub.events import RunStatus

if TYPE_CHECKING:
    from mlhub.commands.hub import LocalHub
    from mlhub.settings import Settings

__all__ = ["DIRECT", "ENDED", "LIVE_RUN_STATUSES", "HubAuthError", "HubClient", "HubRequestError", "HubUnavailable",
           "json_float", "use_client", "with_hub"]

T = TypeVar("T")

#: Job states after which nothing more happens (as mlhub.scheduler.ENDED_STATES; a job's own words).
ENDED = ("succeeded", "failed", "cancelled")
#: Run statuses of a run that has not ended (mlhub.events.RunStatus): queued, running.
LIVE_RUN_STATUSES = frozenset(status.value for status in RunStatus if not status.ended)

DIRECT = click.option("--direct", is_flag=True,
                      help="Use the event log and read model directly (as when MLHUB_NATS_URL is set) instead of "
                           "the hub at MLHUB_URL.")


def use_client(settings: Settings, direct: bool) -> bool:
    """Whether a client command talks to the hub over HTTP (the rule in the module docstring)."""
    return not direct and not settings.nats_url


class HubClient:
    """The CLI's calls to the hub's API: a thin wrapper over the SDK's `Transport` (the one HTTP client), whose
    errors it raises (HubUnavailable, HubAuthError, HubRequestError; the CLI prints the hub's own code), with a
    hint for a CLI user where one helps."""

    def __init__(self, url: str, token: str | None, *, timeout_s: float = 60.0,
                 local_hub: LocalHub | None = None) -> None:
        self.transport = Transport(url, token, timeout_s=timeout_s)
        self.url = self.transport.url
        #: The hub.json the URL came from (MLHUB_URL unset), so that an unreachable hub names it.
        self.local_hub = local_hub
        self.has_token = token is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> HubClient:
        """A client for MLHUB_URL (unset: the hub that MLHUB_DATA_DIR/hub.json names, else the default URL) with
        MLHUB_TOKEN, or the local `mlhub up` admin token."""
        from mlhub.commands.hub import read_hub_file

        local = read_hub_file(settings.data_dir)  # read once: for the URL (MLHUB_URL unset) and the token
        named = None if "url" in settings.model_fields_set else local
        url = named.url if named is not None else settings.url
        token = settings.token or (local.token_for(url) if local is not None else None)
        return cls(url, token, local_hub=named)

    def close(self) -> None:
        """Close the connections."""
        self.transport.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, params: Any = None, json: Any = None) -> Any:
        """One call; the decoded JSON answer."""
        try:
            return self.transport.request(method, path, json_body=json, params=params)
        except HubUnavailable as e:
            if e.status is not None:  # the hub answered (5xx, 408, 429): its own message says why
                raise
            if self.local_hub is not None:
                hub = self.local_hub
                gone = "" if hub.process_alive else f"; its `mlhub up` (pid {hub.pid}) is gone"
                raise HubUnavailable(
                    f"the hub that {hub.file} names at {self.url} is not running ({e}{gone}; a killed `mlhub up` "
                    "leaves that file behind): start it with `mlhub up`, set MLHUB_URL to where a hub runs, or use "
                    "--direct") from e
            raise HubUnavailable(f"cannot reach the hub at {self.url} ({e}): start it with `mlhub up`, set "
                                 "MLHUB_URL to where it runs, or use --direct") from e
        except HubAuthError as e:
            if self.has_token:
                raise
            raise HubAuthError(f"{e} (no token: set MLHUB_TOKEN, or run the CLI with the MLHUB_DATA_DIR of the "
                               "local `mlhub up`)", status=e.status, api_code=e.api_code) from e

    def get(self, path: str, **params: Any) -> Any:
        """GET with the non-None params."""
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any, **params: Any) -> Any:
        """POST a JSON body."""
        return self.request("POST", path, json=body, params={k: v for k, v in params.items() if v is not None})


def json_float(value: Any) -> float | None:
    """A metric value from the API (a JSON number, or "NaN"/"Infinity"/"-Infinity") as a float."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[value]
    return float(value)


def with_hub(settings: Settings, work: Callable[[HubClient], T]) -> T:
    """Run `work` with a client of MLHUB_URL; an mlhub error (the hub's own included) exits 1 with one line."""
    from mlhub.commands.common import fail

    try:
        with HubClient.from_settings(settings) as client:
            return work(client)
    except MlhubError as e:
        fail(e)
