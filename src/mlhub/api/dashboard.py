"""The dashboard: static files (plain HTML, ES modules and CSS, no build step) served by the API at `/`.

The page talks to the public REST API only (`/api/v1`), with the token the user pastes (kept in the browser's
localStorage) or none when reads are open (MLHUB_API_OPEN_READS).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"


def install_dashboard(app: FastAPI) -> None:
    """Serve index.html at `/` and the other files under `/ui/` (not part of the OpenAPI schema)."""

    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount("/ui", StaticFiles(directory=STATIC_DIR), name="ui")
