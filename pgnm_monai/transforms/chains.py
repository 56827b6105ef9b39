"""The paper's train/eval transform chains as Python functions, for items of any source (path or array image).

The bundles list the same chains inline in ``configs/train.json`` (``train#preprocessing``,
``validate#preprocessing``), where one transform can be overridden; a test checks both give the same tensors.

Train: load -> random resized crop (torchvision ``RandomResizedCrop`` sampling, scale (0.08, 1), ratio
(3/4, 4/3)) to ``image_size`` -> horizontal flip (p = 0.5) -> normalise (mean 0.3162, std 0.3213).
Eval: load -> resize the short side to ``image_size * 256 / 224`` -> centre crop ``image_size`` ->
normalise. The output ``image`` is a float32 ``torch.Tensor`` (C, H, W) with C = ``channels``; the other
item keys (label and metadata) pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import CenterSpatialCropd, Compose, EnsureTyped, NormalizeIntensityd, RandFlipd

from pgnm_monai.data.schema import IMAGE
from pgnm_monai.transforms.dictionary import LoadMedicalImaged, RandResizedCropd, ResizeShortSided

__all__ = ["PAPER_MEAN", "PAPER_STD", "eval_transforms", "train_transforms"]

PAPER_MEAN = 0.3162
PAPER_STD = 0.3213


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
