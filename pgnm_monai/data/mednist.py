"""MedNIST (the MONAI tutorial set) from ``MedNIST.tar.gz`` or an unpacked ``MedNIST/<class>/`` folder.

The tarball is extracted once into ``cache_dir`` (through a temporary folder renamed into place, so an
interrupted extraction leaves nothing half-written). Modality and anatomy come from the class name
(:data:`MEDNIST_CLASSES`). MedNIST has no official split: a seeded, stratified 70/15/15 split is made once
and saved as a CSV (``relpath,label_name,split``), then re-read on later calls, so every run sees the same
split. Byte-identical files are kept in the same split (grouped by MD5), so a repeat never crosses splits.
The class map is the sorted class folders found, the same for every split.
Entries with an image suffix that are not images are skipped with a warning naming them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from pgnm_monai.atomic_files import atomic_write_csv
from pgnm_monai.data.image_files import usable_image_files
from pgnm_monai.data.registry import register_kind
from pgnm_monai.data.schema import Datalist, make_item
from pgnm_monai.data.utils import DEFAULT_FRACTIONS, read_csv, require_folder, split_by_group

__all__ = ["MEDNIST_CLASSES", "default_cache_dir", "extract_mednist", "find_mednist_root", "load_mednist"]

# class -> (modality, anatomy)
MEDNIST_CLASSES: dict[str, tuple[str, str]] = {
    "AbdomenCT": ("CT", "abdomen"),
    "BreastMRI": ("MR", "breast"),
    "CXR": ("X-ray", "chest"),
    "ChestCT": ("CT", "chest"),
    "Hand": ("X-ray", "hand"),
    "HeadCT": ("CT", "head"),
}
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def default_cache_dir() -> Path:
    """``$PGNM_CACHE_DIR`` or ``~/.cache/pgnm_monai``."""
    return Path(os.environ.get("PGNM_CACHE_DIR") or Path.home() / ".cache" / "pgnm_monai")


def extract_mednist(tarball: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """Extract ``tarball`` into ``cache_dir/MedNIST`` (atomically; reused when already there); return it."""
    tarball, cache_dir = Path(tarball), Path(cache_dir)
    target = cache_dir / "MedNIST"
    if (target / ".complete").is_file():
        return target
    if not tarball.is_file():
        raise FileNotFoundError(f"MedNIST tarball {tarball} does not exist")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mednist-", dir=cache_dir))
    try:
        try:
            with tarfile.open(tarball, "r:*") as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extractall(tmp)  # noqa: S202
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ValueError(f"MedNIST tarball {tarball} cannot be extracted: {e}") from e
        root = find_mednist_root(tmp)
        (root / ".complete").write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(root, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def find_mednist_root(path: str | os.PathLike) -> Path:
    """The folder holding the class folders: ``path`` itself or ``path/MedNIST``."""
    path = require_folder(path, "MedNIST folder")
    for cand in (path, path / "MedNIST"):
        if cand.is_dir() and any((cand / c).is_dir() for c in MEDNIST_CLASSES):
            return cand
    raise ValueError(f"MedNIST folder {path}: no class folder found; expected some of {sorted(MEDNIST_CLASSES)}")


def _scan(root: Path) -> list[tuple[str, str]]:
    """``(relpath, class)`` of every image; entries with an image suffix that are not images are skipped."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for d in folders:
        if d.name not in MEDNIST_CLASSES:
            raise ValueError(f"MedNIST folder {d}: class {d.name!r} is not in the class map {sorted(MEDNIST_CLASSES)}")
    candidates = {d: sorted(os.fspath(f) for f in d.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES) for d in folders}
    usable = set(usable_image_files([f for fs in candidates.values() for f in fs], f"MedNIST folder {root}"))
    rows = []
    for d, fs in candidates.items():
        files = [os.path.basename(f) for f in fs if f in usable]
        if not files:
            raise ValueError(f"MedNIST class folder {d} holds no image ({_IMAGE_SUFFIXES})")
        rows += [(f"{d.name}/{f}", d.name) for f in files]
    return rows


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@register_kind("mednist")
def load_mednist(
    dataset_dir: str | os.PathLike,
    split: str = "train",
    seed: int = 0,
    cache_dir: str | None = None,
    split_file: str | None = None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> Datalist:
    """Load one split of MedNIST.

    Args:
        dataset_dir: ``MedNIST.tar.gz``, a folder holding it or ``MedNIST/``, or the class folders' parent.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        seed: seed of the split made when no split file exists yet.
        cache_dir: where the tarball is extracted and the split saved (default :func:`default_cache_dir`).
        split_file: the split CSV (default ``<cache_dir>/mednist_split_seed<seed>.csv``).
        fractions: train/val/test fractions of the split.
    """
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"split must be one of train/val/test/all, got {split!r}")
    src = Path(dataset_dir)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if not src.exists():
        raise FileNotFoundError(f"MedNIST source {src} does not exist")
    if src.is_dir() and (src / "MedNIST.tar.gz").is_file() and not (src / "MedNIST").is_dir():
        src = src / "MedNIST.tar.gz"
    root = extract_mednist(src, cache) if src.is_file() else find_mednist_root(src)
    rows = _scan(root)
    sf = Path(split_file) if split_file else cache / f"mednist_split_seed{seed}.csv"
    if sf.is_file():
        assign = _read_split(sf, rows)
    else:
        groups = [_md5(root / r) for r, _ in rows]
        names = sorted(MEDNIST_CLASSES)
        splits = split_by_group(groups, [names.index(c) for _, c in rows], fractions, seed)
        atomic_write_csv(
            sf, ["relpath", "label_name", "split"], [(r, c, s) for (r, c), s in zip(rows, splits, strict=True)]
        )
        assign = dict(zip((r for r, _ in rows), splits, strict=True))
    class_names = sorted({c for _, c in rows})
    items = []
    for rel, cname in rows:
        if split != "all" and assign[rel] != split:
            continue
        modality, anatomy = MEDNIST_CLASSES[cname]
        items.append(make_item(str(root / rel), class_names.index(cname), cname, modality, anatomy, rel))
    return Datalist(items, class_names, kind="mednist", split=split, report={"root": str(root), "split_file": str(sf)})


def _read_split(sf: Path, rows: list[tuple[str, str]]) -> dict[str, str]:
    """``{relpath: split}`` from a saved split file; a file listed twice with two splits is an error."""
    header, lines = read_csv(sf, "MedNIST split file")
    if not {"relpath", "split"} <= set(header):
        raise ValueError(f"MedNIST split file {sf}: expected columns relpath,label_name,split, got {header}")
    assign: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, r in lines:
        rel, s = r["relpath"], r["split"]
        if s not in ("train", "val", "test"):
            raise ValueError(
                f"MedNIST split file {sf}, line {line}: field 'split' is {s!r}, expected train, val or test"
            )
        if rel in assign and assign[rel] != s:
            raise ValueError(
                f"MedNIST split file {sf}: {rel} is in split {assign[rel]!r} on line {first_line[rel]} and {s!r}"
                f" on line {line}; delete the file to re-split"
            )
        assign.setdefault(rel, s)
        first_line.setdefault(rel, line)
    missing = [r for r, _ in rows if r not in assign]
    if missing:
        raise ValueError(
            f"MedNIST split file {sf} does not list {len(missing)} image(s), e.g. {missing[0]}; delete it to re-split"
        )
    return assign
