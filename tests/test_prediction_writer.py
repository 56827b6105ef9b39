"""PredictionWriter (a ClassificationSaver subclass) on a tiny SupervisedEvaluator, decollate False and True."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.engines import SupervisedEvaluator
from monai.handlers import ClassificationSaver
from torch import nn

from pgnm_monai.atomic_files import to_jsonable
from pgnm_monai.handlers import PredictionWriter
from pgnm_monai.metrics import metrics_report

CLASSES = ("CT", "MR", "XR")
COLUMNS = [
    "image_path", "patient_id", "slice_index", "frame_index", "modality", "anatomy",
    "label", "label_name", "pred", "pred_name", "prob_CT", "prob_MR", "prob_XR",
]  # fmt: skip
SIZES = (4, 3, 2)  # three batches, the last one smaller


def make_batches(labelled: bool = True) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    batches, k = [], 0
    for b in SIZES:
        idx = list(range(k, k + b))
        k += b
        batches.append(
            {
                "image": torch.randn(b, 1, 8, 8, generator=g),
                "label": torch.tensor([i % 3 for i in idx]) if labelled else torch.full((b,), -1),
                "image_path": [f"/data/img_{i}.png" for i in idx],
                "modality": [("CT", "MR")[i % 2] for i in idx],
                "anatomy": [("head", "chest", "hand")[i % 3] for i in idx],
                "patient_id": [f"p{i // 2}" for i in idx],
                "slice_index": torch.tensor(idx),
                "frame_index": torch.tensor([0] * b),
            }
        )
    return batches


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, len(CLASSES)))


def run_eval(tmp_path, decollate: bool, labelled: bool = True, epochs: int = 1, batches=None):
    batches = batches or make_batches(labelled)
    net = make_net().eval()
    writer = PredictionWriter(output_dir=str(tmp_path), class_names=CLASSES)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=batches,
        network=net,
        epoch_length=len(batches),
        val_handlers=[writer],
        decollate=decollate,
    )
    for _ in range(epochs):
        evaluator.run()
    with torch.no_grad():
        logits = torch.cat([net(b["image"]) for b in batches])
    return writer, batches, logits


def read_rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_is_a_classification_saver():
    writer = PredictionWriter("out", CLASSES)
    assert isinstance(writer, ClassificationSaver)
    assert (writer.output_dir, writer.filename, writer.metrics_filename) == ("out", "predictions.csv", "metrics.json")


@pytest.mark.parametrize("decollate", [False, True])
def test_rows_and_metrics(tmp_path, decollate, caplog):
    with caplog.at_level(logging.INFO, logger="pgnm_monai.handlers.prediction_writer"):
        writer, batches, logits = run_eval(tmp_path, decollate)
    header, rows = read_rows(tmp_path / "predictions.csv")
    assert header == COLUMNS
    assert len(rows) == sum(SIZES)
    probs = np.array([[float(r[f"prob_{c}"]) for c in CLASSES] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, torch.softmax(logits.double(), dim=1).numpy(), atol=1e-6)
    assert [int(r["pred"]) for r in rows] == probs.argmax(axis=1).tolist() == logits.argmax(dim=1).tolist()
    assert [r["pred_name"] for r in rows] == [CLASSES[int(r["pred"])] for r in rows]
    labels = torch.cat([b["label"] for b in batches]).tolist()
    assert [int(r["label"]) for r in rows] == labels
    assert [r["label_name"] for r in rows] == [CLASSES[i] for i in labels]
    meta = {k: [v for b in batches for v in b[k]] for k in ("image_path", "modality", "anatomy", "patient_id")}
    for k, values in meta.items():
        assert [r[k] for r in rows] == values, k
    assert [int(r["slice_index"]) for r in rows] == list(range(sum(SIZES)))
    assert {r["frame_index"] for r in rows} == {"0"}

    expected = metrics_report(labels, logits, {"modality": meta["modality"], "anatomy": meta["anatomy"]}, 3, CLASSES)
    expected["n_items"] = sum(SIZES)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report == json.loads(json.dumps(to_jsonable(expected)))
    assert {"overall", "by_modality", "by_anatomy", "class_names", "n_items"} <= set(report)
    assert writer.report is not None and writer.report["n_items"] == sum(SIZES)
    assert any("evaluation on 9 items: macro-F1" in m for m in caplog.messages)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_decollate_true_and_false_agree(tmp_path):
    run_eval(tmp_path / "a", decollate=False)
    run_eval(tmp_path / "b", decollate=True)
    for name in ("predictions.csv", "metrics.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name


@pytest.mark.parametrize("decollate", [False, True])
def test_inference_labels_write_no_metrics(tmp_path, decollate):
    writer, _, _ = run_eval(tmp_path, decollate, labelled=False)
    header, rows = read_rows(tmp_path / "predictions.csv")
    assert header == COLUMNS and len(rows) == sum(SIZES)
    assert {r["label"] for r in rows} == {"-1"} and {r["label_name"] for r in rows} == {""}
    assert not (tmp_path / "metrics.json").exists()
    assert writer.report is None


def test_missing_label_and_metadata(tmp_path):
    batches = [{"image": b["image"], "image_path": b["image_path"]} for b in make_batches()]
    run_eval(tmp_path, decollate=False, batches=batches)
    header, rows = read_rows(tmp_path / "predictions.csv")
    assert header == COLUMNS and len(rows) == sum(SIZES)
    assert {r["label"] for r in rows} == {"-1"} and {r["modality"] for r in rows} == {""}
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("decollate", [False, True])
def test_second_epoch_replaces_rows(tmp_path, decollate):
    writer, _, _ = run_eval(tmp_path, decollate, epochs=2)
    _, rows = read_rows(tmp_path / "predictions.csv")
    assert len(rows) == sum(SIZES) and len(writer.rows) == sum(SIZES)
    assert json.loads((tmp_path / "metrics.json").read_text())["n_items"] == sum(SIZES)


def test_bad_output_raises(tmp_path):
    writer = PredictionWriter(str(tmp_path), CLASSES)
    with pytest.raises(ValueError, match="'pred'"):
        writer._item_logits(torch.zeros(2, 3))


def _ddp_worker(rank: int, out: str, init: str) -> None:
    import torch.distributed as dist

    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        batches = make_batches()
        mine = batches[:2] if rank == 0 else batches[2:]  # uneven shards: 7 and 2 items
        for decollate in (False, True):  # both paths, one pair of processes
            run_eval(Path(out) / f"decollate_{decollate}", decollate, epochs=2, batches=mine)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gathers_over_gloo_ranks(tmp_path):
    """Two gloo ranks with uneven shards write the one-process run's rows and metrics, decollated or not."""
    import torch.multiprocessing as mp

    out = tmp_path / "out"
    mp.spawn(_ddp_worker, args=(str(out), f"file://{tmp_path / 'rdzv'}"), nprocs=2)
    for decollate in (False, True):
        gathered = out / f"decollate_{decollate}"
        _, rows = read_rows(gathered / "predictions.csv")
        assert [int(r["slice_index"]) for r in rows] == list(range(sum(SIZES)))  # rank 0's rows, then rank 1's
        run_eval(tmp_path / f"single_{decollate}", decollate)
        single = tmp_path / f"single_{decollate}"
        assert (gathered / "predictions.csv").read_text() == (single / "predictions.csv").read_text(), decollate
        assert json.loads((gathered / "metrics.json").read_text())["n_items"] == sum(SIZES)
