"""Clinical DICOM/NIfTI data with a CSV of labels, as 2D slice items split by patient, never by slice.

The CSV has columns ``path`` and ``label`` and optionally ``patient_id``, ``modality``, ``anatomy`` and ``split``;
``path`` (relative to the CSV's folder, or absolute) names a DICOM file, a DICOM series folder (read with
MONAI's ``PydicomReader``), a NIfTI/MGH volume (MONAI's ``NibabelReader``) or a 2D image. Volumes give 2D
items: every slice (``slices="all"``), the middle one (``"middle"``) or every k-th (``"every_k"``, with
``every_k``); multi-frame DICOM the same over frames. ``slices="none"`` keeps each volume whole (a 3D item for
``spatial_dims: 3``; every listed path must then be a NIfTI volume or a DICOM series folder or multi-frame
file, else an error names the CSV line). A single-slice volume (a NIfTI of shape ``(H, W, 1)``, a series of one
file) is a 2D image. Missing ``patient_id`` falls back to the DICOM
``PatientID``, then to the path (each file its own patient); missing ``modality`` to the DICOM
``Modality`` (CR/DX/RF/MG/XA -> ``X-ray``, PT -> ``PET``), then to the ``modality`` option. Intensities are
windowed by the transform chain per modality (CT HU window, MR/US percentile scaling). With ``validate``
each listed image is decoded once here, so a corrupt or truncated file fails now, naming the file.

Splits. Without a ``split`` column the patients are split at random (seeded, stratified, ``fractions``). With
one, every row's ``split`` (``train``, ``val`` or ``test``, any case) is kept exactly and ``fractions`` is
unused: another value or an empty one is an error naming the line and value, as is a patient whose rows lie in
two splits (a leak), naming the patient, both splits and lines. A split with no row is empty (the bundles need
rows for ``train`` and ``val``; ``test`` for ``evaluate``).

The CSV is read as UTF-8 (with or without BOM) or Latin-1 (:func:`pgnm_monai.data.utils.read_csv`). One label
map for every split, built from every row before the split: labels that differ only in case (``CT`` / ``ct``)
are an error; when every label is a number, labels must be whole numbers (``1.0`` is read as ``1``, ``1.5`` is
an error). A file listed twice with the same fields is used once (warning naming the lines); listed twice
with a different label, patient, modality or anatomy, it is an error naming the file, both lines and values.
A ``modality`` must be spelled as in :data:`~pgnm_monai.data.schema.MODALITIES` (``ct`` is refused, naming the
line). A listed path that is not a regular file or folder (e.g. a FIFO) is refused by name, never opened.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

from pgnm_monai.data.dicom import check_one_series
from pgnm_monai.data.image_files import file_kind
from pgnm_monai.data.io import read_image, volume_shape
from pgnm_monai.data.registry import register_kind
from pgnm_monai.data.schema import MODALITIES, Datalist, check_class_spelling, make_item
from pgnm_monai.data.utils import DEFAULT_FRACTIONS, file_type_problem, read_csv, split_by_group

__all__ = ["DICOM_MODALITY_MAP", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS", "SPLIT_VALUES", "load_clinical"]

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
OPTIONAL_COLUMNS = ("patient_id", "modality", "anatomy", "split")
#: the values of the optional ``split`` column.
SPLIT_VALUES = ("train", "val", "test")


def _dicom_header(path: str) -> tuple[dict, int]:
    """(header fields, number of 2D slices/frames) of a DICOM file or series folder."""
    import pydicom

    files = [path]
    if os.path.isdir(path):
        files = sorted(os.fspath(f) for f in Path(path).iterdir() if f.is_file() and pydicom.misc.is_dicom(f))
        if not files:
            raise ValueError(f"DICOM series folder {path} contains no DICOM file")
        check_one_series(path, files)
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


def _unique_rows(csv_path: Path, rows: list[tuple[dict, int]]) -> list[tuple[dict, int]]:
    """Rows with each file once, whatever its spelling (relative or absolute, through ``..`` or a symbolic link: the
    resolved paths are compared): an exact repeat is dropped (warning), a contradicting one is an error."""
    first: dict[str, tuple[dict, int]] = {}
    out, repeats = [], []
    for r, line in rows:
        key = os.path.normcase(os.path.realpath(csv_path.parent / r["path"]))  # an absolute path replaces the parent
        if key in first:
            r0, line0 = first[key]
            diff = [c for c in ("label",) + OPTIONAL_COLUMNS if r0.get(c, "") != r.get(c, "")]
            if diff:
                c = diff[0]
                raise ValueError(
                    f"clinical labels CSV {csv_path}: file {r0['path']!r} is listed on line {line0} with {c}"
                    f" {r0.get(c, '')!r} and on line {line}"
                    + (f" (as {r['path']!r})" if r["path"] != r0["path"] else "")
                    + f" with {c} {r.get(c, '')!r}; give each file one row"
                )
            spelt = r["path"] if r["path"] == r0["path"] else f"{r0['path']} and {r['path']}"
            repeats.append(f"{spelt} (lines {line0} and {line})")
            continue
        first[key] = (r, line)
        out.append((r, line))
    if repeats:
        warnings.warn(
            f"clinical labels CSV {csv_path}: {len(repeats)} repeated row(s) used once: {repeats[:5]}", stacklevel=3
        )
    return out


def _label_map(csv_path: Path, rows: list[tuple[dict, int]]) -> list[str]:
    """The class names of every row (one map for all splits), numeric labels normalised in ``rows``."""
    for r, line in rows:
        if r["label"] == "":
            raise ValueError(f"clinical labels CSV {csv_path}, line {line}: field 'label' is empty")
    numbers = {}
    for r, _ in rows:
        try:
            numbers[r["label"]] = float(r["label"])
        except ValueError:
            break
    else:  # every label is a number: whole numbers only, 1.0 counts as 1
        for r, line in rows:
            v = numbers[r["label"]]
            if not math.isfinite(v) or v != int(v):
                raise ValueError(
                    f"clinical labels CSV {csv_path}, line {line}: field 'label' is {r['label']!r}; numeric labels"
                    " must be whole numbers (class indices or codes)"
                )
            r["label"] = str(int(v))
        return sorted({r["label"] for r, _ in rows}, key=int)
    where: dict[str, str] = {}
    for r, line in rows:
        where.setdefault(r["label"], f"line {line}")
    check_class_spelling(where, f"clinical labels CSV {csv_path}, field 'label'")
    return sorted(where)


def _pick_slices(n: int, slices: str, every_k: int) -> list[int]:
    if n <= 1 or slices == "none":
        return [-1]
    if slices == "all":
        return list(range(n))
    if slices == "middle":
        return [n // 2]
    return list(range(0, n, every_k))


@register_kind("clinical")
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
    time_point: int | None = None,
) -> Datalist:
    """Load one split of a clinical DICOM/NIfTI set (see the module docstring).

    Args:
        dataset_dir: the labels CSV, or a folder holding ``csv_file`` (default ``labels.csv``).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``; the CSV's ``split`` column when it has one, else a
            seeded split by patient.
        slices: ``"all"``, ``"middle"``, ``"every_k"`` (2D items) or ``"none"`` (whole volumes).
        every_k: the step for ``slices="every_k"``.
        modality: the modality when neither the CSV nor the DICOM header gives one.
        validate: decode every listed file once now (errors name the file).
        time_point: the time point read from a 4-D NIfTI (a time series); ``None`` refuses 4-D files, naming them.
    """
    csv_path = _csv_path(dataset_dir, csv_file)
    _check_options(split, slices, every_k, modality)
    rows = _read_rows(csv_path)
    labels = _label_map(csv_path, rows)
    given = _row_splits(csv_path, rows)
    items: list[dict] = []
    assign: list[str] = []
    item_lines: list[int] = []
    for k, (r, line) in enumerate(rows):
        row_items = _row_items(csv_path, r, line, labels, slices, every_k, modality, validate, time_point)
        items += row_items
        if given is not None:
            assign += [given[k]] * len(row_items)
            item_lines += [line] * len(row_items)
    if given is None:
        assign = split_by_group([it["patient_id"] for it in items], [it["label"] for it in items], fractions, seed)
    else:
        _check_patient_splits(csv_path, items, assign, item_lines)
    report = {"csv": os.fspath(csv_path), "patients": len({it["patient_id"] for it in items})}
    if split != "all":
        items = [it for it, s in zip(items, assign, strict=True) if s == split]
    return Datalist(items, labels, kind="clinical", split=split, report=report)


def _csv_path(dataset_dir: str | os.PathLike, csv_file: str | None) -> Path:
    src = Path(dataset_dir)
    csv_path = src / (csv_file or "labels.csv") if src.is_dir() else src
    if not csv_path.exists():
        raise FileNotFoundError(f"clinical labels CSV {csv_path} does not exist")
    return csv_path


def _row_splits(csv_path: Path, rows: list[tuple[dict[str, str], int]]) -> list[str] | None:
    """Each row's ``split`` (lower case), or ``None`` when the CSV has no ``split`` column."""
    if not rows or "split" not in rows[0][0]:
        return None
    out = []
    for r, line in rows:
        value = (r.get("split") or "").strip().lower()
        if value not in SPLIT_VALUES:
            raise ValueError(
                f"clinical labels CSV {csv_path}, line {line}: field 'split' is {r.get('split')!r}; expected one of "
                f"{SPLIT_VALUES} on every row (or no 'split' column, for a seeded split by patient)"
            )
        out.append(value)
    return out


