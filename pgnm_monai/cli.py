"""Command line: ``python -m pgnm_monai <command>`` (also installed as ``pgnm``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from pgnm_monai.demo import run_demo

    summary = run_demo(
        output_dir=args.output_dir,
        image_size=args.image_size,
        grid=args.grid,
        iterations=args.iterations,
        seed=args.seed,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from pgnm_monai.pipeline import run_pipeline

    run_pipeline(
        output_dir=args.output_dir,
        arms=args.arms,
        objective=args.objective,
        network=args.network,
        image_size=args.image_size,
        pretrain_epochs=args.pretrain_epochs,
        finetune_epochs=args.finetune_epochs,
        seed=args.seed,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgnm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="sample masks on the embedded DICOM/NIfTI images and run a few REINFORCE steps")
    demo.add_argument("--output-dir", default="runs/demo")
    demo.add_argument("--image-size", type=int, default=64)
    demo.add_argument("--grid", type=int, default=16)
    demo.add_argument("--iterations", type=int, default=30)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    pipe = sub.add_parser("pipeline", help="pretrain (pgnm, none) -> fine-tune -> evaluate -> comparison via bundles")
    pipe.add_argument("--output-dir", default="runs/pipeline")
    pipe.add_argument("--arms", nargs="+", default=["pgnm", "none"])
    pipe.add_argument("--objective", default="reinforce")
    pipe.add_argument("--network", default="resnet10")
    pipe.add_argument("--image-size", type=int, default=64)
    pipe.add_argument("--pretrain-epochs", type=int, default=10)
    pipe.add_argument("--finetune-epochs", type=int, default=10)
    pipe.add_argument("--seed", type=int, default=0)
    pipe.set_defaults(func=_pipeline)
    run = sub.add_parser("run", help="the main job on the embedded default data (currently: the demo)")
    for action in demo._actions[1:]:
        run._add_action(action)
    run.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
