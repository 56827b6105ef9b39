"""A test-only ignite handler: the global (all-rank mean) training loss of every iteration, written by rank 0."""

from __future__ import annotations

import json

import torch
from ignite.engine import Events
from monai.handlers import from_engine

from pgnm_monai.distributed import all_reduce_mean, is_main_process


class GlobalLossLog:
    """Record ``all_reduce_mean(loss)`` per iteration; rank 0 writes the list to ``path`` on ``COMPLETED``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.losses: list[float] = []

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def __call__(self, engine) -> None:
        loss = from_engine(["loss"], first=True)(engine.state.output)  # the output is decollated
        self.losses.append(float(all_reduce_mean(torch.as_tensor(loss, dtype=torch.float64))))

    def write(self, engine) -> None:
        if is_main_process():
            with open(self.path, "w") as f:
                json.dump(self.losses, f)
