"""The ignite handler that trains the noise policy with REINFORCE inside ``SupervisedTrainer``.

Hook points (MONAI 1.6.1, ignite 0.5.5):

- ``Events.ITERATION_STARTED``: the batch is fetched; its image is replaced by the masked image
  (detached, on the policy's device) and the mask's log-probabilities are kept.
- ``IterationEvents.FORWARD_COMPLETED``: ``engine.state.output`` holds the raw logits; the per-sample
  cross-entropy (detached) gives the rewards and the policy loss.
- ``IterationEvents.LOSS_COMPLETED`` (``paper`` with ``scale_classifier_loss=True`` only): the classifier
  loss is multiplied by the detached policy term, which is exactly the gradient of the official objective.
- ``IterationEvents.BACKWARD_COMPLETED``: back-propagate the policy loss, average the policy's gradients
  over ranks, record their norm, step the policy optimiser.

With ``frozen=True`` (the ``frozen_policy`` control arm) the policy keeps its seeded initialisation: it
runs in eval mode under ``torch.no_grad()`` (batch-norm running statistics and base vectors unchanged),
and there is no policy loss, backward, optimiser or scheduler step.

Logged on ``engine.state`` (for ``StatsHandler(state_attributes=...)``, TensorBoard, MLflow):
:data:`STATE_ATTRIBUTES`. :func:`~pgnm_monai.handlers.policy_factory.build_policy_handler` makes the handler, its
policy and optimiser from :class:`~pgnm_monai.settings.PolicySettings`.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys, IgniteInfo, min_version, optional_import

from pgnm_monai import distributed
from pgnm_monai.handlers.iteration import grad_norm, iteration_seed, per_sample_cross_entropy
from pgnm_monai.networks.policy import NoisePolicy
from pgnm_monai.objectives import (
    ADVANTAGES,
    OBJECTIVES,
    REWARD_SIGNS,
    RewardBaseline,
    paper_objective,
    reinforce_objective,
)
from pgnm_monai.settings import POLICY
from pgnm_monai.transforms.noise_mask import PolicyNoiseMask
from pgnm_monai.validation import check_choice

if TYPE_CHECKING:
    pass

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = [
    "NoisePolicyHandler",
    "STATE_ATTRIBUTES",
    "grad_norm",
    "iteration_seed",
    "per_sample_cross_entropy",
]

STATE_ATTRIBUTES = (
    "policy_loss",
    "reward_mean",
    "entropy",
    "mask_mean",
    "mask_std",
    "alpha_mean",
    "beta_mean",
    "policy_lr",
    "policy_grad_norm",
)
"""Statistics set on ``engine.state`` when the handler reads them (every ``stats_interval`` iterations and at the end
of each epoch; NaN until the first read):

- ``policy_loss``: the policy's loss (0 when ``frozen``: there is none);
- ``reward_mean``: the batch-mean reward (``-CE`` for ``paper``; ``reward_sign * CE`` for ``reinforce``,
  the mean over all ranks);
- ``entropy``: the mean per-cell entropy of the mask distribution;
- ``mask_mean``, ``mask_std``: of the smooth mask over the batch;
- ``alpha_mean``, ``beta_mean``: mean concentrations;
- ``policy_lr``: the policy optimiser's learning rate;
- ``policy_grad_norm``: L2 norm of the policy's gradient after the all-reduce, before the step (0 when
  ``frozen``).
