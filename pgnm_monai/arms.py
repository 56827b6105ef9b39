"""The comparison arms and the policy presets: one vocabulary, used by the bundles, the CLI, the protocol and
the benchmarks.

An *arm* is what the classifier trains on during pretraining; every arm runs in the same
``SupervisedTrainer`` through one ignite handler (:func:`build_arm_handler`), so no experiment needs a
training loop per arm. Each name in :data:`ARMS` maps to a *mechanism* and the settings it fixes:

=========================  =================  =========================================================
arm                        mechanism          what the classifier trains on
=========================  =================  =========================================================
``none``                   ``none``           clean images (the baseline; the handler attaches nothing)
``pgnm``                   ``pgnm``           images times a mask from a learned :class:`NoisePolicy`
                                              (objective: the ``objective`` argument)
``pgnm-paper``             ``pgnm``           the same, objective ``paper`` (the official one)
``pgnm-paper-unscaled``    ``pgnm``           the same, objective ``paper`` with ``scale_classifier_loss=
                                              False``: the official policy gradient, the classifier on
                                              plain CE (separates the policy from the ~log K step size)
``pgnm-reinforce``         ``pgnm``           the same, objective ``reinforce`` (reward ``-CE``:
                                              cooperative masks)
``pgnm-adversarial``       ``pgnm``           the same, objective ``reinforce`` with ``reward_sign=+1``
                                              (reward ``+CE``: adversarial masks)
``frozen_policy``          ``pgnm``           a mask from the policy at its seeded initialisation, never
                                              updated (``frozen=True``; "learned" vs "any Beta mask")
``random_mask``            ``random_mask``    images times the same Beta mask with fixed concentrations
``gaussian``               ``gaussian``       MONAI ``RandGaussianNoise`` on each image
``coarse_dropout``         ``coarse_dropout`` MONAI ``RandCoarseDropout`` on each image
``trivialaugment``         ``torchvision``    torchvision's ``TrivialAugmentWide`` on each image (8-bit)
``randaugment``            ``torchvision``    torchvision's ``RandAugment`` on each image (8-bit)
``mixup``                  ``mix``            MONAI ``MixUp`` on the batch, labels mixed alike (soft)
``cutmix``                 ``mix``            MONAI ``CutMix`` on the batch, labels mixed alike (soft)
=========================  =================  =========================================================

The last four are what a practitioner would pick instead of a mask (:mod:`pgnm_monai.transforms.augment`): the
torchvision policies work on the image mapped back to [0, 1] with ``intensity_mean``/``intensity_std`` and
quantised to 8 bits; the mixes need ``num_classes`` and train on soft labels (cross-entropy on probabilities).

The settings an arm fixes (its :attr:`Arm.settings`) win over the caller's keyword arguments; the others
(e.g. ``objective`` of ``frozen_policy``, which only matters for ``paper``'s classifier-loss scaling) come
from the caller.

*Presets* (:data:`PRESETS`) are named settings of the noise policy. Both draw the same mask (the same grid,
blur, Beta pipeline and policy architecture: timm's ResNet-10t trunk and two heads on its pooled 512-d
features); they differ in what the trunk looks at:

- ``paper``: the full-resolution image, as the official code (trunk in channels-last memory format);
- ``fast``: the image area-resized to 16 x 16 (``policy_input_size=16``; the mask keeps its cells, only the
  evidence the policy conditions on is coarser), in the default memory format, with PyTorch's fused SGD for the
  policy. ``policy_num_threads=1`` runs the policy's hooks on one thread, for CPUs shared with other processes.

Their cost against the paper's networks is measured by ``python -m pgnm_monai.benchmarks.step_time``
(docs/performance.md). A preset is a dict of keyword arguments of :func:`build_policy_handler`:
``build_arm_handler("pgnm", preset="fast")`` and ``build_arm_handler("pgnm", **preset_kwargs("fast"))`` build the
same handler, and explicit keyword arguments override the preset. The mask settings (the paper's:
:data:`pgnm_monai.mask.GRID`, ``KERNEL_SIZE``, ``SIGMA``, ``EPS``) are the defaults of ``build_arm_handler``, not
part of a preset, so small images can use a smaller ``grid`` with either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.transforms import RandCoarseDropout, RandGaussianNoise

from pgnm_monai.handlers.batch_augmentation import BatchAugmentationHandler
from pgnm_monai.handlers.noise_policy import STATE_ATTRIBUTES, NoisePolicyHandler, ThreadLimitedNoisePolicyHandler
from pgnm_monai.mask import EPS, GRID, KERNEL_SIZE, SIGMA
from pgnm_monai.networks.policy import DEFAULT_TRUNK, NoisePolicy
from pgnm_monai.objectives import OBJECTIVES
from pgnm_monai.transforms import PAPER_MEAN, PAPER_STD, RandomBetaMask
from pgnm_monai.transforms.augment import RandBatchMix, RandTorchvisionPolicy
from pgnm_monai.validation import check_choice

__all__ = [
    "ARMS",
    "Arm",
    "arm_spec",
    "FAST_POLICY_INPUT_SIZE",
    "MASK_ARMS",
    "MECHANISMS",
    "PRESETS",
    "build_arm_handler",
    "build_policy_handler",
    "has_policy",
    "learned_policy_arms",
    "logged_state",
    "preset_kwargs",
    "without_policy",
]

#: how an arm changes the training images.
MECHANISMS = ("none", "pgnm", "random_mask", "gaussian", "coarse_dropout", "torchvision", "mix")
#: mechanisms that draw a G x G Beta mask (the grid must fit the image).
MASK_ARMS = ("pgnm", "random_mask")


@dataclass(frozen=True)
class Arm:
    """A named comparison arm: a :data:`MECHANISMS` entry plus the policy settings it fixes."""

    name: str
    mechanism: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


#: every arm by name (see the module docstring).
ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("none", "none", {}, "clean images (baseline)"),
        Arm("pgnm", "pgnm", {}, "learned Beta mask; objective from the objective argument"),
        Arm("pgnm-paper", "pgnm", {"objective": "paper"}, "learned Beta mask, official objective"),
        Arm(
            "pgnm-paper-unscaled",
            "pgnm",
            {"objective": "paper", "scale_classifier_loss": False},
            "learned Beta mask, official policy gradient, classifier on plain CE",
        ),
        Arm("pgnm-reinforce", "pgnm", {"objective": "reinforce"}, "learned Beta mask, REINFORCE, reward -CE"),
        Arm(
            "pgnm-adversarial",
            "pgnm",
            {"objective": "reinforce", "reward_sign": 1},
            "learned Beta mask, REINFORCE, reward +CE (adversarial)",
        ),
        Arm("frozen_policy", "pgnm", {"frozen": True}, "Beta mask from the policy at its seeded initialisation"),
        Arm("random_mask", "random_mask", {}, "the same Beta mask with fixed concentrations"),
        Arm("gaussian", "gaussian", {}, "MONAI RandGaussianNoise"),
        Arm("coarse_dropout", "coarse_dropout", {}, "MONAI RandCoarseDropout"),
        Arm("trivialaugment", "torchvision", {}, "torchvision TrivialAugmentWide"),
        Arm("randaugment", "torchvision", {}, "torchvision RandAugment"),
        Arm("mixup", "mix", {}, "MONAI MixUp, soft labels"),
        Arm("cutmix", "mix", {}, "MONAI CutMix, soft labels"),
    )
}

FAST_POLICY_INPUT_SIZE = 16

#: policy keyword arguments of each preset (arguments of :func:`build_policy_handler`).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"trunk": DEFAULT_TRUNK, "policy_input_size": None},
    "fast": {
        "trunk": DEFAULT_TRUNK,
        "policy_input_size": FAST_POLICY_INPUT_SIZE,
        "fused_optimizer": True,
        "channels_last": False,
    },
}


def arm_spec(arm: str, what: str = "arm") -> Arm:
    """The :class:`Arm` named ``arm``; ``ValueError`` naming ``what`` (e.g. ``"config id 'arm'"``) when unknown."""
    return ARMS[check_choice(what, arm, ARMS)]


def has_policy(arm: str) -> bool:
    """Whether ``arm`` trains a noise policy (its mechanism is ``pgnm``)."""
    return arm_spec(arm).mechanism == "pgnm"


def learned_policy_arms(arms: Iterable[str]) -> list[str]:
    """The arms of ``arms`` whose noise policy learns (mechanism ``pgnm``, not frozen), in :data:`ARMS` order."""
    present = set(arms)
    return [
        a for a, spec in ARMS.items() if a in present and spec.mechanism == "pgnm" and not spec.settings.get("frozen")
    ]


def without_policy(arm: str) -> bool:
    """``not has_policy(arm)``: the ``_disabled_`` switch of the bundles' policy-only handlers."""
    return not has_policy(arm)


