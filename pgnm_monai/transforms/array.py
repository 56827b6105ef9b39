"""Preprocessing array transforms of pgnm-monai (MONAI style; dictionary versions in
:mod:`pgnm_monai.transforms.dictionary`; the noise masks in :mod:`pgnm_monai.transforms.noise_mask`).

On one ``(C, *spatial)`` item (the paper's chains, :mod:`pgnm_monai.transforms.chains`):

- :class:`LoadMedicalImage`: a path or an array to a float32 ``(C, *spatial)`` tensor in [0, 1], with the
  modality's intensity rule (:func:`pgnm_monai.data.io.read_image`).
- :class:`ToChannels`: 1 or 3 channels (grey repeated, colour to luminance); the chains load grey images as
  one channel and repeat it last, so a 3-channel network costs no more to feed than a 1-channel one.
- :class:`NormalizeChannels`: ``(img - mean) / std`` with one value for every channel or one per channel (timm's
  ImageNet values); a grey image given per-channel values is repeated to that many channels first.
- :class:`RandResizedCrop`: torchvision's ``RandomResizedCrop`` sampling, resized with antialiasing.
- :class:`ResizeShortSide`: torchvision's ``Resize(int)``: the shortest side to ``size``, aspect kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.config import NdarrayOrTensor
from monai.transforms import CenterSpatialCrop, NormalizeIntensity, Randomizable, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy

from pgnm_monai.data.io import read_image, to_channels
from pgnm_monai.settings import INPUT, intensity_values, per_channel

__all__ = ["LoadMedicalImage", "NormalizeChannels", "RandResizedCrop", "ResizeShortSide", "ToChannels"]


class LoadMedicalImage(Transform):
    """Load an image (a path or an array) to a float32 ``(C, *spatial)`` tensor in [0, 1] with ``channels`` channels.

    Args:
        channels: 1 or 3 output channels, or ``None`` to keep the stored ones (1 for grey, 3 for colour; see
            :class:`ToChannels`).
        spatial_dims: 2 (a slice or frame of a volume) or 3 (the volume).
        ct_window: CT window ``(level, width)`` in HU.
        percentiles: intensity percentiles mapped to [0, 1] for MR/US and other non-CT volumes.
        spacing: volumes only: resample each volume to this voxel spacing in mm (one value: isotropic), with
            MONAI's ``Spacing`` from the file's affine (NIfTI/MGH files and DICOM series folders); ``None``: as stored.
            One value (or a one-item list) is isotropic.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        channels: int | None = 1,
        spatial_dims: int = 2,
        ct_window: Sequence[float] = INPUT.ct_window,
        percentiles: Sequence[float] = INPUT.percentiles,
        spacing: float | Sequence[float] | None = None,
    ) -> None:
        if channels not in (1, 3, None):
            raise ValueError(f"channels must be 1, 3 or None (as stored), got {channels}")
        self.channels = channels
        self.spatial_dims = spatial_dims
        self.ct_window = (float(ct_window[0]), float(ct_window[1]))
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        self.spacing = _voxel_spacing(spacing, spatial_dims)

    def __call__(
        self, img: object, modality: str = "other", slice_index: int = -1, frame_index: int = -1
    ) -> torch.Tensor:
        """Read ``img`` (see :func:`pgnm_monai.data.io.read_image` for ``modality``/``slice_index``/``frame_index``)."""
        arr = read_image(
            img,
            modality=str(modality),
            slice_index=int(slice_index),
            frame_index=int(frame_index),
            spatial_dims=self.spatial_dims,
            ct_window=self.ct_window,
            percentiles=self.percentiles,
            spacing=self.spacing,
        )
        return torch.from_numpy(arr if self.channels is None else to_channels(arr, self.channels))


def _voxel_spacing(spacing: float | Sequence[float] | None, spatial_dims: int) -> tuple[float, ...] | None:
    """``spacing`` as one positive float per axis of a volume (``None`` stays ``None``); a clear error otherwise."""
    if spacing is None:
        return None
    values = (spacing,) if isinstance(spacing, (int, float)) else tuple(spacing)
    values = values * 3 if len(values) == 1 else values
    if spatial_dims != 3 or len(values) != 3 or not all(isinstance(v, (int, float)) and v > 0 for v in values):
        raise ValueError(
            f"spacing must be null or a positive voxel spacing in mm (one number or 3) for volumes (spatial_dims=3);"
            f" got spacing={spacing!r} with spatial_dims={spatial_dims}"
        )
    return tuple(float(v) for v in values)


class ToChannels(Transform):
    """``(C, *spatial)`` to ``channels`` channels: grey repeated to 3, colour to its luminance for 1.

    The rule of :func:`pgnm_monai.data.io.to_channels` (the same values as loading with ``channels`` set).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, channels: int) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.channels = channels

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img`` ``(C, *spatial)`` with :attr:`channels` channels (itself when it has them already)."""
        if img.shape[0] == self.channels:
            return img
        if self.channels == 3 and img.shape[0] == 1 and isinstance(img, torch.Tensor):
            return img.expand(3, *img.shape[1:]).contiguous()  # the common case, without a round trip through numpy
        return convert_to_dst_type(to_channels(convert_to_numpy(img), self.channels), img)[0]


