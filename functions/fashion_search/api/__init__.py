"""The HTTP API (FastAPI): ``create_app(services)`` in ``app.py``."""
