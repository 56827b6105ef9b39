"""The policy objectives, as small pure functions (plus the reward baseline's running state).

``paper``
    The official objective ``L = mean_b(logsumexp_k log Beta_pdf(m_bk)) * CE_mean`` with CE *not*
    detached. Its gradients are reproduced by two losses: the classifier's ``CE_mean`` scaled by the
    detached policy term, and the policy's ``CE_mean.detach() * policy_term``.
``reinforce``
    Textbook REINFORCE: per-sample reward ``r_b = sign * CE_b`` (``sign = -1``: lower loss is better;
    ``+1``: the adversarial variant), advantage ``A_b = r_b - baseline``, policy loss
    ``-mean_b(A_b * sum_k log p(m_bk)) - entropy_weight * mean entropy``. The classifier keeps plain CE.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["OBJECTIVES", "PaperLoss", "ReinforceLoss", "paper_objective", "reinforce_objective", "RewardBaseline"]

OBJECTIVES = ("paper", "reinforce")


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
    """``(B,)`` rewards minus the baseline (detached)."""


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


def reinforce_objective(
    log_prob: torch.Tensor,
    ce: torch.Tensor,
    baseline: torch.Tensor | float,
    entropy: torch.Tensor | None = None,
    entropy_weight: float = 0.0,
    reward_sign: int = -1,
) -> ReinforceLoss:
    """REINFORCE with a baseline and an entropy bonus.

    Args:
        log_prob: ``(B, K)`` per-cell log-probabilities of the sampled mask (differentiable).
        ce: ``(B,)`` per-sample cross-entropy (detached here).
        baseline: scalar reward baseline (e.g. :class:`RewardBaseline`).
        entropy: ``(B, K)`` per-cell entropies (differentiable); required when ``entropy_weight != 0``.
        entropy_weight: ``lambda_H`` of the entropy bonus.
        reward_sign: ``-1`` (reward ``-CE``: masks the classifier copes with) or ``+1`` (reward ``+CE``:
            adversarial masks).
    """
    _check(log_prob, ce)
    if reward_sign not in (-1, 1):
        raise ValueError(f"reward_sign must be -1 or +1, got {reward_sign!r}.")
    reward = reward_sign * ce.detach()
    advantage = reward - torch.as_tensor(baseline, dtype=reward.dtype, device=reward.device).detach()
    loss = -(advantage * log_prob.sum(dim=1)).mean()
    if entropy_weight:
        if entropy is None:
            raise ValueError("entropy is required when entropy_weight != 0.")
        loss = loss - entropy_weight * entropy.mean()
    return ReinforceLoss(loss, reward, advantage)


class RewardBaseline(nn.Module):
    """Moving average of the batch-mean reward (a buffer, so it is checkpointed).

    The first call returns the batch mean itself; later calls return the average *before* this batch
    and then fold the batch in: ``value <- momentum * value + (1 - momentum) * batch_mean``.

    Args:
        momentum: in ``[0, 1)``; 0 makes the baseline the current batch mean.
    """

    def __init__(self, momentum: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
        self.momentum = float(momentum)
        self.register_buffer("value", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def forward(self, batch_mean_reward: torch.Tensor) -> torch.Tensor:
        """Return the baseline for this batch, then update it with ``batch_mean_reward``."""
        batch_mean_reward = batch_mean_reward.detach().to(self.value)
        if self.momentum == 0.0 or not bool(self.initialized):
            current = batch_mean_reward.clone()
        else:
            current = self.value.clone()
        if bool(self.initialized):
            self.value.mul_(self.momentum).add_((1.0 - self.momentum) * batch_mean_reward)
        else:
            self.value.copy_(batch_mean_reward)
            self.initialized.fill_(True)
        return current