def _check_patient_splits(csv_path: Path, items: list[dict], assign: list[str], lines: list[int]) -> None:
    """Refuse a patient whose rows lie in two splits (its images would leak from train into val or test)."""
    first: dict[str, tuple[str, int]] = {}
    for it, s, line in zip(items, assign, lines, strict=True):
        s0, line0 = first.setdefault(it["patient_id"], (s, line))
        if s0 != s:
            raise ValueError(
                f"clinical labels CSV {csv_path}: patient {it['patient_id']!r} is in split {s0!r} on line {line0} and "
                f"in split {s!r} on line {line}; give all of a patient's rows one split (its images would leak "
                "between splits), or a 'patient_id' column that tells patients apart"
            )


def _check_options(split: str, slices: str, every_k: int, modality: str) -> None:
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"split must be one of train/val/test/all, got {split!r}")
    if slices not in ("all", "middle", "every_k", "none"):
        raise ValueError(f"slices must be 'all', 'middle', 'every_k' or 'none', got {slices!r}")
    if every_k < 1:
        raise ValueError(f"every_k must be >= 1, got {every_k}")
    if modality not in MODALITIES:
        raise ValueError(f"modality {modality!r} is not one of {MODALITIES}")


def _read_rows(csv_path: Path) -> list[tuple[dict[str, str], int]]:
    """The CSV's unique rows with their line numbers, after checking its columns."""
    header, lines = read_csv(csv_path, "clinical labels CSV")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ValueError(
            f"clinical labels CSV {csv_path}: missing column(s) {missing}; expected {list(REQUIRED_COLUMNS)}"
            f" and optionally {list(OPTIONAL_COLUMNS)}, got {header}"
        )
    if not lines:
        raise ValueError(f"clinical labels CSV {csv_path} has no data row")
    return _unique_rows(csv_path, [(r, i) for i, r in lines])


