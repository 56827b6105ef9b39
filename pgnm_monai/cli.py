"""Command line: ``python -m pgnm_monai <command>`` (also installed as ``pgnm``), one subcommand per job.

- ``run``: the main job (:func:`pgnm_monai.experiments.pipeline.run_pipeline`): pretrain with the policy and
  the baseline through the pretrain bundle, fine-tune both, evaluate, write the comparison.
- ``finetune``: fine-tune weights people have (the authors' released heated model, torchvision or timm ImageNet
  weights, a ``model.pt`` of this project) on a dataset and evaluate it
  (:func:`pgnm_monai.experiments.finetune.finetune_from_weights`).
- ``benchmark``: the few-shot unseen-concept protocol (:func:`pgnm_monai.experiments.protocol.run_protocol`).
- ``predict``: predict with a trained run on new images (files, folders, CSVs), and evaluate them when a CSV labels
  them (:func:`pgnm_monai.experiments.predict.predict`).
- ``demo``: masks before/after a few REINFORCE steps on the embedded images (:func:`pgnm_monai.demo.run_demo`).

Defaults come from the signatures of those functions (and, where they leave a setting to the bundles, from
the bundles' ``configs/train.json``); choices come from the modules that own them. Only the options of the command
being run are built (:func:`build_parser`), so ``pgnm --help`` and ``pgnm --version`` import neither torch nor MONAI.

An error ends the command with its traceback, whose last line is the project's message (the one under
MONAI's "Failed to evaluate ..." wrapper, see :func:`pgnm_monai.components.root_error`); exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Collection, Iterator
from typing import Any

from pgnm_monai import __version__

__all__ = ["COMMANDS", "build_parser", "main"]


def _defaults(fn: Callable) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def _call(fn: Callable, args: argparse.Namespace) -> Any:
    """``fn`` with every parameter that the parsed options name (option ``--few-shot`` is parameter ``few_shot``)."""
    return fn(**{k: getattr(args, k) for k in inspect.signature(fn).parameters if hasattr(args, k)})


def _run(args: argparse.Namespace) -> int:
    from pgnm_monai.experiments.pipeline import run_pipeline

    with _sigterm_as_exit():
        _call(run_pipeline, args)
    return 0


class _Terminated(SystemExit):
    """SIGTERM, raised as an exception so that the stage it stops is named and the run lock released (exit 143)."""


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Within the block (main thread only), SIGTERM raises :class:`_Terminated` instead of ending the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal's handler signature
        stop = _Terminated(128 + signum)
        stop.signal_name = signal.Signals(signum).name  # what pipeline's stage line names
        raise stop

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: the help of every ``--dataset-kind`` (the guess: :func:`pgnm_monai.data.guess_kind`).
_KIND_HELP = (
    "kind of --dataset-dir (None: guessed from it: .npz -> medmnist; .csv, or a folder with labels.csv or a DICOM "
    "series -> clinical; .json -> union; a folder of class folders of images -> image_folder)"
)


def _finetune(args: argparse.Namespace) -> int:
    from pgnm_monai.experiments.finetune import finetune_from_weights

    _call(finetune_from_weights, args)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pgnm_monai.experiments.predict import predict

    _call(predict, args)
    return 0


def _whole_number(low: int) -> Callable[[str], int]:
    """An option's type: a whole number >= ``low`` (argparse names the option in its error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}")
        return value

    parse.__name__ = f"whole number >= {low}"
    return parse


def _json_object(text: str) -> dict:
    """``--dataset-options``: a JSON object (argparse reports the error with the option's name)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(
            f'expected a JSON object such as \'{{"slices": "none"}}\', got {text!r}: {e}'
        ) from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _benchmark(args: argparse.Namespace) -> int:
    from pgnm_monai.experiments.protocol import run_protocol, write_protocol_report

    if args.report_only:
        command = "python -m pgnm_monai " + shlex.join(args.argv)
        write_protocol_report(args.output_dir, args.profile, args.compare_with, command)
        print(f"report: {args.output_dir}/report.md")
        return 0
    names = ("arms", "shots", "pretrain_seeds", "finetune_seeds")
    overrides = {name: tuple(getattr(args, name)) for name in names if getattr(args, name)}
    if args.no_cache:
        overrides["finetune_cache"] = False
    frame = run_protocol(
        output_dir=args.output_dir,
        profile=args.profile,
        tasks=args.task,
        pretrain_dir=args.pretrain_dir,
        pretrain_kind=args.pretrain_kind,
        data_dir=args.data_dir,
        overrides=overrides,
        compare_with=args.compare_with,
        command="python -m pgnm_monai " + shlex.join(args.argv),
    )
    print(f"{len(frame)} runs; report: {args.output_dir}/report.md")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pgnm_monai.demo import run_demo

    print(json.dumps(_call(run_demo, args), indent=2))
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default; options left to a bundle or profile say so themselves."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default:" in (action.help or "") or "None:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _bundle(defaults: dict[str, Any], key: str, what: str = "") -> str:
    """Help text of an option left to the bundle: what it is, and the bundle's default value."""
    return f"{what} (default: the bundle's, {defaults.get(key)!r})".strip()


