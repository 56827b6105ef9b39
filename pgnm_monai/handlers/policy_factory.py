"""The noise policy's handler made from its settings: :func:`build_policy_handler`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.utils import CommonKeys

from pgnm_monai.handlers.noise_policy import NoisePolicyHandler
from pgnm_monai.handlers.thread_limited import ThreadLimitedNoisePolicyHandler
from pgnm_monai.networks.policy import NoisePolicy
from pgnm_monai.settings import DEVICE, INPUT, OPTIMIZER, PolicySettings

__all__ = ["build_policy_handler"]


def build_policy_handler(
    settings: PolicySettings | Mapping[str, Any] | None = None,
    *,
    lr: float = OPTIMIZER.lr,
    epochs: int | None = None,
    in_channels: int = INPUT.in_channels,
    spatial_dims: int = 2,
    device: str | torch.device = "cpu",
    seed: int = 0,
    image_key: str = CommonKeys.IMAGE,
    compile: bool | str = DEVICE.compile,
    **overrides: Any,
) -> NoisePolicyHandler:
    """A :class:`NoisePolicyHandler`, its :class:`~pgnm_monai.networks.NoisePolicy` and the paper's optimiser.

    The policy is initialised from ``seed`` without touching the global RNG, so building it does not change the
    classifier's initialisation. Optimiser: SGD (``lr * policy_lr_factor``, ``policy_momentum``,
    ``policy_weight_decay``; PyTorch's fused kernel with ``policy_fused_optimizer``); with ``epochs`` a cosine
    annealing of its learning rate to 0 over the epochs (the paper). ``policy_num_threads`` runs the policy's
    hooks on that many CPU threads (:class:`ThreadLimitedNoisePolicyHandler`).

    Args:
        settings: a :class:`~pgnm_monai.settings.PolicySettings`, or any mapping of its ids (other ids are
            ignored); ``None``: the defaults.
        lr: the classifier's learning rate.
        epochs: the length of the cosine schedule; ``None``: a constant learning rate.
        in_channels: image channels the policy sees.
        spatial_dims: 2 or 3.
        device: where the policy runs (the trainer's device).
        seed: seed of the policy's initialisation and of every mask draw.
        image_key: key of the image in the batch dict.
        compile: ``torch.compile`` the policy's trunk and heads in place (``True``: the default backend, or a
            backend's name); the base-vector update and the sampling stay eager.
        overrides: policy ids that replace those of ``settings`` (e.g. ``grid=8``).
    """
    given = settings.asdict() if isinstance(settings, PolicySettings) else settings
    s = PolicySettings.from_mapping(given, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = NoisePolicy(
            grid=s.grid,
            in_channels=in_channels,
            spatial_dims=spatial_dims,
            trunk=s.policy_trunk,
            kernel_size=s.kernel_size,
            sigma=s.sigma,
            eps=s.eps,
            input_size=s.policy_input_size,
            channels_last=s.policy_channels_last,
        )
    policy = policy.to(device)
    if compile:
        for part in (policy.trunk, policy.alpha_head, policy.beta_head):
            part.compile(**({} if compile is True else {"backend": compile}))
    optimizer = torch.optim.SGD(
        policy.parameters(),
        lr=lr * s.policy_lr_factor,
        momentum=s.policy_momentum,
        weight_decay=s.policy_weight_decay,
        **({"fused": True} if s.policy_fused_optimizer else {}),
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0.0) if epochs else None
    handler_cls, extra = NoisePolicyHandler, {}
    if s.policy_num_threads is not None:
        handler_cls, extra = ThreadLimitedNoisePolicyHandler, {"num_threads": s.policy_num_threads}
    return handler_cls(
        policy,
        optimizer,
        objective=s.objective,
        lr_scheduler=scheduler,
        image_key=image_key,
        entropy_weight=s.entropy_weight,
        reward_sign=s.reward_sign,
        baseline_momentum=s.baseline_momentum,
        seed=seed,
        advantage=s.advantage,
        scale_classifier_loss=s.scale_classifier_loss,
        frozen=s.frozen,
        stats_interval=s.policy_stats_interval,
        **extra,
    )
