"""Clinical DICOM/NIfTI data with a CSV of labels, as 2D slice items split by patient, never by slice.

The CSV has columns ``path`` and ``label`` and optionally ``patient_id``, ``modality`` and ``anatomy``;
``path`` (relative to the CSV's folder, or absolute) names a DICOM file, a DICOM series folder (read with
MONAI's ``PydicomReader``), a NIfTI/MGH volume (MONAI's ``NibabelReader``) or a 2D image. Volumes give 2D
items: every slice (``slices="all"``), the middle one (``"middle"``) or every k-th (``"every_k"``, with
``every_k``); multi-frame DICOM the same over frames. Missing ``patient_id`` falls back to the DICOM
``PatientID``, then to the path (each file its own patient); missing ``modality`` to the DICOM
``Modality`` (CR/DX/RF/MG/XA -> ``X-ray``, PT -> ``PET``), then to the ``modality`` option. Intensities are
windowed by the transform chain per modality (CT HU window, MR/US percentile scaling). With ``validate``
each listed image is decoded once here, so a corrupt or truncated file fails now, naming the file.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

from pgnm_monai.data.io import file_kind, read_image, volume_shape
from pgnm_monai.data.schema import MODALITIES, Datalist, make_item
from pgnm_monai.data.utils import DEFAULT_FRACTIONS, split_by_group

__all__ = ["DICOM_MODALITY_MAP", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS", "load_clinical"]

DICOM_MODALITY_MAP = {
    "CT": "CT",
    "MR": "MR",
    "US": "US",
    "CR": "X-ray",
    "DX": "X-ray",
    "RF": "X-ray",
    "MG": "X-ray",
    "XA": "X-ray",
    "PT": "PET",
    "NM": "NM",
}
REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("patient_id", "modality", "anatomy")


def _dicom_header(path: str) -> tuple[dict, int]:
    """(header fields, number of 2D slices/frames) of a DICOM file or series folder."""
    import pydicom

    files = [path]
    if os.path.isdir(path):
        files = sorted(os.fspath(f) for f in Path(path).iterdir() if f.is_file() and pydicom.misc.is_dicom(f))
        if not files:
            raise ValueError(f"DICOM series folder {path} contains no DICOM file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    except Exception as e:
        raise ValueError(f"DICOM file {files[0]} cannot be read: {type(e).__name__}: {e}") from e
    if "Rows" not in ds or "Columns" not in ds:
        raise ValueError(f"DICOM file {files[0]} holds no image (no Rows/Columns)")
    n = len(files) if len(files) > 1 else int(ds.get("NumberOfFrames", 1) or 1)
    head = {"modality": str(ds.get("Modality", "")), "patient_id": str(ds.get("PatientID", "") or "")}
    return head, n


def _pick_slices(n: int, slices: str, every_k: int) -> list[int]:
    if n <= 1:
        return [-1]
    if slices == "all":
        return list(range(n))
    if slices == "middle":
        return [n // 2]
    return list(range(0, n, every_k))


def load_clinical(
    dataset_dir: str | os.PathLike,
    split: str = "train",
    seed: int = 0,
    csv_file: str | None = None,
    slices: str = "middle",
    every_k: int = 1,
    modality: str = "other",
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    validate: bool = True,
) -> Datalist:
    """Load one split of a clinical DICOM/NIfTI set (see the module docstring).

    Args:
        dataset_dir: the labels CSV, or a folder holding ``csv_file`` (default ``labels.csv``).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``; the split is by patient, seeded.
        slices: ``"all"``, ``"middle"`` or ``"every_k"``.
        every_k: the step for ``slices="every_k"``.
        modality: the modality when neither the CSV nor the DICOM header gives one.
        validate: decode every listed file once now (errors name the file).
    """
    src = Path(dataset_dir)
    csv_path = src / (csv_file or "labels.csv") if src.is_dir() else src
    if not csv_path.is_file():
        raise FileNotFoundError(f"clinical labels CSV {csv_path} does not exist")
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"split must be one of train/val/test/all, got {split!r}")
    if slices not in ("all", "middle", "every_k"):
        raise ValueError(f"slices must be 'all', 'middle' or 'every_k', got {slices!r}")
    if every_k < 1:
        raise ValueError(f"every_k must be >= 1, got {every_k}")
    if modality not in MODALITIES:
        raise ValueError(f"modality {modality!r} is not one of {MODALITIES}")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in cols]
        if missing:
            raise ValueError(
                f"clinical labels CSV {csv_path}: missing column(s) {missing}; expected {list(REQUIRED_COLUMNS)}"
                f" and optionally {list(OPTIONAL_COLUMNS)}, got {cols}"
            )
        rows = [({k.strip(): (v or "").strip() for k, v in r.items() if k}, i) for i, r in enumerate(reader, 2)]
    if not rows:
        raise ValueError(f"clinical labels CSV {csv_path} has no data row")
    labels = sorted({r["label"] for r, _ in rows})
    if "" in labels:
        line = next(i for r, i in rows if r["label"] == "")
        raise ValueError(f"clinical labels CSV {csv_path}, line {line}: field 'label' is empty")
    if all(lab.lstrip("-").isdigit() for lab in labels):
        labels = sorted(labels, key=int)
    items: list[dict] = []
    for r, line in rows:
        path = r["path"] if os.path.isabs(r["path"]) else os.fspath(csv_path.parent / r["path"])
        if not r["path"] or not os.path.exists(path):
            raise FileNotFoundError(f"clinical labels CSV {csv_path}, line {line}: file {path!r} does not exist")
        kind = file_kind(path)
        head = {"modality": "", "patient_id": ""}
        if kind == "dicom":
            head, n = _dicom_header(path)
            index_key = "frame_index" if not os.path.isdir(path) else "slice_index"
        elif kind == "nifti":
            shape = volume_shape(path)
            if len(shape) not in (2, 3, 4):
                raise ValueError(
                    f"NIfTI file {path} (CSV line {line}): unsupported dimensions {shape}; expected 2D, 3D or 4D"
                )
            n, index_key = (shape[2] if len(shape) >= 3 else 1), "slice_index"
        else:
            n, index_key = 1, "slice_index"
        mod = r.get("modality") or DICOM_MODALITY_MAP.get(head["modality"].upper(), "") or modality
        if mod not in MODALITIES:
            raise ValueError(
                f"clinical labels CSV {csv_path}, line {line}: field 'modality' is {mod!r}, "
                f"expected one of {MODALITIES}"
            )
        pid = r.get("patient_id") or head["patient_id"] or os.path.relpath(path, csv_path.parent)
        anatomy = r.get("anatomy") or "unknown"
        lab = labels.index(r["label"])
        for k in _pick_slices(n, slices, every_k):
            idx = {index_key: k} if k >= 0 else {}
            item = make_item(path, lab, r["label"], mod, anatomy, pid, **idx)
            if validate and k == _pick_slices(n, slices, every_k)[0]:
                read_image(path, mod, item["slice_index"], item["frame_index"])
            items.append(item)
    assign = split_by_group([it["patient_id"] for it in items], [it["label"] for it in items], fractions, seed)
    report = {"csv": os.fspath(csv_path), "patients": len({it["patient_id"] for it in items})}
    if split != "all":
        items = [it for it, s in zip(items, assign, strict=True) if s == split]
    return Datalist(items, labels, kind="clinical", split=split, report=report)
