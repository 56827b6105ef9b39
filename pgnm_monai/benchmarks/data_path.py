"""The data path at RadImageNet scale: listing, decoding and augmentation on a generated RadImageNet-shaped tree.

Usage::

    python -m pgnm_monai.benchmarks.data_path --root /tmp/rin [--n 200000] [--size 64] [--classes 165]
        [--image-size 64] [--sample 2000] [--batch-size 128] [--workers 0 1 2] [--rounds 5] [--warmup 1]
        [--list-rounds 3] [--seed 0] [--processes 2]

``--root`` gets (or, made with the same settings, keeps) a seeded tree of ``n`` grey ``size``-px PNGs that look
like scans, in ``classes`` of RadImageNet's 165 classes (long-tailed sizes), written by ``processes`` processes:
``original/`` in RadImageNet's layout (``radiology_ai/CT|MR/<anatomy>/<label>/``, ``radiology_ai/US/<label>/``,
split CSVs), ``refined/`` in the Refined one (``{train,val,test}/<class>/``, hard links to the same files).
Measured, torch on one thread: the train split's listing (seconds; ``tracemalloc`` MiB, peak and kept by the
result; ``list-rounds`` 0: none) by ``load_datalist`` with and without its default decode of every image,
``os.walk`` and torchvision's ``ImageFolder``; then images/s over ``sample`` training images of decoding alone
(Pillow, ``torchvision.io``, the chain's reader), of the bundle's training chain (``train_transforms``) through
``DataLoader`` with each ``workers`` count and ``ThreadDataLoader``, and of the chain fed from arrays decoded once
(the bundle's ``CacheDataset``; a uint8 memmap). Every round times each variant, in a rotated order; printed:
medians, ranges over rounds, the load average before and after.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import shutil
import time
import tracemalloc
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch

from pgnm_monai.data import cached_dataset, load_datalist
from pgnm_monai.transforms import meta_tracking, train_transforms

__all__ = ["class_names", "main", "make_tree", "measure_listing", "measure_throughput"]

# RadImageNet's 165 classes: CT and MR by anatomy (labels per anatomy), US (15 labels) by label; names made up
_ANATOMY = {"CT": {"abd": 30, "chest": 16, "head": 10},
            "MR": {"abd": 16, "af": 14, "brain": 10, "hip": 14, "knee": 16, "shoulder": 14, "spine": 10}}  # fmt: skip
_SPLITS = (("train", 0.75), ("val", 0.10), ("test", 0.15))
_VERSION = 1  # of the generator: a tree made by another version is not reused


def class_names(classes: int = 165) -> list[str]:
    """``classes`` of the 165 class names (``<CT|MR>__<anatomy>__<label>``, ``US__<label>``), evenly spread."""
    full = [f"{m}__{a}__{a}{i:02d}" for m, anat in _ANATOMY.items() for a, k in anat.items() for i in range(k)]
    full += [f"US__us{i:02d}" for i in range(15)]
    if not 1 <= classes <= len(full):
        raise ValueError(f"classes must be 1-{len(full)}, got {classes}")
    return [full[i] for i in np.linspace(0, len(full) - 1, classes).round().astype(int)]


def _relpath(name: str, i: int) -> str:
    """The original layout's path of image ``i`` of class ``name``."""
    return os.path.join("radiology_ai", *name.split("__"), f"{i:07d}.png")


def _image(i: int, cls: int, size: int, seed: int) -> np.ndarray:
    """A grey uint8 image that looks like a scan: textured body, bright structures placed by class, noise."""
    from PIL import Image

    rng, where = np.random.default_rng([seed, i]), np.random.default_rng([seed, 10**9 + cls])
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    a, b, cx, cy = rng.uniform(0.6, 0.9, 2).tolist() + rng.uniform(-0.1, 0.1, 2).tolist()
    body = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 < 1
    texture = Image.fromarray(rng.random((8, 8), dtype=np.float32)).resize((size, size), Image.Resampling.BICUBIC)
    img = body * (50 + 90 * np.asarray(texture))
    for px, py, r, v in where.uniform((-0.5, -0.5, 0.05, 40), (0.5, 0.5, 0.2, 120), (4, 4)):
        px, py = px + rng.normal(0, 0.03), py + rng.normal(0, 0.03)
        img += v * np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * r * r))
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def _write(job: tuple) -> tuple[int, int]:
    """Write one chunk of images (original layout) and their Refined hard links; ``(files, bytes)``."""
    from PIL import Image

    root, size, seed, rows = job
    nbytes = 0
    for i, cls, name, split in rows:
        path = os.path.join(root, "original", _relpath(name, i))
        Image.fromarray(_image(i, cls, size, seed)).save(path)
        nbytes += os.path.getsize(path)
        os.link(path, os.path.join(root, "refined", split, name, os.path.basename(path)))
    return len(rows), nbytes


