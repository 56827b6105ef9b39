"""What the pretraining did, read back from a protocol run: policy-learning curves, trained masks, and the
training curves that diagnose a collapsing arm.

A protocol run keeps, for every arm and pretrain seed, ``pretrain/<arm>_seed<seed>/`` with
``eval/policy_stats.csv`` (policy arms, :class:`~pgnm_monai.handlers.PolicyStatisticsHandler`),
``eval/train_curves.csv`` (:class:`~pgnm_monai.handlers.TrainingCurveWriter`), ``eval/val_metrics.json`` and
``models/policy.pt`` (the trained policy with its base vectors).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pgnm_monai.arms import ARMS, build_policy_handler
from pgnm_monai.mask import cells_to_mask
from pgnm_monai.networks.policy import DEFAULT_TRUNK

__all__ = [
    "MASK_ROWS",
    "collapse_figure",
    "expected_mask",
    "last_epoch_means",
    "load_policy",
    "mask_figure",
    "middle_slice",
    "policy_curves_figure",
    "read_pretrain_curves",
]

_RUN = re.compile(r"^(?P<arm>.+)_seed(?P<seed>\d+)$")

#: rows of the mask figure: label -> arm whose trained policy is drawn (``None``: the seeded initialisation).
MASK_ROWS: dict[str, str | None] = {
    "initial policy": None,
    "cooperative (pgnm-reinforce)": "pgnm-reinforce",
    "adversarial (pgnm-adversarial)": "pgnm-adversarial",
    "official (pgnm-paper)": "pgnm-paper",
}


def read_pretrain_curves(output_dir: str | Path) -> pd.DataFrame:
    """One row per (arm, seed, epoch): policy statistics, training curves and validation metrics merged."""
    frames = []
    for run in sorted((Path(output_dir) / "pretrain").glob("*_seed*")):
        match = _RUN.match(run.name)
        if not match:
            continue
        parts = []
        for name in ("policy_stats.csv", "train_curves.csv"):
            if (run / "eval" / name).is_file():
                parts.append(pd.read_csv(run / "eval" / name).set_index("epoch"))
        val = run / "eval" / "val_metrics.json"
        if val.is_file():
            parts.append(pd.DataFrame(json.loads(val.read_text())).set_index("epoch"))
        if not parts:
            continue
        frame = pd.concat(parts, axis=1).reset_index()
        frame.insert(0, "seed", int(match["seed"]))
        frame.insert(0, "arm", match["arm"])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def last_epoch_means(frame: pd.DataFrame) -> pd.DataFrame:
    """Per arm (in :data:`~pgnm_monai.arms.ARMS` order): the mean over pretrain seeds of each seed's last epoch."""
    last = frame[frame["epoch"] == frame.groupby(["arm", "seed"])["epoch"].transform("max")]
    means = last.drop(columns=["seed", "epoch"]).groupby("arm").mean(numeric_only=True)
    return means.reindex(_ordered(means.index))


def _ordered(arms: Sequence[str]) -> list[str]:
    return [a for a in ARMS if a in set(arms)]


