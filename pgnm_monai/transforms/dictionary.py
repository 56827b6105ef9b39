"""Dictionary versions of :mod:`pgnm_monai.transforms.array` (``...d``, with ``...D`` / ``...Dict`` aliases).

Each keeps an inner array transform and forwards ``set_random_state`` to it, as MONAI's
``RandGaussianNoised`` does.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandFlipd, Randomizable

from pgnm_monai.data.schema import FLIP_ALLOWED, FRAME_INDEX, IMAGE, MODALITY, SLICE_INDEX
from pgnm_monai.settings import INPUT
from pgnm_monai.transforms.array import (
    LoadMedicalImage,
    NormalizeChannels,
    RandResizedCrop,
    ResizeShortSide,
    ToChannels,
)

__all__ = [
    "LoadMedicalImageD",
    "LoadMedicalImageDict",
    "LoadMedicalImaged",
    "NormalizeChannelsD",
    "NormalizeChannelsDict",
    "NormalizeChannelsd",
    "RandFlipAllowedD",
    "RandFlipAllowedDict",
    "RandFlipAllowedd",
    "RandResizedCropD",
    "RandResizedCropDict",
    "RandResizedCropd",
    "ResizeShortSideD",
    "ResizeShortSideDict",
    "ResizeShortSided",
    "ToChannelsD",
    "ToChannelsDict",
    "ToChannelsd",
]


class LoadMedicalImaged(MapTransform):
    """Dictionary version of :class:`~pgnm_monai.transforms.array.LoadMedicalImage`.

    Reads the item's ``modality`` (intensity rule) and ``slice_index``/``frame_index`` (volumes, videos).
    Arguments are those of the array transform, plus ``keys``.
    """

    backend = LoadMedicalImage.backend

    def __init__(
        self,
        keys: KeysCollection = IMAGE,
        channels: int | None = 1,
        spatial_dims: int = 2,
        ct_window: Sequence[float] = INPUT.ct_window,
        percentiles: Sequence[float] = INPUT.percentiles,
        spacing: float | Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadMedicalImage(channels, spatial_dims, ct_window, percentiles, spacing)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(
                d[key],
                modality=str(d.get(MODALITY, "other")),
                slice_index=int(d.get(SLICE_INDEX, -1)),
                frame_index=int(d.get(FRAME_INDEX, -1)),
            )
        return d


class RandResizedCropd(Randomizable, MapTransform):
    """Dictionary version of :class:`~pgnm_monai.transforms.array.RandResizedCrop` (one box for all ``keys``)."""

    backend = RandResizedCrop.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.cropper = RandResizedCrop(spatial_size, scale=scale, ratio=ratio)

    def set_random_state(self, seed: int | None = None, state=None) -> RandResizedCropd:
        super().set_random_state(seed, state)
        self.cropper.set_random_state(seed, state)
        return self

    def randomize(self, shape: Sequence[int]) -> None:
        self.cropper.randomize(shape)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        first = next(self.key_iterator(d), None)
        if first is None:
            return d
        self.randomize(tuple(d[first].shape[1:]))
        for key in self.key_iterator(d):
            d[key] = self.cropper(d[key], randomize=False)
        return d


class RandFlipAllowedd(RandFlipd):
    """MONAI's ``RandFlipd``, never flipping an item whose ``allow_key`` is false (items without it may flip).

    Sources whose classes a flip changes (left/right organs) mark their items ``flip_allowed: False`` (a union
    source's ``flip_allowed`` option); the flip is drawn for every item all the same, so the random stream does
    not depend on which items opt out.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.1,
        spatial_axis: Sequence[int] | int | None = None,
        allow_key: str = FLIP_ALLOWED,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob=prob, spatial_axis=spatial_axis, allow_missing_keys=allow_missing_keys)
        self.allow_key = allow_key
        self._allowed = True

    def randomize(self, data=None) -> None:
        super().randomize(data)
        self._do_transform = self._do_transform and self._allowed

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict:
        self._allowed = bool(data.get(self.allow_key, True))
        return super().__call__(data, lazy)


class ResizeShortSided(MapTransform):
    """Dictionary version of :class:`~pgnm_monai.transforms.array.ResizeShortSide`."""

    backend = ResizeShortSide.backend

    def __init__(
        self, keys: KeysCollection, size: int, crop_size: int | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.resizer = ResizeShortSide(size, crop_size)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resizer(d[key])
        return d


class ToChannelsd(MapTransform):
    """Dictionary version of :class:`~pgnm_monai.transforms.array.ToChannels`."""

    backend = ToChannels.backend

    def __init__(self, keys: KeysCollection, channels: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ToChannels(channels)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


class NormalizeChannelsd(MapTransform):
    """Dictionary version of :class:`~pgnm_monai.transforms.array.NormalizeChannels`."""

    backend = NormalizeChannels.backend

    def __init__(
        self,
        keys: KeysCollection,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = NormalizeChannels(mean, std)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d


LoadMedicalImageD = LoadMedicalImageDict = LoadMedicalImaged
NormalizeChannelsD = NormalizeChannelsDict = NormalizeChannelsd
RandResizedCropD = RandResizedCropDict = RandResizedCropd
RandFlipAllowedD = RandFlipAllowedDict = RandFlipAllowedd
ResizeShortSideD = ResizeShortSideDict = ResizeShortSided
ToChannelsD = ToChannelsDict = ToChannelsd
