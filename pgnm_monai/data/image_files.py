"""Which paths are image files: the suffixes of each file type, and the filter of a listed folder.

When a source lists a folder (image folders, MedNIST, RadImageNet), :func:`usable_image_files` skips, with one
``UserWarning`` naming each path, every entry with an image suffix that is not a regular file (a FIFO, socket,
device or directory) or whose first bytes are not those of a PNG, JPEG, BMP, TIFF or GIF file (e.g. a text file
named ``x.png``); at most 8 bytes are read, and only from a regular file, so no listing can block on a special
file. A file named directly is checked when it is read (:func:`pgnm_monai.data.io.read_image`).
"""

from __future__ import annotations

import os
import warnings

from pgnm_monai.data.utils import file_type_problem

__all__ = [
    "IMAGE_SUFFIXES",
    "DICOM_SUFFIXES",
    "NIFTI_SUFFIXES",
    "file_kind",
    "image_file_problem",
    "usable_image_files",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh")


def file_kind(path: str | os.PathLike) -> str:
    """``"image"``, ``"dicom"``, ``"nifti"`` or ``"npy"`` from the suffix (folders are DICOM series)."""
    p = str(path).lower()
    if os.path.isdir(path):
        return "dicom"
    if p.endswith(IMAGE_SUFFIXES):
        return "image"
    if p.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if p.endswith(".npy"):
        return "npy"
    if p.endswith(DICOM_SUFFIXES):
        return "dicom"
    try:
        import pydicom

        if os.path.isfile(path) and pydicom.misc.is_dicom(path):
            return "dicom"
    except Exception:
        pass
    raise ValueError(
        f"image file {path}: unsupported type; expected one of"
        f" {IMAGE_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES} or .npy, or a DICOM series folder"
    )


# first bytes of the formats in IMAGE_SUFFIXES (the content decides, not the suffix, as in Pillow)
_IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"II+\x00",
    b"MM\x00+",
    b"GIF87a",
    b"GIF89a",
)


def image_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be an image file (not a regular file, empty, or foreign first bytes), else ``None``.

    Reads at most 8 bytes, and only from a regular file (never opens a FIFO or device).
    """
    problem = file_type_problem(path)
    if problem:
        return problem
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        return f"cannot be opened ({e.strerror})"
    if not head:
        return "is empty"
    if not head.startswith(_IMAGE_MAGIC):
        return f"is not a PNG, JPEG, BMP, TIFF or GIF image (it starts with {head!r})"
    return None


def usable_image_files(paths: list[str], source: str) -> list[str]:
    """The ``paths`` that can be image files; the others are skipped with one warning naming each path.

    Args:
        paths: candidate files (an image suffix each).
        source: where they were listed, for the warning (e.g. ``"image folder /data/brain"``).
    """
    kept, skipped = [], []
    for p in paths:
        problem = image_file_problem(p)
        (skipped if problem else kept).append((p, problem))
    if skipped:
        shown = "; ".join(f"{p} {why}" for p, why in skipped[:10])
        more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        warnings.warn(
            f"{source}: skipped {len(skipped)} path(s) with an image suffix that are not image files: {shown}{more}",
            UserWarning,
            stacklevel=2,
        )
    return [p for p, _ in kept]
