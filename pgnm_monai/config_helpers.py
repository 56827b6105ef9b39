"""Thin functions that the bundle JSON configs call: argument checks, data loading, checkpoint lookup and
warm-start.

Each takes plain values, so a config calls it as ``"$pgnm_monai.config_helpers.f(@id, ...)"``, and each check
raises an error that names the config id at fault. Nothing here is needed from Python: the library
functions behind them (:func:`pgnm_monai.data.load_datalist`, :func:`pgnm_monai.arms.build_arm_handler`, ...)
are the Python API.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pgnm_monai.arms import ARMS, MASK_ARMS
from pgnm_monai.data import Datalist, few_shot_subset, load_datalist
from pgnm_monai.data.schema import IMAGE_PATH
from pgnm_monai.networks.classifiers import CLASSIFIERS, HEAD_PREFIXES
from pgnm_monai.networks.policy import TRUNKS
from pgnm_monai.objectives import ADVANTAGES, OBJECTIVES

__all__ = [
    "as_bool",
    "check_num_classes",
    "check_train_args",
    "find_checkpoint",
    "inference_items",
    "load_data",
    "load_pretrained",
    "require_file",
]

logger = logging.getLogger(__name__)

_CKPT_RE = re.compile(r"epoch=(\d+)\.pt$")


def as_bool(value: Any) -> bool:
    """A config flag as ``bool``; the strings ``false``/``0``/``no``/``none``/``null``/``""`` are ``False``."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "none", "null", "")
    return bool(value)


