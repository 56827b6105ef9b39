"""The policy objectives, as small pure functions (plus the reward baseline's running state).

``paper``
    The official objective ``L = mean_b(logsumexp_k log Beta_pdf(m_bk)) * CE_mean`` with CE *not*
    detached. Its gradients are reproduced by two losses: the classifier's ``CE_mean`` scaled by the
    detached policy term, and the policy's ``CE_mean.detach() * policy_term``.
``reinforce``
    Textbook REINFORCE: per-sample reward ``r_b = sign * CE_b`` (``sign = -1``: lower loss is better;
    ``+1``: the adversarial variant), an advantage ``A_b``, and the policy loss
    ``-mean_b(A_b * sum_k log p(m_bk)) - entropy_weight * mean_b(sum_k H_bk)``. The advantage is
    ``r_b - baseline`` (``advantage="baseline"``: a moving average, :class:`RewardBaseline`) or the
    batch-standardised reward ``(r_b - mean_b r) / (std_b r + 1e-8)`` (``advantage="normalized"``,
    :func:`normalized_advantage`). The entropy bonus sums the per-cell entropies over the cells, as the
    policy term sums the per-cell log-probabilities, so ``entropy_weight`` weighs the two on the same
    scale whatever the grid. The classifier keeps plain CE.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from pgnm_monai.settings import ADVANTAGES, OBJECTIVES, POLICY, REWARD_SIGNS
from pgnm_monai.validation import check_choice

__all__ = [
    "ADVANTAGES",
    "OBJECTIVES",
    "REWARD_SIGNS",
    "PaperLoss",
    "ReinforceLoss",
    "RewardBaseline",
    "normalized_advantage",
    "paper_objective",
    "reinforce_objective",
]


class PaperLoss(NamedTuple):
    """Outputs of :func:`paper_objective`."""

    policy_loss: torch.Tensor
    """``CE_mean.detach() * policy_term``: its gradient is the official policy gradient."""
    classifier_scale: torch.Tensor
    """``policy_term.detach()``: multiply the classifier's mean CE by this (official classifier gradient)."""
    policy_term: torch.Tensor
    """``mean_b(logsumexp_k log p(m_bk))`` (differentiable w.r.t. the policy)."""


class ReinforceLoss(NamedTuple):
    """Outputs of :func:`reinforce_objective`."""

    policy_loss: torch.Tensor
    reward: torch.Tensor
    """``(B,)`` per-sample rewards (detached)."""
    advantage: torch.Tensor
    """``(B,)`` advantages (detached): rewards minus the baseline, or the standardised rewards."""


def _check(log_prob: torch.Tensor, ce: torch.Tensor) -> None:
    if log_prob.ndim != 2:
        raise ValueError(f"log_prob must be (B, K) per-cell log-probabilities, got shape {tuple(log_prob.shape)}.")
    if ce.ndim != 1 or ce.shape[0] != log_prob.shape[0]:
        raise ValueError(f"ce must be (B,) per-sample losses with B={log_prob.shape[0]}, got shape {tuple(ce.shape)}.")


def paper_objective(log_prob: torch.Tensor, ce: torch.Tensor) -> PaperLoss:
    """The official PGNM objective, split into a policy loss and a classifier scale.

    ``policy_loss + classifier_scale * ce.mean()`` has the same gradients w.r.t. the policy and the
    classifier as the official ``policy_term * ce.mean()`` (computed with ``logsumexp``, not
    ``log(sum(exp))``, so it does not overflow).

    Args:
        log_prob: ``(B, K)`` per-cell ``log Beta_pdf`` of the sampled mask (differentiable).
        ce: ``(B,)`` per-sample cross-entropy of the classifier on the masked images.
    """
    _check(log_prob, ce)
    policy_term = torch.logsumexp(log_prob, dim=1).mean()
    return PaperLoss(ce.detach().mean() * policy_term, policy_term.detach(), policy_term)


