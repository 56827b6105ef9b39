"""Reading one item's image into a float array in [0, 1], shaped (C, H, W) (or (C, D, H, W) for 3D).

Files: PNG/JPEG/BMP/TIFF (Pillow), DICOM files or series folders (MONAI ``PydicomReader``), NIfTI/MGH
(MONAI ``NibabelReader``), ``.npy``. Arrays (MedMNIST) are taken as they are. Intensities: 8/16-bit
natural images are divided by their type's maximum; DICOM/NIfTI CT by the HU window ``ct_window``
(centre, width), every other modality by percentile scaling (``percentiles``). DICOM MONOCHROME1 is
inverted, PALETTE COLOR expanded to RGB, enhanced (multi-frame) rescale slope/intercept applied.

Volumes: ``slice_index`` picks a slice along the last spatial axis of a NIfTI / DICOM series volume
(axis 0 of a 3D array, as MedMNIST stores (D, H, W)); ``frame_index`` a frame of a multi-frame DICOM
(or the time point of a 4D NIfTI, 0 by default).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "DICOM_SUFFIXES",
    "NIFTI_SUFFIXES",
    "file_kind",
    "read_image",
    "read_dicom",
    "read_nifti",
    "scale_intensity",
    "to_channels",
    "volume_shape",
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


def _read_pil(path: str) -> tuple[np.ndarray, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA", "RGBA", "LA", "CMYK", "YCbCr", "HSV"):
                im = im.convert("L" if im.mode == "LA" else "RGB")
            elif im.mode == "1":
                im = im.convert("L")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"image file {path} cannot be read as an image: {e}") from e
    return arr, "natural"


def read_dicom(path: str) -> tuple[np.ndarray, dict]:
    """Read a DICOM file or series folder with MONAI's ``PydicomReader``.

    Returns:
        the array (2D ``(H, W)``, RGB ``(H, W, 3)``, multi-frame ``(F, H, W[, 3])`` or series ``(H, W, N)``)
        after rescale, palette expansion and MONOCHROME1 inversion; and a small header dict.
    """
    import pydicom
    from monai.data import PydicomReader

    reader = PydicomReader(swap_ij=False, affine_lps_to_ras=True)
    if os.path.isdir(path) and not any(pydicom.misc.is_dicom(str(f)) for f in Path(path).iterdir() if f.is_file()):
        raise ValueError(f"DICOM series folder {path} contains no DICOM file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = reader.read(path)
            first = ds[0] if isinstance(ds, list) else ds
            photometric = str(first.get("PhotometricInterpretation", "MONOCHROME2"))
            if photometric == "PALETTE COLOR" and not isinstance(ds, list):
                from pydicom.pixels import apply_color_lut

                arr = np.asarray(apply_color_lut(first.pixel_array, first))
                if arr.dtype == np.uint16 and int(first.get("BitsAllocated", 8)) == 8:
                    arr = (arr // 257).astype(np.uint8)
            else:
                arr, _ = reader.get_data(ds)
                arr = np.asarray(arr)
                if not isinstance(ds, list) and "RescaleSlope" not in first:
                    arr = _enhanced_rescale(first, arr)
    except Exception as e:  # pydicom raises many types for broken files
        raise ValueError(f"DICOM file {path} cannot be read: {type(e).__name__}: {e}") from e
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
    }
    if photometric == "MONOCHROME1":
        arr = arr.max() - arr.astype(np.float32) + arr.min()
    return arr, header


def _enhanced_rescale(ds, arr: np.ndarray) -> np.ndarray:
    """Apply the shared functional group's rescale of an enhanced (multi-frame) image, if any."""
    try:
        tr = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
        return arr.astype(np.float32) * float(tr.RescaleSlope) + float(tr.RescaleIntercept)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return arr


def read_nifti(path: str) -> np.ndarray:
    """Read a NIfTI/MGH volume with MONAI's ``NibabelReader`` (array as stored, no reorientation)."""
    from monai.data import NibabelReader

    if not os.path.isfile(path):
        raise FileNotFoundError(f"NIfTI file {path} does not exist")
    try:
        reader = NibabelReader()
        arr, _ = reader.get_data(reader.read(path))
    except Exception as e:
        raise ValueError(f"NIfTI file {path} cannot be read: {type(e).__name__}: {e}") from e
    return np.asarray(arr)


def volume_shape(path: str) -> tuple[int, ...]:
    """Shape of a NIfTI volume from its header only (no pixel data read)."""
    import nibabel as nib

    try:
        return tuple(int(s) for s in nib.load(path).shape)
    except Exception as e:
        raise ValueError(f"NIfTI file {path} cannot be read: {type(e).__name__}: {e}") from e


