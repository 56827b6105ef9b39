"""Kind ``union``: several data sources as one labelled set (one label map, prefixes, caps per source), through
``load_datalist``, the pretrain bundle and the CLI's parser."""

from __future__ import annotations

import json
import os

import pytest
import torch
from bundle_settings import QUIET

from pgnm_monai.data import load_datalist
from pgnm_monai.experiments.runner import run_bundle

TINY = QUIET


@pytest.fixture
def union_file(tmp_path, clinical_csv):
    """Two sources: the embedded set capped at 10 items per split, and a clinical CSV (a 4-D NIfTI's time point 0)
    that a flip must not touch."""
    spec = {
        "sources": [
            {"kind": "embedded", "max_items": 10},
            {"kind": "clinical", "path": os.path.relpath(clinical_csv, tmp_path), "prefix": "clin",
             "options": {"time_point": 0, "slices": "middle"}, "flip_allowed": False},
        ]
    }  # fmt: skip
    path = tmp_path / "union.json"
    path.write_text(json.dumps(spec))
    return path


def test_one_label_map_over_the_sources(union_file, clinical_csv):
    names = ["embedded/CT", "embedded/MR", "embedded/US", "embedded/X-ray", "clin/lesion", "clin/normal"]
    clinical = {s: load_datalist("clinical", os.fspath(clinical_csv), split=s, time_point=0) for s in ("train", "all")}
    for split in ("train", "val", "test", "all"):
        dl = load_datalist("union", os.fspath(union_file), split=split)
        assert dl.class_names == names and dl.kind == "union"
        assert all(dl.class_names[it["label"]] == it["label_name"] for it in dl)
        assert dl.report["sources"]["embedded"] == min(10, len(load_datalist("embedded", split=split)))
    train = load_datalist("union", os.fspath(union_file), split="train")
    own = {(it["image"], it["label_name"]) for it in clinical["train"]}
    assert {(it["image"], "clin/" + it["label_name"].split("/")[-1]) for it in train if it["label"] >= 4} <= {
        (i, "clin/" + n) for i, n in own
    }  # the source's own split, its classes renamed
    assert {it["modality"] for it in train if it["label"] < 4} <= {"CT", "MR", "US", "X-ray"}


def test_bad_union_files_are_refused_by_name(tmp_path):
    path = tmp_path / "u.json"
    path.write_text(json.dumps([{"kind": "embedded"}, {"kind": "embedded"}]))
    with pytest.raises(ValueError, match="union source 1 .*prefix 'embedded' is used by an earlier source"):
        load_datalist("union", os.fspath(path))
    path.write_text(json.dumps([{"kind": "embedded", "flip_allowed": "no"}]))
    with pytest.raises(ValueError, match="union source 0 .*'flip_allowed' must be true or false, got 'no'"):
        load_datalist("union", os.fspath(path))
    path.write_text(json.dumps([{"kind": "embedded", "maxitems": 3}]))
    with pytest.raises(TypeError, match="union source 0 .* has no option 'maxitems'; did you mean 'max_items'"):
        load_datalist("union", os.fspath(path))
    with pytest.raises(FileNotFoundError, match="union sources file .*nope.json does not exist"):
        load_datalist("union", os.fspath(tmp_path / "nope.json"))


def test_union_pretrains_through_the_bundle_and_the_cli_takes_it(union_file, tmp_path):
    root = tmp_path / "run"
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(root), arm="none", epochs=1, dataset_kind="union",
               dataset_dir=os.fspath(union_file), **TINY)  # fmt: skip
    assert torch.load(root / "models" / "model.pt", weights_only=True)["fc.weight"].shape[0] == 6
    assert json.loads((root / "models" / "class_map.json").read_text())["class_names"][-1] == "clin/normal"
    from pgnm_monai.cli import build_parser

    args = build_parser().parse_args(["run", "--dataset-kind", "union", "--dataset-dir", os.fspath(union_file)])
    assert args.dataset_kind == "union"
    bench = ["benchmark", "--pretrain-kind", "union", "--pretrain-dir", os.fspath(union_file)]
    assert build_parser().parse_args(bench).pretrain_kind == "union"


def test_a_profile_names_a_union_by_its_sources_under_the_data_folder(tmp_path, clinical_csv):
    """``pretrain: union`` with ``pretrain_options.sources`` relative to the data folder, as a profile gives it."""
    from pgnm_monai.experiments.protocol import pretrain_settings
    from pgnm_monai.experiments.tasks import pretrain_source

    kind, folder = pretrain_source("union", clinical_csv.parent)
    assert (kind, folder) == ("union", os.fspath(clinical_csv.parent))
    sources = [{"kind": "clinical", "path": clinical_csv.name, "options": {"time_point": 0}}, {"kind": "embedded"}]
    from pgnm_monai.experiments.profiles import PROFILES

    cfg = {**PROFILES["micro"], "pretrain": "union", "pretrain_options": {"sources": sources}}
    settings = pretrain_settings(cfg, kind, folder)
    dl = load_datalist(settings["dataset_kind"], settings["dataset_dir"], split="all", **settings["dataset_options"])
    assert dl.class_names[:2] == ["labels/lesion", "labels/normal"] and dl.report["sources"]["embedded"] == 39


def test_a_source_with_left_right_classes_is_never_flipped_in_the_bundle(union_file):
    """``flip_allowed: false`` marks every item of its source; the bundle's flip leaves those items as they are and
    draws the same flips for the others as MONAI's ``RandFlipd``."""
    from monai.transforms import RandFlipd

    from pgnm_monai.experiments.runner import make_workflow
    from pgnm_monai.transforms import RandFlipAllowedd

    train = load_datalist("union", os.fspath(union_file), split="train")
    assert {(it["label_name"].split("/")[0], it["flip_allowed"]) for it in train} == {
        ("embedded", True),
        ("clin", False),
    }
    wf = make_workflow("pgnm_pretrain", "train", bundle_root=os.fspath(union_file.parent / "run"), arm="none",
                       dataset_kind="union", dataset_dir=os.fspath(union_file), flip_prob=1.0, **TINY)  # fmt: skip
    flips = [t for t in wf.parser.get_parsed_content("train#preprocessing").transforms if isinstance(t, RandFlipd)]
    assert len(flips) == 1 and isinstance(flips[0], RandFlipAllowedd) and flips[0].prob == 1.0
    image = torch.arange(12.0).reshape(1, 3, 4)
    flipped = {
        allowed: torch.as_tensor(flips[0]({"image": image, "flip_allowed": allowed})["image"])
        for allowed in (True, False)
    }
    assert torch.equal(flipped[True], image.flip(-1)) and torch.equal(flipped[False], image)
    assert torch.equal(torch.as_tensor(flips[0]({"image": image})["image"]), image.flip(-1))  # no key: may flip
    ours, monais = RandFlipAllowedd("image", prob=0.5, spatial_axis=1), RandFlipd("image", prob=0.5, spatial_axis=1)
    ours.set_random_state(3), monais.set_random_state(3)
    for k in range(40):
        allowed = k % 3 != 0
        a = torch.as_tensor(ours({"image": image, "flip_allowed": allowed})["image"])
        b = torch.as_tensor(monais({"image": image})["image"])
        assert torch.equal(a, b if allowed else image)
