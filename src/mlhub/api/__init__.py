"""FastAPI app: read and write routers, auth, dashboard files."""
