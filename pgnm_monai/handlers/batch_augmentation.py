"""An ignite handler that augments the batch image at ``ITERATION_STARTED`` (the non-policy arms)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from monai.transforms import Randomizable
from monai.utils import CommonKeys, IgniteInfo, min_version, optional_import

from pgnm_monai import distributed
from pgnm_monai.handlers.iteration import iteration_seed

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["BatchAugmentationHandler"]


class BatchAugmentationHandler:
    """Apply an array transform to the batch image of every training iteration.

    With ``transform=None`` it does nothing at all (the ``none`` arm: the trainer runs exactly as
    without it). Draws are seeded per iteration and rank, so a resumed run repeats them exactly.

    Args:
        transform: an array transform, or ``None``.
        per_sample: apply ``transform`` to each ``(C, *spatial)`` item (MONAI's channel-first
            transforms such as ``RandGaussianNoise`` and ``RandCoarseDropout``); ``False`` applies it once
            to the ``(B, C, *spatial)`` batch (e.g. :class:`~pgnm_monai.transforms.RandomBetaMask`).
        image_key: key of the image in the batch dict.
        seed: seed of the draws.
        to_device: move the batch image to the trainer's device first (so the augmentation runs there).
        mix_labels: ``transform`` takes and returns the batch's image and label (a batch mix such as
            :class:`~pgnm_monai.transforms.augment.RandBatchMix`: the label becomes soft, ``(B, num_classes)``).
        label_key: key of the label in the batch dict (``mix_labels``).
    """

    def __init__(
        self,
        transform: Callable[[torch.Tensor], torch.Tensor] | None,
        per_sample: bool = True,
        image_key: str = CommonKeys.IMAGE,
        seed: int = 0,
        to_device: bool = True,
        mix_labels: bool = False,
        label_key: str = CommonKeys.LABEL,
    ) -> None:
        self.transform = transform
        self.mix_labels = mix_labels
        self.label_key = label_key
        self.per_sample = per_sample
        self.image_key = image_key
        self.seed = int(seed)
        self.to_device = to_device

    def attach(self, engine: Engine) -> None:
        """Register on ``ITERATION_STARTED`` (nothing when there is no transform)."""
        if self.transform is not None:
            engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        batch = engine.state.batch
        if not isinstance(batch, dict) or self.image_key not in batch:
            raise ValueError(f"the batch must be a dict with the image under {self.image_key!r}.")
        image = batch[self.image_key]
        if self.to_device and getattr(engine.state, "device", None) is not None:
            image = image.to(engine.state.device)
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(iteration_seed(self.seed, engine.state.iteration, distributed.rank()))
        with torch.no_grad():
            if self.mix_labels:
                image, batch[self.label_key] = self.transform(image, batch[self.label_key])
            elif self.per_sample:
                image = torch.stack([torch.as_tensor(self.transform(item)) for item in image])
            else:
                image = self.transform(image)
        batch[self.image_key] = image

    def state_dict(self) -> dict[str, Any]:
        """Nothing to save: draws depend only on the seed and the iteration."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""
