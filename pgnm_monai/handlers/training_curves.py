"""A handler that records a trainer's per-epoch curves: mean loss, classifier weight norm, learning rate."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from pgnm_monai.distributed import is_main_process
from pgnm_monai.handlers.epoch_csv import EpochCSV
from pgnm_monai.handlers.training_control import batch_loss

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["TrainingCurveWriter"]

COLUMNS = ("epoch", "train_loss", "weight_norm", "lr")


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
        self.table = EpochCSV(path, COLUMNS)
        self._losses: list[float] = []

    def attach(self, engine: Engine) -> None:
        """Register on ``EPOCH_STARTED``, ``ITERATION_COMPLETED`` and ``EPOCH_COMPLETED``; read an existing file."""
        if is_main_process():
            self.table.load()
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def reset(self, engine: Engine | None = None) -> None:
        self._losses = []

    def collect(self, engine: Engine) -> None:
        self._losses.append(batch_loss(engine.state.output))

    @torch.no_grad()
    def weight_norm(self) -> float:
        """Global L2 norm of the network's parameters."""
        params = [p.detach().float() for p in self.network.parameters()]
        return float(torch.nn.utils.get_total_norm(params, norm_type=2.0)) if params else 0.0

    def __call__(self, engine: Engine) -> None:
        finite = [v for v in self._losses if math.isfinite(v)]
        row = {
            "train_loss": sum(finite) / len(finite) if finite else float("nan"),
            "weight_norm": self.weight_norm(),
            "lr": self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else float("nan"),
        }
        if is_main_process():
            self.table.put(engine.state.epoch, row)