def normalized_advantage(
    reward: torch.Tensor,
    mean: torch.Tensor | float | None = None,
    std: torch.Tensor | float | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Standardised rewards ``(r - mean) / (std + eps)`` (detached).

    Args:
        reward: ``(B,)`` per-sample rewards.
        mean: the reward mean to subtract; ``None``: the batch's own mean.
        std: the reward standard deviation to divide by; ``None``: the batch's own, with no Bessel
            correction (``correction=0``), so a batch of one gives an advantage of 0, not NaN.
        eps: added to the standard deviation (a batch of equal rewards gives zero advantages).
    """
    reward = reward.detach()
    mean = reward.mean() if mean is None else torch.as_tensor(mean, dtype=reward.dtype, device=reward.device)
    std = reward.std(correction=0) if std is None else torch.as_tensor(std, dtype=reward.dtype, device=reward.device)
    return (reward - mean.detach()) / (std.detach() + eps)


def reinforce_objective(
    log_prob: torch.Tensor,
    ce: torch.Tensor,
    baseline: torch.Tensor | float | None = None,
    entropy: torch.Tensor | None = None,
    entropy_weight: float = POLICY.entropy_weight,
    reward_sign: int = POLICY.reward_sign,
    advantage: str = POLICY.advantage,
    reward_std: torch.Tensor | float | None = None,
) -> ReinforceLoss:
    """REINFORCE with a baseline (or standardised rewards) and an entropy bonus.

    ``policy_loss = -mean_b(A_b * sum_k log p(m_bk)) - entropy_weight * mean_b(sum_k H_bk)``: the entropy
    is summed over the cells like the log-probabilities, so both terms have the same per-sample scale
    (about ``K = G^d`` times the per-cell value) and ``entropy_weight`` means the same at every grid size.

    Args:
        log_prob: ``(B, K)`` per-cell log-probabilities of the sampled mask (differentiable).
        ce: ``(B,)`` per-sample cross-entropy (detached here).
        baseline: ``advantage="baseline"``: the scalar reward baseline (e.g. :class:`RewardBaseline`),
            required. ``"normalized"``: the reward mean to standardise with (``None``: this batch's).
        entropy: ``(B, K)`` per-cell entropies (differentiable); required when ``entropy_weight != 0``.
        entropy_weight: ``lambda_H`` of the entropy bonus (per cell, summed over cells).
        reward_sign: ``-1`` (reward ``-CE``: masks the classifier copes with) or ``+1`` (reward ``+CE``:
            adversarial masks).
        advantage: ``"baseline"`` (``A_b = r_b - baseline``) or ``"normalized"``
            (``A_b = (r_b - mean) / (std + 1e-8)``, :func:`normalized_advantage`; no moving baseline).
        reward_std: ``"normalized"`` only: the reward standard deviation (``None``: this batch's). Under
            DDP the handler passes the mean and std of the batch over all ranks.
    """
    _check(log_prob, ce)
    check_choice("reward_sign", reward_sign, REWARD_SIGNS)
    check_choice("advantage", advantage, ADVANTAGES)
    reward = reward_sign * ce.detach()
    if advantage == "normalized":
        adv = normalized_advantage(reward, baseline, reward_std)
    else:
        if baseline is None:
            raise ValueError('baseline is required with advantage="baseline".')
        adv = reward - torch.as_tensor(baseline, dtype=reward.dtype, device=reward.device).detach()
    loss = -(adv * log_prob.sum(dim=1)).mean()
    if entropy_weight:
        if entropy is None:
            raise ValueError("entropy is required when entropy_weight != 0.")
        loss = loss - entropy_weight * entropy.sum(dim=1).mean()
    return ReinforceLoss(loss, reward, adv)


class RewardBaseline(nn.Module):
    """Moving average of the batch-mean reward (a buffer, so it is checkpointed).

    The first call returns the batch mean itself; later calls return the average *before* this batch
    and then fold the batch in: ``value <- momentum * value + (1 - momentum) * batch_mean``.

    Args:
        momentum: in ``[0, 1)``; 0 makes the baseline the current batch mean.
    """

    def __init__(self, momentum: float = POLICY.baseline_momentum) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
        self.momentum = float(momentum)
        self.register_buffer("value", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def forward(self, batch_mean_reward: torch.Tensor) -> torch.Tensor:
        """Return the baseline for this batch, then update it with ``batch_mean_reward`` (on the device, no host
        read)."""
        batch_mean_reward = batch_mean_reward.detach().to(self.value)
        first = ~self.initialized
        current = batch_mean_reward.clone()
        if self.momentum != 0.0:
            current = torch.where(first, current, self.value)
        updated = self.value * self.momentum + (1.0 - self.momentum) * batch_mean_reward
        self.value.copy_(torch.where(first, batch_mean_reward, updated))
        self.initialized.fill_(True)
        return current