#: command -> (one-line help, description) of each subcommand (its options: :data:`_OPTIONS`).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "the main job: pretrain (pgnm, none) -> fine-tune -> evaluate -> comparison",
        "Pretrain each arm with the pretrain bundle, fine-tune every heated model, evaluate on the test split, write "
        "comparison.{md,csv,json}. Without --dataset-dir: the embedded DICOM/NIfTI set (a smoke test).",
    ),
    "finetune": (
        "fine-tune published or own weights on a dataset -> models/model.pt, eval/predictions.csv, metrics",
        "Fine-tune a weight file (the authors' released heated model, torchvision or timm ImageNet weights, a "
        "model.pt of this project) on a dataset through the fine-tune bundle, then evaluate it on the test split "
        "(eval/metrics.json, and per class eval/per_class_metrics.csv, confusion_matrix.png, roc.png). Nothing is "
        "downloaded: point --pretrained at a file you have.",
    ),
    "predict": (
        "predict with a trained run on new images -> a CSV of classes and probabilities (and the evaluation)",
        "Predict with the model of RUN_DIR (its network, preprocessing and class map, through the inference "
        "bundle) on image or volume files, folders (searched recursively) or CSVs with a 'path' column. Writes "
        "path, prediction, prob_<class> per input. A CSV with a 'label' column (class names) is also evaluated: "
        "<output>_eval/ holds per_class_metrics.csv, confusion_matrix.png, roc.png, roc_points.csv.",
    ),
    "benchmark": (
        "the few-shot unseen-concept protocol -> runs.csv, report.md, plots",
        "Pretrain every arm of a profile with several seeds, probe and fine-tune every heated model on unseen-concept "
        "tasks, write the report. Resumable: run it again with the same --output-dir.",
    ),
    "demo": (
        "sample masks (embedded DICOM/NIfTI images by default), a few REINFORCE steps",
        "Draw one training image per class with masks sampled before and after a few REINFORCE steps.",
    ),
}

