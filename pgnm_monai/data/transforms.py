"""MONAI train/eval transform chains of the paper, for items of any source (path or array image).

Train: load -> random resized crop (torchvision ``RandomResizedCrop`` sampling, scale (0.08, 1), ratio
(3/4, 4/3)) to ``image_size`` -> horizontal flip (p = 0.5) -> normalise (mean 0.3162, std 0.3213).
Eval: load -> resize the short side to ``image_size * 256 / 224`` -> centre crop ``image_size`` ->
normalise. The output ``image`` is a float32 ``torch.Tensor`` (C, H, W) with C = ``channels``; the other
item keys (label and metadata) pass through unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    RandFlipd,
    Randomizable,
)

from pgnm_monai.data.io import read_image, to_channels
from pgnm_monai.data.schema import FRAME_INDEX, IMAGE, MODALITY, SLICE_INDEX

__all__ = [
    "PAPER_MEAN",
    "PAPER_STD",
    "LoadMedicalImaged",
    "RandResizedCropd",
    "ResizeShortSided",
    "train_transforms",
    "eval_transforms",
]

PAPER_MEAN = 0.3162
PAPER_STD = 0.3213


class LoadMedicalImaged(MapTransform):
    """Load ``image`` (a path or an array) to a float32 (C, H, W) tensor in [0, 1] with ``channels`` channels.

    Uses the item's ``modality`` (intensity windowing) and ``slice_index``/``frame_index`` (volumes);
    see :func:`pgnm_monai.data.io.read_image`.
    """

    def __init__(
        self,
        keys: KeysCollection = IMAGE,
        channels: int = 1,
        spatial_dims: int = 2,
        ct_window: Sequence[float] = (40.0, 400.0),
        percentiles: Sequence[float] = (0.5, 99.5),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.channels = channels
        self.spatial_dims = spatial_dims
        self.ct_window = (float(ct_window[0]), float(ct_window[1]))
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            arr = read_image(
                d[key],
                modality=str(d.get(MODALITY, "other")),
                slice_index=int(d.get(SLICE_INDEX, -1)),
                frame_index=int(d.get(FRAME_INDEX, -1)),
                spatial_dims=self.spatial_dims,
                ct_window=self.ct_window,
                percentiles=self.percentiles,
            )
            d[key] = torch.from_numpy(to_channels(arr, self.channels))
        return d


def _resize(img: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    x = torch.as_tensor(img, dtype=torch.float32)[None]
    if x.ndim == 4:
        y = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    else:
        y = F.interpolate(x, size=tuple(size), mode="trilinear", align_corners=False)
    return y[0]


class RandResizedCropd(Randomizable, MapTransform):
    """Random crop of random area and aspect ratio, resized to ``spatial_size`` (torchvision's sampling).

    Args:
        keys: keys of the (C, *spatial) images to crop (all with the same crop).
        spatial_size: output size, an int (square/cube) or a sequence.
        scale: range of the crop area (volume in 3D) as a fraction of the image.
        ratio: range of the aspect ratio (width / height; in 3D applied to the last two axes).
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
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

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        first = next(self.key_iterator(d), None)
        if first is None:
            return d
        spatial = tuple(d[first].shape[1:])
        self.randomize(spatial)
        size = self.spatial_size
        out_size = (size,) * len(spatial) if isinstance(size, int) else tuple(size)
        for key in self.key_iterator(d):
            img = d[key]
            sl = (slice(None),) + tuple(slice(a, b) for a, b in self._box)
            d[key] = _resize(img[sl], out_size)
        return d


class ResizeShortSided(MapTransform):
    """Resize so that the shortest spatial side equals ``size`` (torchvision ``Resize(int)``), aspect kept."""

    def __init__(self, keys: KeysCollection, size: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.size = int(size)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            spatial = d[key].shape[1:]
            s = min(spatial)
            out = tuple(self.size if n == s else max(1, int(self.size * n / s)) for n in spatial)
            d[key] = _resize(d[key], out)
        return d


def _tail(keys: KeysCollection, mean: float, std: float) -> list:
    return [
        NormalizeIntensityd(keys=keys, subtrahend=mean, divisor=std),
        EnsureTyped(keys=keys, data_type="tensor", dtype=torch.float32, track_meta=False),
    ]


def train_transforms(
    image_size: int = 224,
    channels: int = 3,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
    flip_prob: float = 0.5,
    mean: float = PAPER_MEAN,
    std: float = PAPER_STD,
    spatial_dims: int = 2,
    ct_window: Sequence[float] = (40.0, 400.0),
    percentiles: Sequence[float] = (0.5, 99.5),
    keys: KeysCollection = IMAGE,
) -> Compose:
    """The paper's training chain: random resized crop, horizontal flip, normalise (module docstring)."""
    return Compose(
        [
            LoadMedicalImaged(keys, channels, spatial_dims, ct_window, percentiles),
            RandResizedCropd(keys, image_size, scale=scale, ratio=ratio),
            RandFlipd(keys=keys, prob=flip_prob, spatial_axis=spatial_dims - 1),
            *_tail(keys, mean, std),
        ]
    )


def eval_transforms(
    image_size: int = 224,
    channels: int = 3,
    resize_ratio: float = 256.0 / 224.0,
    mean: float = PAPER_MEAN,
    std: float = PAPER_STD,
    spatial_dims: int = 2,
    ct_window: Sequence[float] = (40.0, 400.0),
    percentiles: Sequence[float] = (0.5, 99.5),
    keys: KeysCollection = IMAGE,
) -> Compose:
    """The paper's evaluation chain (resize short side, centre crop, normalise); see the module docstring."""
    resize_to = max(int(image_size), int(round(image_size * resize_ratio)))
    return Compose(
        [
            LoadMedicalImaged(keys, channels, spatial_dims, ct_window, percentiles),
            ResizeShortSided(keys, resize_to),
            CenterSpatialCropd(keys=keys, roi_size=(int(image_size),) * spatial_dims),
            *_tail(keys, mean, std),
        ]
    )
