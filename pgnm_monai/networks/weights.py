"""Weights people already have, loaded into the project's networks; checkpoint averaging.

:func:`load_weights` warm-starts a classifier from any of:

- this project's ``models/model.pt`` (a state dict) or ``models/model_avg.pt`` (:func:`average_state_dicts`);
- a training-state checkpoint (``{"model": state_dict, "optimizer": ..., ...}``): this project's
  ``checkpoint_epoch=N.pt``, the official PGNM code's and torchvision's reference scripts' ``model_N.pth`` (their
  ``"args"`` namespace is read as plain data);
- a plain state dict: the authors' released, averaged heated weights, torchvision's and timm's ImageNet weight
  files (``.pth``, ``.bin`` or ``.safetensors``);

with or without the ``module.`` (DDP) or ``_orig_mod.`` (``torch.compile``) prefixes. The rules:

- the head (:data:`~pgnm_monai.networks.HEAD_PREFIXES`) is replaced when ``reset_head`` or when its shape differs
  (another class count); every other tensor must load, else ``ValueError`` names the file and the missing,
  unexpected or reshaped keys;
- a stem of another input-channel count is adapted as timm adapts it (:func:`adapt_input_channels`); a
  ``num_batches_tracked`` buffer absent from older files keeps its value.

What a load did (tensors loaded, stem adapted, head replaced) is a :class:`WeightsReport`: logged, and handed to the
callbacks of :func:`on_weights_loaded` (``pgnm finetune`` prints it). Normalise the images as the weights were
trained (:data:`NORMALIZATION`; bundle ids ``intensity_mean``, ``intensity_std``).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import logging
import os
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pgnm_monai.networks.classifiers import HEAD_PREFIXES
from pgnm_monai.settings import NORMALIZATION

__all__ = [
    "NORMALIZATION",
    "WeightsReport",
    "adapt_input_channels",
    "average_state_dicts",
    "first_conv_key",
    "load_checkpoint_file",
    "load_weights",
    "on_weights_loaded",
    "unwrap_state_dict",
]

logger = logging.getLogger(__name__)


#: keys under which checkpoints of training scripts keep the network's state dict, in the order they are tried
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "network")
#: prefixes that wrappers add to every key: DDP / DataParallel, torch.compile
_KEY_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class WeightsReport:
    """What :func:`load_weights` did with a file; ``str()`` is the one line ``pgnm finetune`` prints.

    Attributes:
        path: the weight file.
        loaded: tensors of the network loaded from the file (the adapted stem included).
        total: tensors of the network's state dict.
        stem: ``(file's, network's)`` input channels when the stem was adapted, else ``None``.
        stem_channels: the network's input channels (its stem's).
        head: ``(file's, network's)`` classes; the file's is ``None`` when it has no head.
        head_replaced: the network's head was kept new (``reset_head``, or another class count), not loaded.
    """

    path: str
    loaded: int
    total: int
    stem: tuple[int, int] | None = None
    stem_channels: int | None = None
    head: tuple[int | None, int] | None = None
    head_replaced: bool = False

    def __str__(self) -> str:
        parts = [f"weights: {self.loaded} of {self.total} tensors loaded from {self.path}"]
        if self.stem is not None:
            parts.append(f"stem adapted from {self.stem[0]} to {self.stem[1]} input channels")
        elif self.stem_channels is not None:
            parts.append(f"stem kept ({self.stem_channels} input channel{'s' * (self.stem_channels != 1)})")
        if self.head is not None:
            old, new = self.head
            if not self.head_replaced:
                parts.append(f"head kept ({new} classes)")
            else:
                parts.append(f"head replaced ({'none' if old is None else old} -> {new} classes)")
        return "; ".join(parts)


_LISTENERS: contextvars.ContextVar[tuple[Callable[[WeightsReport], Any], ...]] = contextvars.ContextVar(
    "pgnm_weights_listeners", default=()
)


@contextlib.contextmanager
def on_weights_loaded(callback: Callable[[WeightsReport], Any]) -> Iterator[None]:
    """Within the block, every :func:`load_weights` (also inside a bundle run in this thread) calls ``callback`` with
    its :class:`WeightsReport` once the weights are in the network."""
    token = _LISTENERS.set((*_LISTENERS.get(), callback))
    try:
        yield
    finally:
        _LISTENERS.reset(token)


def load_checkpoint_file(path: str | os.PathLike, config_id: str = "pretrained_ckpt") -> Any:
    """The content of a PyTorch (``torch.load(weights_only=True)``, on the CPU) or safetensors file.

    ``argparse.Namespace`` is allowed besides tensors and plain values: torchvision's reference scripts (and the
    official PGNM code) save their arguments as one in each checkpoint.

    Raises:
        FileNotFoundError: no such file (the error names ``config_id``).
        ValueError: a truncated, corrupt or non-PyTorch file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config id {config_id!r} points to {path!r}, which does not exist.")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:
        raise ValueError(
            f"config id {config_id!r} points to {path!r}, which is not a readable PyTorch checkpoint "
            f"(truncated or corrupt?): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e


def unwrap_state_dict(checkpoint: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The network's state dict inside ``checkpoint``, without wrapper prefixes.

    Descends into ``"model"`` (then ``"state_dict"``, ``"model_state_dict"``, ``"network"``) until every value is a
    tensor, then strips a ``module.`` or ``_orig_mod.`` prefix that every key carries.

    Raises:
        ValueError: naming ``source`` and its top-level keys when no state dict is found.
    """
    state = checkpoint
    while isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ValueError(
            f"{source} holds no state dict (found {found}); expected a state dict of tensors or a checkpoint "
            f"holding one under one of {list(_WRAPPER_KEYS)}."
        )
    state = dict(state)
    stripped = True
    while stripped:
        stripped = False
        for prefix in _KEY_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped = True
    return state


def first_conv_key(network: nn.Module) -> str | None:
    """The weight key of ``network``'s first convolution (its stem, which sees the input channels)."""
    name = next((n for n, m in network.named_modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    return None if name is None else f"{name}.weight"


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A stem convolution's ``weight`` ``(O, I, *kernel)`` for ``in_channels`` inputs, as timm adapts it.

    timm's ``adapt_input_conv``: to one channel, the sum over the ``I`` input channels; from ``I`` channels to
    ``C``, the channels repeated and scaled by ``I / C`` (so one grey channel repeated ``C`` times gives the same
    response). 3D kernels are adapted as their flattened 2D view.
    """
    out, source = weight.shape[:2]
    flat = weight.reshape(out, source, -1, 1)
    from timm.models import adapt_input_conv

    adapted = adapt_input_conv(in_channels, flat, base_chans=source)
    return adapted.reshape(out, in_channels, *weight.shape[2:])


def load_weights(
    network: nn.Module,
    path: str | os.PathLike,
    network_name: str | None = None,
    reset_head: bool = True,
    config_id: str = "pretrained_ckpt",
) -> nn.Module:
    """Load the weights in ``path`` into ``network`` (modified in place and returned); see the module docstring.

    Args:
        network: the classifier to initialise.
        path: a checkpoint or weight file of any layout listed in the module docstring.
        network_name: the architecture name (a key of :data:`~pgnm_monai.networks.HEAD_PREFIXES`), to know its
            head; ``None``: every tensor must load.
        reset_head: keep ``network``'s new head even where the file's head has the same shape.
        config_id: the config id named in errors.

    Raises:
        ValueError: the file does not hold weights of this architecture (missing, unexpected or reshaped keys,
            named with the file).
    """
    path = os.fspath(path)
    state = unwrap_state_dict(load_checkpoint_file(path, config_id), f"config id {config_id!r} file {path!r}")
    own = network.state_dict()
    heads = HEAD_PREFIXES.get(network_name or "", ())
    stem = first_conv_key(network)

    def is_head(key: str) -> bool:
        return any(key.startswith(h) for h in heads)

    loaded: dict[str, torch.Tensor] = {}
    new_head, missing, reshaped = [], [], []
    adapted: tuple[int, int] | None = None
    for key, mine in own.items():
        theirs = state.get(key)
        if is_head(key) and (reset_head or theirs is None or theirs.shape != mine.shape):
            new_head.append(key)
        elif theirs is None:
            if not key.endswith("num_batches_tracked"):  # absent from files saved by older PyTorch versions
                missing.append(key)
        elif theirs.shape == mine.shape:
            loaded[key] = theirs
        elif key == stem and _without_dim1(theirs.shape) == _without_dim1(mine.shape):
            loaded[key] = adapt_input_channels(theirs, mine.shape[1])
            adapted = (theirs.shape[1], mine.shape[1])  # timm's adapt_input_conv
        else:
            reshaped.append(f"{key}: {tuple(theirs.shape)} in the file, {tuple(mine.shape)} in the network")
    unexpected = [k for k in state if k not in own and not is_head(k)]
    if missing or unexpected or reshaped:
        problems = [
            f"{len(items)} {what} (e.g. {items[:4]})"
            for what, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
            if items
        ]
        raise ValueError(
            f"config id {config_id!r}: {path!r} does not fit network {network_name!r}: keys "
            + "; ".join(problems)
            + ". The file must hold weights of the same architecture as 'network' (heads and the stem's input "
            "channels excepted)."
        )
    network.load_state_dict(loaded, strict=False)
    report = WeightsReport(
        path=path,
        loaded=len(loaded),
        total=len(own),
        stem=adapted,
        stem_channels=None if stem is None else own[stem].shape[1],
        head=_head_classes(state, own, heads),
        head_replaced=bool(new_head),
    )
    logger.info(f"{config_id}: {report} (new head: {new_head})")
    for callback in _LISTENERS.get():
        callback(report)
    return network


def _head_classes(
    state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], heads: Sequence[str]
) -> tuple[int | None, int] | None:
    """``(file's, network's)`` class count: the first dimension of the head's weight (``None``: no head)."""
    key = next((k for k in own if any(k.startswith(h) for h in heads) and k.endswith("weight")), None)
    if key is None:
        return None
    theirs = state.get(key)
    return (None if theirs is None else int(theirs.shape[0])), int(own[key].shape[0])


def _without_dim1(shape: torch.Size) -> tuple[int, ...]:
    return (shape[0], *shape[2:])


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts of one network (checkpoint averaging, as the official release).

    Floating-point tensors, batch-norm running statistics included, are averaged (in float64, then cast back to
    their dtype); integer tensors (``num_batches_tracked``) take the last state's value, which a mean would
    turn into a fraction.

    Raises:
        ValueError: no states, or states with other keys or shapes.
    """
    if not states:
        raise ValueError("average_state_dicts needs at least one state dict.")
    last = states[-1]
    for i, state in enumerate(states):
        if list(state) != list(last) or any(state[k].shape != last[k].shape for k in last):
            raise ValueError(f"state dict {i} has other keys or shapes than the last one: not the same network.")
    average: dict[str, torch.Tensor] = {}
    for key, value in last.items():
        if value.is_floating_point():
            total = sum(state[key].double() for state in states)
            average[key] = (total / len(states)).to(value.dtype)
        else:
            average[key] = value.clone()
    return average
