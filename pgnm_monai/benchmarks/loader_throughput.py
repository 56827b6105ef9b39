"""Loader throughput on MedNIST: this package's MONAI chains vs torchvision ``ImageFolder`` + equivalent transforms.

Usage::

    python -m pgnm_monai.benchmarks.loader_throughput [--mednist PATH] [--n 2000] [--image-size 64]
        [--channels 3] [--workers 0 2] [--batch-size 32] [--cache-dir DIR]

``PATH`` is ``MedNIST.tar.gz`` (extracted once into the cache dir) or an unpacked ``MedNIST`` folder;
default ``<shared data>/mednist/MedNIST.tar.gz``. Both loaders read the same ``n`` files (a seeded sample)
and apply the same operations: train (random resized crop + flip + normalise) and eval (resize short side
+ centre crop + normalise). Prints images/s per loader, chain and worker count.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from pgnm_monai.data import load_datalist
from pgnm_monai.data.utils import shared_data_dir
from pgnm_monai.transforms import PAPER_MEAN, PAPER_STD, eval_transforms, train_transforms

__all__ = ["main", "measure"]


def _torchvision_chain(train: bool, size: int, channels: int):
    from torchvision import transforms as T

    ops = [T.Grayscale(num_output_channels=channels)]
    if train:
        ops += [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    else:
        ops += [T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size)]
    ops += [T.ToTensor(), T.Normalize([PAPER_MEAN] * channels, [PAPER_STD] * channels)]
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
    rows = []
    for train in (True, False):
        chain = "train" if train else "eval"
        ours = (train_transforms if train else eval_transforms)(image_size=a.image_size, channels=a.channels)
        theirs = _torchvision_chain(train, a.image_size, a.channels)
        for w in a.workers:
            ds = monai.data.Dataset(items, transform=ours)
            ldr = monai.data.DataLoader(ds, batch_size=a.batch_size, num_workers=w, shuffle=False)
            r1 = measure(ldr, n)
            tvds = ImageFolder(str(root), transform=theirs)
            tvds.samples = tv.samples  # same file list, no rescan
            tl = DataLoader(Subset(tvds, tv_pick), batch_size=a.batch_size, num_workers=w, shuffle=False)
            r2 = measure(tl, n)
            rows.append({"chain": chain, "workers": w, "pgnm_monai": r1, "torchvision": r2})
    print(f"MedNIST loader throughput: n={n} images, {a.image_size} px, {a.channels} channel(s), batch {a.batch_size}")
    print(f"{'chain':<6} {'workers':>7} {'pgnm_monai img/s':>17} {'torchvision img/s':>18} {'ratio':>6}")
    for r in rows:
        ratio = r["pgnm_monai"] / r["torchvision"]
        print(f"{r['chain']:<6} {r['workers']:>7} {r['pgnm_monai']:>17.0f} {r['torchvision']:>18.0f} {ratio:>6.2f}")
    return rows


if __name__ == "__main__":
    main()
