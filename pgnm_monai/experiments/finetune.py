"""From weights people have to their own data in one call (``pgnm finetune``): fine-tune, evaluate, report.

Runs the fine-tune bundle's ``train`` stage warm-started from ``pretrained`` (any layout that
:func:`pgnm_monai.networks.load_weights` reads: the authors' released heated weights, torchvision or timm ImageNet
weights, this project's ``model.pt`` / ``model_avg.pt``), then its ``evaluate`` stage on the test split. It prints
what the weights load did (tensors loaded, stem adapted, head replaced: :class:`~pgnm_monai.networks.weights.
WeightsReport`), a training progress bar on a terminal, and the tables. A folder that holds a finished run is
refused unless ``overwrite`` (:func:`pgnm_monai.run_lock.check_run_folder`). Output, under ``output_dir``::

    models/model.pt            the fine-tuned classifier (+ class_map.json)
    models/timm/               the same in timm's own folder format (config.json with the class names, input size,
                               mean and std, beside model.safetensors; timm's networks only:
                               :func:`pgnm_monai.networks.model_card.save_timm_folder`)
    eval/predictions.csv       per-item test predictions (modality, anatomy, probabilities)
    eval/metrics.json          test metrics overall, per modality and per anatomy
    eval/metrics_by_modality.md  the same per modality, as a table
    eval/per_class_metrics.csv, confusion_matrix.png, roc.png, roc_points.csv
                               per class sensitivity, specificity, PPV, NPV, F1 with bootstrap intervals; the
                               figures (:mod:`pgnm_monai.clinical_metrics`)
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgnm_monai.atomic_files import atomic_write_text
from pgnm_monai.clinical_metrics import read_predictions, write_clinical_report
from pgnm_monai.experiments import runner
from pgnm_monai.experiments.predict import clinical_table
from pgnm_monai.experiments.tables import format_table
from pgnm_monai.networks.weights import on_weights_loaded
from pgnm_monai.run_lock import check_run_folder
from pgnm_monai.settings import intensity_values
from pgnm_monai.settings import normalization as named_normalization

__all__ = [
    "METRIC_COLUMNS",
    "finetune_from_weights",
    "fit_warmup",
    "input_normalization",
    "metrics_by_modality",
]

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ("modality", "n", "macro_f1", "balanced_accuracy", "auroc")


def metrics_by_modality(report: dict) -> list[dict]:
    """Rows of :data:`METRIC_COLUMNS`: one per modality of an ``eval/metrics.json`` report, then ``all``."""
    groups = {**report.get("by_modality", {}), "all": report["overall"]}
    return [{"modality": name, **{c: m.get(c) for c in METRIC_COLUMNS[1:]}} for name, m in groups.items()]


def fit_warmup(epochs: int | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The warm-up ids that fit a run of ``epochs`` when the user gave none (``overrides`` without
    ``warmup_epochs``): the bundle's ``warmup_epochs`` shortened to ``epochs - 1`` when it is not shorter than the run
    (no warm-up for a 1-epoch run), with a warning naming both values; ``{}`` when the bundle's warm-up fits.

    A ``warmup_epochs`` the user gives is kept: the bundle refuses one >= ``epochs``
    (:func:`pgnm_monai.components.checks.check_warmup`).
    """
    if "warmup_epochs" in overrides or "warmup_start_factor" in overrides:
        return {}
    defaults = runner.bundle_defaults("pgnm_finetune")
    epochs = defaults["epochs"] if epochs is None else epochs
    warmup = defaults["warmup_epochs"]
    if not isinstance(epochs, int) or epochs < 1 or warmup < epochs:
        return {}
    fitted = {"warmup_epochs": epochs - 1} if epochs >= 2 else {"warmup_epochs": 0, "warmup_start_factor": 1.0}
    warnings.warn(
        f"the fine-tune's default warmup_epochs ({warmup}) is not shorter than --epochs ({epochs}), so the learning "
        f"rate would never reach --lr; shortened to warmup_epochs {fitted['warmup_epochs']}"
        + (" (no warm-up)" if epochs == 1 else "")
        + ". Give more --epochs to keep the bundle's warm-up (or warmup_epochs=N to finetune_from_weights).",
        stacklevel=3,
    )
    return fitted


def input_normalization(
    normalization: str | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    in_channels: int | None = None,
) -> tuple[float | list | None, float | list | None]:
    """The bundle ids ``(intensity_mean, intensity_std)`` of ``pgnm finetune``'s options: ``--normalization``'s
    values for the input's channels (:func:`pgnm_monai.settings.normalization`), each replaced by ``--mean`` /
    ``--std`` where given (one value, or one per channel); ``None``: the bundle's.

    Raises:
        ValueError: an unknown ``normalization``, or ``--mean`` / ``--std`` values that are not finite (a std
            not > 0), or whose count is neither 1 nor ``in_channels`` (each error names its option).
    """
    if normalization is None and mean is None and std is None:
        return None, None
    if in_channels is None:
        in_channels = runner.bundle_defaults("pgnm_finetune")["in_channels"]
    named = named_normalization(normalization, in_channels) if normalization is not None else (None, None)
    return (
        named[0] if mean is None else intensity_values("--mean", mean, in_channels),
        named[1] if std is None else intensity_values("--std", std, in_channels, positive=True),
    )


