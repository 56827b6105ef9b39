"""Per-epoch statistics of the noise policy on a fixed probe batch: is the policy learning?

At initialisation the per-image part of the log-concentrations is ``0.1 * head(x)`` and the base EMA absorbs
its mean, so images differ by ~0.001 of mask value against ~0.04 of sampling noise (DESIGN.md section 6).
:class:`PolicyStatisticsHandler` measures, every epoch, how far the policy has moved from its seeded
initialisation and how image-specific it has become; a learning policy moves these numbers, a frozen one
does not.

All statistics are computed on the probe batch with the policy in eval mode (batch norm on its running
statistics, base vectors untouched) under ``torch.no_grad()``, so they are deterministic, per image, and
independent of how the probe is chunked. Standard deviations are population ones (``correction=0``), so a
probe of one image gives 0 between-image spread rather than NaN.

=============================  ==================================================================================
name                           meaning (``a``, ``b``: per-image, per-cell concentrations; ``m = a / (a + b)``)
=============================  ==================================================================================
``log_alpha_mean``             mean of ``log a`` over images and cells
``log_alpha_between_std``      std over images of ``log a``, averaged over cells
``log_beta_mean``              mean of ``log b``
``log_beta_between_std``       std over images of ``log b``, averaged over cells
``mask_mean``                  mean of the expected cell value ``m``
``mask_within_std``            std over cells of ``m`` within each image, averaged over images
``mask_between_std``           std over images of ``m``, averaged over cells (how image-specific the policy is)
``sample_std``                 the Beta sampling std ``sqrt(ab / ((a + b)^2 (a + b + 1)))``, averaged
``kl_to_init``                 ``KL(Beta(a, b) || Beta(a0, b0))`` to the policy at initialisation, averaged
``reward_mean``                mean of ``engine.state.reward_mean`` over the epoch's iterations that read it
``policy_grad_norm``           mean of ``engine.state.policy_grad_norm`` over the same iterations
=============================  ==================================================================================

The last two come from the trainer (non-finite values, e.g. before the first iteration or when no handler sets
them, are skipped; an epoch with none gives NaN).
"""

from __future__ import annotations

import copy
import logging
import math
import os
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, convert_to_tensor, min_version, optional_import
from torch.distributions import Beta, kl_divergence

from pgnm_monai.distributed import is_main_process
from pgnm_monai.handlers.epoch_csv import EpochCSV
from pgnm_monai.networks.policy import NoisePolicy

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["EPOCH_STATISTICS", "PROBE_STATISTICS", "PolicyStatisticsHandler"]

PROBE_STATISTICS = (
    "log_alpha_mean",
    "log_alpha_between_std",
    "log_beta_mean",
    "log_beta_between_std",
    "mask_mean",
    "mask_within_std",
    "mask_between_std",
    "sample_std",
    "kl_to_init",
)
"""Names of the probe-batch statistics (:meth:`PolicyStatisticsHandler.statistics`)."""

EPOCH_STATISTICS = ("reward_mean", "policy_grad_norm")
"""Names of the statistics averaged from ``engine.state`` over an epoch's iterations."""


