"""NIfTI/MGH volumes: reading them (MONAI's ``NibabelReader``, under the pixel limit), their header's shape, and
resampling a volume to a voxel spacing (MONAI's ``Spacing``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pgnm_monai.data.utils import check_pixel_count, require_regular_file

__all__ = ["read_nifti", "read_nifti_with_affine", "resample_to_spacing", "volume_shape"]


def read_nifti(path: str, max_pixels: int | None = None) -> np.ndarray:
    """Read a NIfTI/MGH volume with MONAI's ``NibabelReader`` (array as stored, no reorientation); one of more than
    ``max_pixels`` voxels (:func:`~pgnm_monai.data.utils.max_image_pixels` when ``None``) is refused by name."""
    return read_nifti_with_affine(path, max_pixels)[0]


def read_nifti_with_affine(path: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_nifti` and the reader's affine of the spatial axes."""
    from monai.data import NibabelReader

    require_regular_file(path, "NIfTI file")
    try:
        reader = NibabelReader()
        image = reader.read(path)
    except Exception as e:
        raise ValueError(f"NIfTI file {path} cannot be read: {type(e).__name__}: {e}") from e
    check_pixel_count(f"NIfTI file {path}", image.shape, limit)  # the header's shape: nothing decoded yet
    try:
        arr, meta = reader.get_data(image)
    except Exception as e:
        raise ValueError(f"NIfTI file {path} cannot be read: {type(e).__name__}: {e}") from e
    return np.asarray(arr), np.asarray(meta["affine"], dtype=np.float64)


def resample_to_spacing(
    volume: np.ndarray, affine: np.ndarray | None, spacing: Sequence[float], source: str = "<array>"
) -> np.ndarray:
    """Resample a channel-first volume ``(C, D, H, W)`` to ``spacing`` (mm per voxel) with MONAI's ``Spacing``.

    Args:
        volume: the volume, channel first.
        affine: its 4 x 4 voxel-to-world affine (``None``: the source has no spacing, refused naming ``source``).
        spacing: the target spacing, one value per spatial axis.
        source: the volume's name, for errors.
    """
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    if affine is None:
        raise ValueError(
            f"image {source} carries no voxel spacing (only NIfTI/MGH files and DICOM series folders do);"
            " leave 'spacing' unset for this data"
        )
    image = MetaTensor(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)), affine=torch.as_tensor(affine))
    out = Spacing(pixdim=tuple(float(s) for s in spacing), mode="bilinear", padding_mode="border")(image)
    return np.ascontiguousarray(torch.as_tensor(out).numpy(), dtype=np.float32)


def volume_shape(path: str) -> tuple[int, ...]:
    """Shape of a NIfTI volume from its header only (no pixel data read)."""
    import nibabel as nib

    require_regular_file(path, "NIfTI file")
    try:
        return tuple(int(s) for s in nib.load(path).shape)
    except Exception as e:
        raise ValueError(f"NIfTI file {path} cannot be read: {type(e).__name__}: {e}") from e
