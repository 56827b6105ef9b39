"""The paper's few-shot unseen-concept protocol, run through the bundles, with one command.

For every pretraining arm and pretrain seed, the ``pgnm_pretrain`` bundle trains a classifier on the
pretraining set (default: MedNIST); every heated model is then fine-tuned with the ``pgnm_finetune``
bundle on each downstream task for every few-shot ``N`` and fine-tune seed, and evaluated on the task's
test split (overall and per modality). Outputs, under ``output_dir``:

- ``runs.csv``: one row per fine-tuned run (arm, task, N, seeds, metrics, per-modality macro-F1, wall time,
  git commit, the full configuration as JSON). A run already in it is not redone (resumable).
- ``report.md``: mean ± 95% CI (t interval over all seed pairs) per arm/task/N, PGNM − baseline deltas
  paired by seeds with their CI, a win/tie/loss count, per-modality means, and the command line.
- ``f1_vs_n.png``: macro-F1 against N per task, one line per arm with its CI band.

Profiles: ``micro`` (tests: embedded data, seconds), ``quick`` (<= 60 min on 2 CPU cores), ``paper`` (the
paper's settings, for GPUs). Any task can be given as ``name=kind:path`` (image folder, MedMNIST npz,
DICOM/NIfTI CSV, ...).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pgnm_monai.data.utils import atomic_save_figure, atomic_write_text, shared_data_dir
from pgnm_monai.pipeline import bundles_dir, run_bundle

__all__ = [
    "ARM_SPECS",
    "PROFILES",
    "Task",
    "curves_figure",
    "default_tasks",
    "delta_table",
    "mean_ci",
    "parse_task",
    "per_modality_table",
    "run_protocol",
    "summary_table",
    "write_report",
]

logger = logging.getLogger(__name__)

#: arm name in the report -> pretrain bundle overrides
ARM_SPECS: dict[str, dict[str, str]] = {
    "none": {"arm": "none"},
    "pgnm-paper": {"arm": "pgnm", "objective": "paper"},
    "pgnm-reinforce": {"arm": "pgnm", "objective": "reinforce"},
    "random_mask": {"arm": "random_mask"},
    "gaussian": {"arm": "gaussian"},
    "coarse_dropout": {"arm": "coarse_dropout"},
}
METRICS = ("macro_f1", "balanced_accuracy", "auroc", "accuracy", "macro_precision", "macro_recall")
KEY = ("arm", "pretrain_seed", "task", "n", "finetune_seed")

PROFILES: dict[str, dict[str, Any]] = {
    # seconds: the tests' end-to-end check of the command
    "micro": {
        "arms": ("none", "pgnm-reinforce"),
        "pretrain_seeds": (0,),
        "finetune_seeds": (0,),
        "shots": (16,),
        "image_size": 32,
        "network": "small",
        "policy_trunk": "small",
        "grid": 8,
        "kernel_size": 3,
        "sigma": 1.0,
        "batch_size": 8,
        "pretrain_epochs": 1,
        "pretrain_lr": 0.05,
        "pretrain_items": None,
        "finetune_epochs": 2,
        "warmup_epochs": 1,
        "finetune_lr": 0.001,
        "val_items": 16,
        "pretrain": "embedded",
        "tasks": ("embedded",),
    },
    # <= 60 min on 2 CPU cores (measured: ~0.6 s per ResNet-10t step at 32 px, batch 64): 3,000 MedNIST
    # images x 3 epochs per pretrained model (10 models), 2 tasks x N in {32, 128} x 2 fine-tune seeds
    "quick": {
        "arms": ("none", "pgnm-paper", "pgnm-reinforce", "random_mask", "gaussian"),
        "pretrain_seeds": (0, 1),
        "finetune_seeds": (0, 1),
        "shots": (32, 128),
        "image_size": 32,
        "network": "resnet10t",
        "policy_trunk": "resnet10",
        "grid": 16,
        "kernel_size": 5,
        "sigma": 1.0,
        "batch_size": 64,
        "pretrain_epochs": 3,
        "pretrain_lr": 0.05,
        "pretrain_items": 3000,
        "finetune_epochs": 15,
        "warmup_epochs": 3,
        "finetune_lr": 0.01,
        "val_items": 128,
        "finetune_val_interval": 15,
        "pretrain": "mednist",
        "tasks": ("breastmnist", "pneumoniamnist"),
    },
    # the paper's settings (RadImageNet-scale; GPUs)
    "paper": {
        "arms": ("none", "pgnm-paper", "pgnm-reinforce", "random_mask", "gaussian"),
        "pretrain_seeds": (0, 1, 2),
        "finetune_seeds": (0, 1, 2),
        "shots": (16, 32, 64, 128, 256),
        "image_size": 224,
        "network": "resnet50",
        "policy_trunk": "resnet10",
        "grid": 64,
        "kernel_size": 13,
        "sigma": 6.0,
        "batch_size": 32,
        "pretrain_epochs": 90,
        "pretrain_lr": 0.1,
        "pretrain_items": None,
        "finetune_epochs": 10,
        "warmup_epochs": 7,
        "finetune_lr": 0.001,
        "val_items": None,
        "pretrain": "mednist",
        "tasks": ("breastmnist", "pneumoniamnist", "retinamnist", "brain_tumor_mri"),
    },
}


@dataclass(frozen=True)
class Task:
    """A downstream dataset: ``kind`` and ``dataset_dir`` as the bundles take them, plus loader options."""

    name: str
    kind: str | None
    dataset_dir: str | None
    options: dict[str, Any] = field(default_factory=dict)


def parse_task(spec: str) -> Task:
    """``name=kind:path[?option=value&...]`` -> :class:`Task` (``embedded`` alone is the embedded set)."""
    if spec == "embedded":
        return Task("embedded", None, None)
    name, sep, rest = spec.partition("=")
    kind, sep2, path = rest.partition(":")
    if not sep or not sep2 or not name or not kind or not path:
        raise ValueError(f"task {spec!r} must look like name=kind:path[?option=value&...].")
    path, _, query = path.partition("?")
    options: dict[str, Any] = {}
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        options[key] = {"true": True, "false": False}.get(value.lower(), value)
    return Task(name, kind, path, options)


def default_tasks(names: Sequence[str], data_dir: Path | None = None) -> list[Task]:
    """The named default tasks from ``../shared/data`` (those whose files are missing are left out, with a warning)."""
    root = Path(data_dir) if data_dir else shared_data_dir()
    known = {
        "embedded": Task("embedded", None, None),
        "breastmnist": Task("breastmnist", "medmnist", str(root / "medmnist" / "breastmnist.npz")),
        "pneumoniamnist": Task("pneumoniamnist", "medmnist", str(root / "medmnist" / "pneumoniamnist.npz")),
        "retinamnist": Task("retinamnist", "medmnist", str(root / "medmnist" / "retinamnist.npz")),
        "brain_tumor_mri": Task(
            "brain_tumor_mri",
            "image_folder",
            str(root / "brain_tumor_mri_4class"),
            {"modality": "MR", "anatomy": "brain", "drop_cross_split_duplicates": True},
        ),
    }
    tasks = []
    for name in names:
        if name not in known:
            raise ValueError(f"unknown default task {name!r}; known: {sorted(known)} (or give name=kind:path).")
        task = known[name]
        if task.dataset_dir is not None and not os.path.exists(task.dataset_dir):
            logger.warning("task %s left out: %s does not exist", name, task.dataset_dir)
            continue
        tasks.append(task)
    return tasks


def _pretrain_source(name: str, data_dir: Path | None = None) -> tuple[str | None, str | None]:
    if name == "embedded":
        return None, None
    if name == "mednist":
        path = (Path(data_dir) if data_dir else shared_data_dir()) / "mednist" / "MedNIST.tar.gz"
        if not path.exists():
            raise FileNotFoundError(
                f"the MedNIST pretraining set is not at {path}; give --pretrain-dir/--pretrain-kind."
            )
        return "mednist", str(path)
    raise ValueError(f"unknown pretraining set {name!r}: use 'embedded', 'mednist' or --pretrain-dir with a kind.")


def git_commit() -> str:
    """The project's current commit (``unknown`` outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_protocol(
    output_dir: str | os.PathLike = "results/quick",
    profile: str = "quick",
    tasks: Sequence[str] | None = None,
    pretrain_dir: str | None = None,
    pretrain_kind: str | None = None,
    data_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    command: str | None = None,
) -> pd.DataFrame:
    """Run (or resume) the protocol and write ``runs.csv``, ``report.md`` and ``f1_vs_n.png``.

    Args:
        output_dir: where everything goes (pretrained models under ``pretrain/``).
        profile: ``micro``, ``quick`` or ``paper`` (see :data:`PROFILES`).
        tasks: task specs (default names of the profile, or ``name=kind:path[?opt=v]``).
        pretrain_dir: pretraining data (default: the profile's, from ``../shared/data``).
        pretrain_kind: kind of ``pretrain_dir``.
        data_dir: the shared data folder (default ``$PGNM_SHARED_DATA`` or ``../shared/data``).
        overrides: replace profile settings (e.g. ``{"shots": (16, 32)}``).
        command: the command line, for the report.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}.")
    cfg = {**PROFILES[profile], **(overrides or {})}
    unknown = set(cfg["arms"]) - set(ARM_SPECS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; known: {sorted(ARM_SPECS)}.")
    root = Path(data_dir) if data_dir else None
    specs = list(tasks) if tasks else list(cfg["tasks"])
    task_list: list[Task] = []
    for spec in specs:
        task_list += [parse_task(spec)] if "=" in spec else default_tasks([spec], root)
    if not task_list:
        raise FileNotFoundError("no downstream task is available (the default tasks need ../shared/data).")
    if pretrain_dir:
        if not pretrain_kind:
            raise ValueError("pretrain_kind is required with pretrain_dir.")
        pre_kind, pre_dir = pretrain_kind, pretrain_dir
    else:
        pre_kind, pre_dir = _pretrain_source(cfg["pretrain"], root)

    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs_csv = out / "runs.csv"
    frame = pd.read_csv(runs_csv) if runs_csv.exists() else pd.DataFrame()
    done = {tuple(r) for r in frame[list(KEY)].astype(str).itertuples(index=False)} if len(frame) else set()
    bundles = bundles_dir()
    commit = git_commit()
    common = {
        "network": cfg["network"],
        "image_size": cfg["image_size"],
        "batch_size": cfg["batch_size"],
        "in_channels": 1,
        "progress_bar": False,
    }
    started = time.perf_counter()

    from tqdm.auto import tqdm

    pretrain_jobs = [(a, s) for a in cfg["arms"] for s in cfg["pretrain_seeds"]]
    pretrain_seconds: dict[tuple[str, int], float] = {}
    for arm, seed in tqdm(pretrain_jobs, desc="pretrain", unit="model"):
        pre_root = out / "pretrain" / f"{arm}_seed{seed}"
        marker = pre_root / "done.json"
        if marker.exists():
            pretrain_seconds[(arm, seed)] = json.loads(marker.read_text())["seconds"]
            continue
        t0 = time.perf_counter()
        run_bundle(
            bundles / "pgnm_pretrain",
            ["train.json"],
            bundle_root=os.fspath(pre_root),
            seed=seed,
            epochs=cfg["pretrain_epochs"],
            lr=cfg["pretrain_lr"],
            dataset_dir=pre_dir,
            dataset_kind=pre_kind,
            max_train_items=cfg["pretrain_items"],
            max_val_items=cfg["val_items"],
            grid=cfg["grid"],
            kernel_size=cfg["kernel_size"],
            sigma=cfg["sigma"],
            policy_trunk=cfg["policy_trunk"],
            **ARM_SPECS[arm],
            **common,
        )
        pretrain_seconds[(arm, seed)] = round(time.perf_counter() - t0, 1)
        atomic_write_text(marker, json.dumps({"seconds": pretrain_seconds[(arm, seed)], "commit": commit}) + "\n")

    jobs = [
        (task, n, fseed, arm, pseed)
        for task in task_list
        for n in cfg["shots"]
        for fseed in cfg["finetune_seeds"]
        for arm in cfg["arms"]
        for pseed in cfg["pretrain_seeds"]
    ]
    rows = frame.to_dict("records") if len(frame) else []
    for task, n, fseed, arm, pseed in tqdm(jobs, desc="fine-tune", unit="run"):
        key = (arm, str(pseed), task.name, str(n), str(fseed))
        if key in done:
            continue
        t0 = time.perf_counter()
        ft_root = out / "finetune" / f"{task.name}_n{n}_ft{fseed}_{arm}_seed{pseed}"
        ft = {
            "bundle_root": os.fspath(ft_root),
            "pretrained_ckpt": os.fspath(out / "pretrain" / f"{arm}_seed{pseed}" / "models" / "model.pt"),
            "dataset_dir": task.dataset_dir,
            "dataset_kind": task.kind,
            "dataset_options": dict(task.options),
            "seed": fseed,
            **common,
        }
        run_bundle(
            bundles / "pgnm_finetune",
            ["train.json"],
            epochs=cfg["finetune_epochs"],
            lr=cfg["finetune_lr"],
            warmup_epochs=max(1, min(cfg["warmup_epochs"], cfg["finetune_epochs"] - 1)),
            few_shot=n,
            few_shot_seed=fseed,
            max_val_items=cfg["val_items"],
            val_interval=cfg.get("finetune_val_interval", 1),
            **ft,
        )
        run_bundle(bundles / "pgnm_finetune", ["train.json", "evaluate.json"], **ft)
        report = json.loads((ft_root / "eval" / "metrics.json").read_text())
        row: dict[str, Any] = {"arm": arm, "pretrain_seed": pseed, "task": task.name, "n": n, "finetune_seed": fseed}
        row |= {m: _number(report["overall"].get(m)) for m in METRICS}
        row["n_test"] = report["overall"].get("n")
        for modality, values in sorted(report.get("by_modality", {}).items()):
            row[f"macro_f1[{modality}]"] = _number(values.get("macro_f1"))
        row["finetune_seconds"] = round(time.perf_counter() - t0, 1)
        row["pretrain_seconds"] = pretrain_seconds[(arm, pseed)]
        row["commit"] = commit
        row["config"] = json.dumps(
            {
                "profile": profile,
                **{k: v for k, v in cfg.items() if k != "tasks"},
                "task": task.__dict__,
                "pretrain_dir": pre_dir,
                "pretrain_kind": pre_kind,
                **ARM_SPECS[arm],
            },
            default=list,
        )
        rows.append(row)
        atomic_write_text(runs_csv, pd.DataFrame(rows).to_csv(index=False))
        shutil.rmtree(ft_root, ignore_errors=True)  # checkpoints of every fine-tune would fill the disk
    frame = pd.DataFrame(rows)
    wall = time.perf_counter() - started
    write_report(frame, out, command=command, profile=profile, settings=cfg, wall_seconds=wall, commit=commit)
    return frame


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of the t confidence interval (NaN half-width for fewer than 2 values)."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    if len(v) < 2:
        return float(v.mean()), float("nan"), 1
    half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half), len(v)


def _fmt(mean: float, half: float) -> str:
    if mean != mean:
        return "n/a"
    return f"{mean:.3f}" if half != half else f"{mean:.3f} ± {half:.3f}"


def summary_table(frame: pd.DataFrame, metric: str = "macro_f1") -> pd.DataFrame:
    """Mean ± CI of ``metric`` per task/N (rows) and arm (columns)."""
    cells = {}
    for (task, n, arm), group in frame.groupby(["task", "n", "arm"]):
        cells[(task, int(n), arm)] = _fmt(*mean_ci(group[metric].tolist())[:2])
    arms = [a for a in ARM_SPECS if a in set(frame["arm"])]
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
    for arm in [a for a in ARM_SPECS if a in set(frame["arm"]) and a != baseline]:
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
    return per.reindex([a for a in ARM_SPECS if a in per.index])


def _markdown(frame: pd.DataFrame) -> str:
    frame = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def curves_figure(frame: pd.DataFrame, metric: str = "macro_f1"):
    """A matplotlib figure of ``metric`` against N per task, one line per arm with its 95% CI band."""
    import matplotlib.pyplot as plt

    tasks = sorted(set(frame["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        sub = frame[frame["task"] == task]
        for arm in [a for a in ARM_SPECS if a in set(sub["arm"])]:
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
) -> None:
    """Write ``report.md`` and ``f1_vs_n.png`` for the runs in ``frame``."""
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
    for metric, title in (("macro_f1", "Macro-F1"), ("balanced_accuracy", "Balanced accuracy"), ("auroc", "AUROC")):
        lines += [f"## {title} after fine-tuning", "", _markdown(summary_table(frame, metric)), ""]
    deltas, tally = delta_table(frame)
    lines += ["## Macro-F1: arm − baseline (`none`)", "", _markdown(deltas) if len(deltas) else "(no pairs)", ""]
    lines += ["## Win / tie / loss against the baseline (macro-F1, per task and N)", ""]
    lines += ["| arm | wins | ties | losses |", "|---|---|---|---|"]
    lines += [f"| {arm} | {w} | {t} | {lo} |" for arm, (w, t, lo) in tally.items()]
    per = per_modality_table(frame)
    if len(per.columns):
        lines += ["", "## Macro-F1 per modality (mean over tasks, N and seeds)", "", _markdown(per)]
    if "finetune_seconds" in frame:
        lines += ["", f"Fine-tune + evaluation time per run: median {frame['finetune_seconds'].median():.1f} s."]
    lines += ["", "![macro-F1 vs N](f1_vs_n.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    plot_curves(frame, out / "f1_vs_n.png")
