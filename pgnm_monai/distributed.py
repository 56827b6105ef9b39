"""Small ``torch.distributed`` helpers that keep a module identical on every rank."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["world_size", "rank", "average_gradients", "broadcast_module", "all_reduce_mean"]


def world_size() -> int:
    """Number of processes (1 outside ``torch.distributed``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 outside ``torch.distributed``)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over ranks (a copy; ``value`` itself outside ``torch.distributed``)."""
    if world_size() == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world_size()


def average_gradients(module: nn.Module) -> None:
    """Average the gradients of ``module`` over ranks in one flat all-reduce (as DDP would)."""
    if world_size() == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0, buffers_only: bool = False) -> None:
    """Copy ``module``'s parameters (unless ``buffers_only``) and buffers from rank ``src`` to all ranks."""
    if world_size() == 1:
        return
    tensors = [] if buffers_only else [p.data for p in module.parameters()]
    tensors += [b for b in module.buffers()]
    for t in tensors:
        dist.broadcast(t, src=src)
