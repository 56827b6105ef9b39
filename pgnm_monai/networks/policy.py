"""The noise policy: a light network that maps an image to per-cell Beta concentrations.

The method (Yavuz & Yang, ICPR 2024, arXiv 2406.14568) samples a G x G mask (G^3 cells in 3D) from
per-cell Beta(alpha, beta) distributions whose concentrations a small network predicts from the image.
Each head output is mixed into a running *base* vector before exponentiation::

    new   = 0.9 * base + 0.1 * head(x)
    alpha = exp(new_alpha), beta = exp(new_beta)
    base <- 0.99 * base + 0.01 * mean_b(head(x)).detach()      (training mode only)

The base vectors are registered buffers: they are in ``state_dict()``, move with ``.to(device)``, are
restored on resume and, under ``torch.distributed``, updated from the mean over *all* ranks so they
stay identical everywhere (the official code does none of these). The heads run once per step, so
batch-norm statistics are updated once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pgnm_monai import distributed
from pgnm_monai.mask import check_mask_params
from pgnm_monai.networks.classifiers import monai_resnet3d, small_conv_features, timm_resnet
from pgnm_monai.networks.padding_taps import trim_padding_taps
from pgnm_monai.settings import INPUT, POLICY, TRUNKS
from pgnm_monai.validation import check_choice

__all__ = ["NoisePolicy", "build_trunk", "TRUNKS"]


def build_trunk(name: str, spatial_dims: int, in_channels: int) -> tuple[nn.Module, int]:
    """Build a named feature trunk.

    Args:
        name: ``"resnet10t"`` (the paper's: timm's ResNet-10t feature extractor, ``timm.create_model("resnet10t",
            num_classes=0)``, 512-d features), ``"resnet18"`` (timm's, 512-d) or ``"small"`` (a tiny CNN for
            tests and CPU demos). In 3D the ResNets are MONAI's
            (:func:`~pgnm_monai.networks.classifiers.monai_resnet3d`). The 2D ResNets' convolutions skip the
            taps that meet only padding (:func:`~pgnm_monai.networks.padding_taps.trim_padding_taps`): the same
            values, less work on the small maps of a resized policy input.
        spatial_dims: 2 or 3.
        in_channels: number of image channels.

    Returns:
        The trunk (maps ``(B, C, *spatial)`` to ``(B, F)``) and its feature size ``F``.
    """
    if name == "small":
        return small_conv_features(in_channels, spatial_dims, width=16)
    check_choice("trunk", name, TRUNKS)
    if spatial_dims == 3:
        return monai_resnet3d(name, in_channels, None), 512
    trunk = trim_padding_taps(timm_resnet(name, in_channels))
    return trunk, trunk.num_features


def _head(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """Linear-BN-ReLU-Linear-BN-ReLU-Linear, as in the official code."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_features),
    )


