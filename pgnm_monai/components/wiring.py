"""Small values the bundle configs compute: switches, folders, sizes, mixed precision, the model as it trains."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pgnm_monai.settings import AMP_DTYPES
from pgnm_monai.transforms.chains import eval_resize
from pgnm_monai.validation import check_choice

__all__ = [
    "amp_kwargs",
    "as_bool",
    "eval_resize",
    "is_off",
    "policy_of",
    "prepare_model",
    "probe_batch",
    "subfolder",
    "use_amp",
]


def as_bool(value: Any) -> bool:
    """A config flag as ``bool``; the strings ``false``/``0``/``no``/``none``/``null``/``""`` are ``False``."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "none", "null", "")
    return bool(value)


def use_amp(amp: Any, device: str | torch.device) -> bool:
    """The bundles' ``amp`` id: ``None`` (the default): mixed precision on a CUDA ``device``, float32 elsewhere;
    ``True`` on the CPU: ``False`` with a warning (MONAI's engines autocast with ``torch.autocast("cuda")`` only)."""
    on_cuda = torch.device(device).type == "cuda"
    if amp is None:
        return on_cuda
    if not as_bool(amp):
        return False
    if not on_cuda:
        warnings.warn(
            f"amp=True is ignored on device {device}: mixed precision is for CUDA GPUs; training runs in float32.",
            stacklevel=2,
        )
        return False
    return True


def amp_kwargs(amp_dtype: str, device: str | torch.device | None = None) -> dict[str, torch.dtype]:
    """``amp_kwargs`` of MONAI's engines for the ``amp_dtype`` id: ``bfloat16``, ``float16``, or ``auto``: bfloat16,
    unless ``device`` is a CUDA GPU without it (then float16, which MONAI's engines scale)."""
    check_choice("amp_dtype", amp_dtype, AMP_DTYPES)
    if amp_dtype == "auto":
        old_gpu = device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_bf16_supported()
        amp_dtype = "float16" if old_gpu else "bfloat16"
    return {"dtype": getattr(torch, amp_dtype)}


def prepare_model(
    network: nn.Module,
    device: str | torch.device,
    channels_last: bool | None = None,
    compile: bool | str = False,
    spatial_dims: int = 2,
) -> nn.Module:
    """The bundles' ``model``: ``network`` on ``device``, in the channels-last memory format (``None``: on a CUDA GPU,
    2D only) and compiled in place with ``torch.compile`` (``True``: the default backend; or a backend's name), so
    its state dict keeps its keys. Returns ``network``."""
    device = torch.device(device)
    network = network.to(device)
    if (device.type == "cuda" if channels_last is None else channels_last) and spatial_dims == 2:
        network = network.to(memory_format=torch.channels_last)
    if compile:
        network.compile(**({} if compile is True else {"backend": compile}))
    return network


def subfolder(root: str | os.PathLike, name: str) -> str:
    """``root/name`` (a run's ``models``, ``eval``, ``logs`` folder or a file in one)."""
    return os.path.join(os.fspath(root), name)


def is_off(value: Any) -> bool:
    """``True`` for a switch that is off: ``0``, ``False``, ``None`` (a handler's ``_disabled_``)."""
    return not as_bool(value) if isinstance(value, str) else not value


def policy_of(handler: Any) -> nn.Module | None:
    """The noise policy of an arm's handler (``None`` for arms without one)."""
    return getattr(handler, "policy", None)


def probe_batch(dataset: Sequence[Mapping], size: int) -> torch.Tensor:
    """The images of the first ``size`` items of ``dataset``, stacked: the policy statistics' fixed probe batch."""
    return torch.stack([dataset[i]["image"] for i in range(min(int(size), len(dataset)))])
