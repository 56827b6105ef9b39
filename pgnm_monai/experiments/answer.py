"""The report's answer, computed from the paired probe deltas: does a PGNM-heated model beat each other arm (no
augmentation, the frozen and random masks, the augmentations a practitioner would pick instead), where and by how
much; and does another run (e.g. the MedNIST one) reach the same verdicts.

Every sentence here is built from the counts and deltas it is given; nothing is fixed in advance.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pgnm_monai.arms import ARMS, learned_policy_arms
from pgnm_monai.experiments.probe_report import primary_probe, probe_summary
from pgnm_monai.experiments.tables import markdown_table

__all__ = [
    "answer_markdown",
    "pairwise_deltas",
    "read_probe_runs",
    "regime_markdown",
    "verdicts",
]

#: the columns of :func:`pairwise_deltas`
PAIR_COLUMNS = ("probe", "arm", "comparator", "task", "N", "delta", "delta_low", "delta_high", "result")


def read_probe_runs(folder: str | os.PathLike) -> pd.DataFrame:
    """The probe rows of a protocol run's folder (``probe_runs.csv``, or its gzipped copy ``probe_runs.csv.gz``)."""
    folder = Path(folder)
    for name in ("probe_runs.csv", "probe_runs.csv.gz"):
        if (folder / name).is_file():
            return pd.read_csv(folder / name)
    raise FileNotFoundError(f"{folder} has no probe_runs.csv(.gz): is it the folder of a protocol run with probes?")


def pairwise_deltas(frame: pd.DataFrame, probe: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per learned PGNM arm, other arm (the comparator), task and N: the paired delta arm − comparator of the
    ``probe``'s macro-F1, its hierarchical-bootstrap interval and ``result`` (win / tie / loss), as
    :func:`~pgnm_monai.experiments.probe_report.probe_summary` computes them."""
    sub = frame[frame["probe"] == probe]
    learned = learned_policy_arms(sub["arm"])
    comparators = [a for a in ARMS if a in set(sub["arm"]) and a not in learned]
    parts = []
    for comparator in comparators:
        summary = probe_summary(sub[sub["arm"].isin([*learned, comparator])], comparator, n_boot, seed)
        paired = summary[(summary["result"] != "") & summary["arm"].isin(learned)]
        parts.append(paired.assign(comparator=comparator))
    if not parts:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(PAIR_COLUMNS)]


def _cell(row: pd.Series) -> str:
    return f"{row['task']} N={row['N']}: {row['delta']:+.3f} [{row['delta_low']:+.3f}, {row['delta_high']:+.3f}]"


def verdicts(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per (learned arm, comparator): task x N cells, wins, ties, losses, the mean delta over the cells, the
    largest win and the largest loss (with their cells and intervals), and the verdict: ``better`` (wins, no loss),
    ``worse`` (losses, no win), ``mixed`` (both) or ``no difference`` (ties only)."""
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
                "mean delta": round(float(group["delta"].mean()), 3) + 0.0,  # + 0.0: no "-0.0"
                "largest win": _cell(won.loc[won["delta"].idxmax()]) if len(won) else "",
                "largest loss": _cell(lost.loc[lost["delta"].idxmin()]) if len(lost) else "",
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows)


def _sentence(row: pd.Series) -> str:
    """One comparison said from its counts."""
    head = f"`{row['arm']}` against `{row['comparator']}`: "
    if row["verdict"] == "no difference":
        return head + (
            f"no difference on any of the {row['cells']} task x N cells (every interval contains 0; mean delta "
            f"{row['mean delta']:+.3f})."
        )
    parts = []
    if row["wins"]:
        parts.append(f"better on {row['wins']} of {row['cells']} cells (largest: {row['largest win']})")
    if row["losses"]:
        parts.append(f"worse on {row['losses']} of {row['cells']} cells (largest: {row['largest loss']})")
    return head + "; ".join(parts) + f"; mean delta {row['mean delta']:+.3f}."


def answer_markdown(pairs: pd.DataFrame, probe: str) -> str:
    """The report's ``## The answer`` section for :func:`pairwise_deltas` of ``probe``."""
    lines = [
        "## The answer",
        "",
        f"Each learned PGNM arm against every other arm, on the primary probe `{probe}` (macro-F1, paired on pretrain "
        "seed and episode, intervals as in the probe section). A cell is one task at one N; *better* / *worse* "
        "count the cells whose delta interval lies entirely above / below 0.",
        "",
    ]
    table = verdicts(pairs)
    if not len(table):
        return "\n".join([*lines, "No learned PGNM arm was paired with another arm: nothing to answer.", ""])
    for arm, group in table.groupby("arm", sort=False):
        better = group.loc[group["verdict"] == "better", "comparator"].tolist()
        beaten_everywhere = len(better) == len(group)
        if beaten_everywhere:
            lead = f"**`{arm}` beats every other arm** on at least one cell and loses on none."
        elif better:
            lead = f"**`{arm}` beats {_names(better)}** (wins, no loss), and not the others."
        else:
            lead = f"**`{arm}` beats no other arm** (no comparison with wins and no loss)."
        lines += [lead, "", *[f"- {_sentence(row)}" for _, row in group.iterrows()], ""]
    lines += [markdown_table(table), ""]
    return "\n".join(lines)


def _names(arms: Sequence[str]) -> str:
    names = [f"`{a}`" for a in arms]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def regime_markdown(frame: pd.DataFrame, reference: pd.DataFrame, reference_name: str, n_boot: int = 2000) -> str:
    """``## Against <reference_name>``: the verdicts of this run and of a reference run side by side, on the probe
    both have (this run's primary probe where the reference has it, else ``linear``), for every (learned arm,
    comparator) in both; and how many verdicts the regime changed."""
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
    changed = both[both["verdict"] != both["verdict (reference)"]]
    lines += [
        f"The same comparisons in both runs, on the probe they share (`{probe}`): {len(both) - len(changed)} of "
        f"{len(both)} verdicts are the same"
        + (
            "; changed: "
            + "; ".join(
                f"`{r['arm']}` against `{r['comparator']}`: {r['verdict (reference)']} in {reference_name}, "
                f"{r['verdict']} here"
                for _, r in changed.iterrows()
            )
            if len(changed)
            else ""
        )
        + ".",
        "",
        markdown_table(
            both[
                [
                    *keys,
                    "wins (reference)",
                    "losses (reference)",
                    "mean delta (reference)",
                    "verdict (reference)",
                    "wins",
                    "losses",
                    "mean delta",
                    "verdict",
                ]
            ]
        ),
        "",
    ]
    return "\n".join(lines)
