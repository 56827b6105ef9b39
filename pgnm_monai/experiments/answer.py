"""The report's answer, computed from the paired probe deltas: does a PGNM-heated model beat each other arm (no
augmentation, the frozen and random masks, the augmentations a practitioner would pick instead), where and by how
much; and does another run (e.g. the MedNIST one) reach the same verdicts.

The answer makes many comparisons (learned arm x comparator x task x N), so a cell counts as a win or a loss only
when its bootstrap p-value, Holm-adjusted over every cell of the answer, is below :data:`ALPHA`; a cell whose
interval alone excludes 0 stays visible as an *interval* win or loss. Every sentence here is built from the counts
and deltas it is given; nothing is fixed in advance.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pgnm_monai.arms import ARMS, learned_policy_arms
from pgnm_monai.atomic_files import atomic_save_figure
from pgnm_monai.experiments.probe_report import primary_probe, probe_summary
from pgnm_monai.experiments.statistics import holm
from pgnm_monai.experiments.tables import markdown_table

__all__ = [
    "ALPHA",
    "PAIR_COLUMNS",
    "answer_markdown",
    "forest_figure",
    "pairwise_deltas",
    "plot_forest",
    "read_probe_runs",
    "regime_markdown",
    "rule_sentence",
    "verdicts",
]

#: the family-wise error rate of the verdict rule (Holm over every cell of the answer)
ALPHA = 0.05
#: how far below ``alpha`` the smallest Holm-adjusted p-value the bootstrap can give must lie (:func:`pairwise_deltas`)
HOLM_RESOLUTION = 4
#: the columns of :func:`pairwise_deltas`
PAIR_COLUMNS = (
    "probe", "arm", "comparator", "task", "N", "delta", "delta_low", "delta_high", "delta_p", "delta_p_holm",
    "n_boot", "result", "result_interval",
)  # fmt: skip


def read_probe_runs(folder: str | os.PathLike) -> pd.DataFrame:
    """The probe rows of a protocol run's folder (``probe_runs.csv``, or its gzipped copy ``probe_runs.csv.gz``)."""
    folder = Path(folder)
    for name in ("probe_runs.csv", "probe_runs.csv.gz"):
        if (folder / name).is_file():
            return pd.read_csv(folder / name)
    raise FileNotFoundError(f"{folder} has no probe_runs.csv(.gz): is it the folder of a protocol run with probes?")


def pairwise_deltas(
    frame: pd.DataFrame, probe: str, n_boot: int = 2000, seed: int = 0, alpha: float = ALPHA
) -> pd.DataFrame:
    """Per learned PGNM arm, other arm (the comparator), task and N: the paired delta arm − comparator of the
    ``probe``'s macro-F1, its hierarchical-bootstrap interval and two-sided p-value (as
    :func:`~pgnm_monai.experiments.probe_report.probe_summary` computes them), the p-value Holm-adjusted over every
    row (``delta_p_holm``), the replicates behind both (``n_boot``), ``result`` (``win`` / ``loss``: adjusted p below
    ``alpha``, by the delta's sign; else ``tie``) and ``result_interval`` (the interval's own win / tie / loss,
    unadjusted).

    ``n_boot`` is raised to ``ceil(HOLM_RESOLUTION * rows / alpha)`` when smaller: ``n_boot`` replicates give p-values
    no smaller than ``1 / n_boot``, and Holm multiplies the smallest by the number of rows; so the smallest adjusted p
    is ``alpha / HOLM_RESOLUTION``, and a cell is not decided by the bootstrap's resolution.
    """
    sub = frame[frame["probe"] == probe]
    learned = learned_policy_arms(sub["arm"])
    comparators = [a for a in ARMS if a in set(sub["arm"]) and a not in learned]
    family = len(learned) * len(comparators) * len(sub[["task", "n"]].drop_duplicates())
    n_boot = max(n_boot, math.ceil(HOLM_RESOLUTION * family / alpha))
    parts = []
    for comparator in comparators:
        summary = probe_summary(sub[sub["arm"].isin([*learned, comparator])], comparator, n_boot, seed)
        paired = summary[(summary["result"] != "") & summary["arm"].isin(learned)]
        parts.append(paired.assign(comparator=comparator))
    if not parts:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    pairs = pd.concat(parts, ignore_index=True).rename(columns={"result": "result_interval"})
    pairs["delta_p_holm"] = holm(pairs["delta_p"])
    pairs["n_boot"] = n_boot
    significant = pairs["delta_p_holm"] < alpha
    pairs["result"] = np.where(significant & (pairs["delta"] > 0), "win", "tie")
    pairs.loc[significant & (pairs["delta"] < 0), "result"] = "loss"
    return pairs[list(PAIR_COLUMNS)]


