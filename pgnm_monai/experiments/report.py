"""Reports of experiment results: summary and paired-delta tables, Markdown, figures and the report's prose.

Everything here writes from what it is given (rows, curves, policies, images) and from the run's own records (its
invocations, :mod:`.run_records`); what a run kept is read back by :mod:`.policy_figures`. Arms are ordered as in
:data:`pgnm_monai.arms.ARMS`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pgnm_monai.arms import ARMS, learned_policy_arms
from pgnm_monai.atomic_files import atomic_save_figure, atomic_write_text
from pgnm_monai.experiments import policy_figures
from pgnm_monai.experiments.run_records import INVOCATIONS, read_invocations
from pgnm_monai.experiments.statistics import mean_ci
from pgnm_monai.experiments.tables import markdown_table

if TYPE_CHECKING:
    import torch

__all__ = [
    "convergence_states",
    "curves_figure",
    "delta_table",
    "header_lines",
    "per_modality_table",
    "plot_curves",
    "summary_table",
    "pretraining_section",
    "settings_table",
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
    """A matplotlib figure of the fine-tune's ``metric`` against N per task, one line per arm with its 95% t interval
    over seed pairs as error bars, titled as the second measure."""
    import matplotlib.pyplot as plt

    tasks = sorted(set(frame["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        sub = frame[frame["task"] == task]
        arms = [a for a in ARMS if a in set(sub["arm"])]
        for i, arm in enumerate(arms):
            points = sorted((int(n), *mean_ci(g[metric].tolist())[:2]) for n, g in sub[sub["arm"] == arm].groupby("n"))
            ns, means, halves = (np.array(v, dtype=float) for v in zip(*points, strict=True))
            shift = 2 ** (0.06 * (i - (len(arms) - 1) / 2))  # arms side by side at each N
            ax.errorbar(ns * shift, means, yerr=np.nan_to_num(halves), marker="o", ms=4, capsize=2, label=arm)
        ax.set_xscale("log", base=2)
        ax.set_title(task)
        ax.set_xlabel("N training images")
        ax.set_ylabel(f"fine-tune {metric}")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        f"Fine-tune {metric} against N: the second measure (mean, 95% t interval over seed pairs)", fontsize=10
    )
    fig.tight_layout()
    return fig


def plot_curves(frame: pd.DataFrame, path: Path, metric: str = "macro_f1") -> None:
    """Write :func:`curves_figure` to ``path`` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    atomic_save_figure(curves_figure(frame, metric), path, dpi=110)


def settings_table(settings: Mapping[str, object]) -> pd.DataFrame:
    """One row per setting: its name and its value (strings as they are, anything else as JSON)."""
    values = [v if isinstance(v, str) else json.dumps(v, default=list) for v in settings.values()]
    return pd.DataFrame({"setting": list(settings), "value": [f"`{v}`".replace("|", "\\|") for v in values]})


def header_lines(invocations: pd.DataFrame, runs: int, command: str = "", commit: str = "") -> list[str]:
    """The report's header: the wall time summed over every recorded invocation (:func:`read_invocations`), how many
    there were, their devices, commands and commits; ``command`` and ``commit`` (this invocation's) when none is
    recorded."""
    if not len(invocations):
        return [
            f"- wall time: n/a (no `{INVOCATIONS}` in this folder); command: `{command}`; commit: `{commit}`",
            f"- runs: {runs} fine-tunes; the settings are the last section.",
        ]
    count = len(invocations)
    devices = "; ".join(dict.fromkeys(invocations["device"].astype(str)))
    commands = list(dict.fromkeys(invocations["command"].astype(str)))
    commits = list(dict.fromkeys(invocations["commit"].astype(str)))
    return [
        f"- wall time: **{invocations['seconds'].astype(float).sum() / 60:.1f} min**, summed over the {count} "
        f"invocation{'s' if count > 1 else ''} that made this folder (`{INVOCATIONS}`), on {devices}",
        f"- command{'s' if len(commands) > 1 else ''}: " + "; ".join(f"`{c}`" for c in commands),
        f"- commit{'s' if len(commits) > 1 else ''}: "
        + ", ".join(f"`{c}`" for c in commits)
        + f"; runs: {runs} fine-tunes; the settings are the last section.",
    ]


def _finetune_curve(frame: pd.DataFrame, out: Path) -> list[str]:
    """``f1_vs_n.png`` and its line when the fine-tunes have several N; else the line that says why there is none
    (an earlier report's figure is removed)."""
    shots = sorted({int(n) for n in frame["n"]}) if len(frame) else []
    if len(shots) < 2:
        (out / "f1_vs_n.png").unlink(missing_ok=True)
        said = f"one N ({shots[0]})" if shots else "no runs"
        return [f"The fine-tunes have {said}: no curve against N is drawn.", ""]
    plot_curves(frame, out / "f1_vs_n.png")
    return [
        "![fine-tune macro-F1 against N, the second measure](f1_vs_n.png)",
        "",
        f"Fine-tune macro-F1 against N ({', '.join(map(str, shots))}), mean and 95% t interval over seed pairs per "
        "arm: the second measure; the answer above is from the probes.",
        "",
    ]


