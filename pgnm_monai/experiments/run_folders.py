"""Where a protocol run keeps each model: the one place its folder and file names are spelled and parsed back.

Under a protocol's ``output_dir`` (:mod:`.protocol`; :mod:`pgnm_monai.benchmarks.preset_curves` uses the same
layout with a preset's name in the arm's place)::

    pretrain/<arm>_seed<seed>/                         a pretrained model (PretrainRun.folder)
    pretrain/<arm>_seed<seed>/models/model.pt          its heated classifier (PretrainRun.model)
    pretrain/<arm>_seed<seed>/models/run_settings.json the bundle ids it was trained with (read_run_settings)
    probe/<task>/<arm>_seed<seed>-<key>.csv            its probe rows on a task (PretrainRun.probe_rows)
    finetune/<task>_n<N>_ft<fseed>_<arm>_seed<seed>/   one fine-tune of it (finetune_folder)

:meth:`PretrainRun.parse` reads ``<arm>_seed<seed>`` back; :func:`pretrain_runs` lists the pretrain folders there.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FINETUNE",
    "PRETRAIN",
    "PROBE",
    "PretrainRun",
    "finetune_folder",
    "pretrain_runs",
    "read_run_settings",
    "run_settings_path",
]

#: the sub-folders of a protocol's output folder.
PRETRAIN, FINETUNE, PROBE = "pretrain", "finetune", "probe"

_NAME = re.compile(r"^(?P<arm>.+)_seed(?P<seed>\d+)$")


@dataclass(frozen=True)
class PretrainRun:
    """One pretrained model of a protocol run: its arm (or, in the preset benchmark, its preset) and seed."""

    arm: str
    seed: int

    @property
    def name(self) -> str:
        """The folder name ``<arm>_seed<seed>``."""
        return f"{self.arm}_seed{int(self.seed)}"

    @classmethod
    def parse(cls, name: str) -> PretrainRun:
        """The run a folder name (:attr:`name`) stands for; ``ValueError`` for another name."""
        match = _NAME.match(name)
        if not match:
            raise ValueError(f"{name!r} is not a pretrain run folder name (<arm>_seed<seed>).")
        return cls(match["arm"], int(match["seed"]))

    def folder(self, output_dir: str | os.PathLike) -> Path:
        """``<output_dir>/pretrain/<arm>_seed<seed>``: the pretrain bundle's ``bundle_root``."""
        return Path(output_dir) / PRETRAIN / self.name

    def model(self, output_dir: str | os.PathLike) -> Path:
        """The heated classifier ``.../models/model.pt``."""
        return self.folder(output_dir) / "models" / "model.pt"

    def probe_rows(self, output_dir: str | os.PathLike, task: str, key: str) -> Path:
        """``<output_dir>/probe/<task>/<arm>_seed<seed>-<key>.csv``: this model's probe rows on ``task``."""
        return Path(output_dir) / PROBE / task / f"{self.name}-{key}.csv"

    def probe_rows_pattern(self) -> str:
        """The glob pattern of this model's probe-row files in a task's folder, whatever their key."""
        return f"{self.name}-*.csv"


def pretrain_runs(output_dir: str | os.PathLike) -> list[tuple[PretrainRun, Path]]:
    """The pretrain folders under ``output_dir`` (sorted by name), each with the run its name stands for; other
    entries of ``pretrain/`` are skipped."""
    found = []
    for path in sorted((Path(output_dir) / PRETRAIN).glob("*_seed*")):
        try:
            found.append((PretrainRun.parse(path.name), path))
        except ValueError:
            continue
    return found


def finetune_folder(output_dir: str | os.PathLike, task: str, n: int, finetune_seed: int, run: PretrainRun) -> Path:
    """``<output_dir>/finetune/<task>_n<N>_ft<fseed>_<arm>_seed<seed>``: one fine-tune of ``run``'s model."""
    return Path(output_dir) / FINETUNE / f"{task}_n{int(n)}_ft{int(finetune_seed)}_{run.name}"


def run_settings_path(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/models/run_settings.json``: where the bundle writes the ids a run was trained with."""
    return Path(run_dir) / "models" / "run_settings.json"


def read_run_settings(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The bundle ids (id -> value) the run in ``run_dir`` was trained with, from its ``models/run_settings.json``.

    Raises:
        FileNotFoundError: naming the file, when the run has none (it did not finish, or predates the file).
    """
    path = run_settings_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: the run's settings are read from it (the pretrain bundle writes it when "
            "training ends); rerun the pretraining of this run."
        )
    return json.loads(path.read_text(encoding="utf-8"))