def _holm_p(row: pd.Series) -> str:
    """The cell's adjusted p; ``≤`` when no replicate crossed 0 (its raw p is the floor ``1 / n_boot``)."""
    at_floor = row["delta_p"] * row.get("n_boot", np.inf) <= 1
    return f"{'≤' if at_floor else '='} {row['delta_p_holm']:.3f}"


def _cell(row: pd.Series) -> str:
    return (
        f"{row['task']} N={row['N']}: {row['delta']:+.3f} [{row['delta_low']:+.3f}, {row['delta_high']:+.3f}], "
        f"Holm p {_holm_p(row)}"
    )


def verdicts(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per (learned arm, comparator): task x N cells, wins, ties, losses (``result``: Holm-adjusted), the
    interval wins and losses (``result_interval``: unadjusted), the mean delta over the cells, the largest win and
    the largest loss (with their cells, intervals and adjusted p) and the verdict: ``better`` (wins, no loss),
    ``worse`` (losses, no win), ``mixed`` (both) or ``no difference`` (neither)."""
    rows = []
    for (arm, comparator), group in pairs.groupby(["arm", "comparator"], sort=False):
        won, lost = group[group["result"] == "win"], group[group["result"] == "loss"]
        wins, losses = len(won), len(lost)
        verdict = {(True, False): "better", (False, True): "worse", (True, True): "mixed"}.get(
            (wins > 0, losses > 0), "no difference"
        )
        rows.append(
            {
                "arm": arm,
                "comparator": comparator,
                "cells": len(group),
                "wins": wins,
                "ties": len(group) - wins - losses,
                "losses": losses,
                "interval wins": int((group["result_interval"] == "win").sum()),
                "interval losses": int((group["result_interval"] == "loss").sum()),
                "mean delta": round(float(group["delta"].mean()), 3) + 0.0,  # + 0.0: no "-0.0"
                "largest win": _cell(won.loc[won["delta"].idxmax()]) if len(won) else "",
                "largest loss": _cell(lost.loc[lost["delta"].idxmin()]) if len(lost) else "",
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows)


def _sentence(row: pd.Series, group: pd.DataFrame) -> str:
    """One comparison said from its counts; ``group``: its cells (for the cells only their intervals count)."""
    head = f"`{row['arm']}` against `{row['comparator']}`: "
    parts = []
    if row["wins"]:
        parts.append(f"better on {row['wins']} of {row['cells']} cells (largest: {row['largest win']})")
    if row["losses"]:
        parts.append(f"worse on {row['losses']} of {row['cells']} cells (largest: {row['largest loss']})")
    if not parts:
        parts.append(f"no difference on any of the {row['cells']} task x N cells")
    unadjusted = group[(group["result_interval"] != "tie") & (group["result"] == "tie")]
    if len(unadjusted):
        largest = unadjusted.loc[unadjusted["delta"].abs().idxmax()]
        parts.append(
            f"{len(unadjusted)} more cell{'s' if len(unadjusted) > 1 else ''} with an interval excluding 0 "
            f"that the adjustment does not keep (largest: {_cell(largest)})"
        )
    return head + "; ".join(parts) + f"; mean delta {row['mean delta']:+.3f}."


def rule_sentence(pairs: pd.DataFrame, alpha: float = ALPHA) -> str:
    """The verdict rule in one sentence, with the family's size computed from ``pairs``."""
    comparisons = pairs.groupby(["arm", "comparator"]).size()
    shape = (
        f"{len(comparisons)} comparisons x {comparisons.iloc[0]} task x N cells"
        if comparisons.nunique() == 1
        else f"{len(comparisons)} comparisons"
    )
    resolution = (
        f" ({int(pairs['n_boot'].iloc[0])} replicates per cell: an adjusted p cannot be below "
        f"{len(pairs) / pairs['n_boot'].iloc[0]:.3f}, written `≤`)"
        if "n_boot" in pairs and len(pairs)
        else ""
    )
    return (
        f"**Verdict rule:** a cell is a win (loss) when its delta is above (below) 0 and its two-sided bootstrap "
        f"p-value{resolution}, Holm-adjusted over all {len(pairs)} cells of this answer ({shape}), is below "
        f"{alpha:g}; a cell whose 95% interval excludes 0 without that adjustment is an *interval* win (loss), "
        "shown beside it."
    )


def answer_markdown(pairs: pd.DataFrame, probe: str, figure: str | None = None, alpha: float = ALPHA) -> str:
    """The report's ``## The answer`` section for :func:`pairwise_deltas` of ``probe``; ``figure``: the path of
    its :func:`plot_forest` figure, linked under the rule."""
    lines = [
        "## The answer",
        "",
        f"Each learned PGNM arm against every other arm, on the primary probe `{probe}` (macro-F1, paired on pretrain "
        "seed and episode, intervals as in the probe section). A cell is one task at one N.",
        "",
    ]
    table = verdicts(pairs)
    if not len(table):
        return "\n".join([*lines, "No learned PGNM arm was paired with another arm: nothing to answer.", ""])
    lines += [rule_sentence(pairs, alpha) + " *better*: wins and no loss; *worse*: losses and no win.", ""]
    if figure:
        lines += [f"![every cell of the answer, with its interval]({figure})", ""]
    for arm, group in table.groupby("arm", sort=False):
        better = group.loc[group["verdict"] == "better", "comparator"].tolist()
        if len(better) == len(group):
            lead = f"**`{arm}` beats every other arm** on at least one cell and loses on none."
        elif better:
            lead = f"**`{arm}` beats {_names(better)}** (wins, no loss), and not the others."
        else:
            lead = f"**`{arm}` beats no other arm** (no comparison with wins and no loss)."
        said = [
            _sentence(row, pairs[(pairs["arm"] == arm) & (pairs["comparator"] == row["comparator"])])
            for _, row in group.iterrows()
        ]
        lines += [lead, "", *[f"- {s}" for s in said], ""]
    lines += [markdown_table(table), ""]
    return "\n".join(lines)


def _names(arms: Sequence[str]) -> str:
    names = [f"`{a}`" for a in arms]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def forest_figure(pairs: pd.DataFrame, alpha: float = ALPHA):
    """A forest plot of :func:`pairwise_deltas`: one panel per learned arm, one row per comparator x task x N, the
    delta with its 95% interval, a line at 0; cells that are wins (losses) under the Holm rule filled green (red),
    the others hollow."""
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(pairs["arm"]))
    rows = max(len(pairs[pairs["arm"] == a]) for a in arms)
    fig, axes = plt.subplots(1, len(arms), figsize=(6.0 * len(arms), 1.2 + 0.2 * rows), squeeze=False)
    colours = {"win": "tab:green", "loss": "tab:red", "tie": "0.45"}
    for ax, arm in zip(axes[0], arms, strict=True):
        sub = pairs[pairs["arm"] == arm].reset_index(drop=True)
        y = np.arange(len(sub))[::-1]
        for result, colour in colours.items():
            at = (sub["result"] == result).to_numpy()
            if not at.any():
                continue
            err = [(sub["delta"] - sub["delta_low"])[at], (sub["delta_high"] - sub["delta"])[at]]
            ax.errorbar(sub["delta"][at], y[at], xerr=err, fmt="o", color=colour, ms=4, elinewidth=1.2,
                        mfc=colour if result != "tie" else "white", label=result)  # fmt: skip
        starts = sub.index[sub["comparator"] != sub["comparator"].shift()]
        for start in starts[1:]:
            ax.axhline(y[start] + 0.5, color="0.85", lw=0.8)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, [f"{r.comparator} · {r.task} N={r.N}" for r in sub.itertuples()], fontsize=7)
        ax.set_ylim(-0.7, len(sub) - 0.3)
        ax.set_xlabel(f"{arm} − comparator, macro-F1", fontsize=9)
        ax.set_title(f"{arm}", fontsize=10)
    shown = {}  # result -> a handle, over every panel
    for ax in axes[0]:
        handles, labels = ax.get_legend_handles_labels()
        shown |= dict(zip(labels, handles, strict=True))
    names = {"win": "win (Holm)", "loss": "loss (Holm)", "tie": "no difference after Holm"}
    labels = [label for label in colours if label in shown]
    fig.legend([shown[k] for k in labels], [names[k] for k in labels], loc="lower center", ncol=3, fontsize=8,
               frameon=False)  # fmt: skip
    fig.suptitle(
        f"Paired deltas on {pairs['probe'].iloc[0]} with 95% intervals; filled: Holm-adjusted p < {alpha:g} over "
        f"all {len(pairs)} cells",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.35 / (1.2 + 0.2 * rows), 1, 1))
    return fig


