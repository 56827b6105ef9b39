"""The main job: pretrain with the noise policy and without it, fine-tune both heated models, evaluate, compare.

Every stage runs the project's MONAI bundles (``bundles/pgnm_pretrain`` and ``bundles/pgnm_finetune``) through
``monai.bundle.ConfigWorkflow``, in this process, with plain overrides, so what the pipeline does is exactly
what the bundle commands in the README do. Output layout under ``output_dir``::

    pretrain_<arm>/models/model.pt      the heated classifier of each arm (+ model_best.pt, checkpoint_epoch=N.pt)
    pretrain_<arm>/eval/val_metrics.json
    finetune_<arm>/models/model.pt      the fine-tuned classifier
    finetune_<arm>/eval/predictions.csv per-item test predictions (modality, anatomy, probabilities)
    finetune_<arm>/eval/metrics.json    test metrics overall / per modality / per anatomy
    comparison.csv, comparison.md, comparison.json

On the embedded default (a few dozen DICOM/NIfTI images) this is a smoke test of the whole method that runs in
minutes on 2 CPU cores; its figures come from 9 test images and say nothing about the method's merit.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgnm_monai.data.utils import atomic_write_csv, atomic_write_text

__all__ = ["COLUMNS", "bundles_dir", "format_table", "run_bundle", "run_pipeline"]

logger = logging.getLogger(__name__)

COLUMNS = ("arm", "objective", "pretrain_val_macro_f1", "macro_f1", "balanced_accuracy", "auroc", "n_test", "seconds")


def bundles_dir() -> Path:
    """The folder holding ``pgnm_pretrain`` and ``pgnm_finetune``: ``$PGNM_BUNDLES_DIR`` or the repository's."""
    env = os.environ.get("PGNM_BUNDLES_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "bundles"
    if not (path / "pgnm_pretrain" / "configs" / "train.json").is_file():
        raise FileNotFoundError(
            f"bundles folder {path} has no pgnm_pretrain/configs/train.json; set PGNM_BUNDLES_DIR to the "
            "repository's bundles/ folder."
        )
    return path


def run_bundle(bundle: str | os.PathLike, configs: Sequence[str], workflow_type: str = "train", **overrides: Any):
    """Run a bundle's ``configs`` (names under ``configs/``, merged in order) with ``overrides`` in this process.

    Returns:
        the finished ``ConfigWorkflow`` (its parser holds the resolved components).
    """
    from monai.bundle import ConfigWorkflow

    bundle = Path(bundle)
    files = [os.fspath(bundle / "configs" / c) for c in configs]
    wf = ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=os.fspath(bundle / "configs" / "metadata.json"),
        logging_file=os.fspath(bundle / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _fmt(v: Any, column: str = "") -> str:
    if column == "seconds" and v is not None:
        return f"{float(v):.0f}"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.3f}"
    return "" if v is None else str(v)


def format_table(rows: Sequence[dict]) -> str:
    """A Markdown table of ``rows`` with the :data:`COLUMNS`."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(c), c) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def run_pipeline(
    output_dir: str | os.PathLike = "pgnm_output",
    arms: Sequence[str] = ("pgnm", "none"),
    objective: str = "reinforce",
    network: str = "resnet10",
    image_size: int = 64,
    in_channels: int = 1,
    grid: int = 16,
    pretrain_epochs: int = 10,
    pretrain_lr: float = 0.05,
    finetune_epochs: int = 10,
    finetune_lr: float = 0.001,
    warmup_epochs: int = 7,
    few_shot: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    dataset_dir: str | None = None,
    dataset_kind: str | None = None,
    finetune_dataset_dir: str | None = None,
    finetune_dataset_kind: str | None = None,
    max_train_items: int | None = None,
    progress_bar: bool = False,
    extra_pretrain: dict | None = None,
    extra_finetune: dict | None = None,
) -> list[dict]:
    """Pretrain each arm, fine-tune each heated model, evaluate on the test split, write the comparison.

    Args:
        output_dir: where every stage writes (see the module docstring).
        arms: pretraining arms (``pgnm``, ``none``, ``random_mask``, ``gaussian``, ``coarse_dropout``).
        objective: objective of ``pgnm`` (``reinforce`` or ``paper``).
        network: classifier architecture (same for pretraining and fine-tuning).
        image_size: image side length.
        in_channels: image channels.
        grid: mask grid of ``pgnm``/``random_mask``.
        pretrain_epochs: pretraining epochs.
        pretrain_lr: pretraining learning rate (the policy's is a tenth of it).
        finetune_epochs: fine-tuning epochs.
        finetune_lr: fine-tuning learning rate (paper: 0.001).
        warmup_epochs: linear warm-up of the fine-tuning (clipped to ``finetune_epochs - 1``).
        few_shot: fine-tune on a stratified subset of N training images (``None``: all).
        batch_size: batch size of both stages.
        seed: seed of both stages.
        dataset_dir: pretraining data (``None``: the embedded default).
        dataset_kind: kind of ``dataset_dir``.
        finetune_dataset_dir: fine-tuning data (``None``: the pretraining data).
        finetune_dataset_kind: kind of ``finetune_dataset_dir``.
        max_train_items: cap on the pretraining images (quick runs on large sets).
        progress_bar: show tqdm bars.
        extra_pretrain: more overrides of the pretrain bundle.
        extra_finetune: more overrides of the fine-tune bundle.

    Returns:
        one row per arm (see :data:`COLUMNS`), also written to ``comparison.{csv,md,json}``.
    """
    root = bundles_dir()
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if finetune_dataset_dir is None:
        finetune_dataset_dir, finetune_dataset_kind = dataset_dir, dataset_kind
    common = {"network": network, "image_size": image_size, "in_channels": in_channels, "batch_size": batch_size}
    common |= {"seed": seed, "progress_bar": progress_bar}
    rows: list[dict] = []
    for arm in arms:
        start = time.perf_counter()
        pre_root = out / f"pretrain_{arm}"
        logger.info(f"[{arm}] pretraining -> {pre_root}")
        run_bundle(
            root / "pgnm_pretrain",
            ["train.json"],
            bundle_root=os.fspath(pre_root),
            arm=arm,
            objective=objective,
            grid=grid,
            epochs=pretrain_epochs,
            lr=pretrain_lr,
            dataset_dir=dataset_dir,
            dataset_kind=dataset_kind,
            max_train_items=max_train_items,
            **common,
            **(extra_pretrain or {}),
        )
        val_history = _read_json(pre_root / "eval" / "val_metrics.json")
        ft_root = out / f"finetune_{arm}"
        ft = {
            "bundle_root": os.fspath(ft_root),
            "pretrained_ckpt": os.fspath(pre_root / "models" / "model.pt"),
            "dataset_dir": finetune_dataset_dir,
            "dataset_kind": finetune_dataset_kind,
            **common,
            **(extra_finetune or {}),
        }
        logger.info(f"[{arm}] fine-tuning -> {ft_root}")
        run_bundle(
            root / "pgnm_finetune",
            ["train.json"],
            epochs=finetune_epochs,
            lr=finetune_lr,
            warmup_epochs=max(1, min(warmup_epochs, finetune_epochs - 1)),
            few_shot=few_shot,
            **ft,
        )
        run_bundle(root / "pgnm_finetune", ["train.json", "evaluate.json"], **ft)
        report = _read_json(ft_root / "eval" / "metrics.json")
        o = report["overall"]
        rows.append(
            {
                "arm": arm,
                "objective": objective if arm == "pgnm" else "",
                "pretrain_val_macro_f1": val_history[-1].get("val_macro_f1") if val_history else None,
                "macro_f1": o["macro_f1"],
                "balanced_accuracy": o["balanced_accuracy"],
                "auroc": float("nan") if o["auroc"] is None else o["auroc"],
                "n_test": o["n"],
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    table = format_table(rows)
    note = (
        "Fine-tuned test metrics per pretraining arm (one pretrain seed, one fine-tune seed). "
        f"Data: {dataset_kind or 'embedded'} (pretrain), {finetune_dataset_kind or dataset_kind or 'embedded'} "
        "(fine-tune). On the embedded default the test split has 9 images: a smoke test, not evidence."
    )
    atomic_write_csv(out / "comparison.csv", list(COLUMNS), [[r.get(c) for c in COLUMNS] for r in rows])
    atomic_write_text(out / "comparison.md", f"{note}\n\n{table}\n")
    atomic_write_text(out / "comparison.json", json.dumps({"note": note, "rows": rows}, indent=2) + "\n")
    print(f"\n{note}\n\n{table}\n\nwritten to {out}/comparison.{{csv,md,json}}")
    return rows
