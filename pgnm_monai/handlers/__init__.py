"""Ignite handlers of pgnm-monai."""

from __future__ import annotations

from .batch_augmentation import BatchAugmentationHandler
from .checkpoint import AtomicCheckpointSaver
from .noise_policy import STATE_ATTRIBUTES, NoisePolicyHandler, iteration_seed, per_sample_cross_entropy

__all__ = [
    "AtomicCheckpointSaver",
    "BatchAugmentationHandler",
    "NoisePolicyHandler",
    "STATE_ATTRIBUTES",
    "iteration_seed",
    "per_sample_cross_entropy",
]
