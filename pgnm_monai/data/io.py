"""Reading one item's image into a float array in [0, 1], shaped (C, H, W) (or (C, D, H, W) for 3D).

Files: PNG/JPEG/BMP/TIFF/GIF (Pillow), DICOM files or series folders (MONAI ``PydicomReader``), NIfTI/MGH
(MONAI ``NibabelReader``), ``.npy``. Arrays (MedMNIST) are read the same way as files.

**The pixel rule** (one rule for every reader and pixel type), in two steps:

1. Layout. Pillow: palette images (``P``, ``PA``) become RGB through their palette; alpha is dropped, never
   composited (``LA`` -> ``L``, ``RGBA``/``RGBa``/``PA`` -> ``RGB``); ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and
   ``RGBX`` become RGB (Pillow's conversion); ``1`` (1-bit) stays 1-bit, ``I;16*`` 16-bit, ``I`` 32-bit signed,
   ``F`` 32-bit float. DICOM: rescale slope/intercept applied (enhanced multi-frame too), ``PALETTE COLOR``
   expanded to RGB, ``MONOCHROME1`` inverted. NIfTI/MGH: the data as stored (nibabel's scaling). Only the first
   frame of a multi-frame GIF/TIFF is read. JPEG/PNG/TIFF: the EXIF orientation is applied (the image as a
   viewer shows it), by both decoders (TorchCodec's fast path and Pillow).
2. Values, by the first case that applies:

   a. CT from DICOM/NIfTI (values in HU): the window ``ct_window`` (level, width), clipped to [0, 1].
   b. Integers with a fixed range: the integer pixels of image files (PNG/JPEG/BMP/TIFF/GIF), and 8-bit
      (``uint8``) or 1-bit (``bool``) data from any reader, are divided by the largest value of their stored
      type: 1-bit by 1, 8-bit by 255, 16-bit by 65535, 32-bit signed (``I``) by 2**31 - 1; negative values
      clip to 0. (A 12-bit X-ray saved as 16-bit PNG therefore stays dark: values are never stretched.)
   c. Everything else (float pixels of any source, DICOM/NIfTI integers wider than 8 bits other than CT,
      ``.npy``/array integers wider than 8 bits): kept as they are when every value lies in [0, 1], else
      percentile-scaled (``percentiles``, default 0.5-99.5) and clipped to [0, 1].

**The pixel limit.** Every reader checks the size the file's header states before it decodes the pixels (PNG and
JPEG headers on TorchCodec's fast path, Pillow's header, the DICOM rows, columns and frames of every file of a
series, the NIfTI and ``.npy`` shapes): an image of more than :func:`~pgnm_monai.data.utils.max_image_pixels`
pixels (voxels) is refused with a ``ValueError`` naming the file, its size and the limit (a 250 KB PNG can state
16000 x 16000). The default is :data:`pgnm_monai.settings.MAX_IMAGE_PIXELS`; the environment variable
``PGNM_MAX_IMAGE_PIXELS`` changes it for every process of a run, and ``read_image(..., max_pixels=N)`` for one call.

**Non-finite pixels** (NaN, +Inf, -Inf) are refused at load time: :func:`read_image` raises ``ValueError``
naming the file and the number of such values; nothing is sanitised silently.

**Files that are not images.** :func:`read_image` refuses, naming the path, anything that is not a regular
file (a FIFO, socket or device, a directory where a file is expected), checked with ``os.stat`` before any
``open``, so no reader can block on a special file; a DICOM series folder holding such an entry is refused
too. (Listing a folder skips such files with a warning: :mod:`pgnm_monai.data.image_files`.) The file's type
comes from its suffix (:func:`pgnm_monai.data.image_files.file_kind`).

Volumes: ``slice_index`` picks a slice along the last spatial axis of a NIfTI / DICOM series volume
(axis 0 of a 3D array, as MedMNIST stores (D, H, W)); a volume of one slice (a NIfTI ``(H, W, 1)``) is read in
2D as that slice, without a ``slice_index``. An in-memory ``(H, W, 3|4)`` array is a 2D image with channels, refused
for ``spatial_dims=3``; ``frame_index`` a frame of a multi-frame DICOM
(or the time point of a 4-D NIfTI, which must be given: a 4-D file without one is refused by name). A DICOM
series folder must hold one series (``SeriesInstanceUID``): a folder of two is refused by name.

**Voxel spacing.** With ``spacing`` set, :func:`read_image` resamples a whole volume (``spatial_dims=3``) to that
voxel spacing in mm with MONAI's ``Spacing`` (trilinear, from the reader's affine) after the intensities are
scaled. Only NIfTI/MGH files and DICOM series folders carry a spacing; any other source is refused, by name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from monai.utils import optional_import

from pgnm_monai.data.dicom import read_dicom
from pgnm_monai.data.image_files import file_kind
from pgnm_monai.data.nifti import read_nifti, read_nifti_with_affine, resample_to_spacing, volume_shape
from pgnm_monai.data.utils import check_pixel_count, max_image_pixels, require_regular_file
from pgnm_monai.settings import INPUT, MAX_IMAGE_PIXELS_ENV

decode_jpeg, _has_codec = optional_import("torchcodec.decoders", name="decode_jpeg")
decode_png, _ = optional_import("torchcodec.decoders", name="decode_png")

__all__ = [
    "read_image",
    "read_nifti",
    "resample_to_spacing",
    "scale_intensity",
    "to_channels",
    "volume_shape",
]

_TO_RGB = ("P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _header_size(raw: bytes | bytearray) -> tuple[int, int] | None:
    """``(height, width)`` a PNG's IHDR or a JPEG's frame header states, read from the first bytes; ``None`` for
    another format or a header not found."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n") and len(raw) >= 24 and raw[12:16] == b"IHDR":
        return int.from_bytes(raw[20:24], "big"), int.from_bytes(raw[16:20], "big")
    if not raw.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 9 <= len(raw) and raw[i] == 0xFF:
        marker = raw[i + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # fill byte, markers without a length
            i += 1 if marker == 0xFF else 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            return int.from_bytes(raw[i + 5 : i + 7], "big"), int.from_bytes(raw[i + 7 : i + 9], "big")
        i += 2 + int.from_bytes(raw[i + 2 : i + 4], "big")
    return None


def _check_image_header(path: str, limit: int) -> None:
    """Refuse a PNG/JPEG whose header states more than ``limit`` pixels (reads the first 64 KiB at most)."""
    with open(path, "rb") as f:
        size = _header_size(f.read(65536))
    if size is not None:
        check_pixel_count(f"image file {path}", size, limit)


def _decode_8bit(path: str, limit: int | None = None) -> np.ndarray | None:
    """Decode an 8-bit grey or RGB JPEG/PNG with TorchCodec (libjpeg-turbo/libpng, no Python parsing).

    The fast path of :func:`_read_pil`: two to three times as fast on small images, with the same pixels as
    Pillow (both decode with the same libraries and settings; ``tests/test_loader_fast_path.py`` compares them).
    Every other case (palette, alpha, 16-bit, CMYK, BMP/TIFF/GIF, damaged files, TorchCodec not installed)
    returns ``None`` and goes through Pillow, which applies step 1 of the pixel rule and names the file in its
    errors.
    """
    if not _has_codec:
        return None
    with open(path, "rb", buffering=0) as f:
        raw = bytearray(f.readall())  # writable: the codec takes it as a tensor without copying it again
    size = _header_size(raw)
    if size is None:
        return None
    check_pixel_count(f"image file {path}", size, limit)
    if raw.startswith(b"\xff\xd8\xff"):
        decode = decode_jpeg
    elif raw.startswith(b"\x89PNG\r\n\x1a\n") and len(raw) > 25 and raw[24] == 8 and raw[25] in (0, 2):
        decode = decode_png  # IHDR bit depth 8, colour type grey (0) or RGB (2)
    else:
        return None
    try:
        img = decode(torch.frombuffer(raw, dtype=torch.uint8), mode="UNCHANGED")
    except (RuntimeError, ValueError):
        return None
    if img.dtype != torch.uint8 or img.shape[0] not in (1, 3):  # e.g. CMYK JPEG, grey PNG with transparency
        return None
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


def _read_pil(path: str, limit: int | None = None) -> tuple[np.ndarray, str]:
    """Pillow read with step 1 of the pixel rule (module docstring): ``(array, "natural")``; an image of more than
    ``limit`` pixels (:func:`~pgnm_monai.data.utils.max_image_pixels` when ``None``) is refused before decoding."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    limit = max_image_pixels() if limit is None else int(limit)
    arr = _decode_8bit(path, limit)
    if arr is not None:
        return arr, "natural"
    _check_image_header(path, limit)
    if Image.MAX_IMAGE_PIXELS is not None and limit > 2 * Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # Pillow's own bomb check (its documented setting) never stricter than ours
    unreadable = (UnidentifiedImageError, OSError, SyntaxError, ValueError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked next, by name
            im = Image.open(path)  # the header only
    except Image.DecompressionBombError as e:
        raise ValueError(
            f"image file {path}: {e} Resize the file, or raise the limit with the environment variable "
            f"{MAX_IMAGE_PIXELS_ENV}."
        ) from e
    except unreadable as e:
        raise ValueError(f"image file {path} cannot be read as an image: {e}") from e
    with im:
        check_pixel_count(f"image file {path}", im.size[::-1], limit)
        try:
            im.load()
            im = ImageOps.exif_transpose(im)  # the EXIF orientation, as TorchCodec applies it on the fast path
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA")  # the palette's colours (and its transparency, dropped next)
            if im.mode in _TO_RGB:
                im = im.convert("RGB")
            elif im.mode in ("LA", "La"):
                im = im.convert("L")
            arr = np.asarray(im)
        except unreadable as e:
            raise ValueError(f"image file {path} cannot be read as an image: {e}") from e
    return arr, "natural"


def _check_finite(arr: np.ndarray, source: str) -> None:
    """Refuse NaN/Inf pixels (the module docstring's rule), naming ``source``."""
    if np.issubdtype(arr.dtype, np.inexact) and not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"image {source}: {bad} of {arr.size} pixel values are NaN or infinite; images with non-finite"
            " pixels are refused at load time (fix or remove the file)"
        )


def scale_intensity(
    arr: np.ndarray,
    kind: str,
    modality: str,
    ct_window: tuple[float, float] = INPUT.ct_window,
    percentiles: tuple[float, float] = INPUT.percentiles,
) -> np.ndarray:
    """Map intensities to [0, 1] by step 2 of the pixel rule (module docstring).

    Args:
        arr: the pixels after step 1.
        kind: ``"natural"`` (an image file or a ``uint8`` array), ``"dicom"``, ``"nifti"`` or ``"array"``.
        modality: the item's modality (``"CT"`` selects the HU window for DICOM/NIfTI).
        ct_window: CT window ``(level, width)`` in HU.
        percentiles: the percentiles mapped to 0 and 1 in case c.
    """
    if modality == "CT" and kind in ("dicom", "nifti"):
        centre, width = float(ct_window[0]), float(ct_window[1])
        if width <= 0:
            raise ValueError(f"ct_window width must be > 0, got {ct_window}")
        lo = centre - width / 2.0
        return np.clip((arr.astype(np.float32) - lo) / width, 0.0, 1.0)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.unsignedinteger) and (kind == "natural" or arr.dtype == np.uint8):
        return np.divide(arr, float(np.iinfo(arr.dtype).max), dtype=np.float32)  # already in [0, 1]
    if np.issubdtype(arr.dtype, np.integer) and kind == "natural":
        return np.clip(arr.astype(np.float32) / float(np.iinfo(arr.dtype).max), 0.0, 1.0)
    a = arr.astype(np.float32)
    if a.size and float(a.min()) >= 0.0 and float(a.max()) <= 1.0:
        return a
    return _percentile_scale(a, percentiles)


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
    ct_window: tuple[float, float] = INPUT.ct_window,
    percentiles: tuple[float, float] = INPUT.percentiles,
    spacing: Sequence[float] | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Read a path or array into a float32 array in [0, 1], channel first (see the module docstring).

    ``spacing`` (volumes only): resample to that voxel spacing in mm (module docstring, "Voxel spacing").
    ``max_pixels``: the pixel limit of a file (module docstring, "The pixel limit"; ``None``:
    :func:`~pgnm_monai.data.utils.max_image_pixels`).
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if spacing is not None and (spatial_dims != 3 or len(spacing) != 3):
        raise ValueError(f"spacing applies to volumes (spatial_dims=3) and needs 3 values, got {spacing}")
    if isinstance(image, (str, os.PathLike)):
        limit = max_image_pixels() if max_pixels is None else int(max_pixels)
        arr, kind, affine = _read_file(os.fspath(image), slice_index, frame_index, spatial_dims, limit)
        source = f"file {os.fspath(image)}"
    else:
        source, affine = "<array>", None
        arr, kind = _read_array(image, slice_index, spatial_dims, source)
    arr = np.asarray(arr)
    _check_finite(arr, source)
    arr = scale_intensity(arr, kind, modality, ct_window, percentiles)
    if arr.ndim == spatial_dims + 1 and arr.shape[-1] in (3, 4) and spatial_dims == 2:
        return np.ascontiguousarray(_channel_first_2d(arr, source), dtype=np.float32)
    if spatial_dims == 3:
        if arr.ndim != 3:
            raise ValueError(
                f"image {source} has shape {tuple(arr.shape)}, expected a 3D volume for spatial_dims=3; give "
                "spatial_dims 2 (the bundles' config id 'spatial_dims') for 2D images"
            )
        if spacing is not None:
            return resample_to_spacing(arr[None], affine, spacing, source)
        return np.ascontiguousarray(arr[None], dtype=np.float32)
    return np.ascontiguousarray(_channel_first_2d(arr, source), dtype=np.float32)