def logged_state(arm: str) -> list[str] | None:
    """The ``engine.state`` attributes the bundles' writers log for ``arm`` (the policy's, or none)."""
    return list(STATE_ATTRIBUTES) if has_policy(arm) else None


def preset_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """The keyword arguments of preset ``name`` updated with ``overrides``.

    Args:
        name: a key of :data:`PRESETS` (``"paper"`` or ``"fast"``).
        overrides: keyword arguments that replace the preset's values (e.g. ``policy_input_size=32``).

    Returns:
        A new dict, safe to modify.
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {name!r}.")
    return {**PRESETS[name], **overrides}


def build_policy_handler(
    device: str | torch.device = "cpu",
    in_channels: int = 1,
    spatial_dims: int = 2,
    grid: int = GRID,
    kernel_size: int = KERNEL_SIZE,
    sigma: float = SIGMA,
    eps: float = EPS,
    trunk: str = DEFAULT_TRUNK,
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
    advantage: str = "baseline",
    scale_classifier_loss: bool = True,
    frozen: bool = False,
    channels_last: bool = True,
) -> NoisePolicyHandler:
    """A :class:`NoisePolicyHandler` with the paper's policy optimiser.

    The policy is initialised from ``seed`` without touching the global RNG, so building it does not
    change the classifier's initialisation. Optimiser: SGD(``policy_lr``, momentum, weight decay);
    with ``epochs`` a cosine annealing of its learning rate to 0 over the epochs (the paper).
    ``fused_optimizer=True`` uses PyTorch's fused SGD kernel (the same update, one kernel per parameter
    instead of several: the ``fast`` preset). ``policy_num_threads`` runs the policy's hooks with that
    many CPU threads (:class:`ThreadLimitedNoisePolicyHandler`; the ``fast`` preset uses 1).
    ``advantage`` (``"baseline"``/``"normalized"``, ``reinforce``), ``scale_classifier_loss`` (``paper``) and
    ``frozen`` (never update the policy) are passed to :class:`NoisePolicyHandler`; ``channels_last`` to
    :class:`~pgnm_monai.networks.NoisePolicy` (the trunk's memory format).
    """
    check_choice("objective", objective, OBJECTIVES)  # before the policy is built
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
            channels_last=channels_last,
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
        advantage=advantage,
        scale_classifier_loss=scale_classifier_loss,
        frozen=frozen,
        **extra,
    )


def build_arm_handler(
    arm: str,
    device: str | torch.device = "cpu",
    in_channels: int = 1,
    spatial_dims: int = 2,
    image_size: int | None = None,
    grid: int = GRID,
    kernel_size: int = KERNEL_SIZE,
    sigma: float = SIGMA,
    eps: float = EPS,
    random_alpha: float = 1.0,
    random_beta: float = 1.0,
    noise_std: float = 0.1,
    dropout_holes: int = 8,
    dropout_fraction: float = 0.1,
    intensity_mean: float = PAPER_MEAN,
    intensity_std: float = PAPER_STD,
    num_classes: int | None = None,
    mix_alpha: float | None = None,
    image_key: str = "image",
    seed: int = 0,
    preset: str | None = None,
    **policy_kwargs,
) -> NoisePolicyHandler | BatchAugmentationHandler:
    """The training-time handler of ``arm`` (see the module docstring).

    Args:
        arm: a name in :data:`ARMS`; the settings the arm fixes (e.g. ``pgnm-paper``'s objective) win over
            ``policy_kwargs``.
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
        intensity_mean: the chain's normalisation mean (``trivialaugment``, ``randaugment``).
        intensity_std: the chain's normalisation std (``trivialaugment``, ``randaugment``).
        num_classes: the class count (``mixup``, ``cutmix``: required).
        mix_alpha: Beta(alpha, alpha) of the mixing weight; ``None``: torchvision's references' (0.2 for
            ``mixup``, 1.0 for ``cutmix``).
        image_key: key of the image in the batch dict.
        seed: seed of the policy initialisation and of every draw.
        preset: ``None``, ``"paper"`` or ``"fast"`` (:data:`PRESETS`): default policy arguments of
            ``pgnm``; explicit ``policy_kwargs`` win. Ignored by the other arms (but checked).
        policy_kwargs: passed to :func:`build_policy_handler` (objective, trunk, policy_lr, epochs, ...).
    """
    spec = arm_spec(arm)
    if image_size is not None and spec.mechanism in MASK_ARMS and grid > image_size:
        raise ValueError(f"grid ({grid}) must be <= image_size ({image_size}) for arm {arm!r}.")
    if preset is not None:
        policy_kwargs = {**preset_kwargs(preset), **policy_kwargs}
    policy_kwargs = {**policy_kwargs, **spec.settings}
    if spec.mechanism == "pgnm":
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
    if spec.mechanism == "none":
        return BatchAugmentationHandler(None, **common)
    if spec.mechanism == "random_mask":
        mask = RandomBetaMask(grid, random_alpha, random_beta, kernel_size, sigma, eps, spatial_dims)
        return BatchAugmentationHandler(mask, per_sample=False, **common)
    if spec.mechanism == "gaussian":
        return BatchAugmentationHandler(RandGaussianNoise(prob=1.0, mean=0.0, std=noise_std), **common)
    if spec.mechanism == "torchvision":
        if spatial_dims != 2:
            raise ValueError(f"arm {arm!r} augments 2D images (torchvision), got spatial_dims={spatial_dims}.")
        return BatchAugmentationHandler(RandTorchvisionPolicy(arm, intensity_mean, intensity_std), **common)
    if spec.mechanism == "mix":
        if num_classes is None:
            raise ValueError(f"num_classes is required for arm {arm!r} (the labels become one-hot).")
        alpha = {"mixup": 0.2, "cutmix": 1.0}[arm] if mix_alpha is None else mix_alpha
        return BatchAugmentationHandler(RandBatchMix(arm, num_classes, alpha), mix_labels=True, **common)
    if image_size is None:
        raise ValueError("image_size is required for arm 'coarse_dropout' (it sizes the holes).")
    side = max(1, round(dropout_fraction * image_size))
    dropout = RandCoarseDropout(holes=dropout_holes, spatial_size=side, fill_value=0.0, prob=1.0)
    return BatchAugmentationHandler(dropout, **common)
