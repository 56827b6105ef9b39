"""Checks of a run's settings (inside :class:`~pgnm_monai.components.RunSettings`) and of its folders, run at
``initialize`` before any training."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

from pgnm_monai.arms import MASK_ARMS, arm_spec, learned_policy_arms
from pgnm_monai.networks.classifiers import CLASSIFIERS, check_classifier
from pgnm_monai.settings import InputSettings, OptimizerSettings, PolicySettings
from pgnm_monai.validation import check_choice

__all__ = ["check_output_dirs", "check_run_settings", "require_file"]


def check_run_settings(settings: Mapping[str, Any]) -> None:
    """Check a run's settings (bundle id -> value); raise ``ValueError`` naming the id at fault.

    The method's ids are checked by their typed home (:mod:`pgnm_monai.settings`: the policy's, the input's,
    the optimiser's); the run's own here (``arm``, ``network``, sizes, ``flip_prob``, ``dataset_options``, and a
    ``grid`` that must fit ``image_size`` for the mask arms). Ids absent from ``settings`` are not checked.
    """
    spec = arm_spec(settings.get("arm", "none"), "config id 'arm'")
    if "network" in settings:
        check_choice("config id 'network'", settings["network"], CLASSIFIERS)
    try:
        typed = [cls.from_mapping(settings) for cls in (PolicySettings, InputSettings, OptimizerSettings)]
    except ValueError as e:  # the typed settings name the id as 'id'
        raise ValueError(f"config id {e}") from None
    if "network" in settings:
        try:
            check_classifier(settings["network"], typed[1].spatial_dims)
        except ValueError as e:
            raise ValueError(f"config id 'network': {e}") from None
    for name, low in _INTEGER_IDS.items():
        value = settings.get(name, low)
        if value is None and name.startswith("max_"):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"config id {name!r} must be an integer >= {low}, got {value!r}.")
    if settings.get("batch_size") == 1 and learned_policy_arms([spec.name]):
        raise ValueError(
            f"config id 'batch_size' is 1 but arm {spec.name!r} trains a noise policy, whose heads use batch norm "
            "and need batches of >= 2 images; give batch_size >= 2 (or arm 'none')."
        )
    flip_prob = settings.get("flip_prob", 0)
    if isinstance(flip_prob, bool) or not isinstance(flip_prob, (int, float)) or not 0 <= flip_prob <= 1:
        raise ValueError(
            f"config id 'flip_prob' must be a probability in [0, 1], got {flip_prob!r} (0 for data whose classes "
            "a horizontal flip changes, e.g. left/right organs)."
        )
    options = settings.get("dataset_options")
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(
            f"config id 'dataset_options' must be a mapping of option -> value (e.g. {{'slices': 'none'}}), "
            f"got {type(options).__name__} {options!r}."
        )
    policy, image = typed[0], typed[1]
    if spec.mechanism in MASK_ARMS and policy.grid > image.image_size:
        raise ValueError(
            f"config id 'grid' ({policy.grid}) must be <= 'image_size' ({image.image_size}) for arm {spec.name!r}."
        )


#: integer ids of a run and their lower bound (``max_*``: ``None`` means no limit).
_INTEGER_IDS = {
    "epochs": 1,
    "batch_size": 1,
    "val_batch_size": 1,
    "max_train_items": 1,
    "max_val_items": 1,
    "split_seed": 0,
    "seed": 0,
}


def require_file(path: str | os.PathLike, config_id: str, hint: str = "") -> bool:
    """``True`` when ``path`` is a file; else ``IsADirectoryError`` (a folder) or ``FileNotFoundError`` (nothing
    there), naming ``config_id`` and the path, then ``hint`` (what to give instead)."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path)
    if os.path.isfile(text):
        return True
    tail = f"; {hint}" if hint else "."
    if os.path.isdir(text):
        raise IsADirectoryError(f"config id {config_id!r} points to {text!r}, which is a folder, expected a file{tail}")
    raise FileNotFoundError(f"config id {config_id!r} points to {text!r}, which does not exist{tail}")


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