class NormalizeChannels(NormalizeIntensity):
    """MONAI's ``NormalizeIntensity`` with a fixed ``(img - mean) / std``: one value for every channel, or one per
    channel (MONAI's ``channel_wise``). A one-channel image given per-channel values is first repeated to that many
    channels (:class:`ToChannels`, grey to RGB), so a grey image meets each ImageNet channel's mean and std.

    Args:
        mean: the bundle id ``intensity_mean``: one value, or one per channel.
        std: the bundle id ``intensity_std``: one value > 0, or one per channel (as many as ``mean`` when both are
            per channel).

    Raises:
        ValueError: values :func:`pgnm_monai.settings.intensity_values` refuses, naming the config id (MONAI's own
            transform would divide by 1 where the std is 0); at call, an image of another channel count.
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        what = "the normalisation {0} (config id 'intensity_{0}')"
        mean = intensity_values(what.format("mean"), mean)
        std = intensity_values(what.format("std"), std, positive=True)
        channels = max(len(v) if isinstance(v, list) else 1 for v in (mean, std))
        if channels > 1:  # both per channel: one value repeated; another count than the other's is refused
            mean, std = (
                list(per_channel(mean, channels, what.format("mean"))),
                list(per_channel(std, channels, what.format("std"))),
            )
        super().__init__(subtrahend=mean, divisor=std, channel_wise=channels > 1)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img`` ``(C, *spatial)`` normalised (with as many channels as the values when it had one)."""
        if self.channel_wise and img.shape[0] == 1:
            img = ToChannels(len(self.subtrahend))(img)
        return super().__call__(img)


def _resize(img: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    x = torch.as_tensor(img, dtype=torch.float32)[None]
    if x.ndim == 4:
        y = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    else:
        y = F.interpolate(x, size=tuple(size), mode="trilinear", align_corners=False)
    return y[0]


class RandResizedCrop(Randomizable, Transform):
    """Random crop of random area and aspect ratio, resized to ``spatial_size`` (torchvision's sampling).

    Args:
        spatial_size: output size, an int (square/cube) or a sequence.
        scale: range of the crop area (volume in 3D) as a fraction of the image.
        ratio: range of the aspect ratio (width / height; in 3D applied to the last two axes).
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        spatial_size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
    ) -> None:
        self.spatial_size = spatial_size
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        if not 0 < self.scale[0] <= self.scale[1] <= 1 or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"scale must lie in (0, 1] and be increasing, ratio positive: {scale}, {ratio}")
        self._box: tuple[tuple[int, int], ...] = ()

    def randomize(self, shape: Sequence[int]) -> None:
        """Pick the crop box for an image of spatial ``shape``."""
        h, w = int(shape[-2]), int(shape[-1])
        depth = int(shape[0]) if len(shape) == 3 else 1
        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * self.R.uniform(*self.scale)
            ar = math.exp(self.R.uniform(*log_ratio))
            cw = int(round(math.sqrt(target * ar)))
            ch = int(round(math.sqrt(target / ar)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(self.R.randint(0, h - ch + 1))
                left = int(self.R.randint(0, w - cw + 1))
                break
        else:  # fallback: centre crop with the ratio clamped
            in_ratio = w / h
            if in_ratio < self.ratio[0]:
                cw, ch = w, int(round(w / self.ratio[0]))
            elif in_ratio > self.ratio[1]:
                ch, cw = h, int(round(h * self.ratio[1]))
            else:
                cw, ch = w, h
            top, left = (h - ch) // 2, (w - cw) // 2
        box = ((top, top + ch), (left, left + cw))
        if len(shape) == 3:
            cd = max(1, int(round(depth * math.sqrt((ch * cw) / area))))
            front = int(self.R.randint(0, depth - cd + 1))
            box = ((front, front + cd),) + box
        self._box = box

    def __call__(self, img: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        """Crop ``img`` ``(C, *spatial)`` (a new box unless ``randomize=False``) and resize it."""
        spatial = tuple(img.shape[1:])
        if randomize or not self._box:
            self.randomize(spatial)
        size = self.spatial_size
        out_size = (size,) * len(spatial) if isinstance(size, int) else tuple(size)
        sl = (slice(None),) + tuple(slice(a, b) for a, b in self._box)
        return _resize(img[sl], out_size)


class ResizeShortSide(Transform):
    """Resize ``(C, *spatial)`` so that the shortest spatial side equals ``size`` (torchvision ``Resize(int)``).

    Args:
        size: the shortest side after resizing.
        crop_size: then keep the centre ``crop_size`` square/cube, the box of MONAI's ``CenterSpatialCrop`` (the
            same values as a ``CenterSpatialCrop`` step after this one, in one step); ``None``: no crop.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, size: int, crop_size: int | None = None) -> None:
        self.size = int(size)
        self.cropper = CenterSpatialCrop(int(crop_size)) if crop_size is not None else None
        self._boxes: dict[tuple[int, ...], tuple[slice, ...]] = {}  # crop box per resized shape (a data set has few)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        spatial = tuple(img.shape[1:])
        s = min(spatial)
        out_size = tuple(self.size if n == s else max(1, int(self.size * n / s)) for n in spatial)
        out = _resize(img, out_size)
        if self.cropper is None:
            return out
        box = self._boxes.get(out_size)
        if box is None:
            box = self._boxes[out_size] = (slice(None), *self.cropper.compute_slices(out_size))
        return out[box]
