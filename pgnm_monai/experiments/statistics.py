"""The protocol's interval estimates and tests: t intervals over seed pairs, the hierarchical bootstrap over seeds
and episodes (its interval and two-sided p-value), and Holm's step-down adjustment of a family of p-values."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["bootstrap_interval", "bootstrap_means", "bootstrap_test", "holm", "mean_ci"]


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of the t confidence interval (NaN half-width for fewer than 2 values)."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    if len(v) < 2:
        return float(v.mean()), float("nan"), 1
    half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half), len(v)


def bootstrap_means(values: np.ndarray, n_boot: int = 2000, seed: int = 0, resample_seeds: bool = True) -> np.ndarray:
    """The ``n_boot`` replicate grand means of a ``(pretrain seeds, episodes)`` matrix.

    Hierarchical (``resample_seeds=True``): each replicate draws pretrain seeds with replacement, then
    episodes with replacement within each drawn seed. With ``resample_seeds=False`` only episodes are resampled
    (every seed kept): the replicates then ignore the variation between pretrained models. The same ``seed`` gives
    the same replicates.

    Raises:
        ValueError: ``values`` is not a non-empty 2D matrix.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"values must be a non-empty (seeds, episodes) matrix, got shape {v.shape}.")
    s, e = v.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(s, size=(n_boot, s)) if resample_seeds else np.broadcast_to(np.arange(s), (n_boot, s))
    cols = rng.integers(e, size=(n_boot, s, e))
    return v[rows[:, :, None], cols].mean(axis=(1, 2))


def bootstrap_interval(
    values: np.ndarray, n_boot: int = 2000, seed: int = 0, resample_seeds: bool = True, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean and percentile interval of :func:`bootstrap_means` of a ``(pretrain seeds, episodes)`` matrix.

    Returns:
        ``(mean, low, high)``.
    """
    return bootstrap_test(values, n_boot, seed, resample_seeds, confidence)[:3]


def bootstrap_test(
    values: np.ndarray, n_boot: int = 2000, seed: int = 0, resample_seeds: bool = True, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """:func:`bootstrap_interval` and the two-sided p-value of "the mean is 0" from the same replicates.

    ``p = 2 * min(share of replicates <= 0, share >= 0)``, at least ``1 / n_boot`` (the resolution of ``n_boot``
    replicates) and at most 1.

    Returns:
        ``(mean, low, high, p)``.
    """
    means = bootstrap_means(values, n_boot, seed, resample_seeds)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    p = 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0)))
    return float(np.mean(values)), float(low), float(high), min(1.0, max(p, 1 / n_boot))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN and is not counted in the family).

    The k-th smallest of m p-values becomes ``max over j <= k of min(1, (m - j + 1) * p_(j))``; rejecting every
    adjusted p below alpha keeps the family-wise error rate at most alpha.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    known = np.flatnonzero(~np.isnan(p))
    order = known[np.argsort(p[known], kind="stable")]
    m = len(order)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return adjusted