class NoisePolicy(nn.Module):
    """Predicts per-cell Beta concentrations ``(alpha, beta)`` for a ``grid^spatial_dims`` mask.

    Args:
        grid: cells per spatial side.
        in_channels: image channels the policy sees.
        spatial_dims: 2 (images) or 3 (volumes).
        trunk: a name from :data:`TRUNKS` or an ``nn.Module`` mapping images to ``(B, feature_dim)``.
        feature_dim: feature size of a module ``trunk`` (ignored for named trunks).
        head_hidden: hidden width of the two heads (paper: 512).
        kernel_size: Gaussian blur kernel applied to the upsampled mask (odd, >= 1).
        sigma: Gaussian blur sigma (> 0).
        eps: sampled cells are clamped to ``[eps, 1 - eps]`` (in (0, 0.5)).
        input_size: side length the trunk sees; the image is resized (area) to it first. ``None``
            (the paper) feeds the full-resolution image.
        base_mix: weight of the running base in the concentrations (paper: 0.9).
        base_momentum: EMA momentum of the base update (paper: 0.99).
        log_concentration_limit: ``log(alpha)``, ``log(beta)`` are clamped to ``[-limit, limit]`` so the
            Beta distribution stays finite under any input (the official code has no limit).
        sync_base: under ``torch.distributed``, average the base update over ranks so every rank holds
            the same base vectors.
        channels_last: run a 2D trunk in the channels-last memory format (the same network and values up to
            float rounding; faster on the CPU at full resolution, see docs/performance.md). Ignored in 3D.
    """

    def __init__(
        self,
        grid: int = POLICY.grid,
        in_channels: int = INPUT.in_channels,
        spatial_dims: int = 2,
        trunk: str | nn.Module = POLICY.policy_trunk,
        feature_dim: int | None = None,
        head_hidden: int = 512,
        kernel_size: int = POLICY.kernel_size,
        sigma: float = POLICY.sigma,
        eps: float = POLICY.eps,
        input_size: int | None = POLICY.policy_input_size,
        base_mix: float = 0.9,
        base_momentum: float = 0.99,
        log_concentration_limit: float = 10.0,
        sync_base: bool = True,
        channels_last: bool = POLICY.policy_channels_last,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if not isinstance(grid, int) or grid < 1:
            raise ValueError(f"grid must be a positive int, got {grid!r}.")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}.")
        if input_size is not None and (
            isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1
        ):
            raise ValueError(f"input_size must be a positive int or None, got {input_size!r}.")
        check_mask_params(kernel_size=kernel_size, sigma=sigma, eps=eps)
        if not 0.0 <= base_mix < 1.0 or not 0.0 <= base_momentum < 1.0:
            raise ValueError(f"base_mix and base_momentum must be in [0, 1), got {base_mix}, {base_momentum}.")
        if isinstance(trunk, nn.Module):
            if feature_dim is None:
                raise ValueError("feature_dim is required when trunk is an nn.Module.")
            self.trunk, features = trunk, feature_dim
        else:
            self.trunk, features = build_trunk(trunk, spatial_dims, in_channels)
        self.grid = grid
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.kernel_size = kernel_size
        self.sigma = float(sigma)
        self.eps = float(eps)
        self.input_size = input_size
        self.base_mix = float(base_mix)
        self.base_momentum = float(base_momentum)
        self.log_concentration_limit = float(log_concentration_limit)
        self.sync_base = sync_base
        self.memory_format = torch.channels_last if channels_last and spatial_dims == 2 else torch.contiguous_format
        self.trunk.to(memory_format=self.memory_format)
        cells = grid**spatial_dims
        self.num_cells = cells
        self.alpha_head = _head(features, head_hidden, cells)
        self.beta_head = _head(features, head_hidden, cells)
        # uniform-random start, as the official code (torch.rand); seeded by the caller's torch seed.
        self.register_buffer("base_alpha", torch.rand(1, cells))
        self.register_buffer("base_beta", torch.rand(1, cells))
        #: whether the last training forward's head outputs were finite (a device tensor; read by the handler)
        self.head_finite = torch.tensor(True)

    def policy_input(self, image: torch.Tensor) -> torch.Tensor:
        """The image as the trunk sees it: resized to ``input_size`` when that is set."""
        size = self.input_size
        if size is None or all(s == size for s in image.shape[2:]):
            return image
        return F.interpolate(image, size=(size,) * self.spatial_dims, mode="area")

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Concentrations for a batch.

        Args:
            image: ``(B, C, *spatial)`` normalised images.

        Returns:
            ``alpha`` and ``beta``, each ``(B, grid^spatial_dims)``, positive.
        """
        if image.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"image must have {self.spatial_dims + 2} dims (B, C, *spatial), got shape {tuple(image.shape)}."
            )
        if image.shape[1] != self.in_channels:
            raise ValueError(f"image has {image.shape[1]} channels, the policy expects in_channels={self.in_channels}.")
        if self.training and image.shape[0] < 2:
            raise ValueError(
                "the policy needs a batch of >= 2 images in training mode (its heads use batch norm); "
                "use drop_last=True in the DataLoader."
            )
        features = self.trunk(self.policy_input(image).contiguous(memory_format=self.memory_format))
        head_alpha = self.alpha_head(features)
        head_beta = self.beta_head(features)
        mix = self.base_mix
        limit = self.log_concentration_limit
        log_alpha = (mix * self.base_alpha + (1.0 - mix) * head_alpha).clamp(-limit, limit)
        log_beta = (mix * self.base_beta + (1.0 - mix) * head_beta).clamp(-limit, limit)
        if self.training:
            self._update_base(head_alpha, head_beta)
        return log_alpha.exp(), log_beta.exp()

    @torch.no_grad()
    def _update_base(self, head_alpha: torch.Tensor, head_beta: torch.Tensor) -> None:
        """Fold the batch means of the heads into the base vectors, on the device (no host read): a non-finite
        mean leaves them unchanged and sets :attr:`head_finite` ``False``, which the handler reports."""
        means = torch.stack([head_alpha.mean(0), head_beta.mean(0)]).detach()
        if self.sync_base:
            means = distributed.all_reduce_mean(means)
        finite = torch.isfinite(means).all()
        m = self.base_momentum
        self.base_alpha.copy_(torch.where(finite, m * self.base_alpha + (1.0 - m) * means[0:1], self.base_alpha))
        self.base_beta.copy_(torch.where(finite, m * self.base_beta + (1.0 - m) * means[1:2], self.base_beta))
        self.head_finite = finite

    def extra_repr(self) -> str:
        return (
            f"grid={self.grid}, spatial_dims={self.spatial_dims}, cells={self.num_cells}, "
            f"kernel_size={self.kernel_size}, sigma={self.sigma}, eps={self.eps}, input_size={self.input_size}"
        )
