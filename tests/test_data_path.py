"""The RadImageNet-scale data-path benchmark at tiny scale: its tree is one the loader reads, its measures run.

Timings are not tested (they depend on the machine); they come from ``python -m pgnm_monai.benchmarks.data_path``
(see docs/performance.md).
"""

from __future__ import annotations

import pytest

from pgnm_monai.benchmarks.data_path import class_names, make_tree, measure_listing, measure_throughput
from pgnm_monai.data import load_datalist
from pgnm_monai.transforms import meta_tracking

N, CLASSES = 40, 6
# the benchmark measures torchvision's decoder, which torchvision now deprecates (the project reads with TorchCodec)
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("rin")
    return root, make_tree(root, n=N, size=32, classes=CLASSES, seed=0, processes=2)


def test_class_names_span_radimagenets_layout():
    full = class_names()
    assert len(full) == len(set(full)) == 165
    assert {c.split("__")[0] for c in full} == {"CT", "MR", "US"}
    assert {c.split("__")[0] for c in class_names(3)} == {"CT", "MR", "US"}


def test_the_tree_is_one_the_loader_reads_in_both_layouts(tree):
    root, manifest = tree
    assert manifest["files"] == N and not manifest["reused"]
    full = load_datalist("radimagenet", root / "original", split="all")
    assert full.report["layout"] == "original" and full.report["split_source"] == "csv"
    assert len(full) == N and full.class_names == sorted(class_names(CLASSES))
    assert {it["modality"] for it in full} == {"CT", "MR", "US"}
    assert not (full.report["blank"] or full.report["duplicates"] or full.report["unreadable"])
    for split in ("train", "val", "test"):
        orig = load_datalist("radimagenet", root / "original", split=split, check_defects=False)
        refined = load_datalist("radimagenet", root / "refined", split=split, check_defects=False)
        assert refined.report["layout"] == "refined" and refined.class_names == orig.class_names
        assert sorted(it["label"] for it in orig) == sorted(it["label"] for it in refined)
    assert len(load_datalist("radimagenet", root / "original", split="train", check_defects=False)) >= CLASSES


def test_the_tree_is_kept_and_a_foreign_folder_refused(tree, tmp_path):
    root, manifest = tree
    again = make_tree(root, n=N, size=32, classes=CLASSES, seed=0)
    assert again["reused"] and again["files"] == manifest["files"]
    with pytest.raises(SystemExit, match="holds a tree made with"):
        make_tree(root, n=N + 1, size=32, classes=CLASSES, seed=0)
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(SystemExit, match="holds other files"):
        make_tree(tmp_path, n=N, size=32, classes=CLASSES)
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_the_measures_return_positive_numbers(tree):
    root, _ = tree
    listing = measure_listing(root, rounds=1)
    assert len(listing) == 5 and all(r["median_s"] > 0 and r["items"] > 0 for r in listing)
    items = list(load_datalist("radimagenet", root / "original", split="train", check_defects=False))[:16]
    with meta_tracking(False):
        rows = measure_throughput(items, image_size=16, batch_size=8, rounds=1, warmup=0, workers=(0,),
                                  cache_dir=root / "cache")  # fmt: skip
    paths = [r["path"] for r in rows]
    assert any("CacheDataset" in p for p in paths) and any("memmap" in p for p in paths)
    assert any("ThreadDataLoader" in p for p in paths) and any("decode_png" in p for p in paths)
    assert all(r["img_s"] > 0 and r["min"] <= r["img_s"] <= r["max"] for r in rows)
    assert all((r["build_s"] is not None) == r["path"].startswith("cached") for r in rows)