"""

_STEP_STATS = STATE_ATTRIBUTES[:7]  # the statistics computed from the forward pass


class NoisePolicyHandler:
    """Train a :class:`~pgnm_monai.networks.NoisePolicy` alongside a ``SupervisedTrainer``.

    The classifier trains on masked images only. The handler is checkpointable: put it in a
    ``CheckpointSaver``/``CheckpointLoader`` ``save_dict``/``load_dict`` and the policy (with its base
    vectors), its optimiser, scheduler and the reward baseline are saved and restored (tensors and
    plain values only, so MONAI's ``weights_only=True`` loading works).

    Args:
        policy: the noise policy, on the trainer's device.
        optimizer: the policy's optimiser (paper: SGD, lr/10 of the classifier, momentum 0.9, wd 1e-4).
        objective: ``"reinforce"`` (per-sample reward, moving-average baseline, entropy bonus) or
            ``"paper"`` (the official objective, including its scaling of the classifier loss).
        lr_scheduler: optional scheduler of ``optimizer``, stepped every epoch (paper: cosine to 0).
        image_key: key of the image in the batch dict.
        entropy_weight: ``lambda_H`` of ``reinforce`` (weight of the per-sample entropy summed over cells).
        reward_sign: ``-1`` (reward ``-CE``) or ``+1`` (adversarial, reward ``+CE``) for ``reinforce``.
        baseline_momentum: momentum of the ``reinforce`` reward baseline.
        advantage: ``reinforce`` only: ``"baseline"`` (reward minus a moving-average baseline, the default)
            or ``"normalized"`` (rewards standardised over the batch, over all ranks under DDP; the
            moving baseline is then not used).
        scale_classifier_loss: ``paper`` only: multiply the classifier loss by the detached policy term
            (the official objective). ``False`` keeps the official policy gradient but trains the
            classifier on plain CE (the ``pgnm-paper-unscaled`` arm).
        frozen: never update the policy: it draws masks from its seeded initialisation in eval mode under
            ``torch.no_grad()`` (BN statistics and base vectors fixed); no policy loss, backward, optimiser
            or scheduler step (the ``frozen_policy`` arm). ``policy_loss`` and ``policy_grad_norm`` are
            logged as 0; with ``paper`` the classifier loss is still scaled (unless
            ``scale_classifier_loss=False``).
        seed: seed of the mask draws; the draw of iteration ``i`` on rank ``r`` depends only on
            ``(seed, i, r)``.
        check_finite: stop with ``FloatingPointError`` when the policy's loss or concentrations are not finite
            (checked on the device every iteration, raised when the statistics are read; with a read every
            iteration a NaN/Inf batch is refused before the policy sees it).
        stats_interval: iterations between two host reads of the statistics, and at the end of each epoch
            (:data:`STATE_ATTRIBUTES` hold the last read values); nothing else in the policy's step waits for the
            device or computes them.
        name: logger name.
    """

    def __init__(
        self,
        policy: NoisePolicy,
        optimizer: torch.optim.Optimizer,
        objective: str = POLICY.objective,
        lr_scheduler: Any | None = None,
        image_key: str = CommonKeys.IMAGE,
        entropy_weight: float = POLICY.entropy_weight,
        reward_sign: int = POLICY.reward_sign,
        baseline_momentum: float = POLICY.baseline_momentum,
        seed: int = 0,
        check_finite: bool = True,
        name: str | None = None,
        advantage: str = POLICY.advantage,
        scale_classifier_loss: bool = POLICY.scale_classifier_loss,
        frozen: bool = POLICY.frozen,
        stats_interval: int = POLICY.policy_stats_interval,
    ) -> None:
        check_choice("objective", objective, OBJECTIVES)
        check_choice("reward_sign", reward_sign, REWARD_SIGNS)
        check_choice("advantage", advantage, ADVANTAGES)
        self.policy = policy
        self.optimizer = optimizer
        self.objective = objective
        self.lr_scheduler = lr_scheduler
        self.image_key = image_key
        self.entropy_weight = float(entropy_weight)
        self.reward_sign = reward_sign
        self.seed = int(seed)
        self.advantage = advantage
        self.scales_classifier_loss = bool(scale_classifier_loss)
        self.frozen = bool(frozen)
        device = next(policy.parameters()).device
        self.baseline = RewardBaseline(baseline_momentum).to(device)
        if isinstance(stats_interval, bool) or not isinstance(stats_interval, int) or stats_interval < 1:
            raise ValueError(f"stats_interval must be an integer >= 1, got {stats_interval!r}.")
        self.stats_interval = stats_interval
        # reading every iteration, the handler also refuses a non-finite batch before the policy sees it
        self.mask = PolicyNoiseMask(policy, check_finite=check_finite and self.stats_interval == 1)
        self.check_finite = check_finite
        self.logger = logging.getLogger(name or __name__)
        self._policy_loss: torch.Tensor | None = None
        self._classifier_scale: torch.Tensor | None = None
        self._first_bad: torch.Tensor | None = None  # on the device: the first iteration with a non-finite value

    def attach(self, engine: Engine) -> None:
        """Register the four iteration hooks (and the epoch-level scheduler step) on ``engine``."""
        engine.add_event_handler(Events.STARTED, self.synchronise)
        engine.add_event_handler(Events.ITERATION_STARTED, self)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self.compute_policy_loss)
        if self.objective == "paper" and self.scales_classifier_loss:
            engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self.scale_classifier_loss)
        if not self.frozen:
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self.step_policy)
        if self.lr_scheduler is not None and not self.frozen:
            engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: self.lr_scheduler.step())
        for attr in STATE_ATTRIBUTES:
            setattr(engine.state, attr, float("nan"))
        engine.state.policy_stats_iteration = 0

    def synchronise(self, engine: Engine | None = None) -> None:
        """Start every rank from rank 0's policy (parameters and buffers, base vectors included)."""
        distributed.broadcast_module(self.policy)

    def __call__(self, engine: Engine) -> None:
        """``ITERATION_STARTED``: replace the batch image by the masked image."""
        batch = engine.state.batch
        if not isinstance(batch, dict) or self.image_key not in batch:
            raise ValueError(f"the batch must be a dict with the image under {self.image_key!r}.")
        self.mask.set_random_state(iteration_seed(self.seed, engine.state.iteration, distributed.rank()))
        self._policy_loss = None
        if self.frozen:
            self.policy.eval()
            with torch.no_grad():
                batch[self.image_key] = self.mask(batch[self.image_key])
            return
        self.policy.train()
        batch[self.image_key] = self.mask(batch[self.image_key])

    def reads_statistics(self, engine: Engine) -> bool:
        """Whether this iteration reads the statistics to the host: every :attr:`stats_interval` iterations and at
        the end of each epoch (the only host synchronisations of the policy's step)."""
        iteration, length = engine.state.iteration, engine.state.epoch_length
        return iteration % self.stats_interval == 0 or (length is not None and iteration % length == 0)

    def compute_policy_loss(self, engine: Engine) -> None:
        """``FORWARD_COMPLETED``: per-sample CE from the raw logits -> the policy loss; the statistics stay on the
        device, and are read (and checked) when :meth:`reads_statistics`."""
        output = engine.state.output
        sample = self.mask.last_sample
        ce = per_sample_cross_entropy(output[CommonKeys.PRED], output[CommonKeys.LABEL])
        if self.objective == "paper":
            loss = paper_objective(sample.log_prob, ce)
            policy_loss, self._classifier_scale = loss.policy_loss, loss.classifier_scale
            reward_mean = -ce.mean()
        else:
            reward_mean = distributed.all_reduce_mean(self.reward_sign * ce.mean())
            policy_loss = self._reinforce_loss(sample, ce, reward_mean)
        if self.frozen:
            policy_loss = torch.zeros((), device=ce.device)
        else:
            self._policy_loss = policy_loss
        if not self.check_finite and not self.reads_statistics(engine):
            return
        with torch.no_grad():
            checked = [policy_loss.detach().float(), reward_mean.float(), sample.alpha.sum(), sample.beta.sum()]
            finite = torch.isfinite(torch.stack(checked)).all() & self.policy.head_finite
            bad = self._first_bad if self._first_bad is not None else torch.full((), -1, device=ce.device)
            self._first_bad = torch.where((bad < 0) & ~finite, engine.state.iteration, bad)
        if self.reads_statistics(engine):
            self._read_statistics(engine, policy_loss, reward_mean, sample)

    def _read_statistics(self, engine: Engine, policy_loss: torch.Tensor, reward_mean: torch.Tensor, sample) -> None:
        """One host read: the step's statistics onto ``engine.state``; ``FloatingPointError`` naming the first
        iteration since the last read that had a non-finite value."""
        with torch.no_grad():
            values = torch.stack(
                [
                    policy_loss.detach().float(),
                    reward_mean.float(),
                    sample.entropy.detach().mean().float(),
                    sample.mask.mean().float(),
                    sample.mask.std().float(),
                    sample.alpha.detach().mean().float(),
                    sample.beta.detach().mean().float(),
                    self._first_bad.float(),
                ]
            ).tolist()
        first_bad, values = int(values[-1]), values[:-1]
        self._first_bad = None
        stats = dict(zip(_STEP_STATS, values, strict=True))
        if first_bad >= 0 or not all(map(math.isfinite, values)):
            now = engine.state.iteration
            iteration = first_bad if first_bad >= 0 else now
            seen = ", ".join(f"{k}={v:.4g}" for k, v in stats.items())
            seen = seen if iteration == now else f"read at iteration {now}"
            raise FloatingPointError(
                f"the noise policy produced a non-finite value at iteration {iteration}: {seen}. Lower the policy "
                "learning rate or check the input images."
            )
        for attr, value in stats.items():
            setattr(engine.state, attr, value)
        engine.state.policy_stats_iteration = engine.state.iteration  # when the values above were read
        engine.state.policy_lr = self.optimizer.param_groups[0]["lr"]
        if self.frozen:
            engine.state.policy_grad_norm = 0.0

    def _reinforce_loss(self, sample: Any, ce: torch.Tensor, reward_mean: torch.Tensor) -> torch.Tensor:
        """The ``reinforce`` policy loss; ``reward_mean`` is the batch-mean reward over all ranks."""
        if self.frozen:  # nothing to learn: leave the moving baseline alone
            return torch.zeros((), device=ce.device)
        reward_std = None
        if self.advantage == "normalized":
            # standardise over the whole (all-rank) batch; one process: the objective uses its own batch stats
            baseline = None
            if distributed.world_size() > 1:
                second = distributed.all_reduce_mean((ce.detach().float() ** 2).mean())
                baseline = reward_mean
                reward_std = (second - reward_mean.float() ** 2).clamp_min(0.0).sqrt()
        else:
            baseline = self.baseline(reward_mean)
        return reinforce_objective(
            sample.log_prob,
            ce,
            baseline,
            sample.entropy if self.entropy_weight else None,  # computed only when the bonus needs it
            self.entropy_weight,
            self.reward_sign,
            advantage=self.advantage,
            reward_std=reward_std,
        ).policy_loss

    def scale_classifier_loss(self, engine: Engine) -> None:
        """``LOSS_COMPLETED`` (``paper``): classifier loss times the detached policy term."""
        engine.state.output[CommonKeys.LOSS] = engine.state.output[CommonKeys.LOSS] * self._classifier_scale

    def step_policy(self, engine: Engine) -> None:
        """``BACKWARD_COMPLETED``: policy backward, gradient average over ranks, optimiser step."""
        if self._policy_loss is None:
            return
        self.optimizer.zero_grad(set_to_none=True)
        self._policy_loss.backward()
        distributed.average_gradients(self.policy)
        if self.reads_statistics(engine):
            engine.state.policy_grad_norm = grad_norm(self.policy.parameters())
        self.optimizer.step()
        # batch-norm running statistics differ per rank's data: keep rank 0's, as DDP does
        distributed.broadcast_module(self.policy, buffers_only=True)
        self._policy_loss = None

    def state_dict(self) -> dict[str, Any]:
        """Policy (with base vectors), optimiser, scheduler and reward baseline: tensors and plain values."""
        state = {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline.state_dict(),
        }
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        missing = {"policy", "optimizer", "baseline"} - set(state)
        if missing:
            raise ValueError(f"noise-policy checkpoint lacks {sorted(missing)}; keys found: {sorted(state)}.")
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline.load_state_dict(state["baseline"])
        if self.lr_scheduler is not None and "lr_scheduler" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
