"""Predict with a trained run on new images in one call (``pgnm predict RUN_DIR PATH...``), and evaluate them when
they are labelled.

The run's ``models/`` folder holds everything (``model.pt``, ``class_map.json``, ``run_settings.json``: the
network and what it sees); the inference bundle reads it when its ``bundle_root`` is the run, so this module only
names the inputs, runs the bundle (:func:`pgnm_monai.experiments.runner.run_bundle`) and writes the table a user
reads. A PATH is an image or volume file, a folder (searched recursively) or a CSV with a ``path`` column and an
optional ``label`` column (:func:`pgnm_monai.components.data.input_files_list`). Output::

    <output>.csv         path, prediction (class name), prob_<class> per class; label when the CSV gives one
    <output>_eval/       with labels: per_class_metrics.csv, confusion_matrix.png, roc.png, roc_points.csv
                         (:mod:`pgnm_monai.clinical_metrics`) and metrics.json

The default ``<output>`` is ``RUN_DIR/predictions/<date>-<time>.csv``; no earlier prediction file is overwritten.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgnm_monai.atomic_files import atomic_write_bytes, atomic_write_csv

__all__ = ["INFERENCE_BUNDLE", "clinical_table", "predict", "prediction_table"]

#: the bundle whose ``inference`` stage predicts (the fine-tune bundle's ``inference.json`` is the same program)
INFERENCE_BUNDLE = "pgnm_pretrain"


def predict(
    run_dir: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike | None = None,
    positive_class: str | None = None,
    batch_size: int | None = None,
    n_bootstrap: int = 1000,
    progress_bar: bool | None = None,
) -> dict[str, Any]:
    """Predict the images ``paths`` name with the run in ``run_dir``; return ``{"output", "rows", "evaluation"}``.

    Args:
        run_dir: a trained run's folder (``pgnm finetune --output-dir``, a bundle's ``bundle_root``).
        paths: image or volume files, folders, CSVs with a ``path`` (and optional ``label``) column.
        output: the CSV to write (``None``: ``run_dir/predictions/<date>-<time>.csv``); an existing file is refused.
        positive_class: the positive class of a two-class task, for the evaluation (``None``: class index 1).
        batch_size: the inference bundle's ``batch_size`` (``None``: the bundle's).
        n_bootstrap: resamples of the evaluation's intervals.
        progress_bar: a tqdm bar of the batches on stderr (``None``: when stderr is a terminal).

    Raises:
        FileNotFoundError: ``run_dir`` holds no trained model, or a path does not exist.
        FileExistsError: ``output`` exists.
    """
    from pgnm_monai.clinical_metrics import positive_class_index
    from pgnm_monai.components.data import input_files_list
    from pgnm_monai.data import load_class_map
    from pgnm_monai.experiments import runner

    run = Path(run_dir)
    for name in ("model.pt", "class_map.json"):
        if not (run / "models" / name).is_file():
            raise FileNotFoundError(
                f"{run / 'models' / name} does not exist: {os.fspath(run)!r} is not a trained run's folder (the "
                "--output-dir of pgnm finetune, or a bundle_root after training)."
            )
    positive_class_index(load_class_map(run / "models" / "class_map.json"), positive_class)  # refused before running
    out = _output_path(run, output)
    inputs = [os.fspath(p) for p in paths]
    n = len(input_files_list(inputs))
    print(f"predicting {n} image(s) with {run / 'models' / 'model.pt'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".pgnm_predict-", dir=out.parent))
    try:
        runner.run_bundle(
            INFERENCE_BUNDLE, "inference", bundle_root=os.fspath(run), output_dir=os.fspath(scratch),
            input_files=inputs, batch_size=batch_size,
            progress_bar=sys.stderr.isatty() if progress_bar is None else progress_bar,
        )  # fmt: skip
        written = scratch / "inference_predictions.csv"
        header, rows = prediction_table(written)
        atomic_write_csv(out, header, rows)
        evaluation = _evaluate(written, out, scratch / "inference_metrics.json", positive_class, n_bootstrap)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if evaluation:
        print(clinical_table(evaluation))
    print(f"written to {out}" + (f" and {evaluation['folder']}" if evaluation else ""))
    return {"output": out, "rows": [dict(zip(header, r, strict=True)) for r in rows], "evaluation": evaluation}


def prediction_table(path: str | os.PathLike) -> tuple[list[str], list[list[Any]]]:
    """``path``, ``prediction``, ``prob_<class>`` per class (and ``label`` when an item has one) of each row of a
    :class:`~pgnm_monai.handlers.PredictionWriter` CSV."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    probs = [h for h in rows[0] if h.startswith("prob_")] if rows else []
    labelled = any(int(r["label"]) >= 0 for r in rows)
    header = ["path", "prediction", *probs, *(["label"] if labelled else [])]
    table = [
        [r["image_path"], r["pred_name"], *(r[p] for p in probs), *([r["label_name"]] if labelled else [])]
        for r in rows
    ]
    return header, table


def clinical_table(report: dict[str, Any]) -> str:
    """A Markdown table of a :func:`~pgnm_monai.clinical_metrics.write_clinical_report` result: per class, each
    figure with its interval, the support, and a line naming the positive class (or one-vs-rest)."""
    from pgnm_monai.clinical_metrics import FIGURES
    from pgnm_monai.experiments.tables import format_table

    def cell(r: dict, f: str) -> str:
        return f"{r[f]:.3f} [{r[f + '_ci_low']:.3f}, {r[f + '_ci_high']:.3f}]"

    rows = [{"class": r["class"], "n": r["support"], **{f: cell(r, f) for f in FIGURES}} for r in report["rows"]]
    positive = report["positive_class"]
    said = f"positive class {positive!r}" if positive is not None else "each class against the rest"
    return f"{format_table(rows, ['class', 'n', *FIGURES])}\n({said}; {report['rows'][0]['interval']})"


def _output_path(run: Path, output: str | os.PathLike | None) -> Path:
    """The CSV to write: ``output`` (refused when it exists) or a new ``run/predictions/<date>-<time>[_n].csv``."""
    from pgnm_monai.handlers.prediction_writer import unused_name

    if output is not None:
        out = Path(output)
        for path in (out, out.with_name(out.stem + "_eval")):
            if path.exists():
                raise FileExistsError(
                    f"--output {os.fspath(out)!r}: {os.fspath(path)!r} exists; give another file name (nothing is "
                    "overwritten)."
                )
        return out
    folder = run / "predictions"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name, _ = unused_name(folder, [f"{stamp}.csv", f"{stamp}_eval"])
    return folder / name


def _evaluate(
    written: Path, out: Path, metrics: Path, positive_class: str | None, n_bootstrap: int
) -> dict[str, Any] | None:
    """With labelled rows: the clinical report (and the bundle's ``metrics.json``) in ``<out>_eval``."""
    from pgnm_monai.clinical_metrics import read_predictions, write_clinical_report

    try:
        labels, probs, names = read_predictions(written)
    except ValueError:  # no labelled row: nothing to evaluate
        return None
    folder = out.with_name(out.stem + "_eval")
    report = write_clinical_report(labels, probs, names, folder, positive_class=positive_class, n_bootstrap=n_bootstrap)
    if metrics.is_file():
        atomic_write_bytes(folder / "metrics.json", metrics.read_bytes())
    report["folder"] = folder
    return report
