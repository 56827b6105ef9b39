"""The scale ladder's statistics: one pooled paired delta per run, and its trend over the images seen in pretraining.

A run's *pooled delta* is ``arm − comparator`` of a probe's macro-F1, paired on pretrain seed, task, N and episode,
averaged over the run's task x N cells, with the hierarchical bootstrap interval of
:func:`~pgnm_monai.experiments.statistics.bootstrap_interval` (pretrain seeds, then episodes). The *trend* is the
weighted least-squares slope of the pooled deltas over ``log10(images seen)``, each point weighted by the inverse
square of its standard error (its bootstrap interval's width / 3.92); when the points scatter about the line more
than their errors allow (reduced chi-square above 1), the slope's variance is multiplied by that chi-square (the
Birge ratio), so a ladder that is not a line gets a wider interval, never a narrower one. Sentences are built from
the numbers (:func:`trend_sentence`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pgnm_monai.experiments.statistics import bootstrap_interval

__all__ = ["CONFIDENCE", "Trend", "fit_trend", "pooled_delta", "trend_sentence"]

#: the level of every interval here
CONFIDENCE = 0.95
#: the probe rows two arms are paired on
PAIR_KEYS = ("pretrain_seed", "task", "n", "episode")


def pooled_delta(
    frame: pd.DataFrame, arm: str, comparator: str, probe: str, n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """``arm − comparator`` on ``probe``'s macro-F1 in the probe rows ``frame``, pooled over the task x N cells.

    Each (pretrain seed, task, N, episode) of ``arm`` is paired with the same of ``comparator``; a task x N x episode
    kept must be paired for every pretrain seed. Per pretrain seed and episode index the paired deltas are averaged
    over the cells, which gives the ``(pretrain seeds, episodes)`` matrix the hierarchical bootstrap resamples.

    Returns:
        ``delta`` (the mean over cells), ``low``/``high`` (its 95% bootstrap interval), ``se`` (the interval's
        width / (2 z)), ``cells``, ``seeds`` and ``episodes``.

    Raises:
        ValueError: ``arm`` and ``comparator`` have no paired rows on ``probe`` (naming which is missing).
    """
    sub = frame[frame["probe"] == probe]
    missing = [a for a in (arm, comparator) if a not in set(sub["arm"])]
    if missing:
        raise ValueError(
            f"no probe rows of arm(s) {missing} on probe {probe!r} (arms there: {sorted(set(sub['arm']))})."
        )
    keys = list(PAIR_KEYS)
    paired = sub[sub["arm"] == arm][[*keys, "macro_f1"]].merge(
        sub[sub["arm"] == comparator][[*keys, "macro_f1"]], on=keys, suffixes=("", "_comparator")
    )
    paired["delta"] = paired["macro_f1"] - paired["macro_f1_comparator"]
    table = pd.DataFrame()
    if len(paired):
        table = paired.pivot_table(index="pretrain_seed", columns=["task", "n", "episode"], values="delta")
        table = table.dropna(axis=1)
    if not table.size:
        raise ValueError(f"arms {arm!r} and {comparator!r} share no (pretrain seed, task, N, episode) on {probe!r}.")
    matrix = table.T.groupby(level="episode").mean().T  # (pretrain seeds, episode index): mean over the cells
    delta, low, high = bootstrap_interval(matrix.to_numpy(), n_boot, seed, confidence=CONFIDENCE)
    cells = table.columns.droplevel("episode").unique()
    return {
        "delta": delta,
        "low": low,
        "high": high,
        "se": (high - low) / (2 * stats.norm.ppf(0.5 + CONFIDENCE / 2)),
        "cells": len(cells),
        "seeds": table.shape[0],
        "episodes": matrix.shape[1],
    }


@dataclass(frozen=True)
class Trend:
    """A fitted line ``delta = intercept + slope * log10(images seen)`` and the slope's 95% interval."""

    slope: float
    low: float
    high: float
    intercept: float
    points: int
    #: the factor the slope's variance was multiplied by (the reduced chi-square when above 1, else 1)
    scale: float
    #: the smallest and largest images seen of the fitted points
    x_range: tuple[float, float]


def fit_trend(images_seen: Sequence[float], deltas: Sequence[float], errors: Sequence[float]) -> Trend:
    """The weighted least-squares line of ``deltas`` over ``log10(images_seen)``, weights ``1 / errors**2``.

    The slope's standard error is ``sqrt(scale / sum(w (x - x̄)²))`` with ``scale`` the reduced chi-square of the
    fit when it exceeds 1 (points off the line beyond their errors) and 1 otherwise; the interval is normal.

    Raises:
        ValueError: fewer than two distinct images-seen values, lengths that differ, or an error that is not
        positive and finite.
    """
    x = np.log10(np.asarray(images_seen, dtype=float))
    y, se = np.asarray(deltas, dtype=float), np.asarray(errors, dtype=float)
    if not len(x) == len(y) == len(se):
        raise ValueError(f"images_seen, deltas and errors differ in length: {len(x)}, {len(y)}, {len(se)}.")
    if len(np.unique(x)) < 2:
        raise ValueError(f"a trend needs points at two images-seen values or more, got {sorted(set(images_seen))}.")
    if not np.all(np.isfinite(se) & (se > 0)):
        raise ValueError(f"every point's standard error must be positive and finite, got {se.tolist()}.")
    w = 1 / se**2
    x_mean, y_mean = np.sum(w * x) / np.sum(w), np.sum(w * y) / np.sum(w)
    sxx = float(np.sum(w * (x - x_mean) ** 2))
    slope = float(np.sum(w * (x - x_mean) * (y - y_mean)) / sxx)
    intercept = float(y_mean - slope * x_mean)
    dof = len(x) - 2
    chi2 = float(np.sum(w * (y - intercept - slope * x) ** 2))
    scale = max(1.0, chi2 / dof) if dof > 0 else 1.0
    half = stats.norm.ppf(0.5 + CONFIDENCE / 2) * math.sqrt(scale / sxx)
    seen = np.asarray(images_seen, dtype=float)
    return Trend(
        slope,
        float(slope - half),
        float(slope + half),
        intercept,
        len(x),
        scale,
        (float(seen.min()), float(seen.max())),
    )


def trend_sentence(arm: str, comparator: str, trend: Trend | None, why: str = "") -> str:
    """Whether ``arm − comparator`` moves with the images seen, said from ``trend``: towards / away from PGNM by the
    slope per decade when its interval excludes 0, else no detectable trend; ``why`` when there is no trend."""
    head = f"`{arm}` against `{comparator}`: "
    if trend is None:
        return head + f"no trend can be fitted ({why})."
    lo, hi = trend.x_range
    span = f"{trend.points} points, {lo:,.0f} to {hi:,.0f} images seen, {math.log10(hi / lo):.2f} of a decade"
    if trend.scale > 1:
        widened = math.sqrt(trend.scale)
        span += f"; the points scatter beyond their intervals, so the slope's interval is widened x{widened:.1f}"
    slope = f"slope {trend.slope:+.3f} [{trend.low:+.3f}, {trend.high:+.3f}]"
    if trend.low > 0 or trend.high < 0:
        way = "towards" if trend.low > 0 else "away from"
        return (
            head + f"the delta moves {way} PGNM by {abs(trend.slope):.3f} macro-F1 per decade of images seen "
            f"({slope}; {span})."
        )
    return head + f"no detectable trend with the images seen ({slope} per decade, the interval contains 0; {span})."