def write_report(
    frame: pd.DataFrame,
    out: Path,
    command: str | None = None,
    profile: str = "",
    settings: Mapping[str, object] | None = None,
    commit: str = "",
    sections: Sequence[str] = (),
) -> None:
    """Write ``report.md`` (and ``f1_vs_n.png`` when the fine-tunes have several N) for the runs in ``frame``;
    ``sections`` (Markdown) come first, the header's wall time is the sum over ``out``'s recorded invocations."""
    out = Path(out)
    lines = [
        f"# PGNM few-shot unseen-concept protocol — profile `{profile}`",
        "",
        *header_lines(read_invocations(out), len(frame), command or " ".join(sys.argv), commit),
        "",
    ]
    if profile != "paper":
        lines += [
            "Regime: small images, a short pretraining on a small set. These numbers say how the arms "
            "compare at this scale only; they are not a reproduction of the paper's RadImageNet-scale results.",
            "",
        ]
    lines += [section for section in sections if section]
    lines += [
        "## Fine-tuning (the second measure)",
        "",
        "Each heated model fine-tuned on each task's N training images and evaluated on its test split: mean ± "
        "half-width of the 95% t interval over every (pretrain seed, fine-tune seed) pair; deltas are paired by those "
        "seeds. A *win* is a delta interval entirely above 0, a *loss* entirely below (one cell at a time, not "
        "adjusted for multiplicity).",
        "",
    ]
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
    lines += ["", *_finetune_curve(frame, out)]
    lines += ["## Settings", "", markdown_table(settings_table(settings or {})), ""]
    atomic_write_text(out / "report.md", "\n".join(lines))


def pretraining_section(
    out: Path,
    curves: pd.DataFrame,
    policies: dict[str, torch.nn.Module] | None = None,
    images: dict[str, torch.Tensor] | None = None,
    seed: int | None = None,
    from_records: bool = False,
) -> str:
    """Draw what pretraining did and return the report's section: the policy and training ``curves``
    (:func:`~.policy_figures.read_pretrain_curves`, written to ``pretrain_curves.csv``) and, with two ``policies`` or
    more and ``images`` (:func:`~.policy_figures.mask_policies`, :func:`~.policy_figures.task_images`), the expected
    masks of pretrain seed ``seed``. ``from_records``: the curves were read from ``pretrain_curves.csv`` (the models
    are gone), which is then left as it is, and a ``masks.png`` drawn earlier is linked."""
    import matplotlib

    matplotlib.use("Agg")
    if not len(curves):
        return ""
    if not from_records:
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
    elif from_records and (out / "masks.png").is_file():
        lines += ["![trained masks per modality, drawn when the models were on disk](masks.png)", ""]
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


def convergence_states(curves: pd.DataFrame, baseline: str = "none") -> dict[str, dict[str, Any]]:
    """Was pretraining long enough? Per arm, from the curves (means over pretrain seeds): for ``baseline``, its
    validation macro-F1 (``last``, ``best``, ``best_epoch``, ``epochs``) and ``saturated`` (it reached
    :data:`SATURATED_F1`); for each learned policy, its KL to its initialisation (``kl``, ``change``: over the last
    two epochs, relative) and ``settled`` (``change`` below :data:`SETTLED_CHANGE`). Arms the curves cannot say
    anything of are left out."""
    states: dict[str, dict[str, Any]] = {}
    mean = curves.groupby(["arm", "epoch"]).mean(numeric_only=True)
    if baseline in set(curves["arm"]) and "val_macro_f1" in curves:
        f1 = mean.loc[baseline, "val_macro_f1"].dropna()
        if len(f1):
            states[baseline] = {
                "last": float(f1.iloc[-1]),
                "epochs": int(f1.index[-1]),
                "best": float(f1.max()),
                "best_epoch": int(f1.idxmax()),
                "saturated": bool(f1.max() >= SATURATED_F1),
            }
    for arm in learned_policy_arms(curves["arm"]) if "kl_to_init" in curves else ():
        kl = mean.loc[arm, "kl_to_init"].dropna()
        if len(kl) < 3 or kl.iloc[-1] <= 0:
            continue
        change = float(abs(kl.iloc[-1] - kl.iloc[-3]) / kl.iloc[-1])
        states[arm] = {"kl": float(kl.iloc[-1]), "change": change, "settled": change < SETTLED_CHANGE}
    return states


def convergence_sentences(curves: pd.DataFrame, baseline: str = "none") -> list[str]:
    """:func:`convergence_states` said in sentences (one paragraph, then a blank line; ``[]`` when it says nothing)."""
    lines = []
    for arm, st in convergence_states(curves, baseline).items():
        if "saturated" in st:
            state = "saturated" if st["saturated"] else f"not saturated (below {SATURATED_F1})"
            lines.append(
                f"`{arm}`'s validation macro-F1 (mean over pretrain seeds) ends at {st['last']:.3f} after "
                f"{st['epochs']} epochs, best {st['best']:.3f} at epoch {st['best_epoch']}: {state}."
            )
        else:
            state = "settled" if st["settled"] else "still moving"
            lines.append(
                f"`{arm}`'s KL to its initial policy: {st['kl']:.4g} at the last epoch, {st['change']:.1%} change "
                f"over the last two epochs: {state} (threshold {SETTLED_CHANGE:.0%})."
            )
    return [" ".join(lines), ""] if lines else []
