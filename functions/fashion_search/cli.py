"""``fashion-search``: the local product from a terminal (import, serve, query, delete, stats).

Every command builds its services from ``Settings`` (environment), so the CLI, the API server
and the Lambdas agree on where state lives and which model is used.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fashion_search.backfill import add_arguments as add_backfill_arguments
from fashion_search.backfill import run_backfill
from fashion_search.config import Settings
from fashion_search.errors import FashionSearchError, InputError
from fashion_search.logs import configure_logging
from fashion_search.search import QueryOptions
from fashion_search.services import Services, build_services


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type for counts: an integer >= ``minimum``, so that a bad one is a usage error
    (exit 2) rather than a traceback (a zero chunk size) or a quietly shorter import (a negative
    limit slices from the end)."""

    def parse(text: str) -> int:
        value = int(text)  # a ValueError becomes argparse's own "invalid value" message
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


def _filters(pairs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pair in pairs:
        tag, sep, value = pair.partition("=")
        if not sep or not tag:
            raise InputError("invalid_filters", f"--filter expects TAG=VALUE, got {pair!r}")
        out.setdefault(tag, []).append(value)
    return out


def _hits(hits: list[Any]) -> list[dict[str, Any]]:
    return [
        {"image_id": h.image_id, "key": h.key, "score": round(h.score, 4), "tags": h.tags}
        | ({"matched_terms": list(h.matched_terms)} if h.matched_terms else {})
        for h in hits
    ]


def cmd_ingest(services: Services, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fashion_search.catalogue import import_catalogue, list_images

    folder = Path(args.folder)
    if not folder.is_dir():
        raise InputError("not_a_directory", f"{folder} is not a directory")
    total = len(list_images(folder, args.limit))
    with tqdm(total=total, unit="img", desc="import", disable=args.quiet) as bar:
        summary = import_catalogue(
            services,
            folder,
            Path(args.tags_csv) if args.tags_csv else None,
            limit=args.limit,
            chunk_size=args.chunk_size,
            on_progress=bar.update,
            prune=args.prune,
        )
    _print_json(summary.as_dict())
    return 130 if summary.interrupted else 0


def cmd_ingest_urls(services: Services, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fashion_search.url_import import import_urls, read_url_csv

    rows = read_url_csv(Path(args.csv), args.url_column)[: args.limit]
    with tqdm(total=len(rows), unit="img", desc="import", disable=args.quiet) as bar:
        summary = import_urls(services, rows, workers=args.workers, on_progress=bar.update)
    _print_json(summary.as_dict())
    return 130 if summary.interrupted else 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run(
        "fashion_search.api.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
    )
    return 0


def _add_search_options(parser: argparse.ArgumentParser, top_k: int) -> None:
    parser.add_argument("--top-k", type=int, default=top_k)
    parser.add_argument("--offset", type=int, default=0, help="skip this many results (the next page)")
    parser.add_argument("--filter", action="append", default=[], metavar="TAG=VALUE")
    parser.add_argument(
        "--all-duplicates",
        action="store_true",
        help="list every key of a photo stored under several keys (by default it shows once)",
    )


def _options(args: argparse.Namespace) -> QueryOptions:
    return QueryOptions(
        top_k=args.top_k,
        offset=args.offset,
        filters=_filters(args.filter),
        collapse_duplicates=not args.all_duplicates,
    )


def cmd_search(services: Services, args: argparse.Namespace) -> int:
    hits = services.searcher.by_text(args.text, **_options(args), hybrid=not args.vector_only)
    _print_json(_hits(hits))
    return 0


def cmd_similar(services: Services, args: argparse.Namespace) -> int:
    source: str = args.source
    if source.startswith(("http://", "https://")):
        from fashion_search.url_fetch import fetch_image_url

        data = fetch_image_url(source, services.settings)
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError("not_found", f"{path} is not a file")
        data = path.read_bytes()
    hits = services.searcher.by_image_bytes(data, **_options(args))
    _print_json(_hits(hits))
    return 0


def cmd_delete(services: Services, args: argparse.Namespace) -> int:
    outcome = services.ingestor.delete(args.key)
    services.objects.delete(args.key)
    _print_json({"key": outcome.key, "image_id": outcome.image_id, "status": outcome.status})
    return 0


def cmd_stats(services: Services, args: argparse.Namespace) -> int:
    _print_json(
        {
            "model_id": services.encoder.model_id,
            "backend": services.settings.backend,
            "records": services.metadata.counts(),
            "vectors": services.vectors.count(),
        }
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-search", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="import a folder of images (resumable)")
    p.add_argument("folder")
    p.add_argument("--tags-csv", help="CSV whose first column is the file stem; other columns become tags")
    p.add_argument("--limit", type=_at_least(1), default=None, help="only the first N files (sorted by path)")
    p.add_argument("--chunk-size", type=_at_least(1), default=256)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--prune",
        action="store_true",
        help="the folder is the whole catalogue: after a complete import, delete the images whose "
        "files are no longer in it (including anything else in this data dir)",
    )

    p = sub.add_parser("ingest-urls", help="import product photos listed by URL in a CSV (resumable)")
    p.add_argument("csv", help="first column: the photo's id; a URL column; every other column a tag")
    p.add_argument("--url-column", default="url", help="the column holding each photo's URL")
    p.add_argument("--limit", type=_at_least(1), default=None, help="only the first N rows with a URL")
    p.add_argument("--workers", type=_at_least(1), default=8, help="downloads at once")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("serve", help="run the search API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)

    p = sub.add_parser("search", help="text -> images")
    p.add_argument("text")
    _add_search_options(p, top_k=5)
    p.add_argument(
        "--vector-only",
        action="store_true",
        help="rank by the model alone, without re-ranking by the query's words found in the tags",
    )

    p = sub.add_parser("similar", help="image file or URL -> similar images")
    p.add_argument("source", metavar="PATH_OR_URL")
    _add_search_options(p, top_k=3)

    p = sub.add_parser("delete", help="remove an object and its vector")
    p.add_argument("key")

    p = sub.add_parser("backfill", help="index a whole bucket in bulk (resumable; see docs/backfill.md)")
    add_backfill_arguments(p)

    sub.add_parser("stats", help="model and record counts")
    return parser


COMMANDS = {
    "ingest": cmd_ingest,
    "ingest-urls": cmd_ingest_urls,
    "search": cmd_search,
    "similar": cmd_similar,
    "delete": cmd_delete,
    "stats": cmd_stats,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings)
    try:
        if args.command == "serve":
            return cmd_serve(settings, args)
        if args.command == "backfill":  # builds its own services (GPU encoder, --bucket)
            return run_backfill(settings, args)
        return COMMANDS[args.command](build_services(settings), args)
    except InputError as exc:
        print(json.dumps({"error": exc.code, "detail": exc.detail}), file=sys.stderr)
        return 2
    except FashionSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
