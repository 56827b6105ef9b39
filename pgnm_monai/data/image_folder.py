"""A generic image-folder source: ``<root>/<split>/<class>/*`` or ``<root>/<class>/*`` plus a seeded split.

Split folders are recognised by name (case-insensitive): ``train``/``training``, ``val``/``valid``/
``validation``, ``test``/``testing``; two folders naming the same split are an error. Splits that come from
folders are respected exactly: with only train and test folders, ``val`` is carved out of train (seeded,
stratified) and nothing of train ever lands in test; with no split folders the whole tree is split
(``fractions``). A split made here can be saved with ``split_file`` and is re-read from it afterwards (a
split file that moves an image out of its split folder is an error).

One label map for every split: the class folders of all splits (sorted), or the user's ``class_map`` JSON.
Class folders whose names differ only in case (``Glioma`` / ``glioma``) are an error, as is a val/test class
folder with no train counterpart (without ``class_map``) or a class outside the declared ``class_map``; the
message names the folder, the split and the class. Entries with an image suffix that are not image files
(a text file named ``x.png``, a FIFO, a folder) are skipped with a warning naming them
(:func:`pgnm_monai.data.image_files.usable_image_files`).

``drop_cross_split_duplicates`` removes from val every image whose pixels (decoded, hashed) also appear in
train, and from test every image also in train or val, e.g. the 216 Testing images of the brain-tumour MRI
set that repeat Training images.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

from pgnm_monai.atomic_files import atomic_write_csv
from pgnm_monai.data.image_files import IMAGE_SUFFIXES, usable_image_files
from pgnm_monai.data.registry import register_kind
from pgnm_monai.data.schema import MODALITIES, Datalist, check_class_spelling, load_class_map, make_item, save_class_map
from pgnm_monai.data.utils import DEFAULT_FRACTIONS, pixel_hash, read_csv, require_folder, split_by_group

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

Row = tuple[str, str, str]  # (image path, class name, split)


def list_class_folders(root: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, list[str]]:
    """``{class name: sorted image paths}`` of the class folders under ``root``.

    Entries with one of ``suffixes`` that are not image files are skipped with one warning naming them; a
    class folder left without an image is an error.
    """
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"image folder {root} holds no class folder; expected <root>/<class>/<image files>")
    candidates = {d: sorted(os.fspath(f) for f in d.iterdir() if f.suffix.lower() in suffixes) for d in classes}
    usable = set(usable_image_files([f for fs in candidates.values() for f in fs], f"image folder {root}"))
    out = {}
    for d, fs in candidates.items():
        files = [f for f in fs if f in usable]
        if not files:
            raise ValueError(f"class folder {d} holds no image file (expected suffixes {suffixes})")
        out[d.name] = files
    return out


def image_pixel_hash(path: str) -> str:
    """Hash of the decoded pixels of an image file (pixel-identical files hash equal).

    Remembered per process for the file's (path, size, modification time): a process that loads the same tree
    again (e.g. the protocol's fine-tunes, each reading its splits) decodes each image once; a changed file is
    decoded again.
    """
    st = os.stat(path)
    return _pixel_hash(os.fspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=1 << 18)
def _pixel_hash(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001 (size and time key the cache)
    from pgnm_monai.data.io import _read_pil

    arr, _ = _read_pil(path)
    return pixel_hash(arr)


@register_kind("image_folder")
def load_image_folder(
    dataset_dir: str | os.PathLike,
    split: str = "train",
    seed: int = 0,
    modality: str = "other",
    anatomy: str = "unknown",
    split_file: str | None = None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    drop_cross_split_duplicates: bool = False,
    class_map: str | None = None,
) -> Datalist:
    """Load one split of an image-folder tree (see the module docstring).

    Args:
        modality, anatomy: given to every item (one of :data:`~pgnm_monai.data.schema.MODALITIES`).
        split_file: CSV (``path,label_name,split``) to save the split made here and to re-read later.
        fractions: train/val/test fractions for the split made here.
        drop_cross_split_duplicates: drop val/test images pixel-identical to an earlier split's image.
        class_map: class map JSON (:func:`~pgnm_monai.data.schema.save_class_map`): read when it exists (its
            order is the class index), else written with the classes found.
    """
    root = require_folder(dataset_dir, "image folder root")
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"split must be one of train/val/test/all, got {split!r}")
    if modality not in MODALITIES:
        raise ValueError(f"modality {modality!r} is not one of {MODALITIES}")
    split_dirs = _split_folders(root)
    rows: list[Row] = []
    if split_dirs:
        for s, d in split_dirs.items():
            rows += [(f, c, s) for c, fs in list_class_folders(d).items() for f in fs]
    else:
        rows = [(f, c, "") for c, fs in list_class_folders(root).items() for f in fs]
    class_names = _class_names(root, rows, class_map)
    if not split_dirs or ("val" not in split_dirs and "train" in split_dirs):
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


def _split_folders(root: Path) -> dict[str, Path]:
    """``{split: folder}`` of the split folders under ``root``; two folders for one split are an error."""
    out: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        s = SPLIT_ALIASES.get(p.name.lower())
        if s is None or not p.is_dir():
            continue
        if s in out:
            raise ValueError(f"image folder {root}: folders {out[s].name!r} and {p.name!r} both name split {s!r}")
        out[s] = p
    return out


def _class_names(root: Path, rows: list[Row], class_map: str | None) -> list[str]:
    """The one label map of the tree (module docstring); errors name the folder, split and class."""
    where: dict[str, str] = {}
    for p, c, s in rows:
        where.setdefault(c, f"folder {os.path.dirname(p)}" + (f", split {s!r}" if s else ""))
    check_class_spelling(where, f"image folder {root}")
    if class_map and os.path.isfile(class_map):
        names = load_class_map(class_map)
        unknown = [c for c in where if c not in names]
        if unknown:
            c = unknown[0]
            raise ValueError(
                f"image folder {root}: class {c!r} ({where[c]}) is not in the class map {class_map} ({names})"
            )
        return names
    names = sorted(where)
    train = {c for _, c, s in rows if s == "train"}
    extra = sorted({c for _, c, s in rows if s in ("val", "test") and c not in train}) if train else []
    if extra:
        c = extra[0]
        raise ValueError(
            f"image folder {root}: class {c!r} ({where[c]}) has no class folder in split 'train'"
            f" (train classes: {sorted(train)}); rename or remove it, or declare every class with class_map"
        )
    if class_map:
        save_class_map(class_map, names, dataset="image_folder", root=os.fspath(root))
    return names


def _drop_cross_split(rows: list[Row]) -> tuple[list[Row], list[str]]:
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


def _assign(rows: list[Row], class_names, split_file, fractions, seed, whole: bool) -> list[Row]:
    """Give every row a split: from ``split_file`` when it exists, else a seeded stratified split (saved).

    With split folders (``whole=False``) only the train folder is split, into train and val.
    """
    sf = Path(split_file) if split_file else None
    if sf is not None and sf.is_file():
        return _read_split_file(sf, rows, whole)
    pool = [i for i, r in enumerate(rows) if whole or r[2] == "train"]
    fr = fractions if whole else (fractions[0], fractions[1], 0.0)
    new = split_by_group([rows[i][0] for i in pool], [class_names.index(rows[i][1]) for i in pool], fr, seed)
    if not whole:  # split_by_group may still send a group of a small stratum to test: it stays in train
        new = ["train" if s == "test" else s for s in new]
    out = list(rows)
    for i, s in zip(pool, new, strict=True):
        out[i] = (rows[i][0], rows[i][1], s)
    if sf is not None:
        _check_utf8_names(sf, out)
        atomic_write_csv(sf, ["path", "label_name", "split"], out)
    return out


def _check_utf8_names(sf: Path, rows: list[Row]) -> None:
    """Refuse, naming the first such file, file names that are not valid UTF-8 (the split file is UTF-8 text)."""
    for p, _, _ in rows:
        try:
            p.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(p).decode("utf-8", errors="backslashreplace")
            raise ValueError(
                f"split file {sf} cannot record the file {shown}: its name is not valid UTF-8; rename it (e.g. "
                "with convmv), or leave split_file unset"
            ) from None


def _read_split_file(sf: Path, rows: list[Row], whole: bool) -> list[Row]:
    """Rows with the splits saved in ``sf``; repeats, contradictions and moves out of a split folder are errors."""
    header, lines = read_csv(sf, "split file")
    if not {"path", "split"} <= set(header):
        raise ValueError(f"split file {sf}: expected columns path,label_name,split, got {header}")
    saved: dict[str, tuple[int, str]] = {}
    repeats = []
    for line, r in lines:
        p, s = r["path"], r["split"]
        if s not in ("train", "val", "test"):
            raise ValueError(f"split file {sf}, line {line}: field 'split' is {s!r}, expected train, val or test")
        if p in saved and saved[p][1] != s:
            raise ValueError(
                f"split file {sf}: {p} is in split {saved[p][1]!r} on line {saved[p][0]} and {s!r} on line {line}"
            )
        if p in saved:
            repeats.append(f"{p} (lines {saved[p][0]} and {line})")
        saved.setdefault(p, (line, s))
    if repeats:
        warnings.warn(f"split file {sf}: rows listed twice, used once: {repeats[:5]}", UserWarning, stacklevel=3)
    missing = [p for p, _, _ in rows if p not in saved]
    if missing:
        raise ValueError(f"split file {sf} does not list {len(missing)} image(s), e.g. {missing[0]}")
    out = []
    for p, c, folder in rows:
        line, s = saved[p]
        if not whole and (s != folder and not (folder == "train" and s == "val")):
            raise ValueError(
                f"split file {sf}, line {line}: {p} is in the {folder!r} split folder but the file puts it in"
                f" split {s!r}; splits that come from folders are kept (delete the split file to re-split)"
            )
        out.append((p, c, s))
    return out
