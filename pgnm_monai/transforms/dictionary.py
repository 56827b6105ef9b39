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
from pgnm_monai.mask import EPS, GRID, KERNEL_SIZE, SIGMA, MaskSample
from pgnm_monai.networks.policy import NoisePolicy
from pgnm_monai.transforms.array import (
    LoadMedicalImage,
    PolicyNoiseMask,
    RandomBetaMask,
    RandResizedCrop,
    ResizeShortSide,
    ToChannels,
    _BetaNoiseMask,
)

__all__ = [
    "LoadMedicalImageD",
    "LoadMedicalImageDict",
    "LoadMedicalImaged",
    "PolicyNoiseMaskD",
    "PolicyNoiseMaskDict",
    "PolicyNoiseMaskd",
    "RandFlipAllowedD",
    "RandFlipAllowedDict",
    "RandFlipAllowedd",
    "RandResizedCropD",
    "RandResizedCropDict",
    "RandResizedCropd",
    "RandomBetaMaskD",
    "RandomBetaMaskDict",
    "RandomBetaMaskd",
    "ResizeShortSideD",
    "ResizeShortSideDict",
    "ResizeShortSided",
    "ToChannelsD",
    "ToChannelsDict",
    "ToChannelsd",
]


class _BetaNoiseMaskd(Randomizable, MapTransform):
    """Dictionary wrapper: applies an array mask transform to ``keys`` (one draw per key)."""

    backend = _BetaNoiseMask.backend

    def __init__(self, keys: KeysCollection, mask: _BetaNoiseMask, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.mask = mask
        self.last_samples: dict[Hashable, MaskSample] = {}

    def set_random_state(self, seed: int | None = None, state=None) -> _BetaNoiseMaskd:
        super().set_random_state(seed, state)
        self.mask.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        self.mask.randomize()

    @property
    def last_sample(self) -> MaskSample | None:
        """The sample of the first key of the last call."""
        return next(iter(self.last_samples.values()), None)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.last_samples = {}
        for key in self.key_iterator(d):
            d[key] = self.mask(d[key], randomize=True)
            self.last_samples[key] = self.mask.last_sample
        return d


class PolicyNoiseMaskd(_BetaNoiseMaskd):
    """Dictionary version of :class:`PolicyNoiseMask`.

    Args:
        keys: keys of the batch images to mask.
        policy: the noise policy.
        check_finite: reject batches with NaN/Inf values.
        allow_missing_keys: do not raise when a key is absent.
    """

    def __init__(
        self, keys: KeysCollection, policy: NoisePolicy, check_finite: bool = True, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, PolicyNoiseMask(policy, check_finite=check_finite), allow_missing_keys)


class RandomBetaMaskd(_BetaNoiseMaskd):
    """Dictionary version of :class:`RandomBetaMask` (same arguments, plus ``keys``)."""

    def __init__(
        self,
        keys: KeysCollection,
        grid: int = GRID,
        alpha: float = 1.0,
        beta: float = 1.0,
        kernel_size: int = KERNEL_SIZE,
        sigma: float = SIGMA,
        eps: float = EPS,
        spatial_dims: int = 2,
        check_finite: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        mask = RandomBetaMask(grid, alpha, beta, kernel_size, sigma, eps, spatial_dims, check_finite)
        super().__init__(keys, mask, allow_missing_keys)


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
        ct_window: Sequence[float] = (40.0, 400.0),
        percentiles: Sequence[float] = (0.5, 99.5),
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


PolicyNoiseMaskD = PolicyNoiseMaskDict = PolicyNoiseMaskd
RandomBetaMaskD = RandomBetaMaskDict = RandomBetaMaskd
LoadMedicalImageD = LoadMedicalImageDict = LoadMedicalImaged
RandResizedCropD = RandResizedCropDict = RandResizedCropd
RandFlipAllowedD = RandFlipAllowedDict = RandFlipAllowedd
ResizeShortSideD = ResizeShortSideDict = ResizeShortSided
ToChannelsD = ToChannelsDict = ToChannelsd