def _curves(frame: pd.DataFrame, columns: Sequence[tuple[str, str]], arms: Sequence[str], title: str):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3.2), squeeze=False)
    for ax, (column, label) in zip(axes[0], columns, strict=True):
        for arm in _ordered(arms):
            sub = frame[(frame["arm"] == arm)]
            if column not in sub or sub[column].isna().all():
                continue
            stats = sub.groupby("epoch")[column].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], marker="o", ms=3, label=arm)
            ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.15)
        ax.set_xlabel("pretraining epoch")
        ax.set_title(label, fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def policy_curves_figure(frame: pd.DataFrame):
    """The policy-learning curves of every policy arm (mean over pretrain seeds, band: min-max)."""
    columns = (
        ("kl_to_init", "KL(policy || initial policy)"),
        ("mask_between_std", "between-image std of E[m] (image-specific)"),
        ("mask_within_std", "within-image std of E[m] (spatial)"),
        ("mask_mean", "mean E[m]"),
        ("reward_mean", "reward (epoch mean)"),
        ("policy_grad_norm", "policy gradient norm"),
    )
    arms = [a for a in frame["arm"].unique() if ARMS[a].mechanism == "pgnm"] if len(frame) else []
    return _curves(frame, columns, arms, "Is the policy learning? (probe batch, per epoch)")


def collapse_figure(frame: pd.DataFrame, arms: Sequence[str] = ("none", "pgnm-paper", "pgnm-paper-unscaled")):
    """Training loss (as back-propagated), classifier weight norm and validation macro-F1 of ``arms``."""
    columns = (
        ("train_loss", "training loss (back-propagated)"),
        ("weight_norm", "classifier weight L2 norm"),
        ("val_macro_f1", "validation macro-F1"),
    )
    present = [a for a in arms if len(frame) and a in set(frame["arm"])]
    return _curves(frame, columns, present, "Pretraining curves: the official objective vs its controls")


def load_policy(run_dir: str | Path | None, settings: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """The policy of a pretrain run (``models/policy.pt``), or the seeded initialisation when ``run_dir`` is None.

    ``settings``: the pretrain bundle ids that shape the policy (``in_channels``, ``spatial_dims``, ``grid``,
    ``kernel_size``, ``sigma``, ``policy_trunk``, ``policy_input_size``); ``seed``: the pretrain seed (the
    initialisation).
    """
    policy = build_policy_handler(
        in_channels=int(settings.get("in_channels", 1)),
        spatial_dims=int(settings.get("spatial_dims", 2)),
        grid=int(settings["grid"]),
        kernel_size=int(settings["kernel_size"]),
        sigma=float(settings["sigma"]),
        trunk=settings.get("policy_trunk", DEFAULT_TRUNK),
        policy_input_size=settings.get("policy_input_size"),
        seed=seed,
    ).policy
    if run_dir is not None:
        policy.load_state_dict(torch.load(Path(run_dir) / "models" / "policy.pt", weights_only=True))
    return policy.eval()


@torch.no_grad()
def expected_mask(policy: torch.nn.Module, image: torch.Tensor) -> np.ndarray:
    """The expected mask ``E[m] = alpha / (alpha + beta)`` of one ``(C, H, W)`` image, upsampled and blurred.

    For a volume ``(C, D, H, W)``: the 3D mask's middle slice along the first spatial axis (as :func:`middle_slice`).
    """
    policy.eval()
    alpha, beta = policy(image[None].float())
    cells = alpha / (alpha + beta)
    mask = cells_to_mask(cells, policy.grid, tuple(image.shape[1:]), policy.kernel_size, policy.sigma)
    return middle_slice(mask[0, 0]).cpu().numpy()


def middle_slice(image: torch.Tensor) -> torch.Tensor:
    """A 2D picture of an image: itself, or a volume's middle slice along its first axis."""
    return image[image.shape[0] // 2] if image.ndim == 3 else image


def mask_figure(images: dict[str, torch.Tensor], policies: dict[str, torch.nn.Module], title: str = ""):
    """A grid: one column per modality (its image on top), one row per policy (its expected mask, shared scale)."""
    import matplotlib.pyplot as plt

    names = list(images)
    fig, axes = plt.subplots(
        len(policies) + 1, len(names), figsize=(2.3 * len(names), 2.2 * (len(policies) + 1)), squeeze=False
    )
    for j, name in enumerate(names):
        axes[0][j].imshow(middle_slice(images[name][0]).cpu().numpy(), cmap="gray")
        axes[0][j].set_title(name, fontsize=8)
        for i, (label, policy) in enumerate(policies.items(), start=1):
            shown = axes[i][j].imshow(expected_mask(policy, images[name]), cmap="viridis", vmin=0, vmax=1)
            if j == 0:
                axes[i][j].set_ylabel(label, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes[1:, :].ravel().tolist(), shrink=0.6, label="E[mask]")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