def scale_intensity(
    arr: np.ndarray,
    kind: str,
    modality: str,
    ct_window: tuple[float, float] = (40.0, 400.0),
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Map intensities to [0, 1]: type range for natural images, HU window for CT, percentiles otherwise."""
    if kind == "natural" or (arr.dtype == np.uint8 and modality != "CT"):
        maxv = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else 1.0
        if np.issubdtype(arr.dtype, np.integer) and arr.dtype.itemsize > 2:
            return _percentile_scale(arr, percentiles)
        out = arr.astype(np.float32) / maxv
        return np.clip(out, 0.0, 1.0)
    if modality == "CT" and kind in ("dicom", "nifti"):
        centre, width = float(ct_window[0]), float(ct_window[1])
        if width <= 0:
            raise ValueError(f"ct_window width must be > 0, got {ct_window}")
        lo = centre - width / 2.0
        return np.clip((arr.astype(np.float32) - lo) / width, 0.0, 1.0)
    return _percentile_scale(arr, percentiles)


def _percentile_scale(arr: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    a = arr.astype(np.float32)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.zeros_like(a)
    lo, hi = np.percentile(finite, [percentiles[0], percentiles[1]])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip(np.nan_to_num((a - lo) / (hi - lo)), 0.0, 1.0)


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """(C, ...) -> 1 channel (luminance of RGB) or 3 channels (grey repeated)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    c = img.shape[0]
    if c == channels:
        return img
    if channels == 1:
        if c >= 3:
            w = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape((3,) + (1,) * (img.ndim - 1))
            return (img[:3] * w).sum(0, keepdims=True)
        return img[:1]
    return np.repeat(img[:1], 3, axis=0)


def _channel_first_2d(arr: np.ndarray, source: str) -> np.ndarray:
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return np.moveaxis(arr[..., :3], -1, 0)
    raise ValueError(f"image {source}: expected a 2D image (H, W) or (H, W, 3), got shape {tuple(arr.shape)}")


def read_image(
    image,
    modality: str = "other",
    slice_index: int = -1,
    frame_index: int = -1,
    spatial_dims: int = 2,
    ct_window: tuple[float, float] = (40.0, 400.0),
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Read a path or array into a float32 array in [0, 1], channel first (see the module docstring)."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if isinstance(image, (str, os.PathLike)):
        source = os.fspath(image)
        if not os.path.exists(source):
            raise FileNotFoundError(f"image file {source} does not exist")
        kind = file_kind(source)
        if kind == "image":
            arr, kind = _read_pil(source)
        elif kind == "dicom":
            arr, header = read_dicom(source)
            if header["series"]:  # (H, W, N) volume
                arr = _pick(arr, slice_index, -1, spatial_dims, source, "slice_index", series=True)
            elif header["frames"] > 1:
                arr = _pick(
                    arr, frame_index if frame_index >= 0 else slice_index, 0, spatial_dims, source, "frame_index"
                )
        elif kind == "nifti":
            arr = read_nifti(source)
            if arr.ndim == 4:
                arr = arr[..., max(frame_index, 0)]
            elif arr.ndim not in (2, 3):
                raise ValueError(
                    f"NIfTI file {source}: unsupported dimensions {tuple(arr.shape)}; expected 2D, 3D or 4D"
                )
            if arr.ndim == 3:
                arr = _pick(arr, slice_index, -1, spatial_dims, source, "slice_index", series=True)
        else:
            try:
                arr = np.load(source, allow_pickle=False)
            except Exception as e:
                raise ValueError(f"array file {source} cannot be read: {e}") from e
            kind = "array"
    else:
        source = "<array>"
        arr = np.asarray(image)
        kind = "natural" if arr.dtype == np.uint8 else "array"
        if arr.ndim == 3 and arr.shape[-1] not in (3, 4) or arr.ndim == 4:
            if arr.ndim == 4 and arr.shape[0] in (1, 3):  # (C, D, H, W)
                arr = np.moveaxis(arr, 0, -1)
                arr = arr[..., 0] if arr.shape[-1] == 1 else arr
            if arr.ndim == 3:
                arr = _pick(arr, slice_index, 0, spatial_dims, source, "slice_index")
    arr = scale_intensity(np.asarray(arr), kind, modality, ct_window, percentiles)
    if arr.ndim == spatial_dims + 1 and arr.shape[-1] in (3, 4) and spatial_dims == 2:
        return np.ascontiguousarray(_channel_first_2d(arr, source), dtype=np.float32)
    if spatial_dims == 3:
        if arr.ndim != 3:
            raise ValueError(f"image {source}: expected a 3D volume for spatial_dims=3, got {arr.shape}")
        return np.ascontiguousarray(arr[None], dtype=np.float32)
    return np.ascontiguousarray(_channel_first_2d(arr, source), dtype=np.float32)


def _pick(arr, index, axis, spatial_dims, source, field, series=False):  # noqa: ARG001
    """Take slice ``index`` along ``axis`` of a volume (or keep the volume for 3D)."""
    if spatial_dims == 3:
        return arr
    n = arr.shape[axis]
    if index < 0:
        raise ValueError(
            f"image {source} is a volume of shape {tuple(arr.shape)}; set the item's '{field}' (0..{n - 1})"
            " to take a 2D slice, or use spatial_dims=3"
        )
    if index >= n:
        raise ValueError(f"image {source}: item field '{field}' is {index}, expected 0..{n - 1}")
    return np.take(arr, index, axis=axis)
