"""Checks of a training config's ids and folders, run at ``initialize`` before any training."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

from pgnm_monai.arms import MASK_ARMS, arm_spec
from pgnm_monai.networks.classifiers import CLASSIFIERS
from pgnm_monai.networks.policy import TRUNKS
from pgnm_monai.objectives import ADVANTAGES, OBJECTIVES, REWARD_SIGNS
from pgnm_monai.validation import check_choice, check_positive

__all__ = ["check_output_dirs", "check_train_args", "require_file"]


def check_train_args(
    *,
    arm: str,
    objective: str,
    network: str,
    grid: int,
    image_size: int,
    in_channels: int,
    epochs: int,
    batch_size: int,
    lr: float,
    policy_trunk: str,
    reward_sign: int,
    advantage: str,
    val_batch_size: int,
    max_train_items: int | None,
    max_val_items: int | None,
    intensity_std: float,
    dataset_options: Mapping[str, Any] | None,
    flip_prob: float,
) -> bool:
    """Check the plain ids of a training config (the bundle's values); raise ``ValueError`` naming the id at fault.

    ``reward_sign`` (-1: reward ``-CE``; +1: adversarial) and ``advantage`` (``"baseline"`` or ``"normalized"``)
    are the ``reinforce`` settings; an arm that fixes them (e.g. ``pgnm-adversarial``) overrides the ids.
    """
    spec = arm_spec(arm, "config id 'arm'")
    for name, value, choices in (
        ("objective", objective, OBJECTIVES),
        ("network", network, CLASSIFIERS),
        ("reward_sign", reward_sign, REWARD_SIGNS),
        ("advantage", advantage, ADVANTAGES),
        ("policy_trunk", policy_trunk, TRUNKS),
        ("in_channels", in_channels, (1, 3)),
    ):
        check_choice(f"config id {name!r}", value, choices)
    for name, value, low in (
        ("image_size", image_size, 8),
        ("grid", grid, 1),
        ("epochs", epochs, 1),
        ("batch_size", batch_size, 1),
        ("val_batch_size", val_batch_size, 1),
        ("max_train_items", 1 if max_train_items is None else max_train_items, 1),
        ("max_val_items", 1 if max_val_items is None else max_val_items, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"config id {name!r} must be an integer >= {low}, got {value!r}.")
    for name, value in (("lr", lr), ("intensity_std", intensity_std)):
        check_positive(f"config id {name!r}", value)
    if isinstance(flip_prob, bool) or not isinstance(flip_prob, (int, float)) or not 0 <= flip_prob <= 1:
        raise ValueError(
            f"config id 'flip_prob' must be a probability in [0, 1], got {flip_prob!r} (0 for data whose classes "
            "a horizontal flip changes, e.g. left/right organs)."
        )
    if dataset_options is not None and not isinstance(dataset_options, Mapping):
        raise ValueError(
            f"config id 'dataset_options' must be a mapping of option -> value (e.g. {{'slices': 'none'}}), "
            f"got {type(dataset_options).__name__} {dataset_options!r}."
        )
    if spec.mechanism in MASK_ARMS and grid > image_size:
        raise ValueError(f"config id 'grid' ({grid}) must be <= 'image_size' ({image_size}) for arm {arm!r}.")
    return True


def require_file(path: str, config_id: str) -> bool:
    """``True`` when ``path`` is a file, else ``FileNotFoundError`` naming ``config_id``."""
    if not os.path.isfile(str(path)):
        raise FileNotFoundError(f"config id {config_id!r} points to {path!r}, which does not exist.")
    return True


def check_output_dirs(**folders: str | os.PathLike | None) -> bool:
    """Check that every output folder (by config id) is writable, before any training; create missing ones.

    A folder is writable when a temporary file can be created and removed in it. ``None`` folders are skipped
    (e.g. ``log_dir`` without TensorBoard).

    Args:
        folders: config id -> folder, e.g. ``ckpt_dir=@ckpt_dir, output_dir=@output_dir``.

    Raises:
        PermissionError: a folder cannot be created or written (the message names its id and path).
    """
    for config_id, folder in folders.items():
        if folder is None:
            continue
        path = os.path.expanduser(os.fspath(folder))
        try:
            os.makedirs(path, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".pgnm_write_check", dir=path)
            os.close(fd)
            os.remove(probe)
        except OSError as e:
            raise PermissionError(
                f"config id {config_id!r} points to {path!r}, which is not a writable folder "
                f"({e.strerror or e}); choose another {config_id} or bundle_root, or fix its permissions."
            ) from e
    return True