def make_tree(
    root: str | os.PathLike, n: int = 200_000, size: int = 64, classes: int = 165, seed: int = 0, processes: int = 2
) -> dict:
    """Write the tree (module docstring) into ``root``, or keep the one there; its manifest. A folder holding
    other files or another tree is refused (only the remains of an interrupted generation are deleted)."""
    root = Path(root)
    settings = {"version": _VERSION, "n": n, "size": size, "classes": classes, "seed": seed}
    manifest, partial = root / "manifest.json", root / ".partial"
    if manifest.is_file():
        found = json.loads(manifest.read_text())
        if {k: found.get(k) for k in settings} != settings:
            raise SystemExit(f"{root} holds a tree made with {found}; pass those settings or another --root")
        return {**found, "reused": True}
    if root.is_dir() and any(root.iterdir()) and not partial.exists():
        raise SystemExit(f"{root} holds other files and no generated tree; pass a new or empty folder as --root")
    for sub in ("original", "refined"):
        shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    partial.touch()
    t0, names, rng = time.perf_counter(), class_names(classes), np.random.default_rng(seed)
    weights = rng.permutation(1.0 / np.arange(1, classes + 1) ** 0.8)  # long-tailed class sizes
    rest = rng.choice(classes, max(n - classes, 0), p=weights / weights.sum())
    cls = np.concatenate([np.arange(min(n, classes)), rest])
    u = rng.random(n)
    u[:classes] = 0.0  # each class's first image is a training image
    split = np.searchsorted(np.cumsum([f for _, f in _SPLITS]), u, side="right").tolist()
    rows = [(i, c, names[c], _SPLITS[s][0]) for i, (c, s) in enumerate(zip(cls.tolist(), split, strict=True))]
    for name, s in {r[2:] for r in rows}:  # only folders that get images (a loader refuses an empty class folder)
        os.makedirs(root / "original" / os.path.dirname(_relpath(name, 0)), exist_ok=True)
        os.makedirs(root / "refined" / s / name, exist_ok=True)
    for s, _ in _SPLITS:
        lines = [f"{_relpath(name, i)},{name}\n" for i, _, name, sp in rows if sp == s]
        (root / "original" / f"RadiologyAI_{s}.csv").write_text("filename,label\n" + "".join(lines))
    jobs = [(str(root), size, seed, rows[k : k + 1000]) for k in range(0, n, 1000)]
    with mp.Pool(processes) as pool:
        done = list(pool.imap_unordered(_write, jobs))
    files, nbytes = (sum(d[k] for d in done) for k in (0, 1))
    out = {**settings, "files": files, "mean_bytes": nbytes / max(files, 1), "seconds": time.perf_counter() - t0}
    manifest.write_text(json.dumps(out, indent=1))
    partial.unlink()
    return {**out, "reused": False}


def _walk(top: str) -> list[str]:
    """Every ``.png`` under ``top``: a plain walk (``os.walk``, i.e. ``os.scandir``), the floor of any listing."""
    return [os.path.join(d, f) for d, _, files in os.walk(top) for f in files if f.endswith(".png")]


