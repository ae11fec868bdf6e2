"""Fashion image search: one core package for the ingest Lambda, the API, the backfill and local mode."""

__version__ = "0.1.0"
