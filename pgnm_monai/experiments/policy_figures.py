"""What the pretraining did, read back from a protocol run: policy-learning curves, trained masks, and the
training curves that diagnose a collapsing arm.

A protocol run keeps, for every arm and pretrain seed, ``pretrain/<arm>_seed<seed>/`` with
``eval/policy_stats.csv`` (policy arms, :class:`~pgnm_monai.handlers.PolicyStatisticsHandler`),
``eval/train_curves.csv`` (:class:`~pgnm_monai.handlers.TrainingCurveWriter`), ``eval/val_metrics.json``,
``models/policy.pt`` (the trained policy with its base vectors) and ``models/run_settings.json`` (the bundle ids it
was trained with: every policy and image here is rebuilt from the run's own settings, not from its profile's; the
folder names are :mod:`.run_folders`'s).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from pgnm_monai.arms import ARMS, build_arm_handler
from pgnm_monai.experiments.run_folders import PretrainRun, pretrain_runs, read_run_settings
from pgnm_monai.mask import cells_to_mask

if TYPE_CHECKING:
    from pgnm_monai.experiments.tasks import Task

__all__ = [
    "MASK_ROWS",
    "collapse_figure",
    "eval_chain",
    "expected_mask",
    "last_epoch_means",
    "load_policy",
    "mask_figure",
    "mask_policies",
    "middle_slice",
    "policy_curves_figure",
    "read_pretrain_curves",
    "task_images",
]

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
    for key, run in pretrain_runs(output_dir):
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
        frame.insert(0, "seed", key.seed)
        frame.insert(0, "arm", key.arm)
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


def load_policy(run_dir: str | os.PathLike, trained: bool = True) -> torch.nn.Module:
    """The noise policy of the pretrain run in ``run_dir``, rebuilt from the run's own ``models/run_settings.json``
    (its arm, seed, mask and policy settings): the trained weights (``models/policy.pt``), or with
    ``trained=False`` the seeded initialisation the run started from.

    Raises:
        FileNotFoundError: naming ``run_settings.json`` (or ``policy.pt``) when the run has none.
        ValueError: when the run's arm trains no noise policy.
    """
    settings = read_run_settings(run_dir)
    policy = getattr(build_arm_handler(settings["arm"], settings, device="cpu"), "policy", None)
    if policy is None:
        raise ValueError(f"{run_dir}: arm {settings['arm']!r} trains no noise policy.")
    if trained:
        policy.load_state_dict(torch.load(Path(run_dir) / "models" / "policy.pt", weights_only=True))
    return policy.eval()


def mask_policies(output_dir: str | os.PathLike, seed: int) -> dict[str, torch.nn.Module]:
    """The rows of the mask figure (:data:`MASK_ROWS`) for pretrain seed ``seed``: every row whose run has a trained
    policy (``models/policy.pt``), the initial policy first (the seeded initialisation, rebuilt from the first of
    those runs). Empty when no run of ``seed`` has a trained policy."""
    runs = {label: PretrainRun(arm, seed).folder(output_dir) for label, arm in MASK_ROWS.items() if arm}
    trained = {label: run for label, run in runs.items() if (run / "models" / "policy.pt").is_file()}
    if not trained:
        return {}
    first = next(iter(trained.values()))
    return {
        label: load_policy(trained[label]) if arm else load_policy(first, trained=False)
        for label, arm in MASK_ROWS.items()
        if not arm or label in trained
    }


def eval_chain(settings: dict[str, Any]):
    """The evaluation chain of a run with bundle ids ``settings`` (its ``run_settings.json``): what its
    network and policy saw at validation (image size, channels, dimensions, spacing, intensity normalisation)."""
    from pgnm_monai.transforms import eval_transforms

    return eval_transforms(
        image_size=int(settings["image_size"]),
        channels=int(settings["in_channels"]),
        mean=settings["intensity_mean"],  # one value, or one per channel
        std=settings["intensity_std"],
        spatial_dims=int(settings["spatial_dims"]),
        spacing=settings.get("spacing"),
    )


def task_images(run_dir: str | os.PathLike, tasks: Sequence[Task]) -> dict[str, torch.Tensor]:
    """The first test image of each task through the evaluation chain of the run in ``run_dir``
    (:func:`eval_chain` of its ``run_settings.json``), keyed ``"<task> (<modality>)"``."""
    from pgnm_monai.components import load_data
    from pgnm_monai.transforms import meta_tracking

    chain = eval_chain(read_run_settings(run_dir))
    images = {}
    with meta_tracking(False):
        for task in tasks:
            item = load_data(task.kind, task.dataset_dir, "test", options=dict(task.options)).items[0]
            images[f"{task.name} ({item.get('modality', '')})"] = chain(dict(item))["image"]
    return images


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