def check_train_args(
    arm: str = "none",
    objective: str = "reinforce",
    network: str = "resnet10",
    grid: int = 16,
    image_size: int = 64,
    in_channels: int = 1,
    epochs: int = 1,
    batch_size: int = 1,
    lr: float = 0.1,
    policy_trunk: str = "resnet10",
    reward_sign: int = -1,
    advantage: str = "baseline",
) -> bool:
    """Check the plain ids of a training config; raise ``ValueError`` naming the id at fault.

    ``reward_sign`` (-1: reward ``-CE``; +1: adversarial) and ``advantage`` (``"baseline"`` or ``"normalized"``)
    are the ``reinforce`` settings; an arm that fixes them (e.g. ``pgnm-adversarial``) overrides the ids.
    """
    if arm not in ARMS:
        raise ValueError(f"config id 'arm' must be one of {tuple(ARMS)}, got {arm!r}.")
    if objective not in OBJECTIVES:
        raise ValueError(f"config id 'objective' must be one of {OBJECTIVES}, got {objective!r}.")
    if network not in CLASSIFIERS:
        raise ValueError(f"config id 'network' must be one of {CLASSIFIERS}, got {network!r}.")
    if isinstance(reward_sign, bool) or reward_sign not in (-1, 1):
        raise ValueError(f"config id 'reward_sign' must be -1 or 1, got {reward_sign!r}.")
    if advantage not in ADVANTAGES:
        raise ValueError(f"config id 'advantage' must be one of {ADVANTAGES}, got {advantage!r}.")
    if policy_trunk not in TRUNKS:
        raise ValueError(f"config id 'policy_trunk' must be one of {TRUNKS}, got {policy_trunk!r}.")
    for name, value, low in (("image_size", image_size, 8), ("grid", grid, 1), ("epochs", epochs, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"config id {name!r} must be an integer >= {low}, got {value!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"config id 'batch_size' must be an integer >= 1, got {batch_size!r}.")
    if in_channels not in (1, 3):
        raise ValueError(f"config id 'in_channels' must be 1 or 3, got {in_channels!r}.")
    if not float(lr) > 0:
        raise ValueError(f"config id 'lr' must be > 0, got {lr!r}.")
    if ARMS[arm].mechanism in MASK_ARMS and grid > image_size:
        raise ValueError(f"config id 'grid' ({grid}) must be <= 'image_size' ({image_size}) for arm {arm!r}.")
    return True


def load_data(
    kind: str | None,
    dataset_dir: str | None,
    split: str,
    seed: int = 0,
    max_items: int | None = None,
    few_shot: int | None = None,
    few_shot_seed: int = 0,
    options: dict | None = None,
) -> Datalist:
    """Load a split with :func:`pgnm_monai.data.load_datalist`, checked, optionally subsampled.

    Args:
        kind: dataset kind (``None``: the embedded default when ``dataset_dir`` is ``None``).
        dataset_dir: dataset root; must exist when given.
        split: ``train``/``val``/``test``/``all``.
        seed: seed of the loader's split.
        max_items: keep a stratified, seeded subset of at most this many items (for quick runs).
        few_shot: keep a stratified subset of exactly this many items (the few-shot ``N``).
        few_shot_seed: seed of the few-shot subset.
        options: source-specific options of ``load_datalist``.

    Returns:
        the :class:`~pgnm_monai.data.Datalist`; every item also carries ``image_path`` (a string).
    """
    if dataset_dir is not None:
        if not os.path.exists(os.path.expanduser(str(dataset_dir))):
            raise FileNotFoundError(f"config id 'dataset_dir' points to {dataset_dir!r}, which does not exist.")
        if kind is None:
            raise ValueError(
                f"config id 'dataset_kind' is required with dataset_dir={dataset_dir!r} "
                "(embedded, mednist, medmnist, image_folder, radimagenet or clinical)."
            )
        dataset_dir = os.path.expanduser(str(dataset_dir))
    dl = load_datalist(kind, dataset_dir, split=split, seed=int(seed), **(options or {}))
    items = [dict(it) for it in dl.items]
    for i, it in enumerate(items):
        img = it["image"]
        it[IMAGE_PATH] = img if isinstance(img, str) else f"{dl.kind}:{split}:{i}"
    if few_shot is not None:
        if int(few_shot) > len(items):
            raise ValueError(f"config id 'few_shot' ({few_shot}) exceeds the {len(items)} items of split {split!r}.")
        items = few_shot_subset(items, int(few_shot), seed=int(few_shot_seed))
    if max_items is not None and int(max_items) < len(items):
        items = few_shot_subset(items, int(max_items), seed=int(seed))
    if not items:
        raise ValueError(f"the {split!r} split of dataset {dl.kind!r} ({dataset_dir}) is empty.")
    return Datalist(items, list(dl.class_names), kind=dl.kind, split=split, report=dict(dl.report))


def require_file(path: str, config_id: str) -> bool:
    """``True`` when ``path`` is a file, else ``FileNotFoundError`` naming ``config_id``."""
    if not os.path.isfile(str(path)):
        raise FileNotFoundError(f"config id {config_id!r} points to {path!r}, which does not exist.")
    return True


def check_num_classes(num_classes: int, datalist: Datalist) -> int:
    """Return ``num_classes`` after checking it against the class count of ``datalist``."""
    if int(num_classes) != datalist.num_classes:
        raise ValueError(
            f"config id 'num_classes' is {num_classes} but dataset {datalist.kind!r} has "
            f"{datalist.num_classes} classes {list(datalist.class_names)}; leave num_classes unset to use the data's."
        )
    return int(num_classes)


def inference_items(files: Sequence[str], modality: str = "other") -> list[dict]:
    """Unlabelled datalist items (label -1) for a list of image files."""
    from pgnm_monai.data import make_item

    items = []
    for f in files:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"config id 'input_files' lists {f!r}, which does not exist.")
        it = make_item(os.fspath(f), 0, "unknown", modality, patient_id=os.path.basename(f))
        it["label"] = -1
        it[IMAGE_PATH] = os.fspath(f)
        items.append(it)
    if not items:
        raise ValueError("config id 'input_files' is empty.")
    return items


def find_checkpoint(ckpt_dir: str, resume: bool | str | None) -> str | None:
    """The training-state checkpoint to resume from.

    Args:
        ckpt_dir: where :class:`TrainingStateSaver` writes ``checkpoint_epoch=N.pt``.
        resume: ``False``/``None`` (start fresh), ``True`` (the latest ``checkpoint_epoch=N.pt``) or a path.
    """
    if isinstance(resume, str) and resume.strip().lower() in ("true", "latest", "false", "none", "null", ""):
        resume = as_bool(resume)
    if not resume:
        return None
    if isinstance(resume, str):
        if not os.path.isfile(resume):
            raise FileNotFoundError(f"config id 'resume' points to {resume!r}, which does not exist.")
        return resume
    paths = glob.glob(os.path.join(ckpt_dir, "*epoch=*.pt"))
    found = [(int(m.group(1)), p) for p in paths if (m := _CKPT_RE.search(p))]
    if not found:
        raise FileNotFoundError(
            f"config id 'resume' is true but {ckpt_dir!r} holds no training-state checkpoint (checkpoint_epoch=N.pt)."
        )
    return max(found)[1]


def load_pretrained(
    network: nn.Module, path: str | None, network_name: str | None = None, reset_head: bool = True
) -> nn.Module:
    """Load a heated classifier checkpoint into ``network``, keeping ``network``'s (new) head.

    Every non-head tensor must be in the checkpoint with the same shape (else ``ValueError``: the
    checkpoint is of another architecture); the head (see :data:`~pgnm_monai.networks.HEAD_PREFIXES`) is
    skipped when ``reset_head`` or when its shape differs (a new class count). The equivalent of MONAI's
    ``CheckpointLoader(strict_shape=False)``, but it refuses a checkpoint that loads only partly.

    Args:
        network: the classifier to initialise (modified in place and returned).
        path: a ``model.pt`` (state dict) or a training-state checkpoint (``{"model": ...}``); ``None``
            trains from scratch (with a warning).
        network_name: the architecture name (to know its head); ``None``: skip only mismatched shapes.
        reset_head: skip the head even where its shape matches.
    """
    if path is None:
        warnings.warn("config id 'pretrained_ckpt' is null: fine-tuning starts from a random network.", stacklevel=2)
        return network
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"config id 'pretrained_ckpt' points to {path!r}, which does not exist; run the pretrain bundle "
            "first or set pretrained_ckpt to null to train from scratch."
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and "model" in ckpt and isinstance(ckpt["model"], dict):
        ckpt = ckpt["model"]
    own = network.state_dict()
    heads = HEAD_PREFIXES.get(network_name or "", ())

    def is_head(k: str) -> bool:
        return any(k.startswith(h) for h in heads)

    loaded, skipped, missing = {}, [], []
    for k, v in own.items():
        c = ckpt.get(k)
        if as_bool(reset_head) and is_head(k):
            skipped.append(k)
        elif c is not None and tuple(c.shape) == tuple(v.shape):
            loaded[k] = c
        elif heads and is_head(k):
            skipped.append(k)
        else:
            missing.append(k)
    if missing:
        raise ValueError(
            f"pretrained_ckpt {path!r} does not fit network {network_name!r}: {len(missing)} tensors missing or of "
            f"another shape (e.g. {missing[:3]}); pretrain and fine-tune must use the same 'network' and 'in_channels'."
        )
    network.load_state_dict(loaded, strict=False)
    logger.info(f"loaded {len(loaded)} tensors from {path}; new head: {skipped}")
    return network