def plot_forest(pairs: pd.DataFrame, path: str | os.PathLike, alpha: float = ALPHA) -> None:
    """Write :func:`forest_figure` of ``pairs`` to ``path`` atomically (nothing when ``pairs`` is empty)."""
    import matplotlib

    matplotlib.use("Agg")
    if len(pairs):
        atomic_save_figure(forest_figure(pairs, alpha), path, dpi=110)


def regime_markdown(
    frame: pd.DataFrame,
    reference: pd.DataFrame,
    reference_name: str,
    n_boot: int = 2000,
    answer_pairs: pd.DataFrame | None = None,
) -> str:
    """``## Against <reference_name>``: the verdicts of this run and of a reference run side by side, on the probe
    both have (this run's primary probe where the reference has it, else ``linear``), for every (learned arm,
    comparator) in both, each run under its own Holm family on that probe; and how many verdicts the regime changed.

    When that probe is not the one of this run's answer (``answer_pairs``, :func:`pairwise_deltas`) or the
    reference's primary probe, the section says so first, with the answer's verdicts that read otherwise here.
    """
    shared = set(frame["probe"]) & set(reference["probe"])
    probe = primary_probe(pd.DataFrame({"probe": sorted(shared)}))
    if probe not in shared:
        return f"## Against {reference_name}\n\nThe two runs share no linear probe: nothing to compare.\n"
    here, there = (verdicts(pairwise_deltas(f, probe, n_boot)) for f in (frame, reference))
    keys = ["arm", "comparator"]
    both = here.merge(there, on=keys, suffixes=("", " (reference)"))
    lines = [f"## Against {reference_name}", ""]
    if not len(both):
        return "\n".join([*lines, "The two runs have no (learned arm, comparator) pair in common.", ""])
    lines += _probe_note(probe, primary_probe(reference), reference_name, both, answer_pairs)
    changed = both[both["verdict"] != both["verdict (reference)"]]
    said = "; ".join(
        f"`{r['arm']}` against `{r['comparator']}`: {r['verdict (reference)']} in {reference_name}, {r['verdict']} here"
        for _, r in changed.iterrows()
    )
    shown = ("wins", "losses", "mean delta", "verdict")
    lines += [
        f"The same comparisons in both runs, on the probe they share (`{probe}`), each run's cells Holm-adjusted over "
        f"its own answer on that probe: {len(both) - len(changed)} of {len(both)} verdicts are the same"
        + (f"; changed: {said}" if len(changed) else "")
        + ".",
        "",
        markdown_table(both[[*keys, *(f"{c} (reference)" for c in shown), *shown]]),
        "",
    ]
    return "\n".join(lines)


