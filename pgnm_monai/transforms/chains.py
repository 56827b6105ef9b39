"""The paper's train/eval transform chains as Python functions, for items of any source (path or array image).

The bundles list the same chains inline in ``configs/train.json`` (``train#preprocessing``,
``validate#preprocessing``), where one transform can be overridden; a test checks both give the same tensors.

Train: load (a grey image stays one channel) -> random resized crop (torchvision ``RandomResizedCrop``
sampling, scale (0.08, 1), ratio (3/4, 4/3)) to ``image_size`` -> horizontal flip (p = 0.5) -> normalise
(:data:`pgnm_monai.settings.INPUT`'s mean and std: one value, or one per channel,
:class:`~pgnm_monai.transforms.NormalizeChannels`) -> ``channels`` channels. Eval: load -> resize the short side
to :func:`eval_resize` (``image_size * 256 / 224``) -> centre crop ``image_size`` -> normalise -> ``channels``
channels. Defaults are :data:`~pgnm_monai.settings.INPUT`'s. Repeating a
grey channel commutes with every step, so this is the same tensor as loading 3 channels first, for a third
of the resize work. The output ``image`` is a float32 ``torch.Tensor`` (C, H, W) with C = ``channels``; the
other item keys (label and metadata) pass through unchanged.

Speed: nothing reads MONAI's per-transform metadata here (the chains end in a plain tensor), so the bundles
switch it off (``track_meta: false``, MONAI's ``set_track_meta``) and :func:`meta_tracking` does the same
around in-process use; the outputs are the same tensors either way (``tests/test_loader_fast_path.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from monai.config import KeysCollection
from monai.data import get_track_meta, set_track_meta
from monai.transforms import Compose, EnsureTyped

from pgnm_monai.data.schema import IMAGE
from pgnm_monai.settings import INPUT, eval_resize
from pgnm_monai.transforms.dictionary import (
    LoadMedicalImaged,
    NormalizeChannelsd,
    RandFlipAllowedd,
    RandResizedCropd,
    ResizeShortSided,
    ToChannelsd,
)

__all__ = ["eval_resize", "eval_transforms", "meta_tracking", "train_transforms"]


@contextmanager
def meta_tracking(enabled: bool) -> Iterator[None]:
    """Set MONAI's global metadata tracking (``monai.data.set_track_meta``) inside the block, restore it after."""
    before = get_track_meta()
    set_track_meta(enabled)
    try:
        yield
    finally:
        set_track_meta(before)


def _load_channels(channels: int) -> int | None:
    """Channels to load: 1 (colour to luminance at once), else as stored (grey is repeated last, by ``_tail``)."""
    return 1 if channels == 1 else None


def _tail(keys: KeysCollection, mean: float | Sequence[float], std: float | Sequence[float], channels: int) -> list:
    return [
        NormalizeChannelsd(keys, mean, std),
        ToChannelsd(keys=keys, channels=channels),
        EnsureTyped(keys=keys, data_type="tensor", dtype=torch.float32, track_meta=False),
    ]


def train_transforms(
    image_size: int = INPUT.image_size,
    channels: int = INPUT.in_channels,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
    flip_prob: float = 0.5,
    mean: float | Sequence[float] = INPUT.intensity_mean,
    std: float | Sequence[float] = INPUT.intensity_std,
    spatial_dims: int = 2,
    ct_window: Sequence[float] = INPUT.ct_window,
    percentiles: Sequence[float] = INPUT.percentiles,
    keys: KeysCollection = IMAGE,
    spacing: float | Sequence[float] | None = None,
) -> Compose:
    """The paper's training chain: random resized crop, horizontal flip, normalise (module docstring)."""
    return Compose(
        [
            LoadMedicalImaged(keys, _load_channels(channels), spatial_dims, ct_window, percentiles, spacing),
            RandResizedCropd(keys, image_size, scale=scale, ratio=ratio),
            RandFlipAllowedd(keys=keys, prob=flip_prob, spatial_axis=spatial_dims - 1),
            *_tail(keys, mean, std, channels),
        ]
    )


def eval_transforms(
    image_size: int = INPUT.image_size,
    channels: int = INPUT.in_channels,
    mean: float | Sequence[float] = INPUT.intensity_mean,
    std: float | Sequence[float] = INPUT.intensity_std,
    spatial_dims: int = 2,
    ct_window: Sequence[float] = INPUT.ct_window,
    percentiles: Sequence[float] = INPUT.percentiles,
    keys: KeysCollection = IMAGE,
    spacing: float | Sequence[float] | None = None,
) -> Compose:
    """The paper's evaluation chain (resize short side, centre crop, normalise); see the module docstring."""
    return Compose(
        [
            LoadMedicalImaged(keys, _load_channels(channels), spatial_dims, ct_window, percentiles, spacing),
            # resize + centre crop in one step
            ResizeShortSided(keys, eval_resize(image_size), crop_size=int(image_size)),
            *_tail(keys, mean, std, channels),
        ]
    )
