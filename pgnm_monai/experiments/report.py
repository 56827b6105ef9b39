"""Reports of experiment results: summary and paired-delta tables, Markdown, figures and the report's prose.

Everything here writes from what it is given (rows, curves, policies, images); what a run kept is read back by
:mod:`.policy_figures`. Arms are ordered as in :data:`pgnm_monai.arms.ARMS`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pgnm_monai.arms import ARMS, learned_policy_arms
from pgnm_monai.atomic_files import atomic_save_figure, atomic_write_text
from pgnm_monai.experiments import policy_figures
from pgnm_monai.experiments.statistics import mean_ci
from pgnm_monai.experiments.tables import markdown_table

if TYPE_CHECKING:
    import torch

__all__ = [
    "curves_figure",
    "delta_table",
    "per_modality_table",
    "plot_curves",
    "summary_table",
    "pretraining_section",
    "write_report",
]


def _fmt(mean: float, half: float) -> str:
    if mean != mean:
        return "n/a"
    return f"{mean:.3f}" if half != half else f"{mean:.3f} ± {half:.3f}"


def summary_table(frame: pd.DataFrame, metric: str = "macro_f1") -> pd.DataFrame:
    """Mean ± CI of ``metric`` per task/N (rows) and arm (columns)."""
    cells = {}
    for (task, n, arm), group in frame.groupby(["task", "n", "arm"]):
        cells[(task, int(n), arm)] = _fmt(*mean_ci(group[metric].tolist())[:2])
    arms = [a for a in ARMS if a in set(frame["arm"])]
    index = sorted({(t, n) for t, n, _ in cells})
    return pd.DataFrame(
        [[cells.get((t, n, a), "") for a in arms] for t, n in index],
        index=pd.MultiIndex.from_tuples(index, names=["task", "N"]),
        columns=arms,
    )


def delta_table(frame: pd.DataFrame, metric: str = "macro_f1", baseline: str = "none") -> tuple[pd.DataFrame, dict]:
    """Per task/N: arm − baseline, paired by (pretrain seed, fine-tune seed), mean ± CI; and win/tie/loss.

    A *win* is a CI entirely above 0, a *loss* entirely below 0, anything else a *tie*.
    """
    pairs = ["pretrain_seed", "finetune_seed"]
    base = frame[frame["arm"] == baseline].set_index(["task", "n", *pairs])[metric]
    records, tally = [], {}
    for arm in [a for a in ARMS if a in set(frame["arm"]) and a != baseline]:
        wins = ties = losses = 0
        other = frame[frame["arm"] == arm].set_index(["task", "n", *pairs])[metric]
        joined = pd.concat([other.rename("arm"), base.rename("base")], axis=1, join="inner").dropna()
        for (task, n), group in joined.groupby(level=["task", "n"]):
            mean, half, count = mean_ci((group["arm"] - group["base"]).tolist())
            lo, hi = mean - half, mean + half
            if count >= 2 and lo > 0:
                wins += 1
            elif count >= 2 and hi < 0:
                losses += 1
            else:
                ties += 1
            records.append({"arm": arm, "task": task, "N": int(n), "delta": _fmt(mean, half), "pairs": count})
        tally[arm] = (wins, ties, losses)
    return pd.DataFrame(records), tally


def per_modality_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean macro-F1 per arm (rows) and modality (columns) over tasks, N and seeds."""
    columns = [c for c in frame.columns if c.startswith("macro_f1[")]
    per = frame.groupby("arm")[columns].mean().round(3)
    per.columns = [c[len("macro_f1[") : -1] for c in columns]
    return per.reindex([a for a in ARMS if a in per.index])


