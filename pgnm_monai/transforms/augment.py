"""The augmentations a practitioner would pick instead of a noise mask, on normalised training images.

- :class:`RandTorchvisionPolicy`: torchvision's ``TrivialAugmentWide`` or ``RandAugment`` (what the official
  training scripts, torchvision's references, take as ``--auto-augment ta_wide|ra``) on one ``(C, H, W)`` image.
  The image is mapped back to [0, 1] with the chain's mean and std, quantised to ``uint8`` (the policies'
  photometric ops, e.g. posterize and solarize, are defined on 8-bit images), augmented, and normalised again;
  one- and three-channel images both work.
- :class:`RandBatchMix`: MONAI's ``MixUp`` or ``CutMix`` on a batch, with the same weights and pairing on its
  one-hot labels (soft labels for a cross-entropy on class probabilities).

Both are ``Randomizable``: a seeded ``set_random_state`` makes their draws repeatable (torchvision's policies draw
from torch's global generator, which :class:`RandTorchvisionPolicy` seeds inside a forked RNG state).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from monai.transforms import CutMix, MixUp, Randomizable, Transform
from monai.utils import TransformBackends
from torchvision.transforms import v2

from pgnm_monai.validation import check_choice

__all__ = ["BATCH_MIXES", "TORCHVISION_POLICIES", "RandBatchMix", "RandTorchvisionPolicy"]

#: arm name -> torchvision policy (defaults as torchvision's references use them).
TORCHVISION_POLICIES = {"trivialaugment": v2.TrivialAugmentWide, "randaugment": v2.RandAugment}
#: arm name -> MONAI's batch mix.
BATCH_MIXES = {"mixup": MixUp, "cutmix": CutMix}


class RandTorchvisionPolicy(Randomizable, Transform):
    """torchvision's ``TrivialAugmentWide`` / ``RandAugment`` on one normalised ``(C, H, W)`` image.

    Args:
        policy: ``"trivialaugment"`` or ``"randaugment"`` (:data:`TORCHVISION_POLICIES`).
        mean: the normalisation mean of the chain (``intensity_mean``: one value, or one per channel).
        std: the normalisation std of the chain (``intensity_std``: one value, or one per channel).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, policy: str, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        self.policy = TORCHVISION_POLICIES[check_choice("policy", policy, TORCHVISION_POLICIES)]()
        # (C, 1, 1): one value for every channel, or one per channel, broadcast over the image
        self.mean, self.std = (torch.tensor(v, dtype=torch.float32).reshape(-1, 1, 1) for v in (mean, std))
        self._seed = 0

    def randomize(self, data: object = None) -> None:
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, img: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        img = torch.as_tensor(img)
        if img.ndim != 3:
            raise ValueError(f"{type(self.policy).__name__} needs a 2D image (C, H, W), got shape {tuple(img.shape)}.")
        if randomize:
            self.randomize()
        pixels = ((img.float() * self.std + self.mean).clamp(0, 1) * 255).round().to(torch.uint8)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            out = self.policy(pixels)
        return ((out.float() / 255 - self.mean) / self.std).to(img.dtype)


class RandBatchMix(Randomizable):
    """MONAI's ``MixUp`` / ``CutMix`` on a batch ``(B, C, *spatial)`` and its labels (class indices or one-hot).

    Args:
        mix: ``"mixup"`` or ``"cutmix"`` (:data:`BATCH_MIXES`).
        num_classes: the class count (labels become one-hot before mixing).
        alpha: the Beta(alpha, alpha) parameter of the mixing weight (torchvision's references: 0.2 for mixup,
            1.0 for cutmix).
    """

    def __init__(self, mix: str, num_classes: int, alpha: float) -> None:
        self.kind = BATCH_MIXES[check_choice("mix", mix, BATCH_MIXES)]
        self.num_classes, self.alpha = int(num_classes), float(alpha)
        self._seed = 0

    def randomize(self, data: object = None) -> None:
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed batch and its soft labels ``(B, num_classes)``."""
        self.randomize()
        label = torch.as_tensor(label, device=image.device)
        if label.ndim < 2 or label.shape[-1] != self.num_classes:
            label = torch.nn.functional.one_hot(label.reshape(-1).long(), self.num_classes)
        label = label.to(image.dtype)
        mix = self.kind(batch_size=image.shape[0], alpha=self.alpha).set_random_state(seed=self._seed)
        with warnings.catch_warnings():  # MONAI's CutMix indexes with a list: a torch deprecation warning per call
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
            mixed = mix(image)  # draws the weights and the pairing, mixes the images
        if isinstance(mix, CutMix):  # each label weighted by the area of its image that is kept
            return mixed, mix.apply_on_labels(label)
        return mixed, mix.apply(label[:, :, None, None])[:, :, 0, 0]  # MixUp's weights on the labels
