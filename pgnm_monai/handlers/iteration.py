"""Per-iteration helpers of the training handlers: seeds, the per-sample loss, gradient norms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["grad_norm", "iteration_seed", "per_sample_cross_entropy"]


def per_sample_cross_entropy(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``(B,)`` cross-entropy of raw logits against class indices ``(B,)``/``(B, 1)`` or one-hot ``(B, K)``."""
    logits = logits.detach().float()
    label = torch.as_tensor(label, device=logits.device)
    if label.numel() == logits.shape[0]:
        return F.cross_entropy(logits, label.reshape(-1).long(), reduction="none")
    if label.shape == logits.shape:
        return F.cross_entropy(logits, label.float(), reduction="none")
    raise ValueError(
        f"label must be class indices (B,) or one-hot (B, K) for logits {tuple(logits.shape)}, "
        f"got {tuple(label.shape)}."
    )


def grad_norm(parameters: Sequence[torch.Tensor] | Any) -> float:
    """The L2 norm of the gradients of ``parameters`` (those without a gradient count as 0)."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def iteration_seed(seed: int, iteration: int, rank: int = 0) -> int:
    """A per-iteration, per-rank seed: draws depend only on (seed, iteration, rank), so resume is exact."""
    return (seed * 1_000_003 + rank * 7_919 + iteration) % (2**32)
