"""FastAPI app: read and write routers, auth, dashboard files.

`create_app(settings)` builds the app (JSON under /api/v1); serve it with uvicorn, e.g.
`uvicorn --factory mlhub.api:create_app`. See docs/api.md.
"""

from mlhub.api.app import API_PREFIX, create_app

__all__ = ["API_PREFIX", "create_app"]
