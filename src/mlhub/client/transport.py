"""HTTP to the hub (httpx): one place that turns answers into results or the SDK's three kinds of error. The
one HTTP client of mlhub: the SDK's Run and Hub use it, and so does the CLI (mlhub.commands.hubclient)."""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import httpx

from mlhub.client.errors import HubAuthError, HubRequestError, HubUnavailable

API_PREFIX = "/api/v1"
#: Statuses a retry may cure: the hub (or its event log, or a projection) is down or busy (HubUnavailable).
#: 401/403 are not an outage: the token is wrong (HubAuthError). Every other 4xx is final for that request.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: The hub refused the token: the caller's to fix (MLHUB_TOKEN), not the data's.
AUTH_STATUSES = frozenset({401, 403})


def _finite(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def dumps(body: Any) -> bytes:
    """Strict JSON of a request body (the API takes "NaN"/"Infinity"/"-Infinity" for non-finite values)."""
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def metric_values(values: list[float]) -> list[float | str]:
    """Values ready for JSON: non-finite ones as the strings the API accepts."""
    return [_finite(v) for v in values]


class Transport:
    """A thread-safe client of the hub's REST API: one httpx.Client per thread, the token on every request."""

    def __init__(self, url: str, token: str | None, *, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            client = httpx.Client(base_url=self.url + API_PREFIX, headers=headers, timeout=self.timeout_s)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def request(self, method: str, path: str, *, json_body: Any = None, content: Any = None,
                params: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
        """Send one request; its JSON answer. HubUnavailable when a retry may help, HubAuthError when the token
        was refused, HubRequestError when the hub refused the request for good."""
        send_headers = dict(headers or {})
        data = content
        if json_body is not None:
            data = dumps(json_body)
            send_headers["Content-Type"] = "application/json"
        try:
            response = self._client().request(method, path, content=data, params=params, headers=send_headers)
        except httpx.TransportError as e:  # refused, reset, timed out, ...: the hub may not have seen it
            raise HubUnavailable(f"{method} {self.url}{API_PREFIX}{path}: the hub did not answer: "
                                 f"{type(e).__name__}: {e}") from e
        if response.status_code < 300:
            return response.json() if response.content else None
        try:
            error = response.json().get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        code = str(error.get("code") or "HTTP_ERROR")
        message = (f"{method} {path}: {error.get('message') or response.text[:500] or response.reason_phrase} "
                   f"(HTTP {response.status_code} {code} from {self.url})")
        if response.status_code in RETRYABLE_STATUSES:
            raise HubUnavailable(message, status=response.status_code, api_code=code)
        if response.status_code in AUTH_STATUSES:
            raise HubAuthError(f"the hub refused the token ({message}): set MLHUB_TOKEN (or Hub(token=...)) to a "
                               "token the hub accepts (a writer's, to log)", status=response.status_code,
                               api_code=code)
        raise HubRequestError(message, status=response.status_code, api_code=code,
                              details=error.get("details") if isinstance(error.get("details"), dict) else None)

    def close(self) -> None:
        """Close every thread's connection pool."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
