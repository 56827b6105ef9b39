"""A handler that writes an evaluator's per-item predictions (CSV) and their metrics (JSON)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from monai.utils import IgniteInfo, min_version, optional_import

from pgnm_monai.data.schema import IMAGE_PATH
from pgnm_monai.data.utils import atomic_write_csv, atomic_write_text, to_jsonable
from pgnm_monai.distributed import is_main_process
from pgnm_monai.metrics import metrics_report, to_probabilities

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["PredictionWriter"]

logger = logging.getLogger(__name__)


class PredictionWriter:
    """Collect per-item predictions of an evaluator and write them (CSV) and their metrics (JSON) atomically.

    Needs ``SupervisedEvaluator(decollate=False)``: reads logits from ``engine.state.output["pred"]`` and the
    item metadata (``image_path``, ``modality``, ``anatomy``, ``patient_id``, ``slice_index``, ``frame_index``,
    ``label``) from ``engine.state.batch``. Metrics (overall, per modality and per anatomy, see
    :func:`pgnm_monai.metrics.metrics_report`) are written when every item has a label ``>= 0``. Under
    ``torch.distributed`` the rows are gathered and rank 0 writes (padded duplicates included).

    Args:
        output_dir: folder of the files.
        class_names: class index -> name.
        filename: CSV name.
        metrics_filename: JSON name (``None``: no metrics file).
    """

    META = (IMAGE_PATH, "patient_id", "slice_index", "frame_index", "modality", "anatomy")

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        filename: str = "predictions.csv",
        metrics_filename: str | None = "metrics.json",
    ) -> None:
        self.output_dir = output_dir
        self.class_names = [str(c) for c in class_names]
        self.filename = filename
        self.metrics_filename = metrics_filename
        self.rows: list[dict] = []
        self.report: dict | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.rows = []

    def collect(self, engine: Engine) -> None:
        output, batch = engine.state.output, engine.state.batch
        if not isinstance(output, dict) or "pred" not in output:
            raise ValueError("PredictionWriter needs SupervisedEvaluator(decollate=False) (a batched output dict).")
        probs = to_probabilities(output["pred"])
        n = len(probs)
        labels = torch.as_tensor(batch.get("label", torch.full((n,), -1))).reshape(-1).tolist()
        for i in range(n):
            row = {}
            for key in self.META:
                values = batch.get(key)
                v = values[i] if values is not None else ""
                row[key] = v.item() if isinstance(v, torch.Tensor) else v
            label = int(labels[i])
            pred = int(probs[i].argmax())
            row.update(
                label=label,
                label_name=self.class_names[label] if 0 <= label < len(self.class_names) else "",
                pred=pred,
                pred_name=self.class_names[pred] if pred < len(self.class_names) else str(pred),
            )
            for c, p in enumerate(probs[i]):
                name = self.class_names[c] if c < len(self.class_names) else str(c)
                row[f"prob_{name}"] = float(p)
            self.rows.append(row)

    def write(self, engine: Engine | None = None) -> None:
        rows = self.rows
        if dist.is_available() and dist.is_initialized():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        if not is_main_process() or not rows:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        header = list(rows[0])
        atomic_write_csv(os.path.join(self.output_dir, self.filename), header, [[r[h] for h in header] for r in rows])
        labels = [r["label"] for r in rows]
        if self.metrics_filename is None or min(labels) < 0:
            return
        prob_cols = [h for h in header if h.startswith("prob_")]
        probs = [[r[c] for c in prob_cols] for r in rows]
        groups = {"modality": [r["modality"] for r in rows], "anatomy": [r["anatomy"] for r in rows]}
        self.report = metrics_report(labels, probs, groups, len(self.class_names), self.class_names)
        self.report["n_items"] = len(rows)
        atomic_write_text(
            os.path.join(self.output_dir, self.metrics_filename), json.dumps(to_jsonable(self.report), indent=2) + "\n"
        )
        o = self.report["overall"]
        logger.info(
            f"evaluation on {len(rows)} items: macro-F1 {o['macro_f1']:.4f}, balanced accuracy "
            f"{o['balanced_accuracy']:.4f}, AUROC {o['auroc']:.4f} -> {self.output_dir}"
        )
