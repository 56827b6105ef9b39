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
    """Two sources: the embedded set capped at 10 items per split, and a clinical CSV (a 4-D NIfTI's time point 0)."""
    spec = {
        "sources": [
            {"kind": "embedded", "max_items": 10},
            {"kind": "clinical", "path": os.path.relpath(clinical_csv, tmp_path), "prefix": "clin",
             "options": {"time_point": 0, "slices": "middle"}},
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
