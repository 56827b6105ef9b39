"""Classification metrics (one implementation, scikit-learn), overall and per group, plus an ignite metric.

Definitions (``y_true`` class indices, ``y_prob`` class probabilities or logits, ``y_pred = argmax``):

- ``accuracy``; ``balanced_accuracy`` (mean recall over the classes present in ``y_true``).
- ``macro_precision`` / ``macro_recall`` / ``macro_f1``: unweighted means over the classes present in
  ``y_true`` or ``y_pred`` (scikit-learn's default label set); a class never predicted counts with precision
  0 (``zero_division=0``).
- ``auroc``: binary AUROC of the positive class when the task has two classes; otherwise the one-vs-one
  macro AUROC of Hand & Till over the pairs of classes present in ``y_true`` (each pair scored on its own
  samples with each class's probability, as scikit-learn's ``multi_class="ovo"``). ``NaN`` with a warning
  when ``y_true`` holds a single class.
- ``confusion_matrix``: ``num_classes x num_classes`` (rows true, columns predicted).

:func:`metrics_report` adds the same metrics per modality / anatomy. :class:`ClassificationEpochMetric` is
an ``ignite.metrics.EpochMetric`` computing one of :data:`SCALAR_METRICS` on all of an epoch's outputs,
gathered over ranks under ``torch.distributed`` (usable as a bundle's ``key_val_metric``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch
from ignite.metrics import EpochMetric
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = [
    "LABEL_METRICS",
    "SCALAR_METRICS",
    "ClassificationEpochMetric",
    "additional_val_metrics",
    "auroc",
    "classification_metrics",
    "key_val_metric",
    "label_metrics",
    "metrics_report",
    "to_probabilities",
]

#: the metrics of predicted labels (:func:`label_metrics`), in their order
LABEL_METRICS = ("accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1")
#: every scalar metric (:func:`classification_metrics`), in the order of its output
SCALAR_METRICS = (*LABEL_METRICS, "auroc")


def to_probabilities(scores: Any) -> np.ndarray:
    """``(N, K)`` probabilities from probabilities or raw logits (softmax unless rows already sum to 1)."""
    s = np.asarray(torch.as_tensor(scores).detach().float().cpu(), dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be (N, num_classes), got shape {s.shape}.")
    if s.size and (s.min() >= 0) and np.allclose(s.sum(axis=1), 1.0, atol=1e-4):
        return s
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def _labels(y_true: Any) -> np.ndarray:
    y = np.asarray(torch.as_tensor(y_true).detach().cpu()).astype(np.int64)
    if y.ndim == 2:  # one-hot
        y = y.argmax(axis=1)
    return y.reshape(-1)


def auroc(y_true: Any, y_prob: Any) -> float:
    """Binary AUROC (two classes) or one-vs-one macro AUROC (see the module docstring); NaN for one class."""
    y = _labels(y_true)
    p = to_probabilities(y_prob)
    present = np.unique(y)
    if len(present) < 2:
        warnings.warn(
            f"AUROC is undefined when the true labels hold a single class ({present.tolist()}); returning NaN.",
            stacklevel=2,
        )
        return float("nan")
    if p.shape[1] == 2:
        return float(roc_auc_score(y, p[:, 1]))
    scores = []
    for a, b in combinations(present.tolist(), 2):
        mask = (y == a) | (y == b)
        ya = y[mask] == a
        pair = (roc_auc_score(ya, p[mask, a]) + roc_auc_score(~ya, p[mask, b])) / 2.0
        scores.append(pair)
    return float(np.mean(scores))


def label_metrics(y_true: Any, y_pred: Any, names: Collection[str] | None = None) -> dict[str, float]:
    """The metrics of predicted labels (module docstring): accuracy, balanced accuracy, macro P/R/F1.

    ``names``: compute only these (e.g. ``{"accuracy"}`` for an epoch's key metric); default all five.
    """
    y, pred = np.asarray(y_true), np.asarray(y_pred)
    wanted = set(LABEL_METRICS if names is None else names)
    out: dict[str, float] = {}
    if "accuracy" in wanted:
        out["accuracy"] = float(accuracy_score(y, pred))
    if wanted & {"balanced_accuracy", "macro_precision", "macro_recall", "macro_f1"}:
        # one pass for all four: the per-class values over the classes in y_true or y_pred; the macro means are
        # their means (scikit-learn's average="macro"), balanced accuracy the mean recall over the classes with
        # support (scikit-learn's balanced_accuracy_score)
        prec, rec, f1, support = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
        out |= {"macro_precision": float(prec.mean()), "macro_recall": float(rec.mean()), "macro_f1": float(f1.mean())}
        out["balanced_accuracy"] = float(rec[support > 0].mean())
    return {k: out[k] for k in LABEL_METRICS if k in wanted}


def classification_metrics(y_true: Any, y_prob: Any, num_classes: int | None = None) -> dict[str, Any]:
    """All metrics of the module docstring for one set of predictions.

    Args:
        y_true: ``(N,)`` class indices (or ``(N, K)`` one-hot).
        y_prob: ``(N, K)`` probabilities or raw logits.
        num_classes: size of the confusion matrix (default ``K``).

    Returns:
        a dict of floats (``NaN`` where undefined), ``confusion_matrix`` (nested lists) and ``n``.
    """
    y = _labels(y_true)
    p = to_probabilities(y_prob)
    if len(y) != len(p):
        raise ValueError(f"y_true has {len(y)} items but y_prob has {len(p)}.")
    k = int(num_classes or p.shape[1])
    if len(y) == 0:
        nan = float("nan")
        return {**dict.fromkeys(SCALAR_METRICS, nan), "confusion_matrix": np.zeros((k, k), int).tolist(), "n": 0}
    pred = p.argmax(axis=1)
    return {
        **label_metrics(y, pred),
        "auroc": auroc(y, p),
        "confusion_matrix": confusion_matrix(y, pred, labels=list(range(k))).tolist(),
        "n": int(len(y)),
    }


def metrics_report(
    y_true: Any,
    y_prob: Any,
    groups: Mapping[str, Sequence[str]] | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics overall and per value of each grouping (e.g. ``{"modality": [...], "anatomy": [...]}``).

    Returns:
        ``{"overall": {...}, "by_modality": {"CT": {...}, ...}, ...}`` (plus ``class_names`` when given).
    """
    y = _labels(y_true)
    p = to_probabilities(y_prob)
    k = int(num_classes or p.shape[1])
    report: dict[str, Any] = {"overall": classification_metrics(y, p, k)}
    if class_names is not None:
        report["class_names"] = [str(c) for c in class_names]
    for name, values in (groups or {}).items():
        values = np.asarray([str(v) for v in values])
        if len(values) != len(y):
            raise ValueError(f"group {name!r} has {len(values)} values for {len(y)} items.")
        per: dict[str, Any] = {}
        for v in sorted(set(values.tolist())):
            m = values == v
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # single-class groups are common; NaN says it
                per[v] = classification_metrics(y[m], p[m], k)
        report[f"by_{name}"] = per
    return report


def _scalar_fn(metric: str) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """One scalar of :func:`classification_metrics`, computing only what it needs (no AUROC for a label metric)."""

    def compute(y_pred: torch.Tensor, y: torch.Tensor) -> float:
        if metric == "auroc":
            return auroc(y, y_pred)
        labels, prob = _labels(y), to_probabilities(y_pred)
        if len(labels) == 0:
            return math.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return label_metrics(labels, prob.argmax(axis=1), names=(metric,))[metric]

    return compute


class ClassificationEpochMetric(EpochMetric):
    """An ignite ``EpochMetric`` computing one scalar of :data:`SCALAR_METRICS` over an epoch.

    It stores the epoch's logits and labels (gathered over ranks when distributed) and computes the metric
    with :func:`classification_metrics`. ``NaN`` (e.g. AUROC on a single-class set) is reported as is.

    Args:
        metric: one of :data:`SCALAR_METRICS`.
        output_transform: maps the engine output to ``(logits (N, K), labels (N,))``; the default reads
            ``pred`` and ``label`` from a batched output dict (``SupervisedEvaluator(decollate=False)``).
        device: where the accumulated tensors live.
    """

    def __init__(
        self,
        metric: str = "macro_f1",
        output_transform: Callable | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if metric not in SCALAR_METRICS:
            raise ValueError(f"metric must be one of {SCALAR_METRICS}, got {metric!r}.")
        self.metric = metric
        super().__init__(
            _scalar_fn(metric),
            output_transform=output_transform or _pred_label,
            check_compute_fn=False,
            device=device,
        )

    def update(self, output: Sequence[torch.Tensor]) -> None:
        y_pred, y = output[0], output[1]
        y = torch.as_tensor(y)
        # (N, K) labels: one-hot, or the soft labels of a batch mix (mixup, cutmix): the dominant class
        y = y.argmax(dim=1) if y.ndim == 2 else y.reshape(-1).long()
        super().update((torch.as_tensor(y_pred).detach().float(), y))

    def compute(self) -> float:
        value = super().compute()
        return float(value) if value is not None else math.nan


def _pred_label(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(output, Mapping):
        return output["pred"], output["label"]
    if isinstance(output, Sequence) and output and isinstance(output[0], Mapping):  # decollated
        return torch.stack([torch.as_tensor(o["pred"]) for o in output]), torch.stack(
            [torch.as_tensor(o["label"]) for o in output]
        )
    raise ValueError("ClassificationEpochMetric expects an output dict with 'pred' and 'label'.")


def key_val_metric(name: str = "macro_f1") -> dict[str, ClassificationEpochMetric]:
    """``{"val_<name>": metric}`` for ``SupervisedEvaluator(key_val_metric=...)`` (the bundle's ``val_key_metric``)."""
    if name not in SCALAR_METRICS:
        raise ValueError(f"config id 'val_key_metric' must be one of {SCALAR_METRICS}, got {name!r}.")
    return {f"val_{name}": ClassificationEpochMetric(name)}


def additional_val_metrics(key: str = "macro_f1") -> dict[str, ClassificationEpochMetric]:
    """The validation metrics other than ``key`` (accuracy, balanced accuracy, macro-F1, AUROC)."""
    names = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")
    return {f"val_{n}": ClassificationEpochMetric(n) for n in names if n != key}
