"""A generic image-folder source: ``<root>/<split>/<class>/*`` or ``<root>/<class>/*`` plus a seeded split.

Split folders are recognised by name (case-insensitive): ``train``/``training``, ``val``/``valid``/
``validation``, ``test``/``testing``. With only train and test folders, ``val`` is carved out of train
(seeded, stratified); with no split folders the whole tree is split (``fractions``). A split made here can
be saved with ``split_file`` and is re-read from it afterwards. ``drop_cross_split_duplicates`` removes
from val every image whose pixels (decoded, hashed) also appear in train, and from test every image also in
train or val, e.g. the 216 Testing images of the brain-tumour MRI set that repeat Training images.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from pgnm_monai.data.io import IMAGE_SUFFIXES
from pgnm_monai.data.schema import MODALITIES, Datalist, make_item
from pgnm_monai.data.utils import DEFAULT_FRACTIONS, atomic_write_csv, pixel_hash, split_by_group

__all__ = ["SPLIT_ALIASES", "load_image_folder", "list_class_folders", "image_pixel_hash"]

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def list_class_folders(root: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, list[str]]:
    """``{class name: sorted image paths}`` of the class folders under ``root``; empty folders are errors."""
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"image folder {root} holds no class folder; expected <root>/<class>/<image files>")
    out = {}
    for d in classes:
        files = sorted(os.fspath(f) for f in d.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
        if not files:
            raise ValueError(f"class folder {d} holds no image file (expected suffixes {suffixes})")
        out[d.name] = files
    return out


def image_pixel_hash(path: str) -> str:
    """Hash of the decoded pixels of an image file (pixel-identical files hash equal)."""
    from pgnm_monai.data.io import _read_pil

    arr, _ = _read_pil(path)
    return pixel_hash(arr)


def load_image_folder(
    dataset_dir: str | os.PathLike,
    split: str = "train",
    seed: int = 0,
    modality: str = "other",
    anatomy: str = "unknown",
    split_file: str | None = None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    drop_cross_split_duplicates: bool = False,
) -> Datalist:
    """Load one split of an image-folder tree (see the module docstring).

    Args:
        modality, anatomy: given to every item (one of :data:`~pgnm_monai.data.schema.MODALITIES`).
        split_file: CSV (``path,label_name,split``) to save the split made here and to re-read later.
        fractions: train/val/test fractions for the split made here.
        drop_cross_split_duplicates: drop val/test images pixel-identical to an earlier split's image.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder root {root} does not exist")
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"split must be one of train/val/test/all, got {split!r}")
    if modality not in MODALITIES:
        raise ValueError(f"modality {modality!r} is not one of {MODALITIES}")
    split_dirs = {
        SPLIT_ALIASES[p.name.lower()]: p
        for p in sorted(root.iterdir())
        if p.is_dir() and p.name.lower() in SPLIT_ALIASES
    }
    rows: list[tuple[str, str, str]] = []  # (path, class, split)
    if split_dirs:
        for s, d in split_dirs.items():
            rows += [(f, c, s) for c, fs in list_class_folders(d).items() for f in fs]
    else:
        rows = [(f, c, "") for c, fs in list_class_folders(root).items() for f in fs]
    class_names = sorted({c for _, c, _ in rows})
    needs_split = not split_dirs or ("val" not in split_dirs and "train" in split_dirs)
    if needs_split:
        rows = _assign(rows, class_names, split_file, fractions, seed, whole=not split_dirs)
    report: dict = {"root": os.fspath(root), "layout": "split folders" if split_dirs else "class folders"}
    if drop_cross_split_duplicates:
        rows, dropped = _drop_cross_split(rows)
        report["cross_split_duplicates"] = dropped
    items = [
        make_item(p, class_names.index(c), c, modality, anatomy, os.path.relpath(p, root))
        for p, c, s in rows
        if split == "all" or s == split
    ]
    return Datalist(items, class_names, kind="image_folder", split=split, report=report)


def _drop_cross_split(rows):
    """Drop val images pixel-identical to a train image, and test images identical to a train/val one."""
    hashes = {r[0]: image_pixel_hash(r[0]) for r in rows}
    seen: set[str] = set()
    kept, dropped = [], []
    for s in ("train", "val", "test"):
        part = [r for r in rows if r[2] == s]
        for r in part:
            (dropped if s != "train" and hashes[r[0]] in seen else kept).append(r)
        seen |= {hashes[r[0]] for r in part}
    return kept, [r[0] for r in dropped]


def _assign(rows, class_names, split_file, fractions, seed, whole):
    """Give every row a split: from ``split_file`` when it exists, else a seeded stratified split (saved)."""
    sf = Path(split_file) if split_file else None
    if sf is not None and sf.is_file():
        with open(sf, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"path", "split"} <= set(reader.fieldnames):
                raise ValueError(f"split file {sf}: expected columns path,label_name,split, got {reader.fieldnames}")
            saved = {r["path"]: r["split"] for r in reader}
        missing = [p for p, _, _ in rows if p not in saved]
        if missing:
            raise ValueError(f"split file {sf} does not list {len(missing)} image(s), e.g. {missing[0]}")
        return [(p, c, saved[p]) for p, c, _ in rows]
    pool = [i for i, r in enumerate(rows) if whole or r[2] == "train"]
    fr = fractions if whole else (fractions[0], fractions[1], 0.0)
    new = split_by_group([rows[i][0] for i in pool], [class_names.index(rows[i][1]) for i in pool], fr, seed)
    out = list(rows)
    for i, s in zip(pool, new, strict=True):
        out[i] = (rows[i][0], rows[i][1], s)
    if sf is not None:
        atomic_write_csv(sf, ["path", "label_name", "split"], out)
    return out