def _row_path(csv_path: Path, r: dict[str, str], line: int) -> str:
    """The row's file or series folder, checked to exist and to be an image."""
    path = r["path"] if os.path.isabs(r["path"]) else os.fspath(csv_path.parent / r["path"])
    if not r["path"] or not os.path.exists(path):
        raise FileNotFoundError(f"clinical labels CSV {csv_path}, line {line}: file {path!r} does not exist")
    problem = None if os.path.isdir(path) else file_type_problem(path)
    if problem:
        raise ValueError(f"clinical labels CSV {csv_path}, line {line}: {path} {problem}; refused")
    return path


def _frames(path: str, line: int, time_point: int | None = None) -> tuple[dict[str, str], int, str, int]:
    """``(DICOM header fields, number of slices or frames, the index key, time point or -1)`` of one file or
    series; a 4-D NIfTI needs ``time_point``."""
    kind = file_kind(path)
    if kind == "dicom":
        head, n = _dicom_header(path)
        return head, n, "frame_index" if not os.path.isdir(path) else "slice_index", -1
    head = {"modality": "", "patient_id": ""}
    if kind == "nifti":
        shape = volume_shape(path)
        if len(shape) not in (2, 3, 4):
            raise ValueError(
                f"NIfTI file {path} (CSV line {line}): unsupported dimensions {shape}; expected 2D, 3D or 4D"
            )
        if len(shape) == 4 and (time_point is None or not 0 <= time_point < shape[3]):
            raise ValueError(
                f"NIfTI file {path} (CSV line {line}) is 4-D {shape} (a time series); set the dataset option "
                f"'time_point' (0..{shape[3] - 1}) to read one time point, or split it into 3-D files"
            )
        return head, (shape[2] if len(shape) >= 3 else 1), "slice_index", (time_point if len(shape) == 4 else -1)
    return head, 1, "slice_index", -1


