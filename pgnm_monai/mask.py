"""The Beta noise-mask pipeline, as pure functions on batches.

``cells ~ Beta(alpha, beta)`` (:func:`sample_beta`, no reparameterisation) -> clamp to ``[eps, 1 - eps]`` ->
reshape to ``(B, 1, G, G[, G])`` -> nearest upsample to the image size -> Gaussian blur (reflect
padding, MONAI's separable filter with torchvision's kernel) -> multiply the normalised image
(broadcast over channels). The masked image and the mask carry no gradient; the per-cell
log-probabilities and entropies carry gradient into whatever produced ``alpha`` and ``beta``.
Every setting is an argument; the defaults are :data:`pgnm_monai.settings.POLICY`'s.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.layers import separable_filtering

__all__ = [
    "MaskSample",
    "beta_entropy",
    "beta_log_normalizer",
    "check_mask_params",
    "check_image",
    "gaussian_kernel1d",
    "blur",
    "sample_beta",
    "log_gamma_sample",
    "sample_cells",
    "cells_to_mask",
    "upsample_blur_operator",
    "apply_noise_mask",
]


@dataclass
class MaskSample:
    """One draw of the noise mask for a batch.

    Attributes:
        image: the masked image ``(B, C, *spatial)``, detached.
        mask: the smooth mask ``(B, 1, *spatial)``, detached.
        cells: the clamped per-cell samples ``(B, K)``, detached (``K = G^spatial_dims``).
        log_prob: per-cell ``log Beta_pdf(cells)`` ``(B, K)``, differentiable w.r.t. the concentrations.
        alpha: concentrations ``(B, K)`` (as given).
        beta: concentrations ``(B, K)`` (as given).
        entropy: per-cell entropy ``(B, K)``, differentiable w.r.t. the concentrations; computed when first read
            (an objective without an entropy bonus, and a step whose statistics are not read, never pay for it).
    """

    image: torch.Tensor
    mask: torch.Tensor
    cells: torch.Tensor
    log_prob: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor

    @functools.cached_property
    def entropy(self) -> torch.Tensor:
        return beta_entropy(self.alpha, self.beta)

    def stats(self) -> dict[str, float]:
        """Scalar summaries for logging: mask mean/std, mean entropy and concentrations."""
        with torch.no_grad():
            return {
                "mask_mean": self.mask.mean().item(),
                "mask_std": self.mask.std().item(),
                "entropy": self.entropy.mean().item(),
                "alpha_mean": self.alpha.mean().item(),
                "beta_mean": self.beta.mean().item(),
            }


def check_mask_params(kernel_size: int, sigma: float, eps: float, grid: int | None = None) -> None:
    """Raise ``ValueError`` naming the argument when a mask parameter is out of range."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"'kernel_size' must be an odd integer >= 1, got {kernel_size!r}.")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"'sigma' must be > 0, got {sigma!r}.")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 < eps < 0.5:
        raise ValueError(f"'eps' must be in (0, 0.5), got {eps!r}.")
    if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or grid < 1):
        raise ValueError(f"'grid' must be an integer >= 1, got {grid!r}.")


def check_image(image: torch.Tensor, grid: int, spatial_dims: int, kernel_size: int, check_finite: bool = True) -> None:
    """Raise ``ValueError`` naming the argument when ``image`` does not fit the mask.

    Args:
        image: ``(B, C, *spatial)`` batch.
        grid: cells per side; must not exceed any spatial size.
        spatial_dims: 2 or 3.
        kernel_size: blur kernel; reflect padding needs ``kernel_size // 2 < `` every spatial size.
        check_finite: also reject NaN/Inf values (costs one device sync).
    """
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"image must be a torch.Tensor batch (B, C, *spatial), got {type(image).__name__}.")
    if image.ndim != spatial_dims + 2:
        raise ValueError(
            f"image must have {spatial_dims + 2} dims (B, C, *spatial) for spatial_dims={spatial_dims}, "
            f"got shape {tuple(image.shape)}."
        )
    spatial = tuple(image.shape[2:])
    if min(spatial) < grid:
        raise ValueError(f"grid ({grid}) is larger than the image size {spatial}: it must be <= every spatial size.")
    if kernel_size // 2 >= min(spatial):
        raise ValueError(f"kernel_size ({kernel_size}) is too large for the image size {spatial} (reflect padding).")
    if not image.is_floating_point():
        raise ValueError(f"image must be a floating-point tensor, got dtype {image.dtype}.")
    if check_finite and not torch.isfinite(image).all():
        raise ValueError("image contains NaN or Inf values.")


