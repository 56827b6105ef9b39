"""RadImageNet in both distributed layouts, with a stable saved class map and a blank/duplicate report.

Layouts (``layout="auto"`` picks by what is on disk):

- ``"original"``: ``radiology_ai/CT|MR/<anatomy>/<label>/*.png`` and ``radiology_ai/US/<label>/*.png`` with
  the split CSVs ``RadiologyAI_{train,val,test}.csv`` (columns ``filename``, ``label``; ``filename``
  relative to the dataset root or to ``radiology_ai``) beside ``radiology_ai``. Without the CSVs the
  files are split here (seeded, stratified).
- ``"refined"`` (Refined-RadImageNet): ``{train,val,test}/CT__<anatomy>__<label>/*``, ``US__<label>/*``.

Class names are ``<modality>__<anatomy>__<label>`` (``US__<label>`` for US) in both layouts, sorted; with
``class_map`` the names come from that JSON (:func:`~pgnm_monai.data.schema.save_class_map`), which is
written when it does not exist yet, so the class index stays the same across runs and checkpoints.
Class names that differ only in case, and an image listed in two split CSVs, are errors naming both; entries
with an image suffix that are not image files are skipped with a warning naming them.
With ``check_defects`` every image of the split is decoded once: blank (constant) images, exact pixel
duplicates and unreadable files are reported in ``report`` (and a warning); ``drop_defective`` drops them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from pgnm_monai.data.image_files import IMAGE_SUFFIXES, usable_image_files
from pgnm_monai.data.io import _read_pil
from pgnm_monai.data.registry import register_kind
from pgnm_monai.data.schema import (
    Datalist,
    check_class_spelling,
    class_index,
    load_class_map,
    make_item,
    save_class_map,
)
from pgnm_monai.data.utils import DEFAULT_FRACTIONS, pixel_hash, read_csv, require_folder, split_by_group

__all__ = ["RADIMAGENET_MODALITIES", "load_radimagenet", "parse_class_name", "scan_defects"]

RADIMAGENET_MODALITIES = ("CT", "MR", "US")
_CSV = "RadiologyAI_{}.csv"


def parse_class_name(name: str) -> tuple[str, str, str]:
    """Split a class name: ``"CT__abdomen__cyst"`` -> (CT, abdomen, cyst); ``"US__x"`` -> (US, unknown, x)."""
    parts = name.split("__")
    if parts[0] not in RADIMAGENET_MODALITIES or len(parts) != (2 if parts[0] == "US" else 3):
        raise ValueError(f"RadImageNet class folder {name!r}: expected <CT|MR>__<anatomy>__<label> or US__<label>")
    return (parts[0], "unknown", parts[1]) if parts[0] == "US" else (parts[0], parts[1], parts[2])


def _class_from_relpath(rel: str) -> str:
    parts = Path(rel).parts
    if parts and parts[0] == "radiology_ai":
        parts = parts[1:]
    if len(parts) >= 3 and parts[0] == "US":
        return f"US__{parts[1]}"
    if len(parts) >= 4 and parts[0] in ("CT", "MR"):
        return f"{parts[0]}__{parts[1]}__{parts[2]}"
    raise ValueError(
        f"RadImageNet file {rel!r}: expected radiology_ai/<CT|MR>/<anatomy>/<label>/<file> or US/<label>/<file>"
    )


def _detect(root: Path) -> str:
    if (root / "radiology_ai").is_dir() or any((root / m).is_dir() for m in RADIMAGENET_MODALITIES):
        return "original"
    if any((root / s).is_dir() for s in ("train", "val", "test")):
        return "refined"
    raise ValueError(
        f"RadImageNet root {root}: neither radiology_ai/ (original layout) nor train|val|test/ (refined) found"
    )


def _scan_original(root: Path, seed: int, fractions) -> tuple[list[tuple[str, str, str]], dict]:
    base = root / "radiology_ai" if (root / "radiology_ai").is_dir() else root
    files: list[tuple[str, str]] = []
    for mod in RADIMAGENET_MODALITIES:
        mdir = base / mod
        if not mdir.is_dir():
            continue
        depth = 1 if mod == "US" else 2
        for cdir in sorted(p for p in mdir.glob("/".join(["*"] * depth)) if p.is_dir()):
            imgs = _images(cdir)
            cname = _class_from_relpath(os.path.relpath(cdir / "x", base.parent if base != root else root))
            files += [(f, cname) for f in imgs]
    if not files:
        raise ValueError(f"RadImageNet root {root}: no image under {base}/<CT|MR|US>/")
    csvs = {s: (base.parent if base != root else root) / _CSV.format(s) for s in ("train", "val", "test")}
    if all(p.is_file() for p in csvs.values()):
        by_path = {os.path.normpath(p): c for p, c in files}
        rows, listed = [], {}
        for s, p in csvs.items():
            for f, c, line in _read_split_csv(p, base, by_path):
                if f in listed:
                    raise ValueError(
                        f"RadImageNet split CSVs list {f} twice: {listed[f][0]}, line {listed[f][1]}"
                        f" and {p}, line {line}; each image belongs to one split"
                    )
                listed[f] = (p, line)
                rows.append((f, c, s))
        return rows, {"split_source": "csv"}
    names = sorted({c for _, c in files})
    splits = split_by_group([f for f, _ in files], [names.index(c) for _, c in files], fractions, seed)
    return [(f, c, s) for (f, c), s in zip(files, splits, strict=True)], {"split_source": f"seeded (seed={seed})"}


def _read_split_csv(path: Path, base: Path, by_path: dict[str, str]) -> list[tuple[str, str, int]]:
    """``(file, class, line)`` of the rows of one split CSV; a file listed twice in it is used once (warning)."""
    header, lines = read_csv(path, "RadImageNet split CSV")
    if not {"filename", "label"} <= set(header):
        raise ValueError(f"RadImageNet split CSV {path}: expected columns filename,label, got {header}")
    out, seen, repeats = [], {}, []
    for i, r in lines:
        fn = r["filename"]
        cands = [os.path.normpath(base.parent / fn), os.path.normpath(base / fn)]
        hit = next((c for c in cands if c in by_path), None)
        if hit is None:
            raise FileNotFoundError(f"RadImageNet split CSV {path}, line {i}: file {fn!r} not found under {base}")
        if hit in seen:
            repeats.append(f"{fn} (lines {seen[hit]} and {i})")
            continue
        seen[hit] = i
        out.append((hit, by_path[hit], i))
    if repeats:
        warnings.warn(f"RadImageNet split CSV {path}: rows listed twice, used once: {repeats[:5]}", stacklevel=4)
    return out


def _images(cdir: Path) -> list[str]:
    """The image files of a class folder (entries that are not image files skipped with a warning)."""
    cands = sorted(os.fspath(f) for f in cdir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    imgs = usable_image_files(cands, f"RadImageNet class folder {cdir}")
    if not imgs:
        raise ValueError(f"RadImageNet class folder {cdir} holds no image file")
    return imgs


def _scan_refined(root: Path) -> list[tuple[str, str, str]]:
    rows = []
    for s in ("train", "val", "test"):
        sdir = root / s
        if not sdir.is_dir():
            continue
        for cdir in sorted(p for p in sdir.iterdir() if p.is_dir()):
            parse_class_name(cdir.name)
            rows += [(f, cdir.name, s) for f in _images(cdir)]
    return rows


def scan_defects(paths: list[str]) -> dict[str, list]:
    """Decode each image once; return ``blank`` (constant) paths, ``duplicates`` ([first, repeat] pairs of
    pixel-identical images) and ``unreadable`` ([path, reason])."""
    seen: dict[str, str] = {}
    blank, dups, bad = [], [], []
    for p in paths:
        try:
            arr, _ = _read_pil(p)
        except ValueError as e:
            bad.append([p, str(e)])
            continue
        if arr.size == 0 or np.ptp(arr) == 0:
            blank.append(p)
        h = pixel_hash(arr)
        if h in seen:
            dups.append([seen[h], p])
        else:
            seen[h] = p
    return {"blank": blank, "duplicates": dups, "unreadable": bad}


@register_kind("radimagenet")
def load_radimagenet(
    dataset_dir: str | os.PathLike,
    split: str = "train",
    seed: int = 0,
    layout: str = "auto",
    class_map: str | None = None,
    check_defects: bool = True,
    drop_defective: bool = False,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> Datalist:
    """Load one split of RadImageNet (see the module docstring).

    Args:
        layout: ``"auto"``, ``"original"`` or ``"refined"``.
        class_map: class map JSON path: read when it exists (a class not in it is an error), else written.
        check_defects: decode every image of the split to report blank, duplicate and unreadable images.
        drop_defective: drop the reported images (blank, unreadable, and every repeat after the first).
        fractions: split fractions when the original layout comes without its CSVs.
    """
    root = require_folder(dataset_dir, "RadImageNet root")
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"split must be one of train/val/test/all, got {split!r}")
    if layout == "auto":
        layout = _detect(root)
    if layout == "original":
        rows, report = _scan_original(root, seed, fractions)
    elif layout == "refined":
        rows, report = _scan_refined(root), {"split_source": "folders"}
        if not rows:
            raise ValueError(f"RadImageNet root {root}: no image under train|val|test/<class>/")
    else:
        raise ValueError(f"layout must be 'auto', 'original' or 'refined', got {layout!r}")
    report["layout"] = layout
    where: dict[str, str] = {}
    for p, c, s in rows:
        where.setdefault(c, f"folder {os.path.dirname(p)}, split {s!r}")
    check_class_spelling(where, f"RadImageNet root {root}")
    found = sorted(where)
    if class_map and os.path.isfile(class_map):
        class_names = load_class_map(class_map)
        unknown = [c for c in found if c not in class_names]
        if unknown:
            raise ValueError(f"RadImageNet classes {unknown[:5]} are not in the class map {class_map}")
    else:
        class_names = found
        if class_map:
            save_class_map(class_map, class_names, dataset="radimagenet", layout=layout)
    index = class_index(class_names)
    rows = [r for r in rows if split == "all" or r[2] == split]
    if check_defects or drop_defective:
        defects = scan_defects([p for p, _, _ in rows])
        report.update(defects)
        n = {k: len(v) for k, v in defects.items()}
        if any(n.values()):
            warnings.warn(f"RadImageNet {split}: defective images found {n} (see Datalist.report)", stacklevel=2)
        if drop_defective:
            bad = set(defects["blank"]) | {p for p, _ in defects["unreadable"]} | {b for _, b in defects["duplicates"]}
            rows = [r for r in rows if r[0] not in bad]
            report["dropped"] = len(bad)
    items = []
    for p, c, _ in rows:
        mod, anat, _lab = parse_class_name(c)
        items.append(make_item(p, index[c], c, mod, anat, os.path.splitext(os.path.basename(p))[0]))
    return Datalist(items, class_names, kind="radimagenet", split=split, report=report)
