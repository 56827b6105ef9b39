"""The comparison arms, decided in one place for the same ``SupervisedTrainer``.

========================  ================================================================
arm                       what the classifier trains on
========================  ================================================================
``none``                  clean images (the baseline; the handler attaches nothing)
``pgnm``                  images times a mask sampled by a learned :class:`NoisePolicy`
``random_mask``           images times the same Beta mask with fixed concentrations
``gaussian``              MONAI ``RandGaussianNoise`` on each image
``coarse_dropout``        MONAI ``RandCoarseDropout`` on each image
========================  ================================================================

:func:`build_arm_handler` returns one ignite handler (``attach(engine)``, ``state_dict()``) for any arm,
so a training config or script lists it among the trainer's handlers and in its checkpoint dict, and
never needs a training loop per arm.
"""

from __future__ import annotations

import torch
from monai.transforms import RandCoarseDropout, RandGaussianNoise

from pgnm_monai.handlers.batch_augmentation import BatchAugmentationHandler
from pgnm_monai.handlers.noise_policy import NoisePolicyHandler
from pgnm_monai.networks.policy import NoisePolicy
from pgnm_monai.objectives import OBJECTIVES
from pgnm_monai.presets import preset_kwargs
from pgnm_monai.transforms import RandomBetaMask

__all__ = ["ARMS", "build_arm_handler", "build_policy_handler", "ThreadLimitedNoisePolicyHandler"]

ARMS = ("none", "pgnm", "random_mask", "gaussian", "coarse_dropout")


class ThreadLimitedNoisePolicyHandler(NoisePolicyHandler):
    """A :class:`NoisePolicyHandler` whose CPU work runs with ``num_threads`` intra-op threads.

    The policy's step is hundreds of small operations; on a CPU shared with other processes each one
    pays an OpenMP barrier, and a 2-thread policy step was measured ~25x slower under load while a
    1-thread one was not (``python -m pgnm_monai.benchmarks.step_time``). The classifier keeps all
    threads: the limit is set at the start of each hook and restored at its end. No effect on the
    maths; on CUDA only the host-side work is affected.

    Args:
        num_threads: intra-op threads of the policy hooks (``torch.set_num_threads``).
        args: passed to :class:`NoisePolicyHandler`.
        kwargs: passed to :class:`NoisePolicyHandler`.
    """

    def __init__(self, *args, num_threads: int = 1, **kwargs) -> None:
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads!r}.")
        super().__init__(*args, **kwargs)
        self.num_threads = int(num_threads)

    def _limited(self, hook, engine):
        threads = torch.get_num_threads()
        if threads == self.num_threads:
            return hook(engine)
        torch.set_num_threads(self.num_threads)
        try:
            return hook(engine)
        finally:
            torch.set_num_threads(threads)

    def __call__(self, engine) -> None:
        self._limited(super().__call__, engine)

    def compute_policy_loss(self, engine) -> None:
        self._limited(super().compute_policy_loss, engine)

    def step_policy(self, engine) -> None:
        self._limited(super().step_policy, engine)


