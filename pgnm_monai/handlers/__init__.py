"""Every ignite handler of pgnm-monai (``attach(engine)`` + ``__call__``, as ``monai.handlers``).

- the noise policy: :class:`NoisePolicyHandler` (REINFORCE inside ``SupervisedTrainer``),
  :class:`ThreadLimitedNoisePolicyHandler`, and :func:`build_policy_handler` (both from the policy's settings);
- the other arms: :class:`BatchAugmentationHandler`;
- checkpoints: :class:`AtomicCheckpointSaver`, :class:`TrainingStateSaver`, :class:`ResumeCheckpointLoader`,
  :class:`RandomStates` (every random state, for exact resume), :class:`CheckpointAverager` (the mean of the last
  K epochs, as the official release);
- outputs: :class:`PredictionWriter` (per-item CSV + metrics JSON), :class:`MetricsHistoryWriter`;
- run control and curves: :class:`LossProgressBar`, :class:`StopAtEpoch`, :class:`TrainingCurveWriter`;
- non-finite values: :class:`FiniteCheckHandler` (``FloatingPointError`` naming the epoch, iteration and files).
"""

from __future__ import annotations

from .batch_augmentation import BatchAugmentationHandler
from .checkpoint import AtomicCheckpointSaver, ResumeCheckpointLoader, TrainingStateSaver
from .checkpoint_average import CheckpointAverager
from .finite_check import FiniteCheckHandler
from .iteration import iteration_seed, per_sample_cross_entropy
from .metrics_history import MetricsHistoryWriter
from .noise_policy import STATE_ATTRIBUTES, NoisePolicyHandler
from .policy_factory import build_policy_handler
from .policy_statistics import PolicyStatisticsHandler
from .prediction_writer import PredictionWriter
from .random_states import RandomStates
from .thread_limited import ThreadLimitedNoisePolicyHandler
from .training_control import LossProgressBar, StopAtEpoch
from .training_curves import TrainingCurveWriter

__all__ = [
    "AtomicCheckpointSaver",
    "BatchAugmentationHandler",
    "CheckpointAverager",
    "FiniteCheckHandler",
    "LossProgressBar",
    "MetricsHistoryWriter",
    "NoisePolicyHandler",
    "PolicyStatisticsHandler",
    "PredictionWriter",
    "RandomStates",
    "ResumeCheckpointLoader",
    "STATE_ATTRIBUTES",
    "StopAtEpoch",
    "ThreadLimitedNoisePolicyHandler",
    "TrainingCurveWriter",
    "TrainingStateSaver",
    "build_policy_handler",
    "iteration_seed",
    "per_sample_cross_entropy",
]
