"""Dictionary versions of :mod:`pgnm_monai.transforms.noise_mask.array` (``...d``, with ``...D`` / ``...Dict``
aliases). Each keeps an inner array transform and forwards ``set_random_state`` to it, as MONAI's
``RandGaussianNoised`` does.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from pgnm_monai.mask import MaskSample
from pgnm_monai.networks.policy import NoisePolicy
from pgnm_monai.settings import POLICY
from pgnm_monai.transforms.noise_mask.array import BetaNoiseMask, PolicyNoiseMask, RandomBetaMask

__all__ = [
    "PolicyNoiseMaskD",
    "PolicyNoiseMaskDict",
    "PolicyNoiseMaskd",
    "RandomBetaMaskD",
    "RandomBetaMaskDict",
    "RandomBetaMaskd",
]


class BetaNoiseMaskd(Randomizable, MapTransform):
    """Dictionary wrapper: applies an array mask transform to ``keys`` (one draw per key)."""

    backend = BetaNoiseMask.backend

    def __init__(self, keys: KeysCollection, mask: BetaNoiseMask, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.mask = mask
        self.last_samples: dict[Hashable, MaskSample] = {}

    def set_random_state(self, seed: int | None = None, state=None) -> BetaNoiseMaskd:
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


class PolicyNoiseMaskd(BetaNoiseMaskd):
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


class RandomBetaMaskd(BetaNoiseMaskd):
    """Dictionary version of :class:`RandomBetaMask` (same arguments, plus ``keys``)."""

    def __init__(
        self,
        keys: KeysCollection,
        grid: int = POLICY.grid,
        alpha: float = 1.0,
        beta: float = 1.0,
        kernel_size: int = POLICY.kernel_size,
        sigma: float = POLICY.sigma,
        eps: float = POLICY.eps,
        spatial_dims: int = 2,
        check_finite: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        mask = RandomBetaMask(grid, alpha, beta, kernel_size, sigma, eps, spatial_dims, check_finite)
        super().__init__(keys, mask, allow_missing_keys)


PolicyNoiseMaskD = PolicyNoiseMaskDict = PolicyNoiseMaskd
RandomBetaMaskD = RandomBetaMaskDict = RandomBetaMaskd
