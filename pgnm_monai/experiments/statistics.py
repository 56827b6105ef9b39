"""The protocol's interval estimates: t intervals over seed pairs, hierarchical bootstrap over seeds and episodes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["bootstrap_interval", "mean_ci"]


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of the t confidence interval (NaN half-width for fewer than 2 values)."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    if len(v) < 2:
        return float(v.mean()), float("nan"), 1
    half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half), len(v)


def bootstrap_interval(
    values: np.ndarray, n_boot: int = 2000, seed: int = 0, resample_seeds: bool = True, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval of a ``(pretrain seeds, episodes)`` matrix.

    Hierarchical (``resample_seeds=True``): each replicate draws pretrain seeds with replacement, then
    episodes with replacement within each drawn seed; the statistic is the grand mean. With
    ``resample_seeds=False`` only episodes are resampled (every seed kept): the interval then ignores the
    variation between pretrained models.

    Returns:
        ``(mean, low, high)``.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"values must be a non-empty (seeds, episodes) matrix, got shape {v.shape}.")
    s, e = v.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(s, size=(n_boot, s)) if resample_seeds else np.broadcast_to(np.arange(s), (n_boot, s))
    cols = rng.integers(e, size=(n_boot, s, e))
    means = v[rows[:, :, None], cols].mean(axis=(1, 2))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(v.mean()), float(low), float(high)