def curves_figure(frame: pd.DataFrame, metric: str = "macro_f1"):
    """A matplotlib figure of ``metric`` against N per task, one line per arm with its 95% CI band."""
    import matplotlib.pyplot as plt

    tasks = sorted(set(frame["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        sub = frame[frame["task"] == task]
        for arm in [a for a in ARMS if a in set(sub["arm"])]:
            points = sorted((int(n), *mean_ci(g[metric].tolist())[:2]) for n, g in sub[sub["arm"] == arm].groupby("n"))
            ns, means, halves = (np.array(v, dtype=float) for v in zip(*points, strict=True))
            ax.plot(ns, means, marker="o", label=arm)
            ok = ~np.isnan(halves)
            ax.fill_between(ns[ok], (means - halves)[ok], (means + halves)[ok], alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_title(task)
        ax.set_xlabel("N training images")
        ax.set_ylabel(metric)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_curves(frame: pd.DataFrame, path: Path, metric: str = "macro_f1") -> None:
    """Write :func:`curves_figure` to ``path`` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    atomic_save_figure(curves_figure(frame, metric), path, dpi=110)


def write_report(
    frame: pd.DataFrame,
    out: Path,
    command: str | None = None,
    profile: str = "",
    settings: dict | None = None,
    wall_seconds: float | None = None,
    commit: str = "",
    sections: Sequence[str] = (),
) -> None:
    """Write ``report.md`` and ``f1_vs_n.png`` for the runs in ``frame``; ``sections`` (Markdown) come first."""
    out = Path(out)
    settings = {k: v for k, v in (settings or {}).items()}
    lines = [
        f"# PGNM few-shot unseen-concept protocol — profile `{profile}`",
        "",
        f"- command: `{command or ' '.join(sys.argv)}`",
        f"- commit: `{commit}`; runs: {len(frame)}; wall time of this invocation: "
        + (f"{wall_seconds / 60:.1f} min" if wall_seconds is not None else "n/a"),
        f"- settings: `{json.dumps(settings, default=list)}`",
        "- mean ± half-width of the 95% t interval over every (pretrain seed, fine-tune seed) pair; "
        "deltas are paired by those seeds. A *win* is a delta CI entirely above 0, a *loss* entirely below.",
        "",
    ]
    if profile != "paper":
        lines += [
            "Regime: small images, a short pretraining on a small set, on CPU. These numbers say how the arms "
            "compare at this scale only; they are not a reproduction of the paper's RadImageNet-scale results.",
            "",
        ]
    lines += [section for section in sections if section]
    for metric, title in (("macro_f1", "Macro-F1"), ("balanced_accuracy", "Balanced accuracy"), ("auroc", "AUROC")):
        lines += [f"## {title} after fine-tuning", "", markdown_table(summary_table(frame, metric)), ""]
    deltas, tally = delta_table(frame)
    lines += ["## Macro-F1: arm − baseline (`none`)", "", markdown_table(deltas) if len(deltas) else "(no pairs)", ""]
    lines += ["## Win / tie / loss against the baseline (macro-F1, per task and N)", ""]
    lines += ["| arm | wins | ties | losses |", "|---|---|---|---|"]
    lines += [f"| {arm} | {w} | {t} | {lo} |" for arm, (w, t, lo) in tally.items()]
    per = per_modality_table(frame)
    if len(per.columns):
        lines += ["", "## Macro-F1 per modality (mean over tasks, N and seeds)", "", markdown_table(per)]
    if "finetune_seconds" in frame:
        lines += ["", f"Fine-tune + evaluation time per run: median {frame['finetune_seconds'].median():.1f} s."]
    lines += ["", "![macro-F1 vs N](f1_vs_n.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    plot_curves(frame, out / "f1_vs_n.png")


def pretraining_section(
    out: Path,
    curves: pd.DataFrame,
    policies: dict[str, torch.nn.Module] | None = None,
    images: dict[str, torch.Tensor] | None = None,
    seed: int | None = None,
) -> str:
    """Draw what pretraining did and return the report's section: the policy and training ``curves``
    (:func:`~.policy_figures.read_pretrain_curves`) and, with two ``policies`` or more and ``images``
    (:func:`~.policy_figures.mask_policies`, :func:`~.policy_figures.task_images`), the expected masks of pretrain
    seed ``seed``."""
    import matplotlib

    matplotlib.use("Agg")
    if not len(curves):
        return ""
    atomic_write_text(out / "pretrain_curves.csv", curves.to_csv(index=False))  # kept when pretrain/ is not
    atomic_save_figure(policy_figures.policy_curves_figure(curves), out / "policy_curves.png", dpi=110)
    atomic_save_figure(policy_figures.collapse_figure(curves), out / "pretrain_curves.png", dpi=110)
    last = policy_figures.last_epoch_means(curves)
    shown = [
        c
        for c in (
            "kl_to_init",
            "mask_between_std",
            "mask_within_std",
            "sample_std",
            "weight_norm",
            "train_loss",
            "val_macro_f1",
        )
        if c in last
    ]
    lines = [
        "## What pretraining did",
        "",
        "Last pretraining epoch, mean over pretrain seeds (policy statistics on a fixed probe batch of "
        "validation images; `E[m]` is a cell's expected mask value):",
        "",
        markdown_table(last[shown].round(4).reset_index()),
        "",
        *_collapse_sentence(curves),
        *convergence_sentences(curves),
        "![policy-learning curves](policy_curves.png)",
        "",
        "![pretraining curves of the official objective and its controls](pretrain_curves.png)",
        "",
    ]
    if policies and len(policies) > 1 and images:
        fig = policy_figures.mask_figure(images, policies, title=f"expected masks, pretrain seed {seed}")
        atomic_save_figure(fig, out / "masks.png", dpi=110)
        lines += ["![trained masks per modality](masks.png)", ""]
    return "\n".join(lines)


def _collapse_sentence(curves: pd.DataFrame) -> list[str]:
    """The measured cause of a ``pgnm-paper`` collapse: its scaled loss and weight growth against ``paper-unscaled``."""
    arms = set(curves["arm"])
    if not {"pgnm-paper", "pgnm-paper-unscaled"} <= arms or not {"weight_norm", "val_macro_f1"} <= set(curves):
        return []
    first = curves[curves["epoch"] == curves["epoch"].min()].groupby("arm")[["train_loss", "weight_norm"]].mean()
    last = policy_figures.last_epoch_means(curves)
    paper, unscaled = first.loc["pgnm-paper"], first.loc["pgnm-paper-unscaled"]
    f1_paper, f1_unscaled = last.loc["pgnm-paper", "val_macro_f1"], last.loc["pgnm-paper-unscaled", "val_macro_f1"]
    measured = (
        "The official objective multiplies the classifier's loss by the detached policy term; the same policy "
        "gradient without that scaling is `pgnm-paper-unscaled`. Measured here (mean over pretrain seeds): "
        f"back-propagated loss in the first epoch {paper['train_loss']:.2f} against {unscaled['train_loss']:.2f}, "
        f"classifier weight norm after it {paper['weight_norm']:.1f} against {unscaled['weight_norm']:.1f}, "
        f"final validation macro-F1 {f1_paper:.3f} against {f1_unscaled:.3f}."
    )
    larger_step = paper["train_loss"] > unscaled["train_loss"] and paper["weight_norm"] > unscaled["weight_norm"]
    if f1_paper < f1_unscaled and larger_step:
        reading = (
            " `pgnm-paper` validates worse with the same policy gradient and a larger loss and weight norm: its "
            "deficit comes with the larger effective step size of the scaled loss, not with the policy."
        )
    elif f1_paper < f1_unscaled:
        reading = (
            " `pgnm-paper` validates worse without a larger scaled loss or weight norm: the scaling does not "
            "explain it."
        )
    else:
        reading = " `pgnm-paper` does not validate worse than `pgnm-paper-unscaled` here."
    return [measured + reading, ""]


#: the baseline is called saturated when its validation macro-F1 reaches this
SATURATED_F1 = 0.99
#: a policy statistic is called settled when its last two epochs moved it by less than this fraction of its value
SETTLED_CHANGE = 0.05


def convergence_sentences(curves: pd.DataFrame, baseline: str = "none") -> list[str]:
    """Was pretraining long enough? Whether ``baseline``'s validation macro-F1 saturated (reached
    :data:`SATURATED_F1`), and whether each learned policy's KL to its initialisation settled (moved by less than
    :data:`SETTLED_CHANGE` of its value over the last two epochs); means over pretrain seeds, said from the curves."""
    lines = []
    mean = curves.groupby(["arm", "epoch"]).mean(numeric_only=True)
    if baseline in set(curves["arm"]) and "val_macro_f1" in curves:
        f1 = mean.loc[baseline, "val_macro_f1"].dropna()
        if len(f1):
            state = "saturated" if f1.max() >= SATURATED_F1 else f"not saturated (below {SATURATED_F1})"
            lines.append(
                f"`{baseline}`'s validation macro-F1 (mean over pretrain seeds) ends at {f1.iloc[-1]:.3f} after "
                f"{int(f1.index[-1])} epochs, best {f1.max():.3f} at epoch {int(f1.idxmax())}: {state}."
            )
    for arm in learned_policy_arms(curves["arm"]) if "kl_to_init" in curves else ():
        kl = mean.loc[arm, "kl_to_init"].dropna()
        if len(kl) < 3 or kl.iloc[-1] <= 0:
            continue
        change = abs(kl.iloc[-1] - kl.iloc[-3]) / kl.iloc[-1]
        state = "settled" if change < SETTLED_CHANGE else "still moving"
        lines.append(
            f"`{arm}`'s KL to its initial policy: {kl.iloc[-1]:.4g} at the last epoch, {change:.1%} change over "
            f"the last two epochs: {state} (threshold {SETTLED_CHANGE:.0%})."
        )
    return [" ".join(lines), ""] if lines else []
