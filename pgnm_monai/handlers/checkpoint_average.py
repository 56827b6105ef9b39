"""Checkpoint averaging, as the official PGNM release: the mean of the classifier over its last K epochs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from pgnm_monai.atomic_files import atomic_torch_save
from pgnm_monai.handlers.checkpoint import keep_last_epochs
from pgnm_monai.networks.weights import average_state_dicts

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite.distributed", IgniteInfo.OPT_IMPORT_VERSION, min_version)
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["CheckpointAverager"]


class CheckpointAverager:
    """Write ``save_dir/filename``: the mean of ``network``'s state over the last ``last`` epochs.

    After each epoch the network's state is saved to ``save_dir/epochs/model_epoch=N.pt`` (atomically; older
    epochs than the last ``last`` are removed); when the run completes, the epochs on disk (the last ``last`` up to
    this one) are averaged by :func:`~pgnm_monai.networks.average_state_dicts` into ``filename``, atomically. The
    epoch files live on disk, so a resumed run averages the same epochs as an uninterrupted one. Only rank 0
    writes (DDP ranks hold the same weights).

    Args:
        network: the classifier (unwrapped from DDP).
        save_dir: the run's ``models`` folder.
        last: how many final epochs to average (>= 1; the official release: 3).
        filename: the averaged state dict's file name.
    """

    def __init__(self, network: nn.Module, save_dir: str | os.PathLike, last: int = 3, filename: str = "model_avg.pt"):
        if isinstance(last, bool) or not isinstance(last, int) or last < 1:
            raise ValueError(f"config id 'average_last' must be a positive number of epochs (0: off), got {last!r}.")
        self.network = network
        self.save_dir = Path(save_dir)
        self.epochs_dir = self.save_dir / "epochs"
        self.last = last
        self.filename = filename

    def attach(self, engine: Engine) -> None:
        """Save the state after each epoch and write the average when the run completes."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self)

    def epoch_completed(self, engine: Engine) -> None:
        """Save this epoch's state; remove the epochs older than the last ``last`` (and any later than this one,
        left by a run that was interrupted and resumed from an earlier epoch)."""
        if idist.get_rank() != 0:
            return
        epoch = engine.state.epoch
        state = {k: v.detach().cpu() for k, v in self.network.state_dict().items()}
        atomic_torch_save(state, self.epochs_dir / f"model_epoch={epoch}.pt")
        keep_last_epochs(self.epochs_dir, "model", epoch, self.last)

    def __call__(self, engine: Engine) -> None:
        """Average the last ``last`` epochs' states into ``save_dir/filename``."""
        if idist.get_rank() != 0:
            return
        files = keep_last_epochs(self.epochs_dir, "model", engine.state.epoch, self.last)
        epochs = sorted(files)
        if not epochs:
            raise FileNotFoundError(f"{self.epochs_dir} holds no model_epoch=N.pt to average.")
        states = [torch.load(files[e], map_location="cpu", weights_only=True) for e in epochs]
        atomic_torch_save(average_state_dicts(states), self.save_dir / self.filename)
        engine.logger.info(f"{self.save_dir / self.filename}: the mean of epochs {epochs}")
