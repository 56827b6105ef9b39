"""``torch.distributed`` in one place: rank and world size, the device, process-group set-up, DDP wrapping,
samplers, synchronised batch norm, and the small collectives that keep the noise policy identical on every rank.

Everything here is a no-op (or the single-process answer) outside ``torch.distributed``, so the
single-process bundle config never needs a DDP branch; ``configs/multi_gpu_train.json`` calls these.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "all_reduce_mean",
    "average_gradients",
    "broadcast_module",
    "cleanup_distributed",
    "convert_sync_batchnorm",
    "GlobalBatchNorm",
    "distributed_sampler",
    "get_device",
    "init_distributed",
    "is_main_process",
    "on_main_process",
    "sync_policy_batchnorm",
    "needs_drop_last",
    "rank",
    "world_size",
    "wrap_ddp",
]

logger = logging.getLogger(__name__)


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes (1 outside ``torch.distributed``)."""
    return dist.get_world_size() if _initialized() else 1


def rank() -> int:
    """This process's rank (0 outside ``torch.distributed``)."""
    return dist.get_rank() if _initialized() else 0


def is_main_process() -> bool:
    """``True`` on rank 0 and outside ``torch.distributed``."""
    return rank() == 0


def on_main_process(items: list) -> list:
    """``items`` on rank 0 (and outside ``torch.distributed``), an empty list on the other ranks: the bundles'
    file-writing handlers."""
    return list(items) if is_main_process() else []


def sync_policy_batchnorm(handler: Any, device: str | torch.device, sync_bn: bool) -> nn.Module | None:
    """With ``sync_bn``, the batch norms of the arm ``handler``'s noise policy made synchronised across ranks
    (:func:`convert_sync_batchnorm`); ``None`` when ``sync_bn`` is off or the arm has no policy."""
    policy = getattr(handler, "policy", None)
    if not sync_bn or policy is None:
        return None
    return convert_sync_batchnorm(policy, device)


def get_device(distributed: bool = False) -> torch.device:
    """``cuda`` (``cuda:LOCAL_RANK`` when ``distributed``) when a GPU is visible, else ``cpu``."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    index = int(os.environ.get("LOCAL_RANK", 0)) if distributed else 0
    return torch.device(f"cuda:{index % torch.cuda.device_count()}")


def init_distributed(backend: str | None = None) -> int:
    """Initialise ``torch.distributed`` from the ``torchrun`` environment; return this process's rank.

    The backend is ``nccl`` when every local process can have its own GPU, else ``gloo`` (CPU), unless
    ``backend`` is given. Idempotent.
    """
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build.")
    if dist.is_initialized():
        return dist.get_rank()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError(
            "configs/multi_gpu_train.json must run under torchrun (RANK/WORLD_SIZE are not set), e.g. "
            "torchrun --nproc_per_node=2 -m monai.bundle run --config_file \"['configs/train.json',"
            "'configs/multi_gpu_train.json']\""
        )
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= local_world else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend, init_method="env://")
    logger.info(f"torch.distributed initialised: backend={backend}, rank {dist.get_rank()}/{dist.get_world_size()}")
    return dist.get_rank()


def cleanup_distributed() -> None:
    """Destroy the process group if there is one, and tell ignite (whose checkpoint savers and metrics ask
    ``ignite.distributed`` for the rank), so that a later run in the same process is a single-process one."""
    if _initialized():
        import ignite.distributed as idist

        dist.barrier()
        dist.destroy_process_group()
        idist.sync()


def wrap_ddp(module: nn.Module, device: str | torch.device, sync_bn: bool = False) -> nn.Module:
    """``DistributedDataParallel(module)`` under ``torch.distributed`` (``device_ids`` on GPUs), else ``module``.

    With ``sync_bn``, its batch norms first become synchronised ones (:func:`convert_sync_batchnorm`).
    """
    if not _initialized():
        return module
    device = torch.device(device)
    if sync_bn:
        module = convert_sync_batchnorm(module, device)
    if device.type == "cuda":
        return nn.parallel.DistributedDataParallel(module, device_ids=[device])
    return nn.parallel.DistributedDataParallel(module)


def distributed_sampler(dataset: Any, shuffle: bool, seed: int = 0) -> Any:
    """A ``DistributedSampler`` under ``torch.distributed`` (padded to equal shards), else ``None``."""
    if not _initialized():
        return None
    return torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=int(seed))


def needs_drop_last(n_items: int, batch_size: int) -> bool:
    """Drop the last batch only when it would hold a single item per rank (batch norm fails on it).

    Raises:
        ValueError: the training split gives a rank fewer than 2 images (no batch of 2 can be drawn), naming the
            bundle ids that give more.
    """
    per_rank = -(-int(n_items) // world_size())
    if per_rank < 2:
        ranks = f" ({per_rank} per rank over {world_size()} ranks)" if world_size() > 1 else ""
        raise ValueError(
            f"the training split holds {int(n_items)} image(s){ranks}: too few for a training batch of >= 2 images "
            "(batch norm needs 2); give a dataset with more training images (config ids 'dataset_kind', "
            "'dataset_dir', 'dataset_options'), or raise config id 'max_train_items' (or 'few_shot' of fine-tuning)."
        )
    return per_rank > batch_size and per_rank % int(batch_size) == 1


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


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch (every rank's samples), on any device: the CPU/gloo ``SyncBatchNorm``.

    torch's ``nn.SyncBatchNorm`` takes GPU inputs only. Here, in training mode under ``torch.distributed``, the
    per-channel mean and variance are those of the union of the ranks' batches: sums are combined with the
    differentiable ``torch.distributed.nn.functional.all_reduce`` (two passes: mean, then centred squares), so
    the backward pass is that of the global batch too, and the running statistics get the unbiased global
    variance, as ``nn.SyncBatchNorm`` does. Otherwise (evaluation, one process) it is plain batch norm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {input.dim()}D.")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = (1, channels) + (1,) * (input.dim() - 2)
        local = torch.tensor([input.numel() // channels], dtype=input.dtype, device=input.device)
        count = all_reduce(local.clone())
        mean = all_reduce(input.sum(dims)) / count
        centred = input - mean.view(shape)
        var = all_reduce(centred.square().sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (count / (count - 1).clamp(min=1))
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(unbiased.detach(), momentum)
        out = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_sync_batchnorm(module: nn.Module, device: str | torch.device | None = None) -> nn.Module:
    """Every batch norm of ``module`` made synchronised across ranks (the same parameter and buffer objects).

    On GPUs: ``nn.SyncBatchNorm.convert_sync_batchnorm``. Elsewhere: :class:`GlobalBatchNorm`. Parameters are
    moved, not copied, so an optimiser built on ``module`` keeps training them. Returns ``module`` (changed in
    place) or its replacement when ``module`` is itself a batch norm.
    """
    device = torch.device(device) if device is not None else next(module.parameters(), torch.empty(0)).device
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module
