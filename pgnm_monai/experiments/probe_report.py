"""The probe runs summarised: hierarchical-bootstrap intervals, paired deltas, win/tie/loss, and the Markdown report.

Reads the rows of :func:`pgnm_monai.experiments.probe.run_probe` (``probe_runs.csv``); writes ``probe_summary.csv``
and ``probe_report.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from pgnm_monai.arms import ARMS
from pgnm_monai.atomic_files import atomic_write_text
from pgnm_monai.experiments.probe import BN_SUFFIX
from pgnm_monai.experiments.statistics import bootstrap_interval, bootstrap_test
from pgnm_monai.experiments.tables import markdown_table

__all__ = [
    "delta_overview",
    "primary_probe",
    "probe_report_markdown",
    "probe_summary",
    "win_tie_loss",
    "write_probe_report",
]


def _matrix(group: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``metric`` as a (pretrain seed x episode) table."""
    return group.pivot_table(index="pretrain_seed", columns="episode", values=metric, aggfunc="first")


def probe_summary(
    frame: pd.DataFrame, baseline: str = "none", n_boot: int = 2000, seed: int = 0, metric: str = "macro_f1"
) -> pd.DataFrame:
    """Per task, N, probe and arm: mean and 95% CI of ``metric``, and the paired difference to ``baseline``.

    The difference pairs each arm's row with the baseline's on the same pretrain seed and the same episode;
    both intervals are the hierarchical bootstrap of :func:`bootstrap_interval` (pretrain seeds, then
    episodes), and ``delta_p`` is the two-sided p-value of a zero delta from the same replicates
    (:func:`bootstrap_test`). ``delta_half_episodes`` is the half-width when only episodes are resampled, for
    comparison. ``result`` is ``win`` (delta CI entirely above 0), ``loss`` (entirely below) or ``tie``, with no
    adjustment for multiplicity; empty for the baseline and for an arm with no pairs.
    """
    order = {a: i for i, a in enumerate(ARMS)}
    records = []
    for (task, n, probe), group in frame.groupby(["task", "n", "probe"], sort=True):
        base = _matrix(group[group["arm"] == baseline], metric) if baseline in set(group["arm"]) else None
        for arm in sorted(set(group["arm"]), key=lambda a: order.get(a, len(order))):
            mat = _matrix(group[group["arm"] == arm], metric).dropna(axis=1)
            mean, low, high = bootstrap_interval(mat.to_numpy(), n_boot, seed)
            rec = {
                "task": task,
                "N": int(n),
                "probe": probe,
                "arm": arm,
                "seeds": mat.shape[0],
                "episodes": mat.shape[1],
                "mean": mean,
                "low": low,
                "high": high,
                "half": (high - low) / 2,
            }
            rec |= dict.fromkeys(
                ("delta", "delta_low", "delta_high", "delta_half", "delta_half_episodes", "delta_p"), np.nan
            )
            rec["result"] = ""
            if base is not None and arm != baseline:
                diff = (mat - base).dropna(axis=0, how="all").dropna(axis=1)  # same seed, same episode
                if diff.size:
                    d, lo, hi, p = bootstrap_test(diff.to_numpy(), n_boot, seed)
                    _, elo, ehi = bootstrap_interval(diff.to_numpy(), n_boot, seed, resample_seeds=False)
                    rec |= {
                        "delta": d,
                        "delta_low": lo,
                        "delta_high": hi,
                        "delta_half": (hi - lo) / 2,
                        "delta_half_episodes": (ehi - elo) / 2,
                        "delta_p": p,
                    }
                    rec["result"] = "win" if lo > 0 else "loss" if hi < 0 else "tie"
            records.append(rec)
    return pd.DataFrame(records)


def win_tie_loss(summary: pd.DataFrame) -> pd.DataFrame:
    """Wins, ties and losses against the baseline per probe and arm (over tasks and N)."""
    paired = summary[summary["result"] != ""]
    table = paired.groupby(["probe", "arm"])["result"].value_counts().unstack(fill_value=0)
    return table.reindex(columns=["win", "tie", "loss"], fill_value=0).reset_index()


def delta_overview(summary: pd.DataFrame, probe: str = "linear", baseline: str = "none") -> pd.DataFrame:
    """One row per task and N: the baseline's score and every arm's paired delta, ``mean ± half-width``.

    ▲ / ▼ mark a delta whose interval lies entirely above / below 0 (a win / loss of :func:`probe_summary`).
    """
    sub = summary[summary["probe"] == probe]
    rows = []
    for (task, n), group in sub.groupby(["task", "N"], sort=True):
        row: dict[str, str] = {"task": task, "N": str(n)}
        for r in group.itertuples(index=False):
            if r.arm == baseline:
                row[f"{baseline} (macro-F1)"] = f"{r.mean:.3f} ± {r.half:.3f}"
            elif r.delta == r.delta:
                mark = {"win": " ▲", "loss": " ▼"}.get(r.result, "")
                row[r.arm] = f"{r.delta:+.3f} ± {r.delta_half:.3f}{mark}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def primary_probe(summary: pd.DataFrame) -> str:
    """The probe a report leads with: the linear probe on re-estimated batch-norm statistics when the runs have it
    (``linear_bn``), else the linear probe."""
    return "linear" + BN_SUFFIX if "linear" + BN_SUFFIX in set(summary["probe"]) else "linear"


