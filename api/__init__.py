"""joulestream HTTP API (FastAPI) under /api/v1. Build it with `api.app.create_app(settings, …)`."""
