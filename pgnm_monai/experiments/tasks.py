"""The protocol's downstream tasks and pretraining sources: named defaults under ``../shared/data``, or any
dataset given as ``name=kind:path[?option=value&...]``."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgnm_monai.data import parse_options
from pgnm_monai.data.utils import shared_data_dir

__all__ = ["Task", "default_tasks", "parse_task", "pretrain_source", "resolve_tasks"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """A downstream dataset: ``kind`` and ``dataset_dir`` as the bundles take them, plus loader options."""

    name: str
    kind: str | None
    dataset_dir: str | None
    options: dict[str, Any] = field(default_factory=dict)


def parse_task(spec: str) -> Task:
    """``name=kind:path[?option=value&...]`` -> :class:`Task` (``embedded`` alone is the embedded set)."""
    if spec == "embedded":
        return Task("embedded", None, None)
    name, sep, rest = spec.partition("=")
    kind, sep2, path = rest.partition(":")
    if not sep or not sep2 or not name or not kind or not path:
        raise ValueError(f"task {spec!r} must look like name=kind:path[?option=value&...].")
    path, _, query = path.partition("?")
    text = dict(pair.partition("=")[::2] for pair in query.split("&") if pair)
    return Task(name, kind, path, parse_options(kind, text))


def default_tasks(names: Sequence[str], data_dir: Path | None = None) -> list[Task]:
    """The named default tasks from ``../shared/data`` (those whose files are missing are left out, with a warning)."""
    root = Path(data_dir) if data_dir else shared_data_dir()
    known = {
        "embedded": Task("embedded", None, None),
        "breastmnist": Task("breastmnist", "medmnist", str(root / "medmnist" / "breastmnist.npz")),
        "pneumoniamnist": Task("pneumoniamnist", "medmnist", str(root / "medmnist" / "pneumoniamnist.npz")),
        "retinamnist": Task("retinamnist", "medmnist", str(root / "medmnist" / "retinamnist.npz")),
        "adrenalmnist3d": Task(
            "adrenalmnist3d", "medmnist", str(root / "medmnist" / "adrenalmnist3d.npz"), {"slices": "none"}
        ),
        "brain_tumor_mri": Task(
            "brain_tumor_mri",
            "image_folder",
            str(root / "brain_tumor_mri_4class"),
            {"modality": "MR", "anatomy": "brain", "drop_cross_split_duplicates": True},
        ),
    }
    tasks = []
    for name in names:
        if name not in known:
            raise ValueError(f"unknown default task {name!r}; known: {sorted(known)} (or give name=kind:path).")
        task = known[name]
        if task.dataset_dir is not None and not os.path.exists(task.dataset_dir):
            logger.warning("task %s left out: %s does not exist", name, task.dataset_dir)
            continue
        tasks.append(task)
    return tasks


def pretrain_source(name: str, data_dir: Path | None = None) -> tuple[str | None, str | None]:
    """``(dataset_kind, dataset_dir)`` of a profile's named pretraining set: ``embedded``, ``mednist`` (the
    tarball), the name of a MedMNIST file under ``medmnist/`` (e.g. ``adrenalmnist3d``) or ``union`` (the sources
    in the profile's ``pretrain_options``, their paths relative to the data folder)."""
    if name == "embedded":
        return None, None
    root = Path(data_dir) if data_dir else shared_data_dir()
    if name == "union":  # the profile's pretrain_options list the sources, relative to the data folder
        return "union", str(root)
    if name == "mednist":
        path = root / "mednist" / "MedNIST.tar.gz"
        if not path.exists():
            raise FileNotFoundError(
                f"the MedNIST pretraining set is not at {path}; give --pretrain-dir/--pretrain-kind."
            )
        return "mednist", str(path)
    medmnist = root / "medmnist" / f"{name}.npz"
    if medmnist.exists():
        return "medmnist", str(medmnist)
    raise ValueError(
        f"unknown pretraining set {name!r}: use 'embedded', 'mednist', a MedMNIST file name under {root / 'medmnist'}"
        " or --pretrain-dir with a kind."
    )


def resolve_tasks(specs: Sequence[str], data_dir: Path | None = None) -> list[Task]:
    """Tasks from specs: ``name=kind:path[?...]`` (:func:`parse_task`) or default names (:func:`default_tasks`).

    Raises:
        FileNotFoundError: no task is available (the default tasks need ``../shared/data``).
    """
    tasks: list[Task] = []
    for spec in specs:
        tasks += [parse_task(spec)] if "=" in spec else default_tasks([spec], data_dir)
    if not tasks:
        raise FileNotFoundError("no downstream task is available (the default tasks need ../shared/data).")
    return tasks