def probe_report_markdown(summary: pd.DataFrame, baseline: str = "none", title: str | None = None) -> str:
    """A Markdown report of :func:`probe_summary`: the interval explained, the tables, win/tie/loss.

    With ``title``, the section gets that heading and a one-line reference to the interval's explanation
    (for a second comparison in the same report).
    """

    def ci(m: float, lo: float, hi: float) -> str:
        return "n/a" if m != m else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"

    seeds = ", ".join(str(s) for s in sorted(set(summary["seeds"])))
    lines = [
        "## Frozen-feature probes (macro-F1 on the whole test split)",
        "",
        "Each pretrained model's penultimate features are frozen; on every episode (N training images, "
        "stratified, seeded, the same episodes for every arm and pretrain seed) a linear probe (standardised "
        "features, logistic regression) and a nearest-centroid classifier are fit and scored on the whole "
        "test split. Intervals are 95% percentile intervals of a hierarchical bootstrap: each replicate "
        "resamples pretrain seeds with replacement, then episodes within each drawn seed, so the variation "
        "between pretrained models is inside the interval, not only the episode-to-episode noise. The delta "
        f"is arm − `{baseline}` paired on the same pretrain seed and episode; `± episodes only` is its "
        "half-width when pretrain seeds are held fixed (what the interval would be if the models' own "
        "variation were ignored); `p` is the delta's two-sided p-value from the same bootstrap replicates. A *win* "
        "is a delta interval entirely above 0, a *loss* entirely below: one cell at a time, not adjusted for the "
        "number of cells (the answer's verdicts are). "
        f"Pretrain seeds per arm: {seeds}; with fewer than 3 the interval cannot be wider than the spread "
        "of the seeds' means, so read it as a lower bound on the uncertainty.",
        "",
    ]
    primary = primary_probe(summary)
    if primary.endswith(BN_SUFFIX):
        lines += [
            f"Each model is probed twice: `linear`/`centroid` use its batch-norm statistics as trained, "
            f"`linear{BN_SUFFIX}`/`centroid{BN_SUFFIX}` re-estimate them on the task's clean, unlabelled training "
            f"images first. `{primary}` is the primary measure: a masked arm's trained statistics are those of "
            "masked images, so applied to clean images they shift every feature, and a probe on them mixes the "
            "representation with that mismatch (fine-tuning, the second measure, re-estimates them as well).",
            "",
        ]
    if title is not None:
        lines = [f"## {title}", "", f"Deltas are arm − `{baseline}`; intervals as in the probe section above.", ""]
    if baseline in set(summary["arm"]):
        lines += [
            f"### Overview: paired delta to `{baseline}`, probe `{primary}` (mean ± half-width; ▲ / ▼ interval above "
            "/ below 0, not adjusted for multiplicity)",
            "",
            markdown_table(delta_overview(summary, primary, baseline)),
            "",
        ]
    for probe, sub in summary.groupby("probe", sort=True):
        table = pd.DataFrame(
            {
                "task": sub["task"],
                "N": sub["N"],
                "arm": sub["arm"],
                "macro-F1 [95% CI]": [ci(*r) for r in sub[["mean", "low", "high"]].itertuples(index=False)],
                f"delta vs {baseline} [95% CI]": [
                    "" if d != d else ci(d, lo, hi)
                    for d, lo, hi in sub[["delta", "delta_low", "delta_high"]].itertuples(index=False)
                ],
                "± (half-width)": ["" if h != h else f"{h:.3f}" for h in sub["delta_half"]],
                "± episodes only": ["" if h != h else f"{h:.3f}" for h in sub["delta_half_episodes"]],
                "p": ["" if v != v else f"{v:.4f}" for v in sub.get("delta_p", pd.Series(np.nan, sub.index))],
                "result": sub["result"],
            }
        )
        lines += [f"### Probe `{probe}`", "", markdown_table(table.reset_index(drop=True)), ""]
    tally = win_tie_loss(summary) if len(summary) else pd.DataFrame()
    if len(tally):
        lines += [f"### Win / tie / loss against `{baseline}` (per task and N)", "", markdown_table(tally), ""]
    return "\n".join(lines)


def write_probe_report(
    frame: pd.DataFrame, output_dir: str | os.PathLike, baseline: str = "none", n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Write ``probe_summary.csv`` and ``probe_report.md`` for ``frame`` (the rows of :func:`run_probe`)."""
    out = Path(output_dir)
    summary = probe_summary(frame, baseline=baseline, n_boot=n_boot, seed=seed)
    atomic_write_text(out / "probe_summary.csv", summary.to_csv(index=False))
    atomic_write_text(out / "probe_report.md", "# PGNM probe protocol\n\n" + probe_report_markdown(summary, baseline))
    return summary
