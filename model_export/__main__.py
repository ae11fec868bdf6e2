"""``python -m model_export {export,tiny,verify,train}``; see docs/model_export.md.

Exit status: 0 done and verified, 1 verification failed, 2 bad arguments or an unusable model.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from fashion_search.errors import ModelError
from model_export.clip_export import DEFAULT_SOURCE
from model_export.tiny import TINY_SOURCE

PRECISIONS = ("fp32", "fp16", "int8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model_export", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--seed", type=int, default=0, help="seed of the tiny model (with --from tiny)")
        p.add_argument(
            "--samples-dir",
            type=Path,
            default=None,
            help="KAGL data set for verification samples (default ../shared/data/kagl; synthetic if absent)",
        )

    export = sub.add_parser("export", help="export a Hugging Face CLIPModel checkpoint")
    export.add_argument("--from", dest="source", default=DEFAULT_SOURCE, help="hub id, local dir or 'tiny'")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--precision", choices=PRECISIONS, default="fp32")
    export.add_argument("--name", default=None, help="model name in model.json (default: from the source)")
    common(export)

    tiny = sub.add_parser("tiny", help="export a tiny random CLIP for tests")
    tiny.add_argument("--out", type=Path, required=True)
    tiny.add_argument("--precision", choices=PRECISIONS, default="fp32")
    common(tiny)

    verify = sub.add_parser("verify", help="check an exported directory against its checkpoint")
    verify.add_argument("model_dir", type=Path)
    verify.add_argument("--from", dest="source", required=True, help="hub id, local dir or 'tiny'")
    common(verify)

    from model_export.train.cli import add_arguments as add_train_arguments

    add_train_arguments(sub.add_parser("train", help="train a dual encoder on a catalogue, then export it"))
    return parser


def main(argv: list[str] | None = None) -> int:
    from transformers.utils import logging as hf_logging

    from model_export.commands import VerificationFailed, run_export, run_verify

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    command = "python -m model_export " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "train":
            from model_export.train.cli import run as run_train

            return run_train(args, command)
        if args.command == "verify":
            report = run_verify(args.model_dir, args.source, seed=args.seed, kagl_dir=args.samples_dir)
            print(report.summary())
            return 0
        source = TINY_SOURCE if args.command == "tiny" else args.source
        manifest = run_export(
            source,
            args.out,
            precision=args.precision,
            name=getattr(args, "name", None),
            seed=args.seed,
            kagl_dir=args.samples_dir,
            command=command,
        )
        print(f"wrote {args.out} ({manifest.model_id}): {manifest.extra['parity']}")
        return 0
    except VerificationFailed as exc:
        print(f"verification failed: {exc}", file=sys.stderr)
        return 1
    except (ModelError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
