"""Checks of a run's settings (inside :class:`~pgnm_monai.components.RunSettings`) and of its folders, run at
``initialize`` before any training."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

from pgnm_monai.arms import MASK_ARMS, arm_spec, learned_policy_arms
from pgnm_monai.networks.classifiers import CLASSIFIERS, check_classifier
from pgnm_monai.settings import InputSettings, OptimizerSettings, PolicySettings
from pgnm_monai.validation import check_choice

__all__ = ["check_output_dirs", "check_run_settings", "check_warmup", "require_file"]

logger = logging.getLogger(__name__)


def check_run_settings(settings: Mapping[str, Any]) -> None:
    """Check a run's settings (bundle id -> value); raise ``ValueError`` naming the id at fault.

    The method's ids are checked by their typed home (:mod:`pgnm_monai.settings`: the policy's, the input's,
    the optimiser's); the run's own here (``arm``, ``network``, sizes, ``flip_prob``, ``dataset_options``, a
    ``grid`` that must fit ``image_size`` for the mask arms, and the fine-tune's warm-up: :func:`check_warmup`).
    Ids absent from ``settings`` are not checked.
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
    if "warmup_epochs" in settings:
        check_warmup(settings)


def check_warmup(settings: Mapping[str, Any]) -> float:
    """Check the fine-tune's linear warm-up (``warmup_epochs``, ``warmup_start_factor``, ``epochs``, ``lr``: a
    ``LinearLR`` stepped once per epoch) and log the learning rate the last epoch trains at; return that rate.

    A warm-up of ``warmup_epochs >= epochs`` (with ``epochs >= 2``) is refused: the learning rate would never reach
    ``lr`` (a 2-epoch run with the default 7 reaches 15% of it), naming both ids, their values and the fix. A
    1-epoch run (a smoke test, which no warm-up fits) trains at ``warmup_start_factor * lr``, with a warning.
    ``warmup_epochs`` 0 with ``warmup_start_factor`` < 1 is refused (``LinearLR`` would keep the start factor for
    ever); no warm-up is ``warmup_epochs`` 0 with ``warmup_start_factor`` 1.0.
    """
    warmup, epochs = settings["warmup_epochs"], settings.get("epochs", 1)
    start, lr = settings.get("warmup_start_factor", 1.0), settings.get("lr")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"config id 'warmup_epochs' must be an integer >= 0, got {warmup!r}.")
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0 < start <= 1:
        raise ValueError(f"config id 'warmup_start_factor' must be a number in (0, 1], got {start!r}.")
    if warmup == 0 and start < 1:
        raise ValueError(
            f"config id 'warmup_epochs' is 0 with 'warmup_start_factor' {start}: LinearLR would keep the learning "
            "rate at warmup_start_factor * lr for the whole run; for no warm-up give warmup_start_factor 1.0, else "
            "warmup_epochs >= 1."
        )
    last = start + (1 - start) * (min(epochs - 1, warmup) / warmup if warmup else 1.0)
    if epochs >= 2 and warmup >= epochs:
        raise ValueError(
            f"config id 'warmup_epochs' ({warmup}) must be < 'epochs' ({epochs}): the warm-up would not end, and the "
            f"last epoch would train at {last:.0%} of 'lr'. Give warmup_epochs <= {epochs - 1} (e.g. "
            f"warmup_epochs={max(1, min(warmup, epochs // 4))}) or epochs >= {warmup + 1}."
        )
    if epochs == 1 and warmup >= 1:
        warnings.warn(
            f"config id 'epochs' is 1 with 'warmup_epochs' {warmup}: the one epoch trains at 'warmup_start_factor' "
            f"({start}) * 'lr'; give warmup_epochs 0 and warmup_start_factor 1.0 to train at 'lr'.",
            stacklevel=2,
        )
    reached = last * lr if isinstance(lr, (int, float)) and not isinstance(lr, bool) else None
    logger.info(
        f"learning rate: linear warm-up over {warmup} of {epochs} epoch(s) from {start} * lr; the last epoch trains "
        f"at {last:.3g} * lr" + (f" = {reached:.3g}" if reached is not None else "")
    )
    return last


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
