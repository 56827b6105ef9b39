"""The method's settings and their defaults, stated once.

- :class:`PolicySettings`: the noise mask (grid, blur, clamp), the policy network (trunk, input size, memory
  format), its objective (``reinforce``/``paper``, advantage, reward sign, entropy weight) and its optimiser.
- :class:`InputSettings`: the classifier and what it sees (network, image side, channels, normalisation).
- :class:`OptimizerSettings`: the classifier's SGD; :class:`AugmentSettings`: the other arms' augmentations;
  :class:`DeviceSettings`: mixed precision, memory format and compilation.
- :data:`PRESETS`: named policy settings (``paper``, ``fast``); :data:`NORMALIZATION`: the intensity mean and
  std each family of weights was trained with (:func:`normalization` for 1 or 3 input channels,
  :func:`intensity_values` checks any); :data:`TRUNKS`: the policy's trunk names.

Field names are the bundle ids (``grid``, ``policy_trunk``, ``policy_lr_factor``, ...): the bundles read their
defaults from :data:`POLICY` and :data:`INPUT` (``"grid": "$pgnm_monai.settings.POLICY.grid"``), and
:meth:`PolicySettings.from_mapping` builds the settings back from any mapping of ids (a bundle's ``run_settings``,
a run's ``models/run_settings.json``), so a value keeps its name from the command line to where it acts. The CLI,
the demo, the benchmarks and the protocol read the same objects. Each field is checked when the object is made
(``ValueError`` naming the id).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from pgnm_monai.mask import check_mask_params
from pgnm_monai.validation import check_choice, check_positive

__all__ = [
    "ADVANTAGES",
    "AMP_DTYPES",
    "DEVICE",
    "DeviceSettings",
    "AUGMENT",
    "INPUT",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_PIXELS_ENV",
    "NORMALIZATION",
    "OBJECTIVES",
    "OPTIMIZER",
    "PAPER_GRID",
    "POLICY",
    "PRESETS",
    "REWARD_SIGNS",
    "TRUNKS",
    "default_network",
    "eval_resize",
    "intensity_values",
    "normalization",
    "per_channel",
    "AugmentSettings",
    "InputSettings",
    "OptimizerSettings",
    "PolicySettings",
]

#: the policy objectives (:mod:`pgnm_monai.objectives`): the official one and textbook REINFORCE.
OBJECTIVES = ("paper", "reinforce")
#: how ``reinforce`` turns rewards into advantages (:func:`pgnm_monai.objectives.reinforce_objective`).
ADVANTAGES = ("baseline", "normalized")
#: the sign of the ``reinforce`` reward ``sign * CE``: -1 cooperative masks, +1 adversarial.
REWARD_SIGNS = (-1, 1)

#: the policy's feature trunks: timm's ResNet-10t (the paper's) and ResNet-18, or a tiny CNN (tests, CPU demos).
TRUNKS = ("resnet10t", "resnet18", "small")

#: ``(mean, std)`` of the images each family of weights was trained on, one value for every channel or one per RGB
#: channel: ``paper`` the official PGNM code's RadImageNet normalisation (the default); ``imagenet`` torchvision's and
#: timm's ImageNet weights (timm's ``IMAGENET_DEFAULT_MEAN`` / ``IMAGENET_DEFAULT_STD``). :func:`normalization` gives
#: the bundle ids ``intensity_mean`` / ``intensity_std`` for an input of 1 or 3 channels.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "paper": ((0.3162,), (0.3213,)),
    "imagenet": (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)),
}

#: the most pixels (voxels of a volume; frames x rows x columns of a multi-frame DICOM) one image may have: every
#: reader checks the size its header states before decoding (a 250 KB PNG can state 16000 x 16000), and refuses a
#: larger image naming the file (:func:`pgnm_monai.data.io.read_image`). 2**27: a 512**3 volume, an 11585**2 image.
MAX_IMAGE_PIXELS = 2**27
#: the environment variable that raises (or lowers) :data:`MAX_IMAGE_PIXELS` in every process of a run (the
#: bundles, their data-loader workers, torchrun's ranks, ``pgnm``).
MAX_IMAGE_PIXELS_ENV = "PGNM_MAX_IMAGE_PIXELS"


def _check_int(name: str, value: Any, low: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "an integer" + (" or None" if optional else "")
        raise ValueError(f"{name!r} must be {kind} >= {low}, got {value!r}.")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name!r} must be true or false, got {value!r}.")


def _check_fraction(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < high:
        raise ValueError(f"{name!r} must be a number in [{low}, {high}), got {value!r}.")


def intensity_values(what: str, value: Any, in_channels: int | None = None, positive: bool = False) -> float | list:
    """``value`` as the bundles keep ``intensity_mean`` / ``intensity_std``: one float for every channel, or a list of
    one float per input channel (timm's rule for a data config's ``mean`` and ``std``: 1 value or ``in_chans``).

    Args:
        what: how errors name the value (``"'intensity_std'"``, ``"--std"``).
        value: a number, or a sequence of numbers.
        in_channels: the input channels a sequence of several values must match (``None``: any count).
        positive: every value must be > 0 (a std).

    Raises:
        ValueError: not finite numbers (or not > 0 where ``positive``), or a count other than 1 or ``in_channels``,
            naming ``what``.
    """
    many = isinstance(value, Sequence) and not isinstance(value, str)
    values = list(value) if many else [value]
    kind = "a finite number" + (" > 0" if positive else "")

    def fits(v: Any) -> bool:
        number = not isinstance(v, bool) and isinstance(v, (int, float))
        return number and math.isfinite(v) and (v > 0 or not positive)

    if not values or not all(fits(v) for v in values):
        each = f"{kind} (or one per channel)" if many else kind
        raise ValueError(f"{what} must be {each}, got {value!r}.")
    if len(values) > 1 and in_channels is not None and len(values) != in_channels:
        expected = f"1 (for every channel) or {in_channels} (one per channel)" if in_channels > 1 else "1"
        raise ValueError(
            f"{what} gives {len(values)} values {value!r} for {in_channels} input channel(s); expected {expected}."
        )
    return float(values[0]) if len(values) == 1 else [float(v) for v in values]


def per_channel(value: float | Sequence[float], channels: int, what: str = "'intensity_mean'") -> tuple[float, ...]:
    """An ``intensity_mean`` / ``intensity_std`` value as one float per channel (one value repeated); checked by
    :func:`intensity_values`, whose errors name ``what``."""
    values = intensity_values(what, value, channels)
    return tuple(values) if isinstance(values, list) else (values,) * channels


def normalization(name: str, in_channels: int) -> tuple[float | list, float | list]:
    """``(intensity_mean, intensity_std)`` of :data:`NORMALIZATION` ``name`` for ``in_channels`` inputs: the
    per-channel values for 3 channels; for 1 channel the mean of the channels' values, which a grey image repeated to
    RGB would see on average (as timm's ``adapt_input_conv`` sums the RGB stem into one channel)."""
    check_choice("normalization", name, NORMALIZATION)
    check_choice("in_channels", in_channels, (1, 3))

    def fit(values: tuple[float, ...]) -> float | list:
        return round(statistics.fmean(values), 6) if in_channels == 1 else intensity_values(name, values, in_channels)

    mean, std = NORMALIZATION[name]
    return fit(mean), fit(std)


class _Settings:
    """``from_mapping`` / ``replace`` / ``asdict`` shared by the settings dataclasses."""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None, **overrides: Any):
        """The settings named in ``values`` (ids of other settings are ignored), then ``overrides``; the rest
        default."""
        names = {f.name for f in dataclasses.fields(cls)}
        given = {**dict(values or {}), **overrides}
        return cls(**{k: v for k, v in given.items() if k in names})

    def replace(self, **changes: Any):
        """A copy with ``changes`` (checked)."""
        return dataclasses.replace(self, **changes)

    def asdict(self) -> dict[str, Any]:
        """The settings as ``{id: value}``."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PolicySettings(_Settings):
    """The noise policy: the mask it draws, the network that draws it, and how that network learns.

    Attributes:
        grid: mask cells per side (``G``; ``G^3`` cells in 3D); must not exceed the image side. The paper uses
            :data:`PAPER_GRID` at 224 px (3.5 px a cell); 16 keeps about that cell size at the default 64 px.
        kernel_size: odd size of the Gaussian blur of the upsampled mask (paper: 13).
        sigma: the blur's sigma (paper: 6).
        eps: sampled cells are clamped to ``[eps, 1 - eps]``.
        policy_trunk: the policy's feature trunk, one of :data:`TRUNKS` (paper: timm's ResNet-10t).
        policy_input_size: side the trunk sees (the image is area-resized to it); ``None``: full resolution
            (the paper).
        policy_channels_last: run a 2D trunk in the channels-last memory format.
        objective: ``reinforce`` (per-sample reward, baseline, entropy bonus) or ``paper`` (the official one).
        advantage: ``reinforce``: ``baseline`` (reward minus a moving-average baseline) or ``normalized``.
        reward_sign: ``reinforce``: ``-1`` (reward ``-CE``, cooperative masks) or ``+1`` (adversarial).
        entropy_weight: ``reinforce``: weight of the per-sample mask entropy.
        baseline_momentum: ``reinforce``: momentum of the reward baseline.
        scale_classifier_loss: ``paper``: multiply the classifier loss by the detached policy term (official).
        frozen: never update the policy (the ``frozen_policy`` control).
        policy_lr_factor: the policy's learning rate as a fraction of the classifier's (paper: 1/10).
        policy_momentum: SGD momentum of the policy (paper: 0.9).
        policy_weight_decay: SGD weight decay of the policy (paper: 1e-4).
        policy_fused_optimizer: PyTorch's fused SGD kernel for the policy (the same update).
        policy_num_threads: CPU threads of the policy's hooks; ``None``: as many as the classifier.
        policy_stats_interval: iterations between two reads of the policy's statistics to the host (also at the
            end of each epoch): its only synchronisations, and the only steps that compute the logged statistics.
    """

    grid: int = 16
    kernel_size: int = 13
    sigma: float = 6.0
    eps: float = 1e-4
    policy_trunk: str = "resnet10t"
    policy_input_size: int | None = None
    policy_channels_last: bool = True
    objective: str = "reinforce"
    advantage: str = "baseline"
    reward_sign: int = -1
    entropy_weight: float = 0.0
    baseline_momentum: float = 0.9
    scale_classifier_loss: bool = True
    frozen: bool = False
    policy_lr_factor: float = 0.1
    policy_momentum: float = 0.9
    policy_weight_decay: float = 1e-4
    policy_fused_optimizer: bool = False
    policy_num_threads: int | None = None
    policy_stats_interval: int = 10

    def __post_init__(self) -> None:
        check_mask_params(kernel_size=self.kernel_size, sigma=self.sigma, eps=self.eps, grid=self.grid)
        check_choice("'policy_trunk'", self.policy_trunk, TRUNKS)
        _check_int("policy_input_size", self.policy_input_size, 1, optional=True)
        check_choice("'objective'", self.objective, OBJECTIVES)
        check_choice("'advantage'", self.advantage, ADVANTAGES)
        check_choice("'reward_sign'", self.reward_sign, REWARD_SIGNS)
        _check_fraction("entropy_weight", self.entropy_weight, 0.0, float("inf"))
        _check_fraction("baseline_momentum", self.baseline_momentum, 0.0, 1.0)
        check_positive("'policy_lr_factor'", self.policy_lr_factor)
        _check_fraction("policy_momentum", self.policy_momentum, 0.0, 1.0)
        _check_fraction("policy_weight_decay", self.policy_weight_decay, 0.0, float("inf"))
        for name in ("policy_channels_last", "scale_classifier_loss", "frozen", "policy_fused_optimizer"):
            _check_bool(name, getattr(self, name))
        _check_int("policy_num_threads", self.policy_num_threads, 1, optional=True)
        _check_int("policy_stats_interval", self.policy_stats_interval, 1)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PolicySettings:
        """The settings of preset ``name`` (:data:`PRESETS`), then ``overrides``."""
        check_choice("preset", name, PRESETS)
        return cls(**{**PRESETS[name], **overrides})


@dataclass(frozen=True)
class InputSettings(_Settings):
    """The classifier and what it sees.

    Attributes:
        network: the classifier's name (:data:`pgnm_monai.networks.CLASSIFIERS`; checked where it is built).
        spatial_dims: 2 (images) or 3 (volumes).
        image_size: side of the square (cubic) input after the crop.
        in_channels: 1 or 3 (grey images are repeated to three channels).
        intensity_mean: subtracted from intensities in [0, 1] (the paper's RadImageNet value): one value for every
            channel, or one per channel (:func:`intensity_values`).
        intensity_std: divides them after the subtraction (one value, or one per channel; > 0).
        ct_window: CT window ``(level, width)`` in HU that maps a CT DICOM/NIfTI image to [0, 1].
        percentiles: the percentiles mapped to 0 and 1 for other images outside [0, 1]
            (:func:`pgnm_monai.data.io.scale_intensity`).
    """

    network: str = "resnet10t"
    spatial_dims: int = 2
    image_size: int = 64
    in_channels: int = 1
    intensity_mean: float | list = NORMALIZATION["paper"][0][0]
    intensity_std: float | list = NORMALIZATION["paper"][1][0]
    ct_window: tuple[float, float] = (40.0, 400.0)
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        check_choice("'spatial_dims'", self.spatial_dims, (2, 3))
        _check_int("image_size", self.image_size, 8)
        check_choice("'in_channels'", self.in_channels, (1, 3))
        intensity_values("'intensity_mean'", self.intensity_mean, self.in_channels)
        intensity_values("'intensity_std'", self.intensity_std, self.in_channels, positive=True)


@dataclass(frozen=True)
class OptimizerSettings(_Settings):
    """The classifier's SGD (the paper's pretraining).

    Attributes:
        lr: learning rate (the policy's is ``lr * policy_lr_factor``).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
    """

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        check_positive("'lr'", self.lr)
        _check_fraction("momentum", self.momentum, 0.0, 1.0)
        _check_fraction("weight_decay", self.weight_decay, 0.0, float("inf"))


@dataclass(frozen=True)
class AugmentSettings(_Settings):
    """The augmentations of the arms without a policy (:mod:`pgnm_monai.arms`).

    Attributes:
        random_alpha: fixed Beta concentration of ``random_mask`` (1: uniform cells).
        random_beta: fixed Beta concentration of ``random_mask``.
        noise_std: standard deviation of ``gaussian`` (MONAI ``RandGaussianNoise``).
        dropout_holes: holes of ``coarse_dropout`` (MONAI ``RandCoarseDropout``).
        dropout_fraction: hole side as a fraction of the image side (``coarse_dropout``).
        mixup_alpha: ``Beta(alpha, alpha)`` of the ``mixup`` weight (torchvision's references: 0.2).
        cutmix_alpha: ``Beta(alpha, alpha)`` of the ``cutmix`` weight (torchvision's references: 1.0).
    """

    random_alpha: float = 1.0
    random_beta: float = 1.0
    noise_std: float = 0.1
    dropout_holes: int = 8
    dropout_fraction: float = 0.1
    mixup_alpha: float = 0.2
    cutmix_alpha: float = 1.0

    def __post_init__(self) -> None:
        for name in ("random_alpha", "random_beta", "noise_std", "dropout_fraction", "mixup_alpha", "cutmix_alpha"):
            check_positive(repr(name), getattr(self, name))
        _check_int("dropout_holes", self.dropout_holes, 1)


@dataclass(frozen=True)
class DeviceSettings(_Settings):
    """How the networks run on their device, as PyTorch's performance guide runs them on a GPU.

    Attributes:
        amp: mixed precision (MONAI's autocast) for training and evaluation; ``None``: on a CUDA GPU, off on the
            CPU (``True`` on the CPU is ignored with a warning: MONAI's engines autocast on CUDA only).
        amp_dtype: ``auto`` (bfloat16 where the GPU supports it, else float16 with MONAI's gradient scaler),
            ``bfloat16`` or ``float16``.
        channels_last: the classifier (and its input) in the channels-last memory format; ``None``: on a CUDA GPU
            for 2D networks. The same values, up to float rounding.
        compile: ``torch.compile`` the classifier and the policy (in place: the state dicts keep their keys);
            ``True`` for PyTorch's default backend (inductor), or a backend's name (e.g. ``eager``: tracing only).
    """

    amp: bool | None = None
    amp_dtype: str = "auto"
    channels_last: bool | None = None
    compile: bool | str = False

    def __post_init__(self) -> None:
        for name in ("amp", "channels_last"):
            if getattr(self, name) is not None:
                _check_bool(name, getattr(self, name))
        check_choice("'amp_dtype'", self.amp_dtype, AMP_DTYPES)
        if not isinstance(self.compile, bool):
            import torch

            check_choice("'compile'", self.compile, torch.compiler.list_backends(exclude_tags=()))


#: ``amp_dtype`` choices (``auto``: bfloat16 where supported, else float16).
AMP_DTYPES = ("auto", "bfloat16", "float16")

#: the paper's grid at its 224 px images (the default :attr:`PolicySettings.grid` keeps its cell size at 64 px).
PAPER_GRID = 64

#: the policy presets: both draw the same mask with the same policy network; ``paper`` feeds the trunk the
#: full-resolution image (as the official code, channels-last), ``fast`` the image area-resized to 16 x 16 (the
#: mask keeps its cells; only the evidence the policy conditions on is coarser), in the default memory format,
#: with PyTorch's fused SGD.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "fast": {"policy_input_size": 16, "policy_fused_optimizer": True, "policy_channels_last": False},
}

#: the defaults (the bundles' ids read them).
POLICY = PolicySettings()
INPUT = InputSettings()
OPTIMIZER = OptimizerSettings()
AUGMENT = AugmentSettings()
DEVICE = DeviceSettings()


def eval_resize(image_size: int) -> int:
    """The evaluation chain's short side before its centre crop to ``image_size`` (the paper's 256 for 224)."""
    return max(int(image_size), round(int(image_size) * 256 / 224))


def default_network(spatial_dims: int) -> str:
    """The default classifier of ``spatial_dims``: :data:`INPUT`'s in 2D, MONAI's 3D ResNet-10 in 3D."""
    return INPUT.network if spatial_dims == 2 else "resnet10"
