"""The embedded default dataset and the transform chains (no ../shared needed)."""

from __future__ import annotations

import monai
import numpy as np
import pytest
import torch

from pgnm_monai.data import ITEM_KEYS, load_datalist
from pgnm_monai.data.embedded import EMBEDDED_CLASSES
from pgnm_monai.transforms import eval_transforms, train_transforms


def test_embedded_all_classes_and_schema():
    dl = load_datalist("embedded", split="all")
    assert dl.class_names == EMBEDDED_CLASSES == ["CT", "MR", "US", "X-ray"]
    assert dl.report["missing"] == []
    counts = dl.class_counts()
    assert len(dl) == 39 and counts == {"CT": 6, "MR": 21, "US": 10, "X-ray": 2}, counts
    for it in dl:
        assert set(ITEM_KEYS) <= set(it)
        assert it["modality"] == dl.class_names[it["label"]]
    # slices (NIfTI) and frames (multi-frame DICOM) are both present
    assert any(it["slice_index"] >= 0 for it in dl) and any(it["frame_index"] >= 0 for it in dl)


def test_embedded_default_kind_and_deterministic_patient_split():
    assert load_datalist(None, split="train").items == load_datalist("embedded", split="train").items
    splits = {s: load_datalist("embedded", split=s, seed=0) for s in ("train", "val", "test")}
    pids = {s: {it["patient_id"] for it in dl} for s, dl in splits.items()}
    assert not (pids["train"] & pids["val"]) and not (pids["train"] & pids["test"]) and not (pids["val"] & pids["test"])
    assert sum(len(d) for d in splits.values()) == len(load_datalist("embedded", split="all"))
    assert {it["label"] for it in splits["train"]} == {0, 1, 2, 3}


@pytest.mark.parametrize("channels", [1, 3])
def test_chains_on_every_embedded_item(channels):
    dl = load_datalist("embedded", split="all")
    tt, et = train_transforms(image_size=32, channels=channels), eval_transforms(image_size=32, channels=channels)
    tt.set_random_state(0)
    for it in dl:
        a, b = tt(it), et(it)
        for out in (a, b):
            assert type(out["image"]) is torch.Tensor and out["image"].dtype == torch.float32
            assert tuple(out["image"].shape) == (channels, 32, 32)
            assert torch.isfinite(out["image"]).all()
            assert out["modality"] == it["modality"] and out["label"] == it["label"]


def test_dataset_and_loader_batch():
    dl = load_datalist("embedded", split="train")
    ds = monai.data.Dataset(dl.items, transform=train_transforms(image_size=64, channels=1))
    batch = next(iter(monai.data.DataLoader(ds, batch_size=6, shuffle=False, num_workers=0)))
    assert batch["image"].shape == (6, 1, 64, 64)
    assert batch["label"].dtype == torch.int64 and len(batch["modality"]) == 6


def test_eval_chain_is_deterministic_and_normalised():
    it = load_datalist("embedded", split="all")[0]
    a = eval_transforms(image_size=48, channels=1)(it)["image"]
    b = eval_transforms(image_size=48, channels=1)(it)["image"]
    assert torch.equal(a, b)
    raw = eval_transforms(image_size=48, channels=1, mean=0.0, std=1.0)(it)["image"]
    assert float(raw.min()) >= 0.0 and float(raw.max()) <= 1.0
    np.testing.assert_allclose(a.numpy(), (raw.numpy() - 0.3162) / 0.3213, atol=1e-5)


def test_train_chain_seeded():
    it = load_datalist("embedded", split="all")[0]
    t1, t2 = train_transforms(image_size=32, channels=1), train_transforms(image_size=32, channels=1)
    t1.set_random_state(7)
    t2.set_random_state(7)
    assert torch.equal(t1(it)["image"], t2(it)["image"])
