"""The one item schema shared by every data source, the :class:`Datalist` container and class maps.

Every source returns items (plain dicts, MONAI datalist style) with the same keys:

- ``image``: a file path (``str``) or, for sources without files (MedMNIST), a ``numpy`` array.
- ``label``: ``int`` class index; ``label_name``: the class name.
- ``modality``: one of :data:`MODALITIES` (``"CT"``, ``"MR"``, ``"US"``, ``"X-ray"``, ...).
- ``anatomy``: body part or ``"unknown"``.
- ``patient_id``: the patient/series id, or a per-item id where the source has none.
- ``slice_index`` / ``frame_index``: the 2D slice or frame of a volume / multi-frame file, ``-1`` when the
  image is 2D already. Always present, so that every item of every source collates with every other.

One label map per dataset: every source builds ``class_names`` once, from every split (or from the map the
user declares), so ``load_datalist(kind, dir, split=s).class_names`` is the same for train, val and test.
Class names that differ only in case (``Glioma`` / ``glioma``) are refused (:func:`check_class_spelling`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pgnm_monai.atomic_files import atomic_write_text

__all__ = [
    "IMAGE",
    "IMAGE_PATH",
    "FLIP_ALLOWED",
    "LABEL",
    "LABEL_NAME",
    "MODALITY",
    "ANATOMY",
    "PATIENT_ID",
    "SLICE_INDEX",
    "FRAME_INDEX",
    "ITEM_KEYS",
    "META_KEYS",
    "MODALITIES",
    "UNKNOWN",
    "SPLITS",
    "make_item",
    "validate_item",
    "Datalist",
    "save_class_map",
    "load_class_map",
    "class_index",
    "check_class_spelling",
]

IMAGE = "image"
LABEL = "label"
LABEL_NAME = "label_name"
MODALITY = "modality"
ANATOMY = "anatomy"
PATIENT_ID = "patient_id"
SLICE_INDEX = "slice_index"
FRAME_INDEX = "frame_index"
IMAGE_PATH = "image_path"  # added by the bundles' data loading: where the image came from (for the CSVs)
FLIP_ALLOWED = "flip_allowed"  # optional: False where a horizontal flip changes the class (left/right organs)
ITEM_KEYS = (IMAGE, LABEL, LABEL_NAME, MODALITY, ANATOMY, PATIENT_ID, SLICE_INDEX, FRAME_INDEX)
META_KEYS = (LABEL_NAME, MODALITY, ANATOMY, PATIENT_ID, SLICE_INDEX, FRAME_INDEX)
MODALITIES = ("CT", "MR", "US", "X-ray", "fundus", "NM", "PET", "other")
UNKNOWN = "unknown"
SPLITS = ("train", "val", "test", "all")


def make_item(
    image: Any,
    label: int,
    label_name: str,
    modality: str,
    anatomy: str = UNKNOWN,
    patient_id: str = "",
    slice_index: int = -1,
    frame_index: int = -1,
) -> dict:
    """Build one datalist item with every schema key (see the module docstring)."""
    if modality not in MODALITIES:
        raise ValueError(f"modality {modality!r} is not one of {MODALITIES}")
    return {
        IMAGE: os.fspath(image) if isinstance(image, os.PathLike) else image,
        LABEL: int(label),
        LABEL_NAME: str(label_name),
        MODALITY: modality,
        ANATOMY: str(anatomy or UNKNOWN),
        PATIENT_ID: str(patient_id),
        SLICE_INDEX: int(slice_index),
        FRAME_INDEX: int(frame_index),
    }


def validate_item(item: dict, num_classes: int | None = None) -> dict:
    """Check that ``item`` has every schema key with a valid value; return it unchanged."""
    missing = [k for k in ITEM_KEYS if k not in item]
    if missing:
        raise ValueError(f"datalist item is missing key(s) {missing}; expected keys {list(ITEM_KEYS)}")
    if item[MODALITY] not in MODALITIES:
        raise ValueError(f"item field 'modality' is {item[MODALITY]!r}, expected one of {MODALITIES}")
    if num_classes is not None and not 0 <= int(item[LABEL]) < num_classes:
        raise ValueError(f"item field 'label' is {item[LABEL]}, expected an index in [0, {num_classes})")
    return item


@dataclass
class Datalist(Sequence):
    """Items of one split plus the class names; a ``Sequence`` of items (fit for ``monai.data.Dataset``).

    Attributes:
        items: the datalist items (see the module docstring).
        class_names: class index -> name.
        kind: the source kind (``"embedded"``, ``"mednist"``, ...).
        split: the split these items belong to.
        report: source-specific notes (e.g. blank/duplicate images found, the split file written).
    """

    items: list[dict]
    class_names: list[str]
    kind: str = ""
    split: str = ""
    report: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> dict[str, int]:
        """Number of items per class name (all classes listed, zeros included)."""
        c = Counter(it[LABEL] for it in self.items)
        return {name: c.get(i, 0) for i, name in enumerate(self.class_names)}

    def modality_counts(self) -> dict[str, int]:
        """Number of items per modality."""
        return dict(sorted(Counter(it[MODALITY] for it in self.items).items()))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):  # type: ignore[override]
        return self.items[index]

    def __iter__(self) -> Iterator[dict]:
        return iter(self.items)


def class_index(class_names: Sequence[str]) -> dict[str, int]:
    """Name -> index map; raises ``ValueError`` on duplicate names."""
    idx = {str(n): i for i, n in enumerate(class_names)}
    if len(idx) != len(class_names):
        dup = [n for n, c in Counter(class_names).items() if c > 1]
        raise ValueError(f"class names must be unique, found duplicates {dup}")
    return idx


def check_class_spelling(found: dict[str, str], source: str) -> None:
    """Refuse class names that differ only in case.

    Args:
        found: class name -> where it was first seen (e.g. ``"folder /d/Training/Glioma, split 'train'"``).
        source: the dataset, for the message (e.g. ``"image folder /d"``).

    Raises:
        ValueError: naming both spellings and where each was found.
    """
    seen: dict[str, str] = {}
    for name in found:
        key = name.casefold()
        if key in seen and seen[key] != name:
            other = seen[key]
            raise ValueError(
                f"{source}: class names {other!r} ({found[other]}) and {name!r} ({found[name]}) differ only in"
                " case; give each class one spelling"
            )
        seen.setdefault(key, name)


def save_class_map(path: str | os.PathLike, class_names: Sequence[str], **extra: Any) -> str:
    """Write the class map JSON (``class_names`` list and ``class_to_index``) atomically; return the path."""
    names = [str(n) for n in class_names]
    payload = {"class_names": names, "class_to_index": class_index(names), **extra}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return os.fspath(path)


def load_class_map(path: str | os.PathLike) -> list[str]:
    """Read a class map JSON written by :func:`save_class_map`; return the class names in index order."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class map file {path} does not exist")
    try:
        with open(path, encoding="utf-8-sig") as f:
            payload = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"class map file {path} is not valid UTF-8 JSON: {e}") from e
    names = payload.get("class_names") if isinstance(payload, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"class map file {path}: field 'class_names' must be a list of strings")
    try:
        class_index(names)
    except ValueError as e:
        raise ValueError(f"class map file {path}: {e}") from e
    check_class_spelling({n: "declared" for n in names}, f"class map file {path}")
    return names
