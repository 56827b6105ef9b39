"""The settings a run was trained with: checked when the run starts, recorded in its training state and
``models/run_settings.json``, and compared when the run is resumed, evaluated or used for inference.

A resume with another value of a recorded setting is refused, naming the id and both values, except the ids in
:data:`EXTENDABLE` (``epochs``: extending a finished run; ``val_batch_size``), which only warn. Evaluation and
inference compare the ids that decide what the network sees (:data:`INPUT_SETTINGS`) with the trained run's
``run_settings.json``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from typing import Any

from pgnm_monai.atomic_files import atomic_write_text, to_jsonable
from pgnm_monai.components.checks import check_run_settings

__all__ = [
    "EXTENDABLE",
    "INPUT_SETTINGS",
    "RunSettings",
    "check_trained_settings",
    "compare_settings",
    "trained_input_settings",
    "write_run_settings",
]

#: ids a resume may change, with a warning: ``epochs`` extends (or shortens) a run, the learning-rate schedules
#: keeping the state they were saved with (a cosine schedule continues past its first length); ``val_batch_size``
#: changes only how validation is batched; the device settings (mixed precision, memory format, compilation) let a
#: run move between machines.
EXTENDABLE = ("epochs", "val_batch_size", "amp", "amp_dtype", "channels_last", "compile")
#: the ids evaluation and inference must share with the trained run: what the network is and what it sees.
INPUT_SETTINGS = ("network", "spatial_dims", "in_channels", "image_size", "spacing", "intensity_mean", "intensity_std")


class RunSettings:
    """The settings of a run (config id -> value, :attr:`settings`): checked when made, saved in its training state
    (``"settings"``), and read by the components that act on them (``build_arm_handler`` takes :attr:`settings`).
    Not a ``Mapping``: ignite's checkpoints would take it for a container of stateful objects.

    ``state_dict()`` is what the training-state checkpoint stores; at :meth:`write` they also go to
    ``run_settings.json`` beside the models, for evaluation and inference.

    Args:
        settings: config id -> value (plain values: numbers, strings, lists, dicts, None).

    Raises:
        ValueError: a value out of range, naming its config id (:func:`~pgnm_monai.components.check_run_settings`).
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        check_run_settings(settings)
        self.settings = to_jsonable(dict(settings))

    def state_dict(self) -> dict[str, Any]:
        """The settings (plain values, loadable with ``torch.load(..., weights_only=True)``)."""
        return dict(self.settings)

    def write(self, path: str | os.PathLike) -> bool:
        """Write the settings to ``path`` (JSON, atomically; on the main process only); returns True."""
        from pgnm_monai import distributed

        if distributed.is_main_process():
            atomic_write_text(path, json.dumps(self.settings, indent=2, sort_keys=True) + "\n")
        return True


def compare_settings(saved: Mapping[str, Any], current: Mapping[str, Any], source: str) -> None:
    """Refuse a current value that differs from the saved one (``ValueError`` naming the id, both values and
    ``source``); an id of :data:`EXTENDABLE` only warns. Ids present on one side only are not compared."""
    current = to_jsonable(dict(current))
    for key in sorted(set(saved) & set(current)):
        old, new = saved[key], current[key]
        if old == new:
            continue
        if key in EXTENDABLE:
            warnings.warn(
                f"config id {key!r} is {new!r} but {source} was trained with {old!r}; the run goes on with {new!r}"
                + (" (the learning-rate schedules keep their saved state)." if key == "epochs" else "."),
                stacklevel=2,
            )
            continue
        raise ValueError(
            f"config id {key!r} is {new!r} but {source} was trained with {old!r}; give --{key} {json.dumps(old)} "
            "to go on with that run, or start a new run in another bundle_root."
        )


def trained_input_settings(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """What the trained run's network is and sees (:data:`INPUT_SETTINGS`), from ``ckpt_dir/run_settings.json``;
    an id the file lacks (or a model copied without it) is the default of :data:`pgnm_monai.settings.INPUT`."""
    from pgnm_monai.settings import INPUT

    path = os.path.join(os.fspath(ckpt_dir), "run_settings.json")
    saved: dict[str, Any] = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    defaults = {**INPUT.asdict(), "spacing": None}
    return {key: saved.get(key, defaults[key]) for key in INPUT_SETTINGS}


def check_trained_settings(ckpt_dir: str | os.PathLike, settings: Mapping[str, Any]) -> bool:
    """Refuse evaluation or inference settings that differ from the trained run's (``ckpt_dir/run_settings.json``).

    Args:
        ckpt_dir: the trained run's ``models`` folder.
        settings: config id -> value of this stage (:data:`INPUT_SETTINGS`).

    Raises:
        ValueError: naming the id, this stage's value and the trained one.
    """
    path = os.path.join(os.fspath(ckpt_dir), "run_settings.json")
    if not os.path.isfile(path):
        warnings.warn(
            f"{path} does not exist (a model copied without its run): the settings {sorted(settings)} are not "
            "checked against the training run's.",
            stacklevel=2,
        )
        return True
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    compare_settings({k: v for k, v in saved.items() if k in settings}, settings, f"the model in {path}")
    return True


def write_run_settings(
    settings: RunSettings, ckpt_dir: str | os.PathLike, metadata: Mapping[str, Any] | None = None
) -> bool:
    """Write ``settings`` to ``ckpt_dir/run_settings.json`` once training has ended (beside ``class_map.json``; a
    failed run leaves none), for the evaluation and inference of the run's models.

    With ``metadata`` (the bundle's ``metadata.json``, ``@_meta_``), also write ``ckpt_dir/metadata.json``: that
    metadata made the description of this run, its class names and input
    (:func:`pgnm_monai.networks.model_card.run_metadata`), for MONAI's ``verify_net_in_out`` and ``ckpt_export``.
    On the main process only.
    """
    written = settings.write(os.path.join(os.fspath(ckpt_dir), "run_settings.json"))
    from pgnm_monai import distributed

    if metadata and distributed.is_main_process():
        from pgnm_monai.data import load_class_map
        from pgnm_monai.networks.model_card import settings_card, write_run_metadata

        models = os.fspath(ckpt_dir)
        names = load_class_map(os.path.join(models, "class_map.json"))
        card = settings_card(settings.settings, names, os.path.join(models, "model.pt"))
        write_run_metadata(os.path.join(models, "metadata.json"), card, metadata)
    return written
