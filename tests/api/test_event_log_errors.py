"""A nats error that reaches the API's handlers is the event log failing (a retry may help): 503 with the one
error body and Retry-After, never a 500 (seen on the cluster: a replay's consumer creation answered 503
"JetStream system temporarily unavailable" on a node cut off from its peers)."""

from __future__ import annotations

import httpx
import nats.errors
import nats.js.errors
import pytest
from fastapi import FastAPI

from mlhub.api.errors import install_error_handlers


@pytest.mark.parametrize("error", [
    nats.js.errors.ServiceUnavailableError(code=503, err_code=10008,
                                           description="JetStream system temporarily unavailable"),
    nats.errors.NoRespondersError(),
    nats.errors.TimeoutError(),
])
async def test_a_nats_error_is_a_503_event_log_unavailable(error: Exception) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    @app.get("/bug")
    async def bug() -> None:
        raise KeyError("x")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://t") as client:
        answer = await client.get("/boom")
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "EVENT_LOG_UNAVAILABLE"
        assert type(error).__name__ in answer.json()["error"]["message"]
        assert answer.headers["Retry-After"] == "1"
        assert (await client.get("/bug")).status_code == 500  # other errors stay internal errors
