"""Loader throughput on MedNIST: this package's MONAI chains vs torchvision ``ImageFolder`` + equivalent transforms.

Usage::

    python -m pgnm_monai.benchmarks.loader_throughput [--mednist PATH] [--n 2000] [--image-size 64]
        [--channels 3] [--workers 0 2] [--batch-size 32] [--rounds 5] [--warmup 1] [--cache-dir DIR]

``PATH`` is ``MedNIST.tar.gz`` (extracted once into the cache dir) or an unpacked ``MedNIST`` folder;
default ``<shared data>/mednist/MedNIST.tar.gz``. Both loaders read the same ``n`` files (a seeded sample)
and apply the same operations: train (random resized crop + flip + normalise) and eval (resize short side
+ centre crop + normalise). Our chains run as the bundles run them (MONAI metadata tracking off). The two
loaders of each chain and worker count are timed back to back in every round, in alternating order; prints
the median images/s per loader and the median ratio with its range over rounds (the run's own noise).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from pgnm_monai.data import load_datalist
from pgnm_monai.data.utils import shared_data_dir
from pgnm_monai.settings import INPUT
from pgnm_monai.transforms import eval_resize, eval_transforms, meta_tracking, train_transforms

__all__ = ["main", "measure"]


def _torchvision_chain(train: bool, size: int, channels: int):
    from torchvision import transforms as T

    ops = [T.Grayscale(num_output_channels=channels)]
    if train:
        ops += [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    else:
        ops += [T.Resize(eval_resize(size)), T.CenterCrop(size)]
    ops += [T.ToTensor(), T.Normalize([INPUT.intensity_mean] * channels, [INPUT.intensity_std] * channels)]
    return T.Compose(ops)


def measure(loader, n: int) -> float:
    """Images per second to iterate ``loader`` once (``n`` images)."""
    t0 = time.perf_counter()
    seen = 0
    for batch in loader:
        x = batch["image"] if isinstance(batch, dict) else batch[0]
        seen += int(x.shape[0])
    dt = time.perf_counter() - t0
    if seen != n:
        raise RuntimeError(f"loader yielded {seen} images, expected {n}")
    return n / dt


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mednist", default=str(shared_data_dir() / "mednist" / "MedNIST.tar.gz"))
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--channels", type=int, default=3, choices=(1, 3))
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds per configuration")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    a = p.parse_args(argv)

    import monai
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import ImageFolder

    if not Path(a.mednist).exists():
        raise SystemExit(f"MedNIST not found at {a.mednist}; pass --mednist PATH (tarball or MedNIST folder)")
    dl = load_datalist("mednist", a.mednist, split="all", seed=a.seed, cache_dir=a.cache_dir)
    root = Path(dl.report["root"])
    rng = np.random.default_rng(a.seed)
    pick = sorted(rng.choice(len(dl), size=min(a.n, len(dl)), replace=False).tolist())
    items = [dl[i] for i in pick]
    n = len(items)
    tv = ImageFolder(str(root))
    tv_index = {p: i for i, (p, _) in enumerate(tv.samples)}
    tv_pick = [tv_index[it["image"]] for it in items]
    torch.set_num_threads(1)
    configs = []
    for train in (True, False):
        ours = (train_transforms if train else eval_transforms)(image_size=a.image_size, channels=a.channels)
        theirs = _torchvision_chain(train, a.image_size, a.channels)
        tvds = ImageFolder(str(root), transform=theirs)
        tvds.samples = tv.samples  # same file list, no rescan
        for w in a.workers:
            configs.append(
                {
                    "chain": "train" if train else "eval",
                    "workers": w,
                    "pgnm_monai": lambda w=w, ours=ours: monai.data.DataLoader(
                        monai.data.Dataset(items, transform=ours), batch_size=a.batch_size, num_workers=w
                    ),
                    "torchvision": lambda w=w, tvds=tvds: DataLoader(
                        Subset(tvds, tv_pick), batch_size=a.batch_size, num_workers=w
                    ),
                    "rates": {"pgnm_monai": [], "torchvision": []},
                }
            )
    # one interleaved run: every round measures each configuration's two loaders back to back, in alternating
    # order, so drifts in machine load hit both sides of a ratio alike
    with meta_tracking(False):  # as the bundles run the chains (track_meta: false)
        for r in range(a.warmup + a.rounds):
            for cfg in configs:
                order = ("pgnm_monai", "torchvision") if r % 2 == 0 else ("torchvision", "pgnm_monai")
                for side in order:
                    rate = measure(cfg[side](), n)
                    if r >= a.warmup:
                        cfg["rates"][side].append(rate)
    rows = []
    for cfg in configs:
        ours_r, theirs_r = (np.array(cfg["rates"][side]) for side in ("pgnm_monai", "torchvision"))
        ratios = ours_r / theirs_r
        rows.append(
            {
                "chain": cfg["chain"],
                "workers": cfg["workers"],
                "pgnm_monai": float(np.median(ours_r)),
                "torchvision": float(np.median(theirs_r)),
                "ratio": float(np.median(ratios)),
                "ratio_min": float(ratios.min()),
                "ratio_max": float(ratios.max()),
            }
        )
    print(
        f"MedNIST loader throughput: n={n} images, {a.image_size} px, {a.channels} channel(s), batch {a.batch_size}, "
        f"{a.rounds} interleaved rounds (+{a.warmup} warm-up); medians, ratio range over rounds"
    )
    print(f"{'chain':<6} {'workers':>7} {'pgnm_monai img/s':>17} {'torchvision img/s':>18} {'ratio':>6} {'range':>12}")
    for r in rows:
        rng_s = f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}"
        print(
            f"{r['chain']:<6} {r['workers']:>7} {r['pgnm_monai']:>17.0f} {r['torchvision']:>18.0f} "
            f"{r['ratio']:>6.2f} {rng_s:>12}"
        )
    return rows


if __name__ == "__main__":
    main()
