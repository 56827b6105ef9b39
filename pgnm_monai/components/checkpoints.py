"""The checkpoints a bundle reads: the training state to resume from, and the weights to warm-start from."""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pgnm_monai.components.checks import require_file
from pgnm_monai.components.run_settings import RunSettings, compare_settings
from pgnm_monai.components.wiring import as_bool
from pgnm_monai.networks.classifiers import HEAD_PREFIXES
from pgnm_monai.networks.weights import load_checkpoint_file, load_weights, unwrap_state_dict

__all__ = ["check_checkpoint", "check_model_classes", "find_checkpoint", "head_outputs", "load_pretrained"]

_CKPT_RE = re.compile(r"epoch=(\d+)\.pt$")


_TRAINING_STATE_KEYS = ("model", "trainer")  # what every TrainingStateSaver checkpoint of the bundles holds


def check_checkpoint(path: str | os.PathLike | None, config_id: str, keys: Sequence[str] = ()) -> str | None:
    """Return ``path`` after checking that it is a readable PyTorch checkpoint (``None`` passes through).

    The file is opened as ``torch.load(..., weights_only=True)`` will open it (memory-mapped when it is a zip
    checkpoint, so large files are not read in full).

    Args:
        path: the checkpoint.
        config_id: the config id that points to it (named in the error).
        keys: top-level keys the checkpoint must hold (e.g. a training state's ``model``, ``trainer``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a truncated, corrupt or non-PyTorch file, or one without ``keys``.
    """
    if path is None:
        return None
    path = os.fspath(path)
    _load_checkpoint(path, config_id, keys)
    return path


