"""Arguments of ``python -m model_export train`` (also ``python -m model_export.train``)."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from model_export.train.loop import TrainConfig

KAGL = Path("../shared/data/kagl")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=Path, default=KAGL / "images", help="folder of <id>.jpg")
    p.add_argument("--captions", type=Path, default=KAGL / "styles.csv", help="KAGL-style styles.csv")
    p.add_argument(
        "--out", type=Path, default=None, help="export the trained model here (skip to only train)"
    )
    p.add_argument("--run-dir", type=Path, default=Path("runs/kagl-minilm"), help="checkpoints and log")
    p.add_argument("--epochs", type=float, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay)
    p.add_argument("--warmup-steps", type=int, default=TrainConfig.warmup_steps)
    p.add_argument("--dim", type=int, default=TrainConfig.dim, help="embedding size")
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument(
        "--name-prob",
        type=float,
        default=TrainConfig.name_prob,
        help="chance that an item's caption is its product name (else an attribute caption)",
    )
    p.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every, help="steps")
    p.add_argument("--max-items", type=int, default=None, help="train on the first N items only (smoke runs)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after this long")
    p.add_argument(
        "--threads",
        type=int,
        default=TrainConfig.threads,
        help="torch CPU threads (0: torch's default); 1 is fastest on a shared 2-core machine",
    )
    p.add_argument(
        "--attribute-loss",
        action="append",
        default=[],
        metavar="FIELD=WEIGHT",
        help="also classify each image among every value's label of FIELD (colour, article, gender, "
        "usage, season) with this weight; repeatable",
    )
    p.add_argument(
        "--image-part",
        action="append",
        default=[],
        metavar="FIELD=WEIGHT",
        help="at export, append a label part for FIELD (article, colour, gender, usage, season) to the "
        "image embedding with this weight, for image -> image search; text search ranks as without "
        "it (see docs/training.md); repeatable",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-resume", action="store_true", help="start over even if the run dir has a checkpoint")
    p.add_argument(
        "--checkpoint", choices=("last", "best"), default="last", help="which checkpoint to export"
    )
    p.add_argument("--name", default="kagl-minilm", help="model name in model.json")
    p.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="int8",
        help="text tower precision (the image tower stays fp32)",
    )
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="fine-tune a Hugging Face CLIPModel directory instead (the FashionCLIP recipe)",
    )


def field_weights(specs: list[str], option: str) -> dict[str, float]:
    out = {}
    for spec in specs:
        name, _, weight = spec.partition("=")
        try:
            out[name.strip()] = float(weight)
        except ValueError:
            raise SystemExit(f"{option} wants FIELD=WEIGHT, e.g. colour=0.2 (got {spec!r})") from None
    return out


def config_from(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        images=args.images,
        captions=args.captions,
        run_dir=args.run_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        name_prob=args.name_prob,
        dim=args.dim,
        checkpoint_every=args.checkpoint_every,
        max_items=args.max_items,
        max_minutes=args.max_minutes,
        threads=args.threads,
        device=args.device,
        init_from=str(args.init_from) if args.init_from else None,
        attribute_weights=field_weights(args.attribute_loss, "--attribute-loss"),
        image_parts=field_weights(args.image_part, "--image-part"),
    )


def run(args: argparse.Namespace, command: str) -> int:
    from model_export.train.loop import train

    try:
        cfg = config_from(args)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    model, data, summary = train(cfg, resume=not args.no_resume)
    print(
        f"trained {summary['step']}/{summary['total_steps']} steps in {summary['train_seconds']:.0f} s; "
        f"best validation R@10 {summary['best_val_r10']:.3f}"
    )
    if args.out is None:
        return 0
    if cfg.init_from:
        from model_export.train.clip_init import export_finetuned, open_clip
        from model_export.train.loop import load_checkpoint

        load_checkpoint(cfg.run_dir / f"{args.checkpoint}.pt", model)
        ckpt = open_clip(Path(cfg.init_from))
        ckpt.model = model.image_tower.model  # the fine-tuned CLIPModel both towers share
        manifest = export_finetuned(
            ckpt,
            args.out,
            precision=args.precision,
            name=args.name,
            kagl_dir=args.images.parent,
            command=command,
        )
    else:
        from model_export.train.export import export_run

        manifest = export_run(
            cfg,
            args.out,
            checkpoint=args.checkpoint,
            name=args.name,
            precision=args.precision,
            command=command,
            data=data,
        )
    print(f"wrote {args.out} ({manifest.model_id})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_export.train", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args, "python -m model_export.train " + shlex.join(sys.argv[1:] if argv is None else argv))
