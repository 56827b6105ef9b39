"""Does the ``fast`` preset's policy learn what the ``paper`` preset's policy learns?

Usage::

    python -m pgnm_monai.benchmarks.preset_curves [--output-dir results/presets] [--seeds 0 1]
        [--profile standard] [--data-dir PATH] [--probe-images 64]

Pretrains the cooperative arm (``pgnm-reinforce``) with the profile's settings (default: the ``standard``
protocol profile) twice per seed through the pretrain bundle: ``paper`` (the policy trunk sees the full image)
and ``fast`` (it sees a 16 px copy). Runs already done are kept. Writes to ``--output-dir``:

- ``preset_curves.csv`` / ``preset_curves.png``: the policy statistics per epoch
  (:class:`~pgnm_monai.handlers.PolicyStatisticsHandler`) of both presets;
- ``preset_masks.csv``: how alike the trained policies' expected masks ``E[m]`` are on validation images,
  for each pair of runs: the correlation of their image-averaged maps (the spatial pattern) and the mean
  per-image correlation of what is left (the image-specific part). Pairs of the *same* preset with different
  seeds are the yardstick: two presets learn "the same masks" when they agree as well as two seeds do.

Prints both tables.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

__all__ = ["PRESET_INPUT_SIZES", "main", "mask_agreement"]

#: preset -> the policy trunk's input size (``None``: the full image).
PRESET_INPUT_SIZES: dict[str, int | None] = {"paper": None, "fast": 16}


def _pretrain(out: Path, preset: str, seed: int, cfg: dict, data: tuple[str, str]) -> Path:
    """Pretrain ``pretrain/<preset>_seed<seed>`` (the protocol's layout, the preset in the arm's place) unless done."""
    from pgnm_monai.atomic_files import atomic_write_text
    from pgnm_monai.experiments import runner
    from pgnm_monai.experiments.protocol import pretrain_settings
    from pgnm_monai.experiments.run_folders import PretrainRun

    run = PretrainRun(preset, seed).folder(out)
    if (run / "done.json").is_file():
        return run
    t0 = time.perf_counter()
    settings = {**pretrain_settings(cfg, *data), "policy_input_size": PRESET_INPUT_SIZES[preset]}
    runner.pretrain(run, arm="pgnm-reinforce", seed=seed, **settings)
    atomic_write_text(run / "done.json", json.dumps({"seconds": round(time.perf_counter() - t0, 1)}) + "\n")
    return run


@torch.no_grad()
def _cell_means(policy: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """``E[m] = alpha / (alpha + beta)`` per image and cell: ``(N, cells)``."""
    alpha, beta = policy.eval()(images)
    return (alpha / (alpha + beta)).cpu().numpy()


def mask_agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """How alike two policies' ``(N, cells)`` expected masks are (see the module docstring)."""
    pattern = float(np.corrcoef(a.mean(0), b.mean(0))[0, 1])
    ra, rb = a - a.mean(0), b - b.mean(0)
    per_image = [float(np.corrcoef(x, y)[0, 1]) for x, y in zip(ra, rb, strict=True) if x.std() > 0 and y.std() > 0]
    return {
        "pattern_corr": pattern,
        "image_specific_corr": float(np.mean(per_image)) if per_image else float("nan"),
        "between_std_a": float(a.std(0).mean()),
        "between_std_b": float(b.std(0).mean()),
    }


def main(argv: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="results/presets")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--profile", default="standard")
    parser.add_argument("--data-dir", default=None, help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--probe-images", type=int, default=64, help="validation images the masks are compared on")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pgnm_monai.atomic_files import atomic_save_figure, atomic_write_text
    from pgnm_monai.components import load_data
    from pgnm_monai.experiments import policy_figures
    from pgnm_monai.experiments.profiles import PROFILES
    from pgnm_monai.experiments.run_folders import PretrainRun, read_run_settings
    from pgnm_monai.experiments.tasks import pretrain_source
    from pgnm_monai.transforms import meta_tracking

    cfg = PROFILES[args.profile]
    out = Path(args.output_dir).resolve()
    data = pretrain_source(cfg["pretrain"], Path(args.data_dir) if args.data_dir else None)
    runs = {PretrainRun(p, s): _pretrain(out, p, s, cfg, data) for p in PRESET_INPUT_SIZES for s in args.seeds}

    curves = []
    for key, run in runs.items():
        frame = pd.read_csv(run / "eval" / "policy_stats.csv")
        frame.insert(0, "seed", key.seed)
        frame.insert(0, "preset", key.arm)
        curves.append(frame)
    curves = pd.concat(curves, ignore_index=True)
    atomic_write_text(out / "preset_curves.csv", curves.to_csv(index=False))
    columns = ("kl_to_init", "mask_between_std", "mask_within_std", "mask_mean", "reward_mean")
    fig, axes = plt.subplots(1, len(columns), figsize=(3.4 * len(columns), 3.0), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        for preset in PRESET_INPUT_SIZES:
            stats = curves[curves["preset"] == preset].groupby("epoch")[column].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], marker="o", ms=3, label=preset)
            ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.15)
        ax.set_title(column, fontsize=9)
        ax.set_xlabel("pretraining epoch")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("policy-learning curves of the paper and fast presets (pgnm-reinforce)", fontsize=10)
    fig.tight_layout()
    atomic_save_figure(fig, out / "preset_curves.png", dpi=110)

    items = load_data(data[0], data[1], "val", max_items=args.probe_images).items
    chain = policy_figures.eval_chain(read_run_settings(next(iter(runs.values()))))  # the runs' own settings
    with meta_tracking(False):
        images = torch.stack([chain(dict(it))["image"] for it in items])
    means = {key: _cell_means(policy_figures.load_policy(run), images) for key, run in runs.items()}
    rows = []
    for (ka, a), (kb, b) in itertools.combinations(means.items(), 2):
        same_seed = "paper vs fast, same seed" if ka.seed == kb.seed else ""
        kind = "same preset, other seed" if ka.arm == kb.arm else same_seed
        if kind:
            pair = {"a": ka.name, "b": kb.name, "pair": kind}
            rows.append({**pair, **mask_agreement(a, b)})
    agreement = pd.DataFrame(rows)
    atomic_write_text(out / "preset_masks.csv", agreement.to_csv(index=False))
    last = curves[curves["epoch"] == curves["epoch"].max()].groupby("preset")[list(columns)].mean()
    print(f"last pretraining epoch, mean over seeds {args.seeds}:\n{last.round(4).to_string()}\n")
    print(f"expected-mask agreement on {len(items)} validation images:\n{agreement.round(3).to_string(index=False)}")
    return curves, agreement


if __name__ == "__main__":
    main()