def _probe_note(
    probe: str, reference_primary: str, reference_name: str, both: pd.DataFrame, answer_pairs: pd.DataFrame | None
) -> list[str]:
    """Where the compared probe is not the answer's or the reference's own: which probe each side uses, and the
    answer's verdicts that differ from this section's."""
    answer_probe = answer_pairs["probe"].iloc[0] if answer_pairs is not None and len(answer_pairs) else probe
    if answer_probe == probe and reference_primary == probe:
        return []
    note = (
        f"**Probes:** both sides here use `{probe}`, the probe both runs have; this run's answer above uses "
        f"`{answer_probe}`, and {reference_name}'s own answer uses `{reference_primary}`"
        + (" as well." if reference_primary == answer_probe else ".")
    )
    if answer_probe != probe:
        answered = verdicts(answer_pairs).set_index(["arm", "comparator"])["verdict"]
        differ = [
            f"`{r['arm']}` against `{r['comparator']}` ({answered[(r['arm'], r['comparator'])]} in the answer, "
            f"{r['verdict']} on `{probe}`)"
            for _, r in both.iterrows()
            if (r["arm"], r["comparator"]) in answered.index and answered[(r["arm"], r["comparator"])] != r["verdict"]
        ]
        note += (
            " So the verdicts of this run below can differ from the answer's: "
            + ("; ".join(differ) if differ else "here they do not")
            + "."
        )
    return [note, ""]