def build_policy_handler(
    device: str | torch.device = "cpu",
    in_channels: int = 1,
    spatial_dims: int = 2,
    grid: int = 64,
    kernel_size: int = 13,
    sigma: float = 6.0,
    eps: float = 1e-4,
    trunk: str = "resnet10",
    policy_input_size: int | None = None,
    objective: str = "reinforce",
    policy_lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    epochs: int | None = None,
    entropy_weight: float = 0.0,
    reward_sign: int = -1,
    baseline_momentum: float = 0.9,
    image_key: str = "image",
    seed: int = 0,
    fused_optimizer: bool = False,
    policy_num_threads: int | None = None,
) -> NoisePolicyHandler:
    """A :class:`NoisePolicyHandler` with the paper's policy optimiser.

    The policy is initialised from ``seed`` without touching the global RNG, so building it does not
    change the classifier's initialisation. Optimiser: SGD(``policy_lr``, momentum, weight decay);
    with ``epochs`` a cosine annealing of its learning rate to 0 over the epochs (the paper).
    ``fused_optimizer=True`` uses PyTorch's fused SGD kernel (the same update, one kernel per parameter
    instead of several: the ``fast`` preset). ``policy_num_threads`` runs the policy's hooks with that
    many CPU threads (:class:`ThreadLimitedNoisePolicyHandler`; the ``fast`` preset uses 1).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = NoisePolicy(
            grid=grid,
            in_channels=in_channels,
            spatial_dims=spatial_dims,
            trunk=trunk,
            kernel_size=kernel_size,
            sigma=sigma,
            eps=eps,
            input_size=policy_input_size,
        )
    policy = policy.to(device)
    optimizer = torch.optim.SGD(
        policy.parameters(),
        lr=policy_lr,
        momentum=momentum,
        weight_decay=weight_decay,
        **({"fused": True} if fused_optimizer else {}),
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0.0) if epochs else None
    handler_cls, extra = NoisePolicyHandler, {}
    if policy_num_threads is not None:
        handler_cls, extra = ThreadLimitedNoisePolicyHandler, {"num_threads": policy_num_threads}
    return handler_cls(
        policy,
        optimizer,
        objective=objective,
        lr_scheduler=scheduler,
        image_key=image_key,
        entropy_weight=entropy_weight,
        reward_sign=reward_sign,
        baseline_momentum=baseline_momentum,
        seed=seed,
        **extra,
    )


def build_arm_handler(
    arm: str,
    device: str | torch.device = "cpu",
    in_channels: int = 1,
    spatial_dims: int = 2,
    image_size: int | None = None,
    grid: int = 64,
    kernel_size: int = 13,
    sigma: float = 6.0,
    eps: float = 1e-4,
    random_alpha: float = 1.0,
    random_beta: float = 1.0,
    noise_std: float = 0.1,
    dropout_holes: int = 8,
    dropout_fraction: float = 0.1,
    image_key: str = "image",
    seed: int = 0,
    preset: str | None = None,
    **policy_kwargs,
) -> NoisePolicyHandler | BatchAugmentationHandler:
    """The training-time handler of ``arm`` (see the module docstring).

    Args:
        arm: one of :data:`ARMS`.
        device: where the policy / augmentation runs (the trainer's device).
        in_channels: image channels.
        spatial_dims: 2 or 3.
        image_size: image side length; required to size the holes of ``coarse_dropout`` and to check
            that ``grid`` fits the images of ``pgnm``/``random_mask``.
        grid: cells per side of the Beta mask (``pgnm``, ``random_mask``).
        kernel_size: blur kernel of the mask.
        sigma: blur sigma of the mask.
        eps: clamp of the mask cells.
        random_alpha: fixed concentration of ``random_mask``.
        random_beta: fixed concentration of ``random_mask``.
        noise_std: standard deviation of ``gaussian``.
        dropout_holes: number of holes of ``coarse_dropout``.
        dropout_fraction: hole side as a fraction of ``image_size`` (``coarse_dropout``).
        image_key: key of the image in the batch dict.
        seed: seed of the policy initialisation and of every draw.
        preset: ``None``, ``"paper"`` or ``"fast"`` (:mod:`pgnm_monai.presets`): default policy arguments of
            ``pgnm``; explicit ``policy_kwargs`` win. Ignored by the other arms (but checked).
        policy_kwargs: passed to :func:`build_policy_handler` (objective, trunk, policy_lr, epochs, ...).
    """
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}.")
    if image_size is not None and arm in ("pgnm", "random_mask") and grid > image_size:
        raise ValueError(f"grid ({grid}) must be <= image_size ({image_size}) for arm {arm!r}.")
    if arm != "pgnm" and policy_kwargs.get("objective", "reinforce") not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {policy_kwargs['objective']!r}.")
    if preset is not None:
        policy_kwargs = {**preset_kwargs(preset), **policy_kwargs}
    if arm == "pgnm":
        return build_policy_handler(
            device=device,
            in_channels=in_channels,
            spatial_dims=spatial_dims,
            grid=grid,
            kernel_size=kernel_size,
            sigma=sigma,
            eps=eps,
            image_key=image_key,
            seed=seed,
            **policy_kwargs,
        )
    common = {"image_key": image_key, "seed": seed}
    if arm == "none":
        return BatchAugmentationHandler(None, **common)
    if arm == "random_mask":
        mask = RandomBetaMask(grid, random_alpha, random_beta, kernel_size, sigma, eps, spatial_dims)
        return BatchAugmentationHandler(mask, per_sample=False, **common)
    if arm == "gaussian":
        return BatchAugmentationHandler(RandGaussianNoise(prob=1.0, mean=0.0, std=noise_std), **common)
    if image_size is None:
        raise ValueError("image_size is required for arm 'coarse_dropout' (it sizes the holes).")
    side = max(1, round(dropout_fraction * image_size))
    dropout = RandCoarseDropout(holes=dropout_holes, spatial_size=side, fill_value=0.0, prob=1.0)
    return BatchAugmentationHandler(dropout, **common)
