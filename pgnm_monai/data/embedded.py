"""The embedded default dataset: real DICOM/NIfTI images shipped in installed packages, labelled by modality.

A **smoke-test set, not a benchmark**: a few dozen 2D images (single images, frames of multi-frame DICOM
and slices of NIfTI volumes) from 18 studies, 4 classes (``CT``, ``MR``, ``US``, ``X-ray``). It needs no
download and no ``../shared``. Files come from the folders of the installed packages only:

- ``pydicom`` (its ``data/test_files`` folder) and ``pydicom-data`` (the ``data_store`` package, which holds
  the files that ``pydicom.data.get_testdata_files`` would otherwise download: this module never calls that
  function, so nothing is ever fetched);
- ``nibabel`` (``nibabel.testing.data_path``).

The same image stored in several encodings (e.g. ``MR_small_RLE.dcm``) is used once; synthetic test
patterns (``SC_*``), segmentations, dose grids and undecodable transfer syntaxes (JPEG-LS, JPEG lossless)
are left out. The split is by study/patient (``patient_id``), seeded, so no patient is in two splits; with
2 X-ray patients, X-ray has no validation image.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from pgnm_monai.data.io import volume_shape
from pgnm_monai.data.registry import register_kind
from pgnm_monai.data.schema import Datalist, make_item
from pgnm_monai.data.utils import split_by_group

__all__ = ["EMBEDDED_CLASSES", "EMBEDDED_FILES", "embedded_file_path", "load_embedded"]

EMBEDDED_CLASSES = ["CT", "MR", "US", "X-ray"]

# (file name or alternatives in order of preference, package, modality, anatomy, patient/study id, kind)
# kind: "2d" one image; "frames" a multi-frame DICOM; "volume" a NIfTI volume (slices along the last axis).
EMBEDDED_FILES: list[tuple[tuple[str, ...], str, str, str, str, str]] = [
    (("CT_small.dcm",), "pydicom", "CT", "unknown", "1CT1", "2d"),
    (("693_UNCR.dcm", "693_J2KI.dcm"), "pydicom", "CT", "head", "CQ500-CT-310", "2d"),
    (("J2K_pixelrep_mismatch.dcm",), "pydicom", "CT", "head", "JXD191021006", "2d"),
    (("explicit_VR-UN.dcm",), "pydicom", "CT", "abdomen", "PANCREAS_0001", "2d"),
    (("eCT_Supplemental.dcm",), "pydicom", "CT", "unknown", "eCT-0010", "frames"),
    (("MR_small.dcm",), "pydicom", "MR", "unknown", "4MR1", "2d"),
    (("examples_overlay.dcm",), "pydicom", "MR", "abdomen", "021234567", "2d"),
    (("MR2_UNCR.dcm", "MR2_J2KR.dcm"), "pydicom", "MR", "unknown", "5MR2", "2d"),
    (("emri_small.dcm",), "pydicom", "MR", "head", "emri-small", "frames"),
    (("anatomical.nii",), "nibabel", "MR", "head", "nibabel-anatomical", "volume"),
    (("example4d.nii.gz",), "nibabel", "MR", "head", "nibabel-example4d", "volume"),
    (("US1_UNCR.dcm", "examples_rgb_color.dcm"), "pydicom", "US", "unknown", "13US1", "2d"),
    (("examples_palette.dcm",), "pydicom", "US", "unknown", "11-05-25-142825", "2d"),
    (("examples_ybr_color.dcm",), "pydicom", "US", "unknown", "US-204", "frames"),
    (("gdcm-US-ALOKA-16.dcm",), "pydicom", "US", "unknown", "98279", "2d"),
    (("color-pl.dcm",), "pydicom", "US", "unknown", "color-pl", "2d"),
    (("RG1_UNCR.dcm", "RG1_J2KR.dcm"), "pydicom", "X-ray", "chest", "9RG1", "2d"),
    (("RG3_UNCR.dcm", "RG3_J2KR.dcm"), "pydicom", "X-ray", "extremity", "11RG3", "2d"),
]


def _package_dirs(package: str) -> list[Path]:
    dirs: list[Path] = []
    if package == "pydicom":
        from pydicom.data.data_manager import DATA_ROOT

        dirs.append(Path(DATA_ROOT) / "test_files")
        try:
            import data_store  # pydicom-data: the files pydicom would otherwise download

            dirs.append(Path(data_store.__file__).resolve().parent / "data")
        except ImportError:
            pass
    elif package == "nibabel":
        from nibabel.testing import data_path

        dirs.append(Path(data_path))
    return dirs


def embedded_file_path(names: tuple[str, ...], package: str) -> str | None:
    """First of ``names`` present on disk in the package folders, or ``None`` (never downloads)."""
    dirs = _package_dirs(package)
    for name in names:
        for d in dirs:
            p = d / name
            if p.is_file():
                return os.fspath(p)
    return None


def _indices(n: int, k: int, central: float) -> list[int]:
    """Up to ``k`` evenly spaced indices of ``range(n)`` within its central fraction ``central``."""
    if n <= k:
        return list(range(n))
    lo, hi = (n - 1) * (1 - central) / 2, (n - 1) * (1 + central) / 2
    return sorted({int(round(x)) for x in np.linspace(lo, hi, k)})


def _count(path: str, kind: str) -> int:
    if kind == "volume":
        import nibabel as nib

        return int(nib.load(path).shape[2])
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    return int(ds.get("NumberOfFrames", 1) or 1)


@register_kind("embedded")
def load_embedded(
    split: str = "train",
    seed: int = 0,
    max_per_volume: int = 6,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
) -> Datalist:
    """The embedded smoke-test datalist (see the module docstring).

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        seed: seed of the patient-level split.
        max_per_volume: most slices/frames taken from one volume or multi-frame file (evenly spaced).
        fractions: train/val/test fractions of the patients of each class.

    Returns:
        a :class:`~pgnm_monai.data.schema.Datalist`; ``report["missing"]`` lists table entries not on disk.
    """
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"split must be one of train/val/test/all, got {split!r}")
    if max_per_volume < 1:
        raise ValueError(f"max_per_volume must be >= 1, got {max_per_volume}")
    items: list[dict] = []
    missing: list[str] = []
    for names, package, modality, anatomy, pid, kind in EMBEDDED_FILES:
        path = embedded_file_path(names, package)
        if path is None:
            missing.append(f"{package}:{names[0]}")
            continue
        label = EMBEDDED_CLASSES.index(modality)
        if kind == "2d":
            items.append(make_item(path, label, modality, modality, anatomy, pid))
            continue
        n = _count(path, kind)
        if kind == "frames":
            for f in _indices(n, max_per_volume, 1.0):
                items.append(make_item(path, label, modality, modality, anatomy, pid, frame_index=f))
        else:  # the first time point of a 4-D volume (example4d), named explicitly
            frame = {"frame_index": 0} if path.endswith((".nii", ".nii.gz")) and len(volume_shape(path)) == 4 else {}
            for s in _indices(n, max_per_volume, 0.6):
                items.append(make_item(path, label, modality, modality, anatomy, pid, slice_index=s, **frame))
    if missing:
        warnings.warn(f"embedded dataset: files not installed, left out: {missing}", stacklevel=2)
    report = {"missing": missing}
    if split != "all":
        groups = [it["patient_id"] for it in items]
        assign = split_by_group(groups, [it["label"] for it in items], fractions, seed)
        items = [it for it, s in zip(items, assign, strict=True) if s == split]
    return Datalist(items, list(EMBEDDED_CLASSES), kind="embedded", split=split, report=report)