def _row_modality(csv_path: Path, r: dict[str, str], line: int, head: dict[str, str], default: str) -> str:
    mod = r.get("modality") or DICOM_MODALITY_MAP.get(head["modality"].upper(), "") or default
    if mod not in MODALITIES:
        hint = next((f" (did you mean {m!r}?)" for m in MODALITIES if m.casefold() == mod.casefold()), "")
        raise ValueError(
            f"clinical labels CSV {csv_path}, line {line}: field 'modality' is {mod!r}, "
            f"expected one of {MODALITIES}{hint}"
        )
    return mod


def _row_items(
    csv_path: Path,
    r: dict[str, str],
    line: int,
    labels: list[str],
    slices: str,
    every_k: int,
    default_modality: str,
    validate: bool,
    time_point: int | None = None,
) -> list[dict]:
    """The items of one CSV row: its slices or frames (2D), or the whole volume (``slices="none"``)."""
    path = _row_path(csv_path, r, line)
    head, n, index_key, frame = _frames(path, line, time_point)
    mod = _row_modality(csv_path, r, line, head, default_modality)
    pid = r.get("patient_id") or head["patient_id"] or os.path.relpath(path, csv_path.parent)
    anatomy = r.get("anatomy") or "unknown"
    lab = labels.index(r["label"])
    if slices == "none":
        if n <= 1:
            raise ValueError(
                f"clinical labels CSV {csv_path}, line {line}: {path} is not a volume (one slice); slices='none' keeps"
                " volumes whole and needs a NIfTI volume or a DICOM series folder / multi-frame file. For 2D images"
                " give the dataset option slices 'middle' (the default) and spatial_dims 2 (the bundles' config id"
                " 'spatial_dims')"
            )
        if validate:
            read_image(path, mod, frame_index=frame, spatial_dims=3)
        return [make_item(path, lab, r["label"], mod, anatomy, pid, frame_index=frame)]
    items = []
    for k in _pick_slices(n, slices, every_k):
        index = {index_key: k} if k >= 0 else {}
        item = make_item(
            path, lab, r["label"], mod, anatomy, pid, **index, **({"frame_index": frame} if frame >= 0 else {})
        )
        if validate and not items:
            read_image(path, mod, item["slice_index"], item["frame_index"])
        items.append(item)
    return items
