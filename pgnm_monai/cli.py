"""Command line: ``python -m pgnm_monai <command>`` (also installed as ``pgnm``).

- ``run``: the main job on the embedded default data (pretrain with the policy and the baseline through
  the pretrain bundle, fine-tune both through the fine-tune bundle, evaluate, write the comparison).
- ``benchmark``: the few-shot unseen-concept protocol (profiles ``micro``, ``quick``, ``paper``).
- ``demo``: masks before/after a few REINFORCE steps on the embedded images.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys

__all__ = ["main", "build_parser"]


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
        dataset_dir=args.dataset_dir,
        dataset_kind=args.dataset_kind,
    )
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from pgnm_monai.protocol import run_protocol

    overrides = {}
    if args.arms:
        overrides["arms"] = tuple(args.arms)
    if args.shots:
        overrides["shots"] = tuple(args.shots)
    if args.pretrain_seeds:
        overrides["pretrain_seeds"] = tuple(args.pretrain_seeds)
    if args.finetune_seeds:
        overrides["finetune_seeds"] = tuple(args.finetune_seeds)
    frame = run_protocol(
        output_dir=args.output_dir,
        profile=args.profile,
        tasks=args.task,
        pretrain_dir=args.pretrain_dir,
        pretrain_kind=args.pretrain_kind,
        data_dir=args.data_dir,
        overrides=overrides,
        command="python -m pgnm_monai " + shlex.join(args.argv),
    )
    print(f"{len(frame)} runs; report: {args.output_dir}/report.md")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgnm", description="pgnm-monai: the Policy Gradient-Driven Noise Mask")
    sub = parser.add_subparsers(dest="command", required=True)

    for name, help_text in (
        ("run", "the main job: pretrain (pgnm, none) -> fine-tune -> evaluate -> comparison, via the bundles"),
        ("pipeline", "the same as run"),
    ):
        pipe = sub.add_parser(name, help=help_text)
        pipe.add_argument("--output-dir", default="runs/main")
        pipe.add_argument("--arms", nargs="+", default=["pgnm", "none"])
        pipe.add_argument("--objective", default="reinforce", choices=["reinforce", "paper"])
        pipe.add_argument("--network", default="resnet10")
        pipe.add_argument("--image-size", type=int, default=64)
        pipe.add_argument("--pretrain-epochs", type=int, default=10)
        pipe.add_argument("--finetune-epochs", type=int, default=10)
        pipe.add_argument("--seed", type=int, default=0)
        pipe.add_argument("--dataset-dir", default=None, help="default: the embedded DICOM/NIfTI set")
        pipe.add_argument("--dataset-kind", default=None)
        pipe.set_defaults(func=_pipeline)

    bench = sub.add_parser("benchmark", help="the few-shot unseen-concept protocol -> runs.csv, report.md, plots")
    bench.add_argument("--profile", default="quick", choices=["micro", "quick", "paper"])
    bench.add_argument("--output-dir", default="results/quick")
    bench.add_argument(
        "--task", action="append", help="default tasks by name, or name=kind:path[?option=value] (repeatable)"
    )
    bench.add_argument("--pretrain-dir", default=None, help="pretraining data (default: MedNIST in ../shared/data)")
    bench.add_argument("--pretrain-kind", default=None)
    bench.add_argument("--data-dir", default=None, help="the shared data folder (default: ../shared/data)")
    bench.add_argument("--arms", nargs="+", default=None)
    bench.add_argument("--shots", nargs="+", type=int, default=None)
    bench.add_argument("--pretrain-seeds", nargs="+", type=int, default=None)
    bench.add_argument("--finetune-seeds", nargs="+", type=int, default=None)
    bench.set_defaults(func=_benchmark)

    demo = sub.add_parser("demo", help="sample masks on the embedded DICOM/NIfTI images and run a few REINFORCE steps")
    demo.add_argument("--output-dir", default="runs/demo")
    demo.add_argument("--image-size", type=int, default=64)
    demo.add_argument("--grid", type=int, default=16)
    demo.add_argument("--iterations", type=int, default=30)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
