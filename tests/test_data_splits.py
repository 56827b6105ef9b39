"""Patient-level splits and nested, stratified, seeded few-shot subsets."""

from __future__ import annotations

from collections import Counter

import pytest

from pgnm_monai.data import few_shot_subset, make_item
from pgnm_monai.data.few_shot import few_shot_subsets
from pgnm_monai.data.utils import split_by_group


def _items(n_patients=60, slices=5, n_classes=3):
    items = []
    for p in range(n_patients):
        lab = p % n_classes if p < 45 else 0  # imbalanced
        for s in range(slices):
            items.append(make_item(f"/x/p{p}.nii", lab, f"c{lab}", "MR", "brain", f"P{p}", slice_index=s))
    return items


def test_split_by_group_never_splits_a_patient():
    items = _items()
    assign = split_by_group([i["patient_id"] for i in items], [i["label"] for i in items], seed=5)
    where: dict[str, set] = {}
    for it, s in zip(items, assign, strict=True):
        where.setdefault(it["patient_id"], set()).add(s)
    assert all(len(v) == 1 for v in where.values())
    c = Counter(assign)
    assert set(c) == {"train", "val", "test"} and c["train"] > c["val"] > 0
    # stratified: every class has patients in every split
    for lab in range(3):
        assert {s for it, s in zip(items, assign, strict=True) if it["label"] == lab} == {"train", "val", "test"}


def test_split_by_group_seeded():
    items = _items()
    g, y = [i["patient_id"] for i in items], [i["label"] for i in items]
    assert split_by_group(g, y, seed=1) == split_by_group(g, y, seed=1)
    assert split_by_group(g, y, seed=1) != split_by_group(g, y, seed=2)


def test_few_shot_nested_stratified_seeded():
    items = [make_item(f"/x/{i}.png", i % 4 if i < 300 else 0, "c", "CT", patient_id=str(i)) for i in range(400)]
    share = Counter(it["label"] for it in items)
    subsets = few_shot_subsets(items, (16, 32, 64, 128, 256), seed=3)
    prev: list = []
    for n, sub in subsets.items():
        assert len(sub) == n and len({id(x) for x in sub}) == n
        ids = [x["patient_id"] for x in sub]
        assert ids[: len(prev)] == prev  # the 16 are the first 16 of the 32, ...
        prev = ids
        counts = Counter(x["label"] for x in sub)
        for lab, tot in share.items():
            assert abs(counts[lab] - n * tot / len(items)) <= 1.0 + 1e-9, (n, lab, counts)
    assert few_shot_subset(items, 32, seed=3) == subsets[32]
    assert few_shot_subset(items, 32, seed=3) == few_shot_subset(items, 32, seed=3)
    assert few_shot_subset(items, 32, seed=4) != few_shot_subset(items, 32, seed=3)


def test_few_shot_every_class_present_when_possible():
    items = [make_item(f"/x/{i}.png", 0 if i < 95 else 1 + (i % 5), "c", "US", patient_id=str(i)) for i in range(100)]
    sub = few_shot_subset(items, 16, seed=0)
    assert {x["label"] for x in sub} == {0, 1, 2, 3, 4, 5}


def test_few_shot_too_many():
    with pytest.raises(ValueError, match="n must be in"):
        few_shot_subset(_items(2, 1), 5)


def test_pixel_hash_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    """Loading a tree again decodes each image once per process; a rewritten file is decoded again."""
    import os

    import numpy as np
    from PIL import Image

    from pgnm_monai.data import image_folder, io

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    calls = []
    real = io._read_pil
    monkeypatch.setattr(io, "_read_pil", lambda p: calls.append(p) or real(p))
    first = image_folder.image_pixel_hash(str(path))
    assert image_folder.image_pixel_hash(str(path)) == first and len(calls) == 1
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(path)
    os.utime(path, ns=(1, 1))  # a new modification time even on coarse clocks
    assert image_folder.image_pixel_hash(str(path)) != first and len(calls) == 2
