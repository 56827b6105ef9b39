"""A handler that keeps the evaluator's metrics of every epoch in one JSON file."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from monai.utils import IgniteInfo, min_version, optional_import

from pgnm_monai.atomic_files import atomic_write_text, to_jsonable
from pgnm_monai.distributed import is_main_process

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["MetricsHistoryWriter"]


class MetricsHistoryWriter:
    """Write the evaluator's metrics of every epoch to a JSON list (atomically, rank 0 only).

    Entries of epochs at or after the first one of this run are replaced, so a resumed run continues the file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.history: list[dict] = []

    def attach(self, engine: Engine) -> None:
        if os.path.isfile(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    self.history = list(json.load(f))
            except (OSError, ValueError):
                self.history = []
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        entry = {"epoch": int(engine.state.epoch), **to_jsonable(dict(engine.state.metrics))}
        self.history = [h for h in self.history if h.get("epoch", 0) < entry["epoch"]] + [entry]
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.history, indent=2) + "\n")