def _rounds(variants: dict[str, Callable[[], int]], rounds: int, warmup: int = 0) -> dict[str, list[float]]:
    """Seconds of each variant per round (after ``warmup`` untimed rounds), in an order rotated every round."""
    names, times = list(variants), {k: [] for k in variants}
    for r in range(warmup + rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            variants[name]()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def measure_listing(root: str | os.PathLike, rounds: int = 3) -> list[dict]:
    """Seconds (median, range) and Python MiB (peak, kept by the result) of each listing of the tree's train split."""
    from torchvision.datasets import ImageFolder

    orig, refined = Path(root) / "original", Path(root) / "refined"

    train = partial(load_datalist, "radimagenet", split="train")
    listings: dict[str, Callable[[], Sequence]] = {
        "load_datalist, original (default: decodes each image)": lambda: train(orig),
        "load_datalist, original, check_defects=False": lambda: train(orig, check_defects=False),
        "load_datalist, refined, check_defects=False": lambda: train(refined, check_defects=False),
        "os.walk (all splits)": lambda: _walk(str(orig / "radiology_ai")),
        "torchvision ImageFolder, refined train": lambda: ImageFolder(str(refined / "train")).samples,
    }
    items = {k: len(f()) for k, f in listings.items()}  # also warms the page cache
    times = _rounds(listings, rounds)
    rows = []
    for name, fn in listings.items():
        tracemalloc.start()
        out = fn()
        kept, peak = tracemalloc.get_traced_memory()  # kept: while the result is alive
        tracemalloc.stop()
        del out
        t = np.array(times[name])
        rows.append({"listing": name, "items": items[name], "median_s": float(np.median(t)), "min_s": float(t.min()),
                     "max_s": float(t.max()), "peak_mib": peak / 2**20, "kept_mib": kept / 2**20})  # fmt: skip
    return rows


class _ArrayItems(Sequence):
    """The items with ``image`` replaced by their row of a uint8 array (read when the item is)."""

    def __init__(self, items: Sequence[dict], images: np.ndarray) -> None:
        self.items, self.images = items, images

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return {**self.items[i], "image": np.array(self.images[i])}


def measure_throughput(
    items: Sequence[dict], image_size: int = 64, batch_size: int = 128, rounds: int = 5, warmup: int = 1,
    workers: Sequence[int] = (0, 1, 2), cache_dir: str | None = None
) -> list[dict]:  # fmt: skip
    """Images per second (median, range over rounds) of each way to decode or feed the training chain."""
    from monai.data import DataLoader, Dataset, ThreadDataLoader
    from PIL import Image
    from torchvision.io import decode_jpeg, decode_png, read_file

    from pgnm_monai.transforms.array import LoadMedicalImage

    paths, n = [it["image"] for it in items], len(items)
    chain, reader, wmax = train_transforms(image_size=image_size, channels=1), LoadMedicalImage(1), max(workers)

    def pil(p: str) -> np.ndarray:
        with Image.open(p) as im:
            return np.asarray(im)

    def jpeg(p: str) -> torch.Tensor:  # a JPEG copy (quality 90) in memory: what decode_jpeg (CPU or GPU) reads
        with Image.open(p) as im, io.BytesIO() as buf:
            im.save(buf, format="JPEG", quality=90)
            return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)

    jpegs, t0 = [jpeg(p) for p in paths], time.perf_counter()
    cache = cached_dataset(items, chain)  # the bundle's train#dataset: the chain's decoding, done once
    build = {"CacheDataset": time.perf_counter() - t0}
    t0, shape = time.perf_counter(), pil(paths[0]).shape
    mpath = Path(cache_dir or ".") / f"train{n}_{shape[0]}px_u8.npy"
    mpath.parent.mkdir(parents=True, exist_ok=True)
    mm = np.lib.format.open_memmap(mpath, mode="w+", dtype=np.uint8, shape=(n, *shape))
    for i, p in enumerate(paths):
        mm[i] = decode_png(read_file(p))[0].numpy()
    mm.flush()
    build["memmap"], mm = time.perf_counter() - t0, np.load(mpath, mmap_mode="r")
    if not torch.equal(reader(paths[0]), reader(np.array(mm[0]))):
        raise RuntimeError("the uint8 array does not give the file's pixels")

    def feed(ds, w: int, cls=DataLoader, **kw) -> Callable[[], int]:
        loader = cls(ds, batch_size=batch_size, shuffle=True, num_workers=w, persistent_workers=w > 0, **kw)
        return lambda: sum(int(b["image"].shape[0]) for b in loader)

    def each(fn: Callable) -> Callable[[], int]:
        return lambda: len([fn(p) for p in paths])

    variants = {
        "decode: Pillow": each(pil),
        "decode: torchvision.io.decode_png": each(lambda p: decode_png(read_file(p))),
        "decode: the chain's reader (LoadMedicalImage)": each(reader),
        "decode: torchvision.io.decode_jpeg, JPEG copies (CPU)": lambda: len([decode_jpeg(j) for j in jpegs]),
        **{f"train chain, DataLoader, {w} worker(s)": feed(Dataset(items, chain), w) for w in workers},
        "train chain, ThreadDataLoader (buffer thread)": feed(Dataset(items, chain), 0, ThreadDataLoader),
    }
    if wmax > 0:  # MONAI's thread workers (its random transforms are not thread-safe: timing only)
        threads = feed(Dataset(items, chain), wmax, ThreadDataLoader, use_thread_workers=True)
        variants[f"train chain, ThreadDataLoader, {wmax} thread workers"] = threads
    for w in sorted({0, wmax}):
        variants[f"cached: CacheDataset (bundle default), {w} worker(s)"] = feed(cache, w)
        variants[f"cached: uint8 memmap, {w} worker(s)"] = feed(Dataset(_ArrayItems(items, mm), chain), w)
    times = _rounds(variants, rounds, warmup)
    rates = {k: n / np.array(t) for k, t in times.items()}
    return [{"path": k, "img_s": float(np.median(r)), "min": float(r.min()), "max": float(r.max()),
             "build_s": next((s for b, s in build.items() if b in k), None)} for k, r in rates.items()]  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="folder of the generated tree (reused when it holds one)")
    ints = {"n": 200_000, "size": 64, "classes": 165, "image-size": 64, "sample": 2000, "batch-size": 128,
            "rounds": 5, "warmup": 1, "list-rounds": 3, "seed": 0, "processes": 2}  # fmt: skip
    for name, default in ints.items():  # the module docstring says what each is
        p.add_argument(f"--{name}", type=int, default=default, help="default: %(default)s")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    load = [os.getloadavg()]
    tree = make_tree(a.root, a.n, a.size, a.classes, a.seed, a.processes)
    print(f"tree {a.root}: {tree['files']} PNGs, {a.size} px grey, {tree['mean_bytes'] / 1024:.1f} KiB mean, "
          f"{a.classes} classes ({'kept' if tree['reused'] else 'written'}, {tree['seconds']:.0f} s)")  # fmt: skip
    listing = measure_listing(a.root, a.list_rounds) if a.list_rounds > 0 else []
    dl = load_datalist("radimagenet", Path(a.root) / "original", split="train", check_defects=False)
    pick = np.random.default_rng(a.seed).choice(len(dl), size=min(a.sample, len(dl)), replace=False)
    items = [dl[i] for i in sorted(pick.tolist())]
    with meta_tracking(False):  # as the bundles run the chains (track_meta: false)
        feed = measure_throughput(items, a.image_size, a.batch_size, a.rounds, a.warmup, a.workers, a.root + "/cache")
    cpu = [ln.split(":")[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")][:1]
    before, after = ("/".join(f"{x:.2f}" for x in la) for la in (load[0], os.getloadavg()))
    print(f"{os.cpu_count()}-core {''.join(cpu)} CPU, torch {torch.__version__}, 1 thread; load average (1/5/15 min) "
          f"before {before}, after {after}")  # fmt: skip
    if listing:
        print(f"\nlisting, {a.list_rounds} rounds: median s, range, Python MiB (tracemalloc: peak, kept by the result)")
        for r in listing:
            print(f"{r['listing']:<56} {r['items']:>8} {r['median_s']:>8.2f}s {r['min_s']:>7.2f}-{r['max_s']:<7.2f} "
                  f"{r['peak_mib']:>8.1f} {r['kept_mib']:>8.1f}")  # fmt: skip
    print(f"\nthroughput: {len(items)} train images, {a.size} px -> crop {a.image_size}, batch {a.batch_size}, "
          f"{a.rounds} rounds (+{a.warmup} warm-up): median img/s, range, one-off build s")  # fmt: skip
    for r in feed:
        built = f"{r['build_s']:.1f}" if r["build_s"] is not None else ""
        print(f"{r['path']:<56} {r['img_s']:>8.0f} {r['min']:>7.0f}-{r['max']:<7.0f} {built:>6}")
    return {"tree": tree, "listing": listing, "throughput": feed, "load": [before, after]}


if __name__ == "__main__":
    main()