def finetune_from_weights(
    pretrained: str | os.PathLike,
    output_dir: str | os.PathLike = "runs/finetune",
    network: str | None = None,
    dataset_kind: str | None = None,
    dataset_dir: str | None = None,
    dataset_options: dict | None = None,
    few_shot: int | None = None,
    few_shot_seed: int | None = None,
    normalization: str | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    image_size: int | None = None,
    in_channels: int | None = None,
    spatial_dims: int | None = None,
    seed: int | None = None,
    progress_bar: bool | None = None,
    positive_class: str | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> dict:
    """Fine-tune ``pretrained`` on a dataset, evaluate it on the test split; return ``eval/metrics.json``.

    Args:
        pretrained: the weight file to start from.
        output_dir: the fine-tune bundle's ``bundle_root`` (see the module docstring).
        network: the architecture of ``pretrained`` (``None``: the bundle's).
        dataset_kind: kind of ``dataset_dir`` (``None``: guessed; with no ``dataset_dir`` the embedded set).
        dataset_dir: the user's data: a folder, CSV, npz or DICOM/NIfTI set.
        dataset_options: loader options.
        few_shot: fine-tune on a stratified subset of N training images (``None``: all).
        few_shot_seed: seed of that subset.
        normalization: ``paper`` or ``imagenet`` (:data:`~pgnm_monai.settings.NORMALIZATION`): the
            intensity mean and std the weights were trained with, per channel for 3 channels (``None``: the
            bundle's).
        mean, std: the intensity mean and std, one value or one per channel (``in_channels``), in place of
            ``normalization``'s (:func:`input_normalization`).
        epochs, lr, batch_size, image_size, in_channels, spatial_dims, seed: bundle ids (``None``: the bundle's).
        progress_bar: show the training's tqdm bar (on stderr; ``None``: when stderr is a terminal).
        positive_class: the positive class of a two-class task, for the per-class report (``None``: class index 1).
        overwrite: delete a finished run in ``output_dir`` first (else it is refused; a ``resume=True`` override
            resumes the run there instead).
        overrides: any other id of the fine-tune bundle.

    Raises:
        pgnm_monai.run_lock.FinishedRunError: ``output_dir`` holds a finished run and ``overwrite`` is false.
    """
    pretrained = Path(pretrained)
    if pretrained.is_dir():
        raise IsADirectoryError(f"--pretrained {os.fspath(pretrained)!r} is a folder, expected a weight file in it.")
    if not pretrained.is_file():
        raise FileNotFoundError(f"--pretrained {os.fspath(pretrained)!r} does not exist.")
    mean, std = input_normalization(normalization, mean, std, in_channels)
    out = Path(output_dir)
    if not overrides.get("resume"):
        check_run_folder(out, overwrite)
    overrides = {**overrides, **fit_warmup(epochs, overrides)}
    common = {
        "network": network,
        "dataset_kind": dataset_kind,
        "dataset_dir": dataset_dir,
        "dataset_options": dataset_options,
        "intensity_mean": mean,
        "intensity_std": std,
        "image_size": image_size,
        "in_channels": in_channels,
        "spatial_dims": spatial_dims,
        "seed": seed,
        "progress_bar": sys.stderr.isatty() if progress_bar is None else progress_bar,
        **overrides,
    }
    logger.info(f"fine-tuning {pretrained} -> {out}")
    with on_weights_loaded(lambda report: print(report, flush=True)):
        runner.finetune(
            out, pretrained, epochs=epochs, lr=lr, batch_size=batch_size, few_shot=few_shot,
            few_shot_seed=few_shot_seed, **common,
        )  # fmt: skip
    report = runner.evaluate(out, **common)
    table = format_table(metrics_by_modality(report), METRIC_COLUMNS)
    atomic_write_text(out / "eval" / "metrics_by_modality.md", table + "\n")
    labels, probs, names = read_predictions(out / "eval" / "predictions.csv")
    clinical = write_clinical_report(labels, probs, names, out / "eval", positive_class=positive_class)
    from pgnm_monai.networks.model_card import save_timm_folder

    timm_folder = save_timm_folder(out)  # None (logged) for a network timm does not build
    print(
        f"{table}\n\n{clinical_table(clinical)}\n\nwritten to {out}/models/model.pt"
        + (f", {timm_folder}/ (timm.create_model('local-dir:{timm_folder}', pretrained=True))" if timm_folder else "")
        + f" and {out}/eval/{{predictions.csv,metrics.json,per_class_metrics.csv,confusion_matrix.png,roc.png}}"
    )
    return report
