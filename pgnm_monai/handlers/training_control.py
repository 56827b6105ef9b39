"""Handlers that control a training run: a progress bar with the running loss, and a stop after an epoch."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["LossProgressBar", "StopAtEpoch", "batch_loss"]

logger = logging.getLogger(__name__)


def batch_loss(output: Any) -> float:
    """The loss of a trainer's output (a batched dict, or decollated items that each hold it); NaN if none."""
    if isinstance(output, (list, tuple)) and output:
        output = output[0]
    value = output.get("loss") if isinstance(output, dict) else None
    return float(torch.as_tensor(value).detach()) if value is not None else float("nan")


class LossProgressBar:
    """An ignite ``ProgressBar`` (tqdm) of a trainer's iterations with the running loss; ``enabled=False``: none.

    A thin switch around ``ignite.handlers.ProgressBar`` so that a bundle id can turn it off.

    Args:
        enabled: attach the bar at all.
        kwargs: arguments of ``ignite.handlers.ProgressBar`` (e.g. ``persist``).
    """

    def __init__(self, enabled: bool = True, **kwargs: Any) -> None:
        self.enabled = bool(enabled)
        self.kwargs = kwargs

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        from ignite.handlers import ProgressBar

        def loss(output: Any) -> dict:
            value = batch_loss(output)
            return {"loss": value} if math.isfinite(value) else {}

        ProgressBar(**self.kwargs).attach(engine, output_transform=loss)


class StopAtEpoch:
    """Terminate the engine after epoch ``epoch`` (an interruption that ``resume`` continues); ``None``: never."""

    def __init__(self, epoch: int | None = None) -> None:
        self.epoch = epoch

    def attach(self, engine: Engine) -> None:
        if self.epoch is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.epoch >= int(self.epoch):
            logger.info(f"stop_epoch={self.epoch}: stopping after epoch {engine.state.epoch}")
            engine.terminate()
