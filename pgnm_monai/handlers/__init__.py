"""Every ignite handler of pgnm-monai (``attach(engine)`` + ``__call__``, as ``monai.handlers``).

- the noise policy: :class:`NoisePolicyHandler` (REINFORCE inside ``SupervisedTrainer``) and
  :class:`ThreadLimitedNoisePolicyHandler`;
- the other arms: :class:`BatchAugmentationHandler`;
- checkpoints: :class:`AtomicCheckpointSaver`, :class:`TrainingStateSaver`, :class:`ResumeCheckpointLoader`;
- outputs: :class:`PredictionWriter` (per-item CSV + metrics JSON), :class:`MetricsHistoryWriter`;
- run control: :class:`LossProgressBar`, :class:`StopAtEpoch`.
"""

from __future__ import annotations

from .batch_augmentation import BatchAugmentationHandler
from .checkpoint import AtomicCheckpointSaver, ResumeCheckpointLoader, TrainingStateSaver
from .metrics_history import MetricsHistoryWriter
from .noise_policy import (
    STATE_ATTRIBUTES,
    NoisePolicyHandler,
    ThreadLimitedNoisePolicyHandler,
    iteration_seed,
    per_sample_cross_entropy,
)
from .prediction_writer import PredictionWriter
from .training_control import LossProgressBar, StopAtEpoch

__all__ = [
    "AtomicCheckpointSaver",
    "BatchAugmentationHandler",
    "LossProgressBar",
    "MetricsHistoryWriter",
    "NoisePolicyHandler",
    "PredictionWriter",
    "ResumeCheckpointLoader",
    "STATE_ATTRIBUTES",
    "StopAtEpoch",
    "ThreadLimitedNoisePolicyHandler",
    "TrainingStateSaver",
    "iteration_seed",
    "per_sample_cross_entropy",
]
