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

Each mechanism is one builder registered under its name (:func:`register_mechanism`, timm's ``@register_model``
pattern): :data:`MECHANISMS` is that table, and an arm whose mechanism is not in it cannot be made.

The last four are what a practitioner would pick instead of a mask (:mod:`pgnm_monai.transforms.augment`): the
torchvision policies work on the image mapped back to [0, 1] with ``intensity_mean``/``intensity_std`` and
quantised to 8 bits; the mixes need ``num_classes`` and train on soft labels (cross-entropy on probabilities).

Every setting is passed by its bundle id (:mod:`pgnm_monai.settings`): ``build_arm_handler(arm, settings,
**ids)`` takes a mapping of ids (a bundle's ``run_settings``, a run's ``models/run_settings.json``) and keyword ids
that win over it; ids an arm does not use are ignored. The settings an arm fixes (its :attr:`Arm.settings`) win
over both. *Presets* (:data:`pgnm_monai.settings.PRESETS`) are named policy settings (``paper``, ``fast``):
``build_arm_handler("pgnm", preset="fast")`` starts from them, and explicit ids win. Their cost against the paper's
networks is measured by ``python -m pgnm_monai.benchmarks.step_time`` (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.transforms import RandCoarseDropout, RandGaussianNoise

from pgnm_monai.handlers.batch_augmentation import BatchAugmentationHandler
from pgnm_monai.handlers.noise_policy import STATE_ATTRIBUTES, NoisePolicyHandler
from pgnm_monai.handlers.policy_factory import build_policy_handler
from pgnm_monai.settings import (
    PRESETS,
    AugmentSettings,
    DeviceSettings,
    InputSettings,
    OptimizerSettings,
    PolicySettings,
)
from pgnm_monai.transforms.augment import RandBatchMix, RandTorchvisionPolicy
from pgnm_monai.transforms.noise_mask import RandomBetaMask
from pgnm_monai.validation import check_choice, check_keywords

__all__ = [
    "ARMS",
    "Arm",
    "ArmContext",
    "MASK_ARMS",
    "MECHANISMS",
    "PRESETS",
    "arm_spec",
    "build_arm_handler",
    "build_policy_handler",
    "has_policy",
    "learned_policy_arms",
    "logged_state",
    "register_mechanism",
    "without_policy",
]

Handler = NoisePolicyHandler | BatchAugmentationHandler

#: mechanism name -> the builder of its training handler (filled by :func:`register_mechanism`).
MECHANISMS: dict[str, Callable[[ArmContext], Handler]] = {}
#: mechanisms that draw a G x G Beta mask (the grid must fit the image).
MASK_ARMS = ("pgnm", "random_mask")
#: ids :func:`build_arm_handler` reads besides the settings dataclasses' (the run's, from the bundle).
RUN_IDS = ("epochs", "seed")


def register_mechanism(name: str) -> Callable:
    """Register the decorated ``builder(context) -> handler`` as mechanism ``name``."""

    def register(builder: Callable[[ArmContext], Handler]) -> Callable[[ArmContext], Handler]:
        if name in MECHANISMS:
            raise ValueError(f"mechanism {name!r} is registered already.")
        MECHANISMS[name] = builder
        return builder

    return register


@dataclass(frozen=True)
class Arm:
    """A named comparison arm: a registered mechanism plus the policy settings it fixes."""

    name: str
    mechanism: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        check_choice(f"mechanism of arm {self.name!r}", self.mechanism, MECHANISMS)


@dataclass(frozen=True)
class ArmContext:
    """What a mechanism's builder gets: the arm, every id given (``values``) and where to run."""

    arm: Arm
    values: Mapping[str, Any]
    device: str | torch.device
    num_classes: int | None
    image_key: str

    @property
    def seed(self) -> int:
        return int(self.values.get("seed", 0))

    @property
    def spatial_dims(self) -> int:
        return self.input.spatial_dims

    @property
    def image_size(self) -> int | None:
        """The image side when given (``coarse_dropout`` needs it; the masks check their grid against it)."""
        return self.values.get("image_size")

    @property
    def input(self) -> InputSettings:
        return InputSettings.from_mapping(self.values)

    @property
    def augment(self) -> AugmentSettings:
        return AugmentSettings.from_mapping(self.values)

    @property
    def policy(self) -> PolicySettings:
        """The policy settings given, with those the arm fixes."""
        return PolicySettings.from_mapping(self.values, **self.arm.settings)

    def batch_handler(self, transform: Any, **kwargs: Any) -> BatchAugmentationHandler:
        return BatchAugmentationHandler(transform, image_key=self.image_key, seed=self.seed, **kwargs)


@register_mechanism("none")
def _none(ctx: ArmContext) -> BatchAugmentationHandler:
    return ctx.batch_handler(None)


@register_mechanism("pgnm")
def _pgnm(ctx: ArmContext) -> NoisePolicyHandler:
    return build_policy_handler(
        ctx.policy,
        lr=OptimizerSettings.from_mapping(ctx.values).lr,
        epochs=ctx.values.get("epochs"),
        in_channels=ctx.input.in_channels,
        spatial_dims=ctx.spatial_dims,
        device=ctx.device,
        seed=ctx.seed,
        image_key=ctx.image_key,
        compile=DeviceSettings.from_mapping(ctx.values).compile,
    )


@register_mechanism("random_mask")
def _random_mask(ctx: ArmContext) -> BatchAugmentationHandler:
    p, a = ctx.policy, ctx.augment
    mask = RandomBetaMask(p.grid, a.random_alpha, a.random_beta, p.kernel_size, p.sigma, p.eps, ctx.spatial_dims)
    return ctx.batch_handler(mask, per_sample=False)


@register_mechanism("gaussian")
def _gaussian(ctx: ArmContext) -> BatchAugmentationHandler:
    return ctx.batch_handler(RandGaussianNoise(prob=1.0, mean=0.0, std=ctx.augment.noise_std))


@register_mechanism("coarse_dropout")
def _coarse_dropout(ctx: ArmContext) -> BatchAugmentationHandler:
    if ctx.image_size is None:
        raise ValueError("image_size is required for arm 'coarse_dropout' (it sizes the holes).")
    a = ctx.augment
    side = max(1, round(a.dropout_fraction * ctx.image_size))
    return ctx.batch_handler(RandCoarseDropout(holes=a.dropout_holes, spatial_size=side, fill_value=0.0, prob=1.0))


@register_mechanism("torchvision")
def _torchvision(ctx: ArmContext) -> BatchAugmentationHandler:
    if ctx.spatial_dims != 2:
        raise ValueError(f"arm {ctx.arm.name!r} augments 2D images (torchvision), got spatial_dims={ctx.spatial_dims}.")
    i = ctx.input
    return ctx.batch_handler(RandTorchvisionPolicy(ctx.arm.name, i.intensity_mean, i.intensity_std))


@register_mechanism("mix")
def _mix(ctx: ArmContext) -> BatchAugmentationHandler:
    if ctx.num_classes is None:
        raise ValueError(f"num_classes is required for arm {ctx.arm.name!r} (the labels become one-hot).")
    alpha = getattr(ctx.augment, f"{ctx.arm.name}_alpha")
    return ctx.batch_handler(RandBatchMix(ctx.arm.name, ctx.num_classes, alpha), mix_labels=True)


#: every arm by name (see the module docstring).
ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("none", "none", {}, "clean images (baseline)"),
        Arm("pgnm", "pgnm", {}, "learned Beta mask; objective from the objective id"),
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

#: every id :func:`build_arm_handler` reads.
KNOWN_IDS = frozenset(
    name
    for cls in (PolicySettings, InputSettings, OptimizerSettings, AugmentSettings, DeviceSettings)
    for name in cls.__dataclass_fields__
) | set(RUN_IDS)


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


def build_arm_handler(
    arm: str,
    settings: Mapping[str, Any] | None = None,
    *,
    device: str | torch.device = "cpu",
    num_classes: int | None = None,
    image_key: str = "image",
    preset: str | None = None,
    **ids: Any,
) -> Handler:
    """The training-time handler of ``arm`` (see the module docstring).

    Args:
        arm: a name in :data:`ARMS`.
        settings: bundle id -> value (e.g. the bundle's ``run_settings``): the ids of
            :class:`~pgnm_monai.settings.PolicySettings`, :class:`~pgnm_monai.settings.InputSettings`,
            :class:`~pgnm_monai.settings.OptimizerSettings` (``lr``: the policy's is ``lr * policy_lr_factor``),
            :class:`~pgnm_monai.settings.AugmentSettings`, ``compile`` (of the policy), and ``epochs`` (the policy's
            cosine schedule), ``seed``;
            other ids are ignored, missing ones default.
        device: where the policy / augmentation runs (the trainer's device).
        num_classes: the class count (``mixup``, ``cutmix``: required).
        image_key: key of the image in the batch dict.
        preset: ``None``, ``"paper"`` or ``"fast"`` (:data:`PRESETS`): policy settings under ``settings`` and
            ``ids``. Ignored by the other arms (but checked).
        ids: ids that win over ``settings`` (the names above; an unknown one raises ``TypeError``).

    Raises:
        ValueError: an unknown arm, a setting out of range (naming its id), a ``grid`` larger than ``image_size``.
    """
    spec = arm_spec(arm)
    check_keywords("build_arm_handler", ids, KNOWN_IDS)
    if preset is not None:
        check_choice("preset", preset, PRESETS)
    values = {**(PRESETS[preset] if preset else {}), **dict(settings or {}), **ids}
    ctx = ArmContext(spec, values, device, num_classes, image_key)
    if spec.mechanism in MASK_ARMS and ctx.image_size is not None and ctx.policy.grid > ctx.image_size:
        raise ValueError(f"grid ({ctx.policy.grid}) must be <= image_size ({ctx.image_size}) for arm {arm!r}.")
    return MECHANISMS[spec.mechanism](ctx)
