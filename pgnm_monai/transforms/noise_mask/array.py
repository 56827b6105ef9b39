"""Noise-mask array transforms: on a *batch* ``(B, C, *spatial)`` on the policy's device (they run in the main
process, e.g. from an ignite handler, never in DataLoader workers). Dictionary versions in
:mod:`pgnm_monai.transforms.noise_mask.dictionary`.

- :class:`PolicyNoiseMask`: the concentrations come from a :class:`~pgnm_monai.networks.NoisePolicy`
  (the method).
- :class:`RandomBetaMask`: the same pipeline with fixed, untrained concentrations (the ``random_mask``
  ablation arm: does *learning* the mask matter?).

They follow MONAI's ``RandGaussianNoise`` pattern (``Randomizable`` with its own generator,
``set_random_state``) and keep ``MetaTensor`` metadata. After each call ``last_sample`` holds the
:class:`~pgnm_monai.mask.MaskSample` (log-probabilities, entropy, mask) that a policy update needs.
Defaults are :data:`pgnm_monai.settings.POLICY`'s.
"""

from __future__ import annotations

import torch
from monai.data.meta_obj import get_track_meta
from monai.transforms import Randomizable, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from pgnm_monai.mask import MaskSample, apply_noise_mask, check_image, check_mask_params
from pgnm_monai.networks.policy import NoisePolicy
from pgnm_monai.settings import POLICY

__all__ = ["BetaNoiseMask", "PolicyNoiseMask", "RandomBetaMask"]


class BetaNoiseMask(Randomizable, Transform):
    """The shared pipeline: concentrations -> Beta cells -> upsample + blur -> multiply.

    Subclasses give :meth:`concentrations` (and :attr:`device` when the concentrations live on one).
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self, grid: int, kernel_size: int, sigma: float, eps: float, spatial_dims: int, check_finite: bool
    ) -> None:
        check_mask_params(kernel_size=kernel_size, sigma=sigma, eps=eps, grid=grid)
        self.grid = grid
        self.kernel_size = kernel_size
        self.sigma = float(sigma)
        self.eps = float(eps)
        self.spatial_dims = spatial_dims
        self.check_finite = check_finite
        self._seed = 0
        self.last_sample: MaskSample | None = None

    @property
    def device(self) -> torch.device | None:
        """The device the mask is computed on (``None``: the image's own device)."""
        return None

    def concentrations(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, beta)`` of shape ``(B or 1, grid^spatial_dims)`` for the batch ``img``."""
        raise NotImplementedError

    def randomize(self, data=None) -> None:
        """Draw the seed of this call's torch generator from the transform's ``RandomState``."""
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, img: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        """Mask a batch ``img`` of shape ``(B, C, *spatial)``; returns it on :attr:`device`.

        Args:
            img: the batch (tensor, ``MetaTensor`` or array).
            randomize: draw a new seed first (``False`` reuses the last one, as in MONAI).
        """
        if randomize:
            self.randomize()
        device = self.device or (img.device if isinstance(img, torch.Tensor) else torch.device("cpu"))
        # detached: the log-probabilities must carry gradient into the policy only, never the image
        img_t = convert_to_tensor(img, device=device, dtype=torch.float32, track_meta=False).detach()
        # validate before the policy sees the batch: NaN would corrupt its BN statistics and base vectors
        check_image(img_t, self.grid, self.spatial_dims, self.kernel_size, check_finite=self.check_finite)
        generator = torch.Generator(device=device).manual_seed(self._seed)
        alpha, beta = self.concentrations(img_t)
        sample = apply_noise_mask(
            img_t,
            alpha,
            beta,
            grid=self.grid,
            kernel_size=self.kernel_size,
            sigma=self.sigma,
            eps=self.eps,
            generator=generator,
            check_finite=False,
            spatial_dims=self.spatial_dims,
        )
        self.last_sample = sample
        out = sample.image
        if get_track_meta() or not isinstance(img, torch.Tensor):
            out = convert_to_dst_type(out, img, device=device)[0]
        return out


class PolicyNoiseMask(BetaNoiseMask):
    """Multiply a batch by a noise mask sampled from a :class:`NoisePolicy`'s Beta distributions.

    The policy is called with gradients enabled, so ``last_sample.log_prob`` and
    ``last_sample.entropy`` can be back-propagated into it; the returned image is detached.

    Args:
        policy: the noise policy (its ``grid``, ``kernel_size``, ``sigma`` and ``eps`` are used).
        check_finite: reject batches with NaN/Inf values (one device sync per call).
    """

    def __init__(self, policy: NoisePolicy, check_finite: bool = True) -> None:
        if not isinstance(policy, NoisePolicy):
            raise ValueError(f"policy must be a pgnm_monai NoisePolicy, got {type(policy).__name__}.")
        super().__init__(policy.grid, policy.kernel_size, policy.sigma, policy.eps, policy.spatial_dims, check_finite)
        self.policy = policy

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    def concentrations(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # float32 whatever an enclosing autocast did to the policy's layers: the Beta log-probabilities and the
        # REINFORCE gradient stay in full precision
        alpha, beta = self.policy(img)
        return alpha.float(), beta.float()


class RandomBetaMask(BetaNoiseMask):
    """The ``random_mask`` ablation: the same mask pipeline with fixed ``Beta(alpha, beta)`` cells.

    Args:
        grid: cells per side.
        alpha: fixed concentration (default 1: uniform cells).
        beta: fixed concentration (default 1).
        kernel_size: odd blur kernel.
        sigma: blur sigma.
        eps: clamp of the cells.
        spatial_dims: 2 or 3.
        check_finite: reject batches with NaN/Inf values.
    """

    def __init__(
        self,
        grid: int = POLICY.grid,
        alpha: float = 1.0,
        beta: float = 1.0,
        kernel_size: int = POLICY.kernel_size,
        sigma: float = POLICY.sigma,
        eps: float = POLICY.eps,
        spatial_dims: int = 2,
        check_finite: bool = True,
    ) -> None:
        if not (alpha > 0 and beta > 0):
            raise ValueError(f"alpha and beta must be > 0, got alpha={alpha}, beta={beta}.")
        super().__init__(grid, kernel_size, sigma, eps, spatial_dims, check_finite)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def concentrations(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cells = self.grid**self.spatial_dims
        alpha = torch.full((1, cells), self.alpha, device=img.device, dtype=img.dtype)
        return alpha, torch.full_like(alpha, self.beta)