class PolicyStatisticsHandler:
    """Record, every epoch, statistics of a :class:`~pgnm_monai.networks.NoisePolicy` on a fixed probe batch.

    At construction the policy is deep-copied (eval mode, no gradients) as the *initial* policy, the reference
    of ``kl_to_init``; build the handler before training starts. The copy is in :meth:`state_dict`, so put the
    handler in the ``CheckpointSaver``/``CheckpointLoader`` dicts and a resumed run keeps the same reference
    (tensors only: MONAI's ``weights_only=True`` loading works).

    At ``EPOCH_COMPLETED`` the statistics (module docstring) are written to ``engine.state.metrics`` under
    ``prefix + name`` (attach MONAI's ``TensorBoardStatsHandler``/``MLFlowHandler`` after this handler to log
    them) and, on rank 0, to ``csv_path``: one row per epoch (``epoch`` and the statistics), the file replaced
    atomically. Rows of the existing file (read at :meth:`attach`) at or after the current epoch are replaced,
    so a resumed run continues it without duplicates.

    Args:
        policy: the noise policy being trained (its mode is restored after every measurement).
        probe_images: a fixed probe batch ``(N, C, *spatial)``, e.g. the first N validation images after the
            eval transforms; moved to the policy's device chunk by chunk.
        csv_path: the CSV file, e.g. ``<bundle root>/eval/policy_stats.csv``; ``None`` writes no file.
        prefix: prefix of the names in ``engine.state.metrics``.
        batch_size: probe images per policy forward (eval mode: the result does not depend on it).
        name: logger name.
    """

    def __init__(
        self,
        policy: NoisePolicy,
        probe_images: torch.Tensor,
        csv_path: str | os.PathLike | None = None,
        prefix: str = "policy/",
        batch_size: int = 64,
        name: str | None = None,
    ) -> None:
        if not isinstance(policy, NoisePolicy):
            raise ValueError(f"policy must be a pgnm_monai NoisePolicy, got {type(policy).__name__}.")
        probe = convert_to_tensor(probe_images, track_meta=False)
        if not isinstance(probe, torch.Tensor) or probe.ndim != policy.spatial_dims + 2 or probe.shape[0] < 1:
            raise ValueError(
                f"probe_images must be a non-empty batch (N, C, *spatial) with {policy.spatial_dims} spatial dims, "
                f"got {getattr(probe, 'shape', type(probe).__name__)}."
            )
        if probe.shape[1] != policy.in_channels:
            raise ValueError(f"probe_images have {probe.shape[1]} channels, the policy expects {policy.in_channels}.")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}.")
        self.policy = policy
        self.probe_images = probe.detach().float()
        self.csv_path = None if csv_path is None else os.fspath(csv_path)
        self.prefix = str(prefix)
        self.batch_size = int(batch_size)
        self.logger = logging.getLogger(name or __name__)
        self.initial_policy = copy.deepcopy(policy).eval()
        self.initial_policy.requires_grad_(False)
        self.table = (
            None if self.csv_path is None else EpochCSV(self.csv_path, ("epoch", *PROBE_STATISTICS, *EPOCH_STATISTICS))
        )
        self._sums = dict.fromkeys(EPOCH_STATISTICS, 0.0)
        self._counts = dict.fromkeys(EPOCH_STATISTICS, 0)

    # ----------------------------------------------------------------------------------------------- ignite
    def attach(self, engine: Engine) -> None:
        """Read the existing CSV (rank 0) and register the epoch/iteration hooks on ``engine``."""
        if self.table is not None and is_main_process():
            self.table.load()
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def reset(self, engine: Engine | None = None) -> None:
        """``EPOCH_STARTED``: clear the epoch's reward and gradient-norm sums."""
        self._sums = dict.fromkeys(EPOCH_STATISTICS, 0.0)
        self._counts = dict.fromkeys(EPOCH_STATISTICS, 0)

    def accumulate(self, engine: Engine) -> None:
        """``ITERATION_COMPLETED``: add ``engine.state.reward_mean`` and ``policy_grad_norm`` (finite ones) of an
        iteration whose statistics the noise policy's handler read (``engine.state.policy_stats_iteration``; every
        iteration when no handler says)."""
        read_at = getattr(engine.state, "policy_stats_iteration", None)
        if read_at is not None and read_at != engine.state.iteration:
            return
        for key in EPOCH_STATISTICS:
            value = getattr(engine.state, key, float("nan"))
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                self._sums[key] += value
                self._counts[key] += 1

    def epoch_statistics(self) -> dict[str, float]:
        """The current epoch's mean reward and policy gradient norm (NaN when none was recorded)."""
        return {k: self._sums[k] / self._counts[k] if self._counts[k] else float("nan") for k in EPOCH_STATISTICS}

    def __call__(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: compute the statistics, put them in ``engine.state.metrics``, write the CSV row."""
        stats = {**self.statistics(), **self.epoch_statistics()}
        metrics = getattr(engine.state, "metrics", None)
        if metrics is None:
            engine.state.metrics = metrics = {}
        for key, value in stats.items():
            metrics[self.prefix + key] = value
        if self.table is not None and is_main_process():
            self.table.put(engine.state.epoch, stats)

    # ----------------------------------------------------------------------------------------- statistics
    @torch.no_grad()
    def concentrations(self, policy: NoisePolicy | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``alpha, beta`` of ``policy`` (default: the trained one) on the probe batch, ``(N, cells)`` float64.

        The policy runs in eval mode under ``torch.no_grad()``; its previous mode is restored.
        """
        policy = self.policy if policy is None else policy
        was_training = policy.training
        device = next(policy.parameters()).device
        policy.eval()
        try:
            alphas, betas = [], []
            for chunk in self.probe_images.split(self.batch_size):
                alpha, beta = policy(chunk.to(device))
                alphas.append(alpha.double())
                betas.append(beta.double())
        finally:
            policy.train(was_training)
        return torch.cat(alphas), torch.cat(betas)

    @torch.no_grad()
    def statistics(self, policy: NoisePolicy | None = None) -> dict[str, float]:
        """The probe statistics (:data:`PROBE_STATISTICS`) of ``policy`` (default: the trained one).

        ``kl_to_init`` is measured against this handler's initial policy, so ``policy`` must have the same
        grid. Usable outside training (notebooks, tests): nothing of the policy changes.
        """
        alpha, beta = self.concentrations(policy)
        alpha0, beta0 = self.concentrations(self.initial_policy)
        log_alpha, log_beta = alpha.log(), beta.log()
        total = alpha + beta
        mean = alpha / total
        sample_std = (alpha * beta / (total.square() * (total + 1.0))).sqrt()
        kl = kl_divergence(Beta(alpha, beta), Beta(alpha0.to(alpha.device), beta0.to(alpha.device)))
        values = torch.stack(
            [
                log_alpha.mean(),
                log_alpha.std(0, correction=0).mean(),
                log_beta.mean(),
                log_beta.std(0, correction=0).mean(),
                mean.mean(),
                mean.std(1, correction=0).mean(),
                mean.std(0, correction=0).mean(),
                sample_std.mean(),
                kl.mean(),
            ]
        ).tolist()
        return dict(zip(PROBE_STATISTICS, values, strict=True))

    # ------------------------------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The initial policy (parameters and buffers): the reference of ``kl_to_init``."""
        return {"initial_policy": self.initial_policy.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the initial policy saved by :meth:`state_dict`."""
        if "initial_policy" not in state:
            raise ValueError(f"policy-statistics checkpoint lacks 'initial_policy'; keys found: {sorted(state)}.")
        self.initial_policy.load_state_dict(state["initial_policy"])
