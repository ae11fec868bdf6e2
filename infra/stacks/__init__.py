"""Constructs of the one ``FashionSearchStack``: data, ingest, api, frontend, backfill, monitoring."""