def _load_checkpoint(path: str, config_id: str, keys: Sequence[str] = ()) -> Any:
    """:func:`~pgnm_monai.networks.weights.load_checkpoint_file`, then a check that ``keys`` are in it."""
    require_file(path, config_id)
    ckpt = load_checkpoint_file(path, config_id)
    missing = [k for k in keys if not (isinstance(ckpt, Mapping) and k in ckpt)]
    if missing:
        found = sorted(map(str, ckpt))[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(
            f"config id {config_id!r} points to {path!r}, which lacks {missing} (it holds {found}); "
            "expected a training-state checkpoint_epoch=N.pt."
        )
    return ckpt


def head_outputs(path: str | os.PathLike, network: str, config_id: str = "ckpt_path") -> int | None:
    """The output count of the classification head of the weights in ``path`` for network ``network`` (its head's
    keys: :data:`~pgnm_monai.networks.HEAD_PREFIXES`); ``None`` when the file holds no such head."""
    path = os.fspath(path)
    state = unwrap_state_dict(load_checkpoint_file(path, config_id), f"config id {config_id!r} file {path!r}")
    for prefix in HEAD_PREFIXES.get(str(network), ()):
        for suffix in ("weight", "bias"):
            tensor = state.get(f"{prefix}{suffix}")
            if isinstance(tensor, torch.Tensor) and tensor.ndim >= 1:
                return int(tensor.shape[0])
    return None


def check_model_classes(
    path: str | os.PathLike,
    class_map: str | os.PathLike,
    network: str,
    num_classes: int | None = None,
    config_id: str = "ckpt_path",
) -> bool:
    """Check, before the model is loaded, that the head of the weights in ``path`` has one output per class of
    ``class_map`` (the run's ``class_map.json``), or of ``num_classes`` (the data's) when there is no class map.

    Args:
        path: the model to evaluate or to predict with (config id ``config_id``).
        class_map: the class map JSON beside it (:func:`pgnm_monai.data.save_class_map`); may be absent.
        network: the network's name (config id ``network``), to find its head.
        num_classes: the class count of the data, compared when ``class_map`` is absent (``None``: not checked).
        config_id: the config id of ``path`` (named in the error).

    Raises:
        ValueError: naming the class map (or the data's class count), the checkpoint and its head's output count.
    """
    from pgnm_monai.data import load_class_map

    path, class_map = os.fspath(path), os.fspath(class_map)
    outputs = head_outputs(path, network, config_id)
    if outputs is None:
        return True  # not a head this network has: the loader names the keys that do not fit
    if os.path.isfile(class_map):
        names = load_class_map(class_map)
        if len(names) != outputs:
            shown = names if len(names) <= 8 else [*names[:8], "..."]
            raise ValueError(
                f"{class_map} lists {len(names)} classes {shown} but the model {path} (config id {config_id!r}) has "
                f"a head of {outputs} outputs: the class map is not the model's. Put the class_map.json of the run "
                f"that trained {os.path.basename(path)} beside it, or point config id {config_id!r} (or "
                "'bundle_root') to that run."
            )
    elif num_classes is not None and int(num_classes) != outputs:
        raise ValueError(
            f"the data has {int(num_classes)} classes but the model {path} (config id {config_id!r}) has a head of "
            f"{outputs} outputs, and there is no {class_map} to name its classes; evaluate on the dataset the model "
            "was trained on (config ids 'dataset_kind', 'dataset_dir'), or point config id "
            f"{config_id!r} to a model trained on this one."
        )
    return True


def find_checkpoint(ckpt_dir: str, resume: bool | str | None, settings: RunSettings | None = None) -> str | None:
    """The training-state checkpoint to resume from, checked to load and to share this run's settings.

    Args:
        ckpt_dir: where :class:`TrainingStateSaver` writes ``checkpoint_epoch=N.pt``.
        resume: ``False``/``None`` (start fresh), ``True`` (the latest ``checkpoint_epoch=N.pt``) or a path.
        settings: this run's settings; a checkpoint recorded with other values is refused, naming the id
            (:func:`~pgnm_monai.components.run_settings.compare_settings`).
    """
    if isinstance(resume, str) and resume.strip().lower() in ("true", "latest", "false", "none", "null", ""):
        resume = as_bool(resume)
    if not resume:
        return None
    if isinstance(resume, str):
        path = resume
    else:
        paths = glob.glob(os.path.join(ckpt_dir, "*epoch=*.pt"))
        found = [(int(m.group(1)), p) for p in paths if (m := _CKPT_RE.search(p))]
        if not found:
            raise FileNotFoundError(
                f"config id 'resume' is true but {ckpt_dir!r} holds no training-state checkpoint "
                "(checkpoint_epoch=N.pt)."
            )
        path = max(found)[1]
    ckpt = _load_checkpoint(path, "resume", _TRAINING_STATE_KEYS)
    if settings is not None:
        if "settings" in ckpt:
            compare_settings(ckpt["settings"], settings.settings, f"the training state {path}")
        else:
            warnings.warn(f"{path} holds no record of its settings: they are not checked.", stacklevel=2)
    return path


def load_pretrained(
    network: nn.Module,
    path: str | None,
    network_name: str | None = None,
    reset_head: bool = True,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Warm-start ``network`` from ``path`` (config id ``pretrained_ckpt``) by
    :func:`~pgnm_monai.networks.load_weights`: this project's ``model.pt`` / ``model_avg.pt``, a training-state
    checkpoint, the authors' released weights, torchvision or timm ImageNet weights.

    ``None`` trains from scratch (with a warning); a path that does not exist is refused. The network is returned
    on ``device`` when one is given.
    """
    if device is not None:
        return load_pretrained(network, path, network_name, reset_head).to(device)
    if path is None:
        warnings.warn("config id 'pretrained_ckpt' is null: fine-tuning starts from a random network.", stacklevel=2)
        return network
    require_file(
        path,
        "pretrained_ckpt",
        "run the pretrain bundle first, point it to a weight file, or set pretrained_ckpt to null to train from "
        "scratch.",
    )
    return load_weights(network, path, network_name, reset_head=as_bool(reset_head))
