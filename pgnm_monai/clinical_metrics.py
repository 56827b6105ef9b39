"""The evaluation a clinical team reads: per-class sensitivity, specificity, PPV, NPV, F1 and support with bootstrap
95% intervals, the confusion matrix and one-vs-rest ROC curves, as files (scikit-learn for every figure, matplotlib
for the plots).

Definitions, per class ``k`` against the rest (``y_pred = argmax`` of the probabilities):

- ``sensitivity`` = recall, ``ppv`` = precision, ``f1``: scikit-learn's ``precision_recall_fscore_support``;
- ``specificity`` = TN / (TN + FP), ``npv`` = TN / (TN + FN): from scikit-learn's ``multilabel_confusion_matrix``;
- ``support``: the items whose true class is ``k``.

A figure with a zero denominator (a class never predicted has no PPV) is ``NaN``, not 0. Each interval is the
percentile interval of the figure over ``n_bootstrap`` resamples of the items (with replacement, seeded); a resample
in which the figure is undefined is left out of its interval.

A two-class task has one **positive class** (default: the class with index 1): its ROC curve is the one drawn, and
``per_class_metrics.csv`` marks each row ``positive`` or ``negative`` (``one-vs-rest`` with more classes). Files,
written atomically by :func:`write_clinical_report`::

    per_class_metrics.csv   a row per class: the figures, their intervals, support, the positive class
    confusion_matrix.png    counts, rows true and columns predicted, labelled by class name
    roc.png                 one-vs-rest ROC curves with their AUC (the positive class's only, with two classes)
    roc_points.csv          class, fpr, tpr, threshold of every point of those curves
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    RocCurveDisplay,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from pgnm_monai.atomic_files import atomic_save_figure, atomic_write_csv

__all__ = [
    "FIGURES",
    "class_figures",
    "per_class_metrics",
    "positive_class_index",
    "read_predictions",
    "roc_points",
    "write_clinical_report",
]

#: the per-class figures, in the order of the CSV's columns
FIGURES = ("sensitivity", "specificity", "ppv", "npv", "f1")


def positive_class_index(class_names: Sequence[str], positive_class: str | int | None = None) -> int | None:
    """The index of the positive class of a two-class task (default 1); ``None`` with more classes.

    Args:
        class_names: the model's classes.
        positive_class: a class name, or its index (``None``: index 1).

    Raises:
        ValueError: ``positive_class`` names no class, or is given for a task of more than two classes.
    """
    names = [str(c) for c in class_names]
    if len(names) != 2:
        if positive_class is not None:
            raise ValueError(
                f"--positive-class {positive_class!r} applies to two-class tasks; this model has {len(names)} "
                f"classes {names}, each reported against the rest."
            )
        return None
    if positive_class is None:
        return 1
    if str(positive_class) in names:
        return names.index(str(positive_class))
    if str(positive_class).isdigit() and int(positive_class) < 2:
        return int(positive_class)
    raise ValueError(f"--positive-class {positive_class!r} is not a class of this model; its classes: {names}.")


def class_figures(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """``FIGURES`` and ``support`` of each class (arrays of ``num_classes``; ``NaN`` where undefined)."""
    labels = list(range(num_classes))
    ppv, sensitivity, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=np.nan)
    mcm = multilabel_confusion_matrix(y_true, y_pred, labels=labels)  # (K, 2, 2): [[tn, fp], [fn, tp]]
    tn, fp, fn = mcm[:, 0, 0].astype(float), mcm[:, 0, 1], mcm[:, 1, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        npv = np.where(tn + fn > 0, tn / (tn + fn), np.nan)
    return {
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ppv": ppv,
        "npv": npv,
        "f1": f1,
        "support": support,
    }


def per_class_metrics(
    y_true: Sequence[int],
    y_prob: Any,
    class_names: Sequence[str],
    positive_class: str | int | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """A row per class: ``class``, ``role``, ``support``, each of :data:`FIGURES` with ``<figure>_ci_low`` and
    ``<figure>_ci_high`` (the bootstrap interval), and ``interval`` (how it was computed).

    Args:
        y_true: true class indices.
        y_prob: ``(N, K)`` probabilities (or logits: only their argmax is used here).
        class_names: the ``K`` class names.
        positive_class: the positive class of a two-class task (:func:`positive_class_index`).
        n_bootstrap: resamples of the intervals.
        seed: seed of the resamples.
        confidence: the intervals' level.
    """
    y, pred, names = _checked(y_true, y_prob, class_names)
    positive = positive_class_index(names, positive_class)
    k = len(names)
    point = class_figures(y, pred, k)
    rng = np.random.default_rng(seed)
    draws = {f: np.empty((n_bootstrap, k)) for f in FIGURES}
    for b in range(n_bootstrap):
        idx = rng.integers(0, len(y), len(y))
        figures = class_figures(y[idx], pred[idx], k)
        for f in FIGURES:
            draws[f][b] = figures[f]
    tail = 100 * (1 - confidence) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: a figure never defined
        low = {f: np.nanpercentile(draws[f], tail, axis=0) for f in FIGURES}
        high = {f: np.nanpercentile(draws[f], 100 - tail, axis=0) for f in FIGURES}
    interval = f"{confidence:.0%} percentile bootstrap, {n_bootstrap} resamples, seed {seed}"
    rows = []
    for c, name in enumerate(names):
        role = "one-vs-rest" if positive is None else ("positive" if c == positive else "negative")
        row: dict[str, Any] = {"class": name, "role": role, "support": int(point["support"][c])}
        for f in FIGURES:
            row.update({f: float(point[f][c]), f"{f}_ci_low": float(low[f][c]), f"{f}_ci_high": float(high[f][c])})
        row["interval"] = interval
        rows.append(row)
    return rows


def roc_points(
    y_true: Sequence[int], y_prob: Any, class_names: Sequence[str], positive_class: str | int | None = None
) -> list[dict[str, Any]]:
    """The one-vs-rest ROC curves (scikit-learn's ``roc_curve``): ``{"class", "auc", "fpr", "tpr", "thresholds"}``
    per class, the positive class's only for a two-class task; a class that is absent from ``y_true``, or is all
    of it, has no curve (a warning names it)."""
    y, _, names = _checked(y_true, y_prob, class_names)
    prob = np.asarray(y_prob, dtype=float)
    positive = positive_class_index(names, positive_class)
    curves = []
    for c in range(len(names)) if positive is None else [positive]:
        truth = y == c
        if truth.all() or not truth.any():
            warnings.warn(f"class {names[c]!r}: {int(truth.sum())} of {len(y)} items, no ROC curve", stacklevel=2)
            continue
        fpr, tpr, thresholds = roc_curve(truth, prob[:, c])
        auc = float(roc_auc_score(truth, prob[:, c]))
        curves.append({"class": names[c], "auc": auc, "fpr": fpr, "tpr": tpr, "thresholds": thresholds})
    return curves


def write_clinical_report(
    y_true: Sequence[int],
    y_prob: Any,
    class_names: Sequence[str],
    output_dir: str | os.PathLike,
    positive_class: str | int | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the files of the module docstring to ``output_dir``; return ``{"positive_class", "rows", "curves",
    "files"}`` (the positive class's name, or ``None`` with more than two classes)."""
    y, pred, names = _checked(y_true, y_prob, class_names)
    positive = positive_class_index(names, positive_class)
    rows = per_class_metrics(y, y_prob, names, positive, n_bootstrap=n_bootstrap, seed=seed)
    curves = roc_points(y, y_prob, names, positive)
    out = os.fspath(output_dir)
    os.makedirs(out, exist_ok=True)
    files = {name: os.path.join(out, name) for name in ("per_class_metrics.csv", "confusion_matrix.png", "roc.png")}
    files["roc_points.csv"] = os.path.join(out, "roc_points.csv")
    header = list(rows[0])
    atomic_write_csv(files["per_class_metrics.csv"], header, [[r[h] for h in header] for r in rows])
    points = [
        [c["class"], f, t, h] for c in curves for f, t, h in zip(c["fpr"], c["tpr"], c["thresholds"], strict=True)
    ]
    atomic_write_csv(files["roc_points.csv"], ["class", "fpr", "tpr", "threshold"], points)
    positive_name = None if positive is None else names[positive]
    _confusion_figure(y, pred, names, files["confusion_matrix.png"])
    _roc_figure(curves, positive_name, files["roc.png"])
    return {"positive_class": positive_name, "rows": rows, "curves": curves, "files": files}


def read_predictions(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(labels, (N, K) probabilities, class names)`` of the labelled rows of a
    :class:`~pgnm_monai.handlers.PredictionWriter` CSV (columns ``label`` and ``prob_<class>``; rows labelled -1
    are left out).

    Raises:
        ValueError: naming the file, when it has no ``label`` or ``prob_`` columns, or no labelled row.
    """
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        prob_cols = [h for h in header if h.startswith("prob_")]
        if "label" not in header or not prob_cols:
            raise ValueError(f"{os.fspath(path)} has no 'label' and 'prob_<class>' columns; its columns: {header}.")
        rows = [r for r in reader if int(r["label"]) >= 0]
    if not rows:
        raise ValueError(f"{os.fspath(path)} has no labelled row (every label is -1): nothing to evaluate.")
    labels = np.array([int(r["label"]) for r in rows])
    probs = np.array([[float(r[c]) for c in prob_cols] for r in rows])
    return labels, probs, [c[len("prob_") :] for c in prob_cols]


def _checked(y_true: Any, y_prob: Any, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(labels, predictions, names)``, checked against each other."""
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    prob = np.asarray(y_prob, dtype=float)
    names = [str(c) for c in class_names]
    if prob.ndim != 2 or prob.shape != (len(y), len(names)):
        raise ValueError(f"expected ({len(y)}, {len(names)}) probabilities for {names}, got shape {prob.shape}.")
    if not len(y):
        raise ValueError("no labelled item: nothing to evaluate.")
    if y.min() < 0 or y.max() >= len(names):
        raise ValueError(f"labels must be class indices in [0, {len(names)}), got {sorted(set(y.tolist()))}.")
    return y, prob.argmax(axis=1), names


def _confusion_figure(y: np.ndarray, pred: np.ndarray, names: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = 2.5 + 0.6 * len(names)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    ConfusionMatrixDisplay.from_predictions(
        y, pred, labels=list(range(len(names))), display_labels=names, ax=ax, colorbar=False,
        xticks_rotation="vertical" if len(names) > 4 else "horizontal",
    )  # fmt: skip
    ax.set_title(f"confusion matrix ({len(y)} items)")
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=120)


def _roc_figure(curves: list[dict[str, Any]], positive: str | None, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i, c in enumerate(curves):
        RocCurveDisplay(fpr=c["fpr"], tpr=c["tpr"], roc_auc=c["auc"], name=c["class"]).plot(
            ax=ax, plot_chance_level=i == len(curves) - 1
        )
    ax.set_title(f"ROC, positive class {positive!r}" if positive is not None else "ROC, each class against the rest")
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=120)
