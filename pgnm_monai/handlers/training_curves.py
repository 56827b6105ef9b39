"""A handler that records a trainer's per-epoch curves: mean loss, classifier weight norm, learning rate."""

from __future__ import annotations

import csv
import math
import os
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from pgnm_monai.data.utils import atomic_write_csv
from pgnm_monai.distributed import is_main_process

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["TrainingCurveWriter"]

COLUMNS = ("epoch", "train_loss", "weight_norm", "lr")


def _loss(output: Any) -> float:
    if isinstance(output, (list, tuple)) and output:  # decollated: every item holds the batch loss
        output = output[0]
    value = output.get("loss") if isinstance(output, dict) else None
    return float(torch.as_tensor(value).detach()) if value is not None else float("nan")


class TrainingCurveWriter:
    """Write one CSV row per epoch: the epoch's mean training loss, the network's weight L2 norm and the lr.

    The loss is the one the trainer back-propagated (for the ``paper`` objective, the scaled loss), so the
    curves show what the optimiser saw. Rows of epochs at or after the first epoch of this run are replaced,
    so a resumed run continues the file. Rank 0 writes; the file is replaced atomically.

    Args:
        network: the trained network (its parameters' global L2 norm is recorded).
        path: the CSV file.
        optimizer: the optimiser whose first group's ``lr`` is recorded (``None``: no lr column value).
    """

    def __init__(self, network: nn.Module, path: str, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.network = network
        self.path = path
        self.optimizer = optimizer
        self.rows: list[dict] = []
        self._losses: list[float] = []

    def attach(self, engine: Engine) -> None:
        """Register on ``EPOCH_STARTED``, ``ITERATION_COMPLETED`` and ``EPOCH_COMPLETED``; read an existing file."""
        if os.path.isfile(self.path):
            with open(self.path, encoding="utf-8", newline="") as f:
                self.rows = [dict(r) for r in csv.DictReader(f)]
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def reset(self, engine: Engine | None = None) -> None:
        self._losses = []

    def collect(self, engine: Engine) -> None:
        self._losses.append(_loss(engine.state.output))

    @torch.no_grad()
    def weight_norm(self) -> float:
        """Global L2 norm of the network's parameters."""
        return math.sqrt(sum(float(p.detach().float().pow(2).sum()) for p in self.network.parameters()))

    def __call__(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        finite = [v for v in self._losses if math.isfinite(v)]
        row = {
            "epoch": epoch,
            "train_loss": sum(finite) / len(finite) if finite else float("nan"),
            "weight_norm": self.weight_norm(),
            "lr": self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else float("nan"),
        }
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch] + [row]
        if is_main_process():
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            atomic_write_csv(self.path, list(COLUMNS), [[r[c] for c in COLUMNS] for r in self.rows])
