"""Small values the bundle configs compute: switches, folders, sizes, mixed precision."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pgnm_monai.transforms.chains import eval_resize

__all__ = [
    "AMP_DTYPES",
    "amp_kwargs",
    "as_bool",
    "eval_resize",
    "is_off",
    "policy_of",
    "probe_batch",
    "subfolder",
    "use_amp",
]


def as_bool(value: Any) -> bool:
    """A config flag as ``bool``; the strings ``false``/``0``/``no``/``none``/``null``/``""`` are ``False``."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "none", "null", "")
    return bool(value)


#: ``amp_dtype`` bundle id -> the autocast dtype.
AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def use_amp(amp: Any, device: str | torch.device) -> bool:
    """The bundles' ``amp`` id: mixed precision on a CUDA ``device``; on the CPU ``False`` with a warning.

    MONAI's engines autocast with ``torch.autocast("cuda")`` only, so on the CPU the run goes on in float32.
    """
    if not as_bool(amp):
        return False
    if torch.device(device).type != "cuda":
        warnings.warn(
            f"amp=True is ignored on device {device}: mixed precision is for CUDA GPUs; training runs in float32.",
            stacklevel=2,
        )
        return False
    return True


def amp_kwargs(amp_dtype: str) -> dict[str, torch.dtype]:
    """``amp_kwargs`` of MONAI's engines for the ``amp_dtype`` id (``bfloat16`` or ``float16``)."""
    if amp_dtype not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be one of {sorted(AMP_DTYPES)}, got {amp_dtype!r}.")
    return {"dtype": AMP_DTYPES[amp_dtype]}


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
