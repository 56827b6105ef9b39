"""DICOM files and series folders read with MONAI's ``PydicomReader``, one series per folder (see
:mod:`pgnm_monai.data.io` for the pixel rule applied after reading)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pgnm_monai.data.utils import check_pixel_count, file_type_problem

__all__ = ["check_one_series", "read_dicom"]


def check_one_series(folder: str, files: Sequence[str]) -> None:
    """Refuse a DICOM series folder whose ``files`` belong to more than one series (``SeriesInstanceUID``), e.g. an
    axial and a sagittal series side by side, which would otherwise be stacked into one volume. Reads the headers
    only (the clinical loader's check at load time; :func:`read_dicom` checks the datasets it has read)."""
    import pydicom

    uids = []
    for f in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                uids.append(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]))
        except Exception as e:  # pydicom raises many types for broken files
            raise ValueError(f"DICOM file {f} cannot be read: {type(e).__name__}: {e}") from e
    _refuse_several_series(folder, [(d.get("SeriesInstanceUID", ""), f) for d, f in zip(uids, files, strict=True)])


def _refuse_several_series(folder: str, uid_and_file: Sequence[tuple[object, str]]) -> None:
    """``ValueError`` naming ``folder`` and its series when the ``(SeriesInstanceUID, file)`` pairs hold several."""
    series: dict[str, str] = {}
    for uid, f in uid_and_file:
        series.setdefault(str(uid), os.fspath(f))
    if len(series) > 1:
        examples = "; ".join(f"{uid or '(none)'} e.g. {os.path.basename(f)}" for uid, f in list(series.items())[:3])
        raise ValueError(
            f"DICOM series folder {folder} holds {len(series)} series (SeriesInstanceUID {examples}); a series "
            "folder must hold one series: put each series in its own folder and list each folder in the CSV."
        )


def read_dicom(path: str, max_pixels: int | None = None) -> tuple[np.ndarray, dict]:
    """Read a DICOM file or series folder with MONAI's ``PydicomReader``.

    A file or series of more than ``max_pixels`` pixels (frames x rows x columns of every file;
    :func:`~pgnm_monai.data.utils.max_image_pixels` when ``None``) is refused by name before it is decoded.

    Returns:
        the array (2D ``(H, W)``, RGB ``(H, W, 3)``, multi-frame ``(F, H, W[, 3])`` or series ``(H, W, N)``)
        after rescale, palette expansion and MONOCHROME1 inversion; and a small header dict (with the reader's
        ``affine`` of the array, ``None`` for palette images).
    """
    import pydicom
    from monai.data import PydicomReader

    reader = PydicomReader(swap_ij=False, affine_lps_to_ras=True)
    if os.path.isdir(path):
        entries = sorted(f for f in Path(path).iterdir() if not f.name.startswith("."))
        for f in entries:  # MONAI opens every entry of the folder: refuse those that could block or fail
            problem = file_type_problem(f)
            if problem:
                raise ValueError(f"DICOM series folder {path}: entry {f} {problem}; a series folder holds files only")
        if not any(pydicom.misc.is_dicom(str(f)) for f in entries):
            raise ValueError(f"DICOM series folder {path} contains no DICOM file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = reader.read(path)
    except Exception as e:  # pydicom raises many types for broken files
        raise ValueError(f"DICOM file {path} cannot be read: {type(e).__name__}: {e}") from e
    if isinstance(ds, list):  # a series folder: one series, checked on the datasets just read
        _refuse_several_series(path, [(d.get("SeriesInstanceUID", ""), d.filename) for d in ds])
    _check_stated_size(path, ds if isinstance(ds, list) else [ds], max_pixels)
    affine = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first = ds[0] if isinstance(ds, list) else ds
            photometric = str(first.get("PhotometricInterpretation", "MONOCHROME2"))
            if photometric == "PALETTE COLOR" and not isinstance(ds, list):
                from pydicom.pixels import apply_color_lut

                arr = np.asarray(apply_color_lut(first.pixel_array, first))
                if arr.dtype == np.uint16 and int(first.get("BitsAllocated", 8)) == 8:
                    arr = (arr // 257).astype(np.uint8)
            else:
                arr, meta = reader.get_data(ds)
                arr, affine = np.asarray(arr), meta.get("affine")
                if not isinstance(ds, list) and "RescaleSlope" not in first:
                    arr = _enhanced_rescale(first, arr)
    except Exception as e:  # pydicom raises many types for broken files
        raise _pixel_error(path, e) from e
    if arr.size == 0:
        raise ValueError(f"DICOM file {path} has empty pixel data")
    header = {
        "modality": str(first.get("Modality", "")),
        "body_part": str(first.get("BodyPartExamined", "")),
        "patient_id": str(first.get("PatientID", "")),
        "series_uid": str(first.get("SeriesInstanceUID", "")),
        "frames": int(first.get("NumberOfFrames", 1) or 1),
        "samples_per_pixel": int(first.get("SamplesPerPixel", 1) or 1),
        "photometric": photometric,
        "series": isinstance(ds, list),
        "affine": affine,
    }
    if photometric == "MONOCHROME1":
        arr = arr.max() - arr.astype(np.float32) + arr.min()
    return arr, header


def _pixel_error(path: str, error: Exception) -> ValueError:
    """The error of a DICOM file whose pixels cannot be decoded, on one line: a missing decoder (pydicom lists its
    plugins one per line) names the file, the compression and the packages to install."""
    first, *plugins = str(error).splitlines()
    needs = [line.split(" - requires ", 1)[1].strip() for line in plugins if " - requires " in line]
    if "Unable to decompress" not in first or not needs:
        return ValueError(f"DICOM file {path} cannot be read: {type(error).__name__}: {' '.join(str(error).split())}")
    what = first.split("'")[1] if first.count("'") >= 2 else "its compression"
    example = next((n for n in needs if "pylibjpeg" in n), next((n for n in needs if "gdcm" not in n), needs[0]))
    command = " ".join(repr(p.strip()) for p in example.replace(" and ", ",").split(",") if p.strip() != "numpy")
    return ValueError(
        f"DICOM file {path} is compressed with {what}, which no installed decoder reads; install one of: "
        f"{'; '.join(needs)} (e.g. pip install {command})."
    )


def _frames_rows_columns(ds) -> tuple[int, int, int] | None:
    """``(NumberOfFrames, Rows, Columns)`` a DICOM header states; ``None`` when malformed (the decoder reports it)."""
    try:
        return int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except (TypeError, ValueError):
        return None


def _check_stated_size(path: str, datasets: Sequence, limit: int | None) -> None:
    """Refuse DICOM data whose headers (rows, columns, frames of each file) state more than ``limit`` pixels."""
    sizes = [s for s in map(_frames_rows_columns, datasets) if s is not None]
    if len(sizes) == 1:
        frames, rows, columns = sizes[0]
        check_pixel_count(f"DICOM file {path}", (rows, columns) if frames == 1 else sizes[0], limit)
    elif sizes:
        one_frame_each = all(s == (1, *sizes[0][1:]) for s in sizes)
        shape = (len(sizes), *sizes[0][1:]) if one_frame_each else (sum(f * r * c for f, r, c in sizes),)
        check_pixel_count(f"DICOM series folder {path}", shape, limit)


def _enhanced_rescale(ds, arr: np.ndarray) -> np.ndarray:
    """Apply the shared functional group's rescale of an enhanced (multi-frame) image, if any."""
    try:
        tr = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
        return arr.astype(np.float32) * float(tr.RescaleSlope) + float(tr.RescaleIntercept)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return arr
