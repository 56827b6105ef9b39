"""A handler that writes an evaluator's per-item predictions (CSV) and their metrics (JSON)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor, decollate_batch
from monai.handlers import ClassificationSaver
from monai.utils import ImageMetaKey

from pgnm_monai.atomic_files import atomic_write_csv, atomic_write_text, to_jsonable
from pgnm_monai.data.schema import IMAGE_PATH
from pgnm_monai.metrics import metrics_report, to_probabilities

__all__ = ["PredictionWriter", "unused_name"]

logger = logging.getLogger(__name__)


class PredictionWriter(ClassificationSaver):
    """A :class:`monai.handlers.ClassificationSaver` that writes ``predictions.csv`` with item metadata and
    per-class probabilities, plus ``metrics.json`` (:func:`pgnm_monai.metrics.metrics_report`), atomically.

    Why a subclass: ``ClassificationSaver`` alone keeps only the file name and raw outputs of each item (its
    ``CSVSaver`` writes ``filename,out0,out1,...`` and appends, non-atomically) and computes no metrics.
    Everything else is MONAI's: the event wiring (``attach``: reset on ``EPOCH_STARTED``, ``__call__`` on
    ``ITERATION_COMPLETED``, gather and save on ``EPOCH_COMPLETED``), the rank gathering
    (``evenly_divisible_all_gather`` of the logits, ``string_list_all_gather`` of the metadata) and the save on
    rank 0 only. This class plugs in through the constructor's public hooks: ``batch_transform`` turns each
    item's metadata into one JSON string (carried in ``ClassificationSaver``'s file-name slot, so it is
    gathered as such), ``output_transform`` picks the logits, and the class is its own ``saver``
    (``save_batch`` + ``finalize``), which builds the rows and writes both files.

    Works with ``SupervisedEvaluator(decollate=False)`` (a batched output dict; the bundles' setting) and
    ``decollate=True`` (lists of per-item dicts). Reads the logits from the output's ``pred`` and the item
    metadata (``image_path``, ``patient_id``, ``slice_index``, ``frame_index``, ``modality``, ``anatomy``,
    ``label``) from ``engine.state.batch``. Each epoch replaces both files. Metrics (overall, per modality and
    per anatomy, plus ``n_items``; kept in ``self.report``) are written when every item has a label ``>= 0``
    (so not for inference, label ``-1``). Under ``torch.distributed`` the rows of all ranks are gathered (padded
    duplicates of a ``DistributedSampler`` included) and rank 0 writes.

    Args:
        output_dir: folder of the files.
        class_names: class index -> name.
        filename: CSV name.
        metrics_filename: JSON name (``None``: no metrics file).
        overwrite: ``False``: a file of an earlier run is kept, and this one writes ``<name>_1.csv`` (the next
            unused number, :func:`unused_name`; the metrics file takes the same number); the names are chosen at
            the first write and kept for the later epochs of the run (:attr:`filename`, :attr:`metrics_filename`).
    """

    META = (IMAGE_PATH, "patient_id", "slice_index", "frame_index", "modality", "anatomy")

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        filename: str = "predictions.csv",
        metrics_filename: str | None = "metrics.json",
        overwrite: bool = True,
    ) -> None:
        super().__init__(
            output_dir=output_dir,
            filename=filename,
            batch_transform=self._item_metadata,
            output_transform=self._item_logits,
            name=__name__,  # the module logger
            save_rank=0,
            saver=self,
        )
        self.class_names = [str(c) for c in class_names]
        self.metrics_filename = metrics_filename
        self.overwrite = bool(overwrite)
        self.rows: list[dict] = []  # the last epoch's rows (on the saving rank)
        self.report: dict | None = None

    # --- ClassificationSaver hooks (per iteration) -------------------------------------------------------

    def _item_metadata(self, batch: Any) -> list[dict[str, str]]:
        """``batch_transform``: one ``{filename_or_obj: json(metadata)}`` per item of a batched or decollated batch."""
        keys = (*self.META, "label")
        if isinstance(batch, Mapping):
            items = decollate_batch({k: batch[k] for k in keys if k in batch}, detach=True)
        elif isinstance(batch, Sequence) and all(isinstance(b, Mapping) for b in batch):
            items = [{k: b[k] for k in keys if k in b} for b in batch]
        else:
            raise ValueError(f"PredictionWriter expects a dict batch or a list of per-item dicts, got {type(batch)}.")
        metas = []
        for item in items:
            meta = {k: _plain(item[k]) if k in item else "" for k in self.META}
            meta["label"] = _label(item.get("label"))
            metas.append({ImageMetaKey.FILENAME_OR_OBJ: json.dumps(meta, default=str)})
        return metas

    @staticmethod
    def _item_logits(output: Any) -> torch.Tensor | list[torch.Tensor]:
        """``output_transform``: the ``(B, K)`` logits of a batched output dict, or the per-item ``(K,)`` logits."""
        if isinstance(output, Mapping) and "pred" in output:
            return _plain_tensor(output["pred"])
        if isinstance(output, Sequence) and output and all(isinstance(o, Mapping) and "pred" in o for o in output):
            return [_plain_tensor(o["pred"]) for o in output]
        raise ValueError(
            "PredictionWriter expects the evaluator output to hold 'pred': a batched dict (decollate=False) "
            "or a list of per-item dicts (decollate=True)."
        )

    # --- the saver API of ClassificationSaver (per epoch, on the saving rank, after the gather) -----------

    def save_batch(self, batch_data: torch.Tensor, meta_data: Mapping[str, Any] | None = None) -> None:
        """Build this epoch's rows from the gathered ``(N, K)`` logits and the gathered item metadata."""
        self.rows, self.report = [], None
        metas = [json.loads(m) for m in (meta_data or {}).get(ImageMetaKey.FILENAME_OR_OBJ, [])]
        if len(metas) != len(batch_data):
            raise ValueError(f"PredictionWriter gathered {len(metas)} metadata rows for {len(batch_data)} outputs.")
        if not metas:
            return
        probs = to_probabilities(batch_data)
        for meta, p in zip(metas, probs, strict=True):
            label, pred = int(meta.pop("label")), int(p.argmax())
            row = {k: meta.get(k, "") for k in self.META}
            row.update(
                label=label,
                label_name=self.class_names[label] if 0 <= label < len(self.class_names) else "",
                pred=pred,
                pred_name=self._name_of(pred),
            )
            row.update({f"prob_{self._name_of(c)}": float(v) for c, v in enumerate(p)})
            self.rows.append(row)

    def finalize(self) -> None:
        """Write the CSV and (when every item is labelled) the metrics JSON, atomically."""
        rows = self.rows
        if not rows:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        if not self.overwrite:
            self._choose_unused_names()
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
        self.logger.info(
            f"evaluation on {len(rows)} items: macro-F1 {o['macro_f1']:.4f}, balanced accuracy "
            f"{o['balanced_accuracy']:.4f}, AUROC {o['auroc']:.4f} -> {self.output_dir}"
        )

    def _choose_unused_names(self) -> None:
        """Once per writer: the first numbered names under which no earlier file exists (then overwrite is on)."""
        names = [n for n in (self.filename, self.metrics_filename) if n is not None]
        new = unused_name(self.output_dir, names)
        if new != names:
            self.logger.info(f"{os.path.join(self.output_dir, names[0])} exists: writing {new[0]} beside it")
        self.filename = new[0]
        if self.metrics_filename is not None:
            self.metrics_filename = new[1]
        self.overwrite = True

    def _name_of(self, c: int) -> str:
        return self.class_names[c] if 0 <= c < len(self.class_names) else str(c)


def unused_name(folder: str | os.PathLike, names: Sequence[str]) -> list[str]:
    """``names`` if none exists in ``folder``, else each with the first suffix ``_<n>`` (before the extension,
    ``n`` = 1, 2, ...) under which none exists: files written together keep one number."""
    for n in range(0, 1_000_000):
        new = [_numbered(name, n) for name in names]
        if not any(os.path.exists(os.path.join(folder, name)) for name in new):
            return new
    raise FileExistsError(f"{folder}: no unused name for {list(names)}")


def _numbered(name: str, n: int) -> str:
    if n == 0:
        return name
    stem, ext = os.path.splitext(name)
    return f"{stem}_{n}{ext}"


def _plain_tensor(x: Any) -> torch.Tensor:
    x = torch.as_tensor(x)
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def _plain(v: Any) -> Any:
    """A JSON-ready scalar (or list) from a tensor / numpy value; other values as they are."""
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, (np.ndarray, np.generic)):
        return v.item() if v.size == 1 else v.tolist()
    return v


def _label(v: Any) -> int:
    """An item's class index: ``-1`` when missing; a one-hot / score vector gives its argmax."""
    if v is None:
        return -1
    t = _plain_tensor(v).reshape(-1)
    if t.numel() == 0:
        return -1
    return int(t.argmax()) if t.numel() > 1 else int(t[0])