_VERBOSE = "stream the bundles' log lines to the console (otherwise: <run folder>/logs/<stage>.log)"
_JSON_HELP = 'loader options as JSON, e.g. \'{"slices": "none"}\' for whole volumes (None: the loader\'s defaults)'
_POSITIVE = "the positive class of a two-class task, by name or index, for the evaluation (None: the class of index 1)"


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``pgnm`` parser: every subcommand of :data:`COMMANDS`, with the options of those in ``commands`` (``None``:
    all). The options need the vocabularies (arms, networks, data kinds) and the bundles' defaults, which import torch
    and MONAI; :func:`main` builds only the command it runs."""
    parser = argparse.ArgumentParser(prog="pgnm", description="pgnm-monai: the Policy Gradient-Driven Noise Mask")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, description) in COMMANDS.items():
        command = sub.add_parser(name, formatter_class=_HelpFormatter, help=help_text, description=description)
        if commands is None or name in commands:
            _OPTIONS[name](command)
    return parser


def _run_options(run: argparse.ArgumentParser) -> None:
    from pgnm_monai.arms import ARMS
    from pgnm_monai.data import KINDS
    from pgnm_monai.experiments.pipeline import run_pipeline
    from pgnm_monai.experiments.runner import bundle_defaults
    from pgnm_monai.networks.classifiers import CLASSIFIERS
    from pgnm_monai.objectives import OBJECTIVES

    b, d = bundle_defaults(), _defaults(run_pipeline)
    run.add_argument("--output-dir", default=d["output_dir"], help="where every stage writes")
    run.add_argument(
        "--overwrite", action="store_true",
        help="a finished earlier run in --output-dir's stage folders is deleted first; without it, it is refused",
    )  # fmt: skip
    run.add_argument("--arms", nargs="+", default=list(d["arms"]), choices=list(ARMS), help="pretraining arms")
    run.add_argument("--objective", default=None, choices=OBJECTIVES, help=_bundle(b, "objective", "of arm pgnm"))
    run.add_argument("--network", default=None, choices=CLASSIFIERS, help=_bundle(b, "network", "classifier"))
    run.add_argument("--image-size", type=int, default=None, help=_bundle(b, "image_size", "image side"))
    run.add_argument("--pretrain-epochs", type=int, default=None, help=_bundle(b, "epochs"))
    run.add_argument("--finetune-epochs", type=int, default=None, help=_bundle(b, "epochs"))
    run.add_argument("--few-shot", type=int, default=None, help="fine-tune on N training images (None: all)")
    run.add_argument("--seed", type=int, default=None, help=_bundle(b, "seed"))
    run.add_argument("--dataset-dir", default=None, help="your data (None: the embedded DICOM/NIfTI set)")
    run.add_argument("--dataset-kind", default=None, choices=KINDS, help=_KIND_HELP)
    run.add_argument("--dataset-options", type=_json_object, default=None, help=_JSON_HELP)
    run.add_argument(
        "--spatial-dims", type=int, choices=(2, 3), default=None, help=_bundle(b, "spatial_dims", "3: volumes")
    )
    run.add_argument("--grid", type=int, default=None, help=_bundle(b, "grid", "mask cells per side (G³ in 3D)"))
    run.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        default=None,
        help="volumes: resample to this spacing in mm (None: as stored)",
    )
    run.add_argument("--verbose", action="store_true", help=_VERBOSE)
    run.set_defaults(func=_run)


def _finetune_options(ft: argparse.ArgumentParser) -> None:
    from pgnm_monai.data import KINDS
    from pgnm_monai.experiments.finetune import finetune_from_weights
    from pgnm_monai.experiments.runner import bundle_defaults
    from pgnm_monai.networks.classifiers import CLASSIFIERS
    from pgnm_monai.settings import NORMALIZATION

    b, f, d = bundle_defaults(), bundle_defaults("pgnm_finetune"), _defaults(finetune_from_weights)
    ft.add_argument("--pretrained", required=True, help="the weight file to start from (.pt, .pth, .bin, .safetensors)")
    ft.add_argument("--output-dir", default=d["output_dir"], help="the run's folder")
    ft.add_argument(
        "--overwrite", action="store_true",
        help="a finished run in --output-dir is deleted first (its models/, eval/, logs/, predictions/); without it, "
        "such a folder is refused",
    )  # fmt: skip
    ft.add_argument(
        "--network", default=None, choices=CLASSIFIERS, help=_bundle(b, "network", "architecture of the file")
    )
    ft.add_argument("--dataset-dir", default=None, help="your data: folder, CSV, npz, DICOM/NIfTI (None: embedded)")
    ft.add_argument("--dataset-kind", default=None, choices=KINDS, help=_KIND_HELP)
    ft.add_argument("--dataset-options", type=_json_object, default=None, help=_JSON_HELP)
    ft.add_argument("--few-shot", type=int, default=None, help="fine-tune on N training images (None: all)")
    ft.add_argument(
        "--few-shot-seed", type=int, default=None, help=_bundle(f, "few_shot_seed", "seed of the few-shot subset")
    )
    ft.add_argument(
        "--normalization", default=None, choices=sorted(NORMALIZATION),
        help="the intensity mean/std the weights were trained with, per channel: "
        + "; ".join(f"{k} {_values(m)}/{_values(sd)}" for k, (m, sd) in NORMALIZATION.items())
        + f" (one channel: their means; None: the bundle's, {b['intensity_mean']}/{b['intensity_std']})",
    )  # fmt: skip
    for flag, what in (("--mean", "mean"), ("--std", "std (> 0)")):
        ft.add_argument(
            flag, type=float, nargs="+", default=None, metavar="V",
            help=f"the intensity {what} of the images in [0, 1]: one value, or one per channel (--in-channels) "
            "(None: --normalization's, else the bundle's)",
        )  # fmt: skip
    ft.add_argument("--epochs", type=int, default=None, help=_bundle(f, "epochs"))
    ft.add_argument("--lr", type=float, default=None, help=_bundle(f, "lr"))
    ft.add_argument("--batch-size", type=int, default=None, help=_bundle(b, "batch_size"))
    ft.add_argument("--image-size", type=int, default=None, help=_bundle(b, "image_size"))
    ft.add_argument("--in-channels", type=int, default=None, help=_bundle(b, "in_channels", "1 or 3 (stem adapted)"))
    ft.add_argument(
        "--spatial-dims", type=int, choices=(2, 3), default=None, help=_bundle(b, "spatial_dims", "3: volumes")
    )
    ft.add_argument("--seed", type=int, default=None, help=_bundle(b, "seed"))
    ft.add_argument("--positive-class", default=None, help=_POSITIVE)
    ft.add_argument("--verbose", action="store_true", help=_VERBOSE)
    ft.set_defaults(func=_finetune)


def _values(values: tuple[float, ...]) -> str:
    """``0.485,0.456,0.406``: a :data:`~pgnm_monai.settings.NORMALIZATION` entry as the help prints it."""
    return ",".join(f"{v:g}" for v in values)


def _predict_options(pr: argparse.ArgumentParser) -> None:
    pr.add_argument("run_dir", help="a trained run's folder (pgnm finetune --output-dir, a bundle's bundle_root)")
    pr.add_argument(
        "paths", nargs="+", metavar="PATH",
        help="image or volume files, folders (searched recursively), CSVs with a 'path' and optional 'label' column",
    )  # fmt: skip
    pr.add_argument(
        "--output", default=None,
        help="the CSV to write, refused if it exists (None: RUN_DIR/predictions/<date>-<time>.csv, a new name each "
        "time)",
    )  # fmt: skip
    pr.add_argument("--positive-class", default=None, help=_POSITIVE)
    pr.add_argument("--batch-size", type=int, default=None, help="images per batch (None: the inference bundle's)")
    pr.add_argument("--verbose", action="store_true", help=_VERBOSE)
    pr.set_defaults(func=_predict)


def _benchmark_options(bench: argparse.ArgumentParser) -> None:
    from pgnm_monai.arms import ARMS
    from pgnm_monai.data import KINDS
    from pgnm_monai.experiments.profiles import PROFILES
    from pgnm_monai.experiments.protocol import run_protocol

    d = _defaults(run_protocol)
    bench.add_argument("--profile", default=d["profile"], choices=sorted(PROFILES), help="named settings")
    bench.add_argument("--output-dir", default=d["output_dir"], help="the run's folder")
    bench.add_argument(
        "--task", action="append", help="default tasks by name, or name=kind:path[?option=value] (repeatable; "
        "None: the profile's)",
    )  # fmt: skip
    bench.add_argument("--pretrain-dir", default=None, help="pretraining data (None: the profile's)")
    bench.add_argument("--pretrain-kind", default=None, choices=KINDS, help="kind of --pretrain-dir (None: guessed)")
    bench.add_argument("--data-dir", default=None, help="the shared data folder (None: ../shared/data)")
    bench.add_argument("--arms", nargs="+", default=None, choices=list(ARMS), help="(None: the profile's)")
    bench.add_argument("--shots", nargs="+", type=int, default=None, help="fine-tune N (None: the profile's)")
    bench.add_argument("--pretrain-seeds", nargs="+", type=int, default=None, help="(None: the profile's)")
    bench.add_argument("--finetune-seeds", nargs="+", type=int, default=None, help="(None: the profile's)")
    bench.add_argument(
        "--no-cache", action="store_true",
        help="fine-tunes on image-file tasks preprocess their items again instead of sharing <output-dir>/cache",
    )  # fmt: skip
    bench.add_argument(
        "--compare-with", default=None,
        help="another run's folder (e.g. results/standard): the report also says which verdicts differ from its own "
        "(None: no comparison)",
    )  # fmt: skip
    bench.add_argument(
        "--report-only", action="store_true",
        help="rewrite the report of --output-dir from its files alone (runs.csv, probe_runs.csv(.gz), pretrain/ or "
        "pretrain_curves.csv); nothing is trained or probed, the settings are the run's own (--profile's if it has "
        "none)",
    )  # fmt: skip
    bench.add_argument("--verbose", action="store_true", help=_VERBOSE)
    bench.set_defaults(func=_benchmark)


def _demo_options(demo: argparse.ArgumentParser) -> None:
    from pgnm_monai.data import KINDS
    from pgnm_monai.demo import run_demo

    d = _defaults(run_demo)
    demo.add_argument("--output-dir", default=d["output_dir"], help="where masks.png and summary.json go")
    demo.add_argument("--image-size", type=int, default=d["image_size"], help="image side")
    demo.add_argument("--grid", type=int, default=d["grid"], help="mask cells per side")
    demo.add_argument("--iterations", type=_whole_number(1), default=d["iterations"], help="REINFORCE steps (>= 1)")
    demo.add_argument("--seed", type=int, default=d["seed"], help="seed of everything random")
    demo.add_argument("--dataset-dir", default=None, help="your data (None: the embedded DICOM/NIfTI set)")
    demo.add_argument("--dataset-kind", default=None, choices=KINDS, help=_KIND_HELP)
    demo.add_argument("--dataset-options", type=_json_object, default=None, help=_JSON_HELP)
    demo.add_argument("--spatial-dims", type=int, choices=(2, 3), default=d["spatial_dims"], help="3: volumes")
    demo.set_defaults(func=_demo)


#: command -> the function that adds its options (and its ``func``)
_OPTIONS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "run": _run_options,
    "finetune": _finetune_options,
    "predict": _predict_options,
    "benchmark": _benchmark_options,
    "demo": _demo_options,
}


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (``None``: ``sys.argv[1:]``) and run its command; return the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # the top level has no option with a value
    args = build_parser([command] if command in COMMANDS else ()).parse_args(argv)
    args.argv = argv
    from pgnm_monai.components import show_root_error_last
    from pgnm_monai.experiments.runner import quiet_logs

    show_root_error_last()
    with quiet_logs(not getattr(args, "verbose", False)):
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
