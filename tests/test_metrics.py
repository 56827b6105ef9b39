"""Metrics vs hand-computed values on tiny cases (pgnm_monai.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pgnm_monai.metrics import ClassificationEpochMetric, auroc, classification_metrics, metrics_report


def test_binary_hand_computed():
    # y = [0, 0, 1], pred = [0, 1, 1]
    m = classification_metrics([0, 0, 1], [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(0.75)  # recalls 1/2 and 1
    assert m["macro_precision"] == pytest.approx(0.75)  # precisions 1 and 1/2
    assert m["macro_recall"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(2 / 3)  # both F1 = 2/3
    assert m["auroc"] == pytest.approx(0.5)  # positive 0.7 beats 0.1, loses to 0.8
    assert m["confusion_matrix"] == [[1, 1], [0, 1]]
    assert m["n"] == 3


def test_class_absent_from_predictions():
    # 3 classes, class 2 never predicted: its precision/recall/F1 count as 0
    y = [0, 1, 2, 2]
    p = np.eye(3)[[0, 1, 0, 1]]
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0) / 3)
    # precision: c0 1/2, c1 1/2, c2 0 ; recall: 1, 1, 0 ; F1: 2/3, 2/3, 0
    assert m["macro_precision"] == pytest.approx(1 / 3)
    assert m["macro_recall"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx(4 / 9)
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 1, 0]]


def test_ovo_auroc_matches_sklearn_and_logits_ok():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1, 1], size=40)
    y = rng.integers(0, 4, 40)
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovo"))
    logits = np.log(p)  # softmax(log p) = p
    assert auroc(y, logits) == pytest.approx(auroc(y, p))


def test_single_class_gives_nan_with_warning():
    with pytest.warns(UserWarning, match="single class"):
        m = classification_metrics([1, 1], [[0.2, 0.8], [0.6, 0.4]])
    assert math.isnan(m["auroc"])
    assert m["accuracy"] == pytest.approx(0.5)


def test_report_per_modality():
    r = metrics_report([0, 1, 0, 1], np.eye(2)[[0, 1, 1, 1]], {"modality": ["CT", "CT", "MR", "MR"]})
    assert r["overall"]["accuracy"] == pytest.approx(0.75)
    assert r["by_modality"]["CT"]["accuracy"] == pytest.approx(1.0)
    assert r["by_modality"]["MR"]["accuracy"] == pytest.approx(0.5)


def test_ignite_epoch_metric():
    from ignite.engine import Engine

    batches = [
        {"pred": torch.tensor([[2.0, 0.0], [0.0, 1.0]]), "label": torch.tensor([0, 0])},
        {"pred": torch.tensor([[0.0, 3.0]]), "label": torch.tensor([1])},
    ]
    engine = Engine(lambda e, b: b)
    ClassificationEpochMetric("macro_f1").attach(engine, "f1")
    ClassificationEpochMetric("balanced_accuracy").attach(engine, "bal")
    ClassificationEpochMetric("auroc").attach(engine, "auc")
    state = engine.run(batches, max_epochs=1)
    assert state.metrics["f1"] == pytest.approx(2 / 3)
    assert state.metrics["bal"] == pytest.approx(0.75)
    assert state.metrics["auc"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="metric must be one of"):
        ClassificationEpochMetric("dice")


def test_label_metrics_subset_equals_the_full_set():
    """``label_metrics(names=...)`` (an epoch's key metric) gives exactly those values of the full computation."""
    from pgnm_monai.metrics import LABEL_METRICS, label_metrics

    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    full = label_metrics(y, pred)
    assert tuple(full) == LABEL_METRICS
    for name in LABEL_METRICS:
        assert label_metrics(y, pred, names=(name,)) == {name: full[name]}
    assert label_metrics(y, pred, names=("macro_f1", "accuracy")) == {k: full[k] for k in ("accuracy", "macro_f1")}


def test_label_metrics_equal_scikit_learns_separate_scores():
    """One pass of per-class values gives what scikit-learn's separate calls give, exactly (classes missing from
    y_true or y_pred included)."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support

    from pgnm_monai.metrics import label_metrics

    rng = np.random.default_rng(0)
    for case in range(300):
        k, n = int(rng.integers(2, 7)), int(rng.integers(1, 40))
        y = rng.integers(0, k, n)
        pred = y.copy() if case % 7 == 0 else rng.integers(0, k + 1, n)
        got = label_metrics(y, pred)
        prec, rec, f1, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            balanced = balanced_accuracy_score(y, pred)
        assert (got["macro_precision"], got["macro_recall"], got["macro_f1"]) == (prec, rec, f1)
        assert got["balanced_accuracy"] == balanced