def _read_file(
    source: str, slice_index: int, frame_index: int, spatial_dims: int, limit: int
) -> tuple[np.ndarray, str, np.ndarray | None]:
    """``(pixels, kind for the pixel rule, affine of a volume kept whole or None)`` of an image file or series."""
    if not os.path.isdir(source):  # a folder is a DICOM series (checked by read_dicom)
        require_regular_file(source, "image file")
    kind = file_kind(source)
    if kind == "image":
        arr, kind = _read_pil(source, limit)
        return arr, kind, None
    if kind == "dicom":
        arr, header = read_dicom(source, limit)
        if header["series"]:  # (H, W, N) volume
            arr = _pick(arr, slice_index, -1, spatial_dims, source, "slice_index", series=True)
            return arr, kind, header["affine"]
        if header["frames"] > 1:
            index = frame_index if frame_index >= 0 else slice_index
            arr = _pick(arr, index, 0, spatial_dims, source, "frame_index")
        return arr, kind, None
    if kind == "nifti":
        arr, affine = read_nifti_with_affine(source, limit)
        if arr.ndim == 4:
            if not 0 <= frame_index < arr.shape[-1]:
                raise ValueError(
                    f"NIfTI file {source} is 4-D {tuple(arr.shape)} (a time series or several volumes); set the "
                    f"item's 'frame_index' (0..{arr.shape[-1] - 1}) to read one of them, or split it into 3-D files."
                )
            arr = arr[..., frame_index]
        elif arr.ndim not in (2, 3):
            raise ValueError(f"NIfTI file {source}: unsupported dimensions {tuple(arr.shape)}; expected 2D, 3D or 4D")
        if arr.ndim == 3:
            arr = _pick(arr, slice_index, -1, spatial_dims, source, "slice_index", series=True)
        return arr, kind, affine
    return _read_npy(source, limit), "array", None


