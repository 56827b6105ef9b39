"""The main job: pretrain each arm, fine-tune every heated model, evaluate, compare (``pgnm run``).

Every stage runs the project's MONAI bundles through :mod:`.runner`, in this process, so what the job
does is exactly what the bundle commands in docs/bundles.md do. Settings left ``None`` take the bundles'
defaults (stated once, in ``configs/train.json``). Output layout under ``output_dir``::

    pretrain_<arm>/models/model.pt      the heated classifier of each arm (+ model_best.pt, checkpoint_epoch=N.pt)
    pretrain_<arm>/eval/val_metrics.json
    pretrain_<arm>/logs/                TensorBoard event files
    finetune_<arm>/models/model.pt      the fine-tuned classifier
    finetune_<arm>/eval/predictions.csv per-item test predictions (modality, anatomy, probabilities)
    finetune_<arm>/eval/metrics.json    test metrics overall / per modality / per anatomy
    comparison.csv, comparison.md, comparison.json

An earlier run's ``comparison.*`` in ``output_dir`` is removed when the job starts, so the comparison beside the
stage folders is always this run's (or none, when it stops early). A stage that is stopped (an error, Ctrl-C,
SIGTERM under ``pgnm run``) prints which one, with its folder, before the error goes on.

On the embedded default (a few dozen DICOM/NIfTI images) this is a smoke test of the whole method that runs in
about a minute on 2 CPU cores; its figures come from 9 test images and say nothing about the method's merit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pgnm_monai.atomic_files import atomic_write_csv, atomic_write_text
from pgnm_monai.experiments import runner
from pgnm_monai.experiments.finetune import fit_warmup
from pgnm_monai.experiments.tables import format_table
from pgnm_monai.run_lock import check_run_folder
from pgnm_monai.settings import default_network

__all__ = ["COLUMNS", "COMPARISON_FILES", "run_pipeline"]

logger = logging.getLogger(__name__)

COLUMNS = ("arm", "objective", "pretrain_val_macro_f1", "macro_f1", "balanced_accuracy", "auroc", "n_test", "seconds")


#: the files the job writes last; an earlier run's are removed when the job starts.
COMPARISON_FILES = ("comparison.csv", "comparison.md", "comparison.json")


@contextlib.contextmanager
def _stage(arm: str, stage: str, root: Path) -> Iterator[Callable[[str], None]]:
    """One progress line per stage: ``[arm] stage: <result>, N s (folder)``, printed when the stage is done, or
    ``[arm] stage: stopped ...`` when it ends with an error or an interruption (which goes on)."""
    start, result = time.perf_counter(), []
    try:
        yield result.append
    except BaseException as e:
        why = "interrupted" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "failed"
        print(
            f"[{arm}] {stage}: {why} after {time.perf_counter() - start:.1f} s ({root}): "
            + getattr(e, "signal_name", type(e).__name__)
            + (f": {str(e).splitlines()[0]}" if str(e) and not isinstance(e, SystemExit) else "")
            + "; no comparison was written.",
            flush=True,
        )
        raise
    detail = ", ".join([*filter(None, result), f"{time.perf_counter() - start:.1f} s"])
    print(f"[{arm}] {stage}: {detail} ({root})", flush=True)


def run_pipeline(
    output_dir: str | os.PathLike = "runs/main",
    arms: Sequence[str] = ("pgnm", "none"),
    objective: str | None = None,
    network: str | None = None,
    image_size: int | None = None,
    pretrain_epochs: int | None = None,
    finetune_epochs: int | None = None,
    few_shot: int | None = None,
    seed: int | None = None,
    dataset_dir: str | None = None,
    dataset_kind: str | None = None,
    finetune_dataset_dir: str | None = None,
    finetune_dataset_kind: str | None = None,
    dataset_options: dict | None = None,
    spatial_dims: int | None = None,
    grid: int | None = None,
    spacing: float | Sequence[float] | None = None,
    progress_bar: bool = False,
    extra_pretrain: dict | None = None,
    extra_finetune: dict | None = None,
    overwrite: bool = False,
) -> list[dict]:
    """Pretrain each arm, fine-tune each heated model, evaluate on the test split, write the comparison.

    Args:
        output_dir: where every stage writes (see the module docstring).
        arms: pretraining arms (names of :data:`pgnm_monai.arms.ARMS`).
        objective: objective of arm ``pgnm`` (``None``: the bundle's).
        network: classifier architecture, the same for both stages (``None``: the bundle's; in 3D
            :func:`~pgnm_monai.settings.default_network`).
        image_size: image side length (``None``: the bundle's).
        pretrain_epochs: pretraining epochs (``None``: the bundle's).
        finetune_epochs: fine-tuning epochs (``None``: the bundle's).
        few_shot: fine-tune on a stratified subset of N training images (``None``: all).
        seed: seed of both stages (``None``: the bundles').
        dataset_dir: pretraining data (``None``: the embedded default).
        dataset_kind: kind of ``dataset_dir``.
        finetune_dataset_dir: fine-tuning data (``None``: the pretraining data).
        finetune_dataset_kind: kind of ``finetune_dataset_dir``.
        dataset_options: loader options of both datasets (e.g. ``{"slices": "none"}``: whole volumes).
        spatial_dims: 2 (images) or 3 (volumes: 3D classifier, policy and mask) (``None``: the bundle's, 2).
        grid: the mask's cells per side (``None``: the bundle's; keep it small in 3D: G³ cells).
        spacing: volumes: resample each to this voxel spacing in mm first (``None``: as stored).
        progress_bar: show tqdm bars.
        extra_pretrain: more overrides of the pretrain bundle (any bundle id).
        extra_finetune: more overrides of the fine-tune bundle (any bundle id).
        overwrite: delete the outputs of a finished earlier run in a stage folder first; without it such a folder
            is refused before any stage runs (:func:`pgnm_monai.run_lock.check_run_folder`).

    Returns:
        one row per arm (see :data:`COLUMNS`), also written to ``comparison.{csv,md,json}``.
    """
    out = Path(output_dir).resolve()
    for arm in arms:  # refuse (or clear) an earlier finished run before any stage starts
        for stage_root in (out / f"pretrain_{arm}", out / f"finetune_{arm}"):
            check_run_folder(stage_root, overwrite, option="--output-dir", flag="--overwrite")
    out.mkdir(parents=True, exist_ok=True)
    for name in COMPARISON_FILES:  # an earlier run's: never beside this run's stage folders
        if (out / name).is_file():
            logger.info(f"removing the earlier run's {out / name}")
            (out / name).unlink()
    if finetune_dataset_dir is None:
        finetune_dataset_dir, finetune_dataset_kind = dataset_dir, dataset_kind
    if network is None and spatial_dims == 3:
        network = default_network(3)  # the bundles' default network is a 2D one
    common: dict[str, Any] = {  # None: the bundles' default (runner drops it)
        "network": network,
        "image_size": image_size,
        "seed": seed,
        "progress_bar": progress_bar,
        "spatial_dims": spatial_dims,
        "dataset_options": dataset_options,
        "spacing": spacing,
    }
    rows: list[dict] = []
    objective_used = objective or runner.bundle_defaults()["objective"]
    data = {"dataset_dir": finetune_dataset_dir, "dataset_kind": finetune_dataset_kind}
    for arm in arms:
        start = time.perf_counter()
        pre_root, ft_root = out / f"pretrain_{arm}", out / f"finetune_{arm}"
        pretrain = {"arm": arm, "objective": objective, "epochs": pretrain_epochs, "grid": grid}
        pretrain.update(dataset_dir=dataset_dir, dataset_kind=dataset_kind, **common, **(extra_pretrain or {}))
        with _stage(arm, "pretrain", pre_root) as done:
            heated = runner.pretrain(pre_root, **pretrain)
            val_history = runner.read_json(pre_root / "eval" / "val_metrics.json")
            val_f1 = val_history[-1].get("val_macro_f1") if val_history else None
            done(f"validation macro-F1 {val_f1:.3f}" if val_f1 is not None else "")
        finetune = {**data, **common, **(extra_finetune or {})}
        with _stage(arm, "fine-tune", ft_root) as done:
            warmup = fit_warmup(finetune_epochs, finetune)  # the bundle's warm-up, shortened to a short run
            runner.finetune(ft_root, heated, epochs=finetune_epochs, few_shot=few_shot, **finetune, **warmup)
            done("")
        with _stage(arm, "evaluate", ft_root) as done:
            overall = runner.evaluate(ft_root, **finetune)["overall"]
            done(f"test macro-F1 {overall['macro_f1']:.3f} on {overall['n']} items")
        rows.append(
            {
                "arm": arm,
                "objective": objective_used if arm == "pgnm" else "",
                "pretrain_val_macro_f1": val_f1,
                "macro_f1": overall["macro_f1"],
                "balanced_accuracy": overall["balanced_accuracy"],
                "auroc": float("nan") if overall["auroc"] is None else overall["auroc"],
                "n_test": overall["n"],
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    table = format_table(rows, COLUMNS)
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