def gaussian_kernel1d(kernel_size: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """The normalised 1D Gaussian kernel of torchvision's ``gaussian_blur`` (the official code's blur)."""
    x = torch.arange(kernel_size, device=device, dtype=dtype) - (kernel_size - 1) / 2
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def blur(mask: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding over every spatial dim of ``(B, C, *spatial)``."""
    if kernel_size == 1:
        return mask
    kernel = gaussian_kernel1d(kernel_size, sigma, device=mask.device, dtype=mask.dtype)
    return separable_filtering(mask, [kernel] * (mask.ndim - 2), mode="reflect")


def beta_log_normalizer(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``log B(alpha, beta)``, the log-Beta function."""
    return torch.lgamma(alpha) + torch.lgamma(beta) - torch.lgamma(alpha + beta)


def beta_entropy(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The entropy of ``Beta(alpha, beta)``, elementwise (the closed form of torch's ``Beta.entropy``)."""
    return (
        beta_log_normalizer(alpha, beta)
        - (alpha - 1.0) * torch.digamma(alpha)
        - (beta - 1.0) * torch.digamma(beta)
        + (alpha + beta - 2.0) * torch.digamma(alpha + beta)
    )


def sample_cells(
    alpha: torch.Tensor,
    beta: torch.Tensor,
    eps: float,
    generator: torch.Generator | None = None,
    with_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Sample every cell from ``Beta(alpha, beta)`` and return ``(cells, log_prob, entropy)``.

    The sample is detached and clamped to ``[eps, 1 - eps]``; an explicit ``generator`` makes it reproducible.
    ``log_prob`` (and ``entropy``, ``None`` unless ``with_entropy``) are
    differentiable w.r.t. the concentrations: the closed forms of torch's ``Beta.log_prob`` / ``entropy``.
    """
    with torch.no_grad():
        cells = sample_beta(alpha.detach(), beta.detach(), generator).clamp(eps, 1.0 - eps).to(alpha.dtype)
    log_prob = (alpha - 1.0) * torch.log(cells) + (beta - 1.0) * torch.log1p(-cells) - beta_log_normalizer(alpha, beta)
    return cells, log_prob, beta_entropy(alpha, beta) if with_entropy else None


def sample_beta(alpha: torch.Tensor, beta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draws of ``Beta(alpha, beta)`` (float32), elementwise; an explicit ``generator`` makes them reproducible.

    On a GPU: ``torch._sample_dirichlet`` (what ``Beta.sample()`` calls; one kernel, no host synchronisation). On the
    CPU, where that kernel draws one cell at a time: ``X / (X + Y)`` with ``X ~ Gamma(alpha)``, ``Y ~ Gamma(beta)``
    from :func:`log_gamma_sample`, vectorised over the cells (the same distribution, other numbers).
    """
    if alpha.device.type != "cpu":
        concentration = torch.stack([alpha, beta], dim=-1).float()
        return torch._sample_dirichlet(concentration, generator=generator)[..., 0]
    return torch.sigmoid(log_gamma_sample(alpha, generator) - log_gamma_sample(beta, generator))


def log_gamma_sample(concentration: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``log`` of ``Gamma(concentration, 1)`` draws (float32), by Marsaglia and Tsang's method (ACM TOMS 26(3),
    2000), vectorised: every cell draws at once and the rejected ones (a few percent) draw again. A concentration
    ``a < 1`` draws ``Gamma(a + 1)`` times ``U^(1/a)``; in log space, so that no draw underflows to 0."""
    a = concentration.float()
    boost = a < 1
    shape = torch.where(boost, a + 1.0, a)
    d = (shape - 1.0 / 3.0).reshape(-1)
    c = torch.rsqrt(9.0 * d)

    def draw(dd: torch.Tensor, cc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # log draws, accepted
        x = torch.randn(dd.shape, generator=generator, dtype=dd.dtype)
        u = torch.rand(dd.shape, generator=generator, dtype=dd.dtype)
        v = 1.0 + cc * x
        log_v3 = 3.0 * torch.log(v.clamp_min(torch.finfo(v.dtype).tiny))
        accept = (v > 0) & (torch.log(u) < 0.5 * x * x + dd - dd * torch.exp(log_v3) + dd * log_v3)
        accept |= ~torch.isfinite(dd)  # NaN / Inf concentrations draw NaN / Inf at once (as torch's samplers do)
        return torch.log(dd) + log_v3, accept

    out, accept = draw(d, c)  # the rejected cells' values are replaced below
    todo = (~accept).nonzero().squeeze(1)
    while todo.numel():
        again, accept = draw(d[todo], c[todo])
        out[todo[accept]] = again[accept]
        todo = todo[~accept]
    out = out.reshape(shape.shape)
    u = torch.rand(shape.shape, generator=generator, dtype=shape.dtype)
    return torch.where(boost, out + torch.log(u) / a, out)


_OPERATORS: dict[tuple, torch.Tensor] = {}


def upsample_blur_operator(
    grid: int, size: int, kernel_size: int, sigma: float, device=None, dtype=torch.float32
) -> torch.Tensor:
    """The ``(size, grid)`` matrix of "nearest upsample ``grid -> size``, then reflect-padded Gaussian blur".

    Both steps are linear and act on each spatial dim separately, so ``cells_to_mask`` is this matrix
    applied along every dim: mathematically the same as ``blur(F.interpolate(..., mode="nearest"))``
    (equal up to float rounding, ~1e-7) at a fraction of the cost. Cached per arguments.
    """
    key = (grid, size, kernel_size, float(sigma), str(device), dtype)
    op = _OPERATORS.get(key)
    if op is None:
        eye = torch.eye(grid, dtype=torch.float64)[:, None]  # (grid, 1, grid): one cell per row
        up = eye if size == grid else F.interpolate(eye, size=size, mode="nearest")
        op = blur(up, kernel_size, sigma)[:, 0].T.contiguous().to(device=device, dtype=dtype)
        _OPERATORS[key] = op
    return op


def cells_to_mask(
    cells: torch.Tensor, grid: int, spatial_size: tuple[int, ...], kernel_size: int, sigma: float
) -> torch.Tensor:
    """Reshape ``(B, G^d)`` cells to ``(B, 1, G, ...)``, nearest-upsample to ``spatial_size``, blur.

    Computed as one small matrix product per spatial dim (:func:`upsample_blur_operator`).
    """
    spatial_dims = len(spatial_size)
    mask = cells.reshape(cells.shape[0], 1, *([grid] * spatial_dims))
    for dim, size in enumerate(spatial_size):
        op = upsample_blur_operator(grid, size, kernel_size, sigma, device=cells.device, dtype=cells.dtype)
        mask = torch.movedim(torch.movedim(mask, dim + 2, -1) @ op.T, -1, dim + 2)
    return mask.contiguous()


def apply_noise_mask(
    image: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    grid: int,
    kernel_size: int,
    sigma: float,
    eps: float,
    generator: torch.Generator | None = None,
    check_finite: bool = True,
    spatial_dims: int | None = None,
) -> MaskSample:
    """Sample a noise mask from per-cell concentrations and multiply ``image`` by it.

    Args:
        image: ``(B, C, *spatial)`` normalised images.
        alpha: ``(B, G^d)`` (or broadcastable ``(1, G^d)``) positive concentrations.
        beta: same shape as ``alpha``.
        grid: cells per side ``G``.
        kernel_size: odd blur kernel size.
        sigma: blur sigma.
        eps: clamp of the sampled cells.
        generator: optional torch generator on ``image.device`` for a reproducible draw.
        check_finite: reject NaN/Inf in ``image``.
        spatial_dims: 2 or 3; ``None`` infers it from ``image`` (4 dims: 2D, 5 dims: 3D).

    Returns:
        A :class:`MaskSample`.
    """
    check_mask_params(kernel_size=kernel_size, sigma=sigma, eps=eps, grid=grid)
    if spatial_dims is None:
        spatial_dims = image.ndim - 2 if isinstance(image, torch.Tensor) and image.ndim in (4, 5) else 2
    check_image(image, grid, spatial_dims, kernel_size, check_finite=check_finite)
    batch, cells_per_image = image.shape[0], grid**spatial_dims
    alpha = alpha.expand(batch, -1)
    beta = beta.expand(batch, -1)
    if alpha.shape[1] != cells_per_image or beta.shape != alpha.shape:
        raise ValueError(
            f"alpha/beta must be (B, {cells_per_image}) for grid={grid} in {spatial_dims}D, "
            f"got {tuple(alpha.shape)} and {tuple(beta.shape)}."
        )
    cells, log_prob, _ = sample_cells(alpha, beta, eps, generator, with_entropy=False)
    mask = cells_to_mask(cells, grid, tuple(image.shape[2:]), kernel_size, sigma).to(image.dtype)
    masked = image.detach() * mask
    return MaskSample(masked, mask, cells, log_prob, alpha, beta)