def _read_npy(source: str, limit: int) -> np.ndarray:
    """A ``.npy`` array (no pickles), its header's shape checked against ``limit`` before the data is read."""
    try:
        shape = np.load(source, mmap_mode="r", allow_pickle=False).shape  # the header; no data read
    except Exception as e:
        if "Python objects" in str(e) or "allow_pickle" in str(e):
            raise ValueError(
                f"array file {source} holds Python objects (dtype object), which are never read (loading them would "
                "unpickle, which can run code); expected a numeric array, e.g. np.save(path, image.astype(np.float32))"
            ) from None
        raise ValueError(f"array file {source} cannot be read: {e}") from e
    check_pixel_count(f"array file {source}", shape, limit)
    try:
        return np.load(source, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"array file {source} cannot be read: {e}") from e


def _read_array(image, slice_index: int, spatial_dims: int, source: str) -> tuple[np.ndarray, str]:
    """``(pixels, kind for the pixel rule)`` of an in-memory image or volume (a slice of it in 2D)."""
    arr = np.asarray(image)
    kind = "natural" if arr.dtype == np.uint8 else "array"
    if spatial_dims == 3 and arr.ndim == 3 and arr.shape[-1] in (3, 4) and min(arr.shape[:2]) > 4:
        raise ValueError(
            f"image {source} of shape {tuple(arr.shape)} is a 2D image with {arr.shape[-1]} channels (channels last), "
            "not a volume; give spatial_dims 2 (the bundles' config id 'spatial_dims'), or, for a MedMNIST file of "
            "volumes, the dataset option 'layout': 'volumes'"
        )
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4) or arr.ndim == 4:
        if arr.ndim == 4 and arr.shape[0] in (1, 3):  # (C, D, H, W)
            arr = np.moveaxis(arr, 0, -1)
            arr = arr[..., 0] if arr.shape[-1] == 1 else arr
        if arr.ndim == 3:
            arr = _pick(arr, slice_index, 0, spatial_dims, source, "slice_index")
    return arr, kind


def _pick(arr, index, axis, spatial_dims, source, field, series=False):  # noqa: ARG001
    """Take slice ``index`` along ``axis`` of a volume (or keep the volume for 3D)."""
    if spatial_dims == 3:
        return arr
    n = arr.shape[axis]
    if index < 0 and n == 1:  # a single-slice volume (H, W, 1) is a 2D image
        return np.take(arr, 0, axis=axis)
    if index < 0:
        raise ValueError(
            f"image {source} is a volume of shape {tuple(arr.shape)}; set the item's '{field}' (0..{n - 1}) to take a"
            " 2D slice (the dataset option 'slices' of clinical CSVs and MedMNIST files: 'middle' or 'all'), or give "
            "spatial_dims 3 (the bundles' config id 'spatial_dims') to read whole volumes"
        )
    if index >= n:
        raise ValueError(f"image {source}: item field '{field}' is {index}, expected 0..{n - 1}")
    return np.take(arr, index, axis=axis)
