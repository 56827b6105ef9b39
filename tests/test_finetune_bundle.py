"""The fine-tune bundle runs on its own, as a model-zoo bundle does (issue 32, item 6): ``bundles/pgnm_finetune`` copied
alone trains, verifies, evaluates, infers and exports through ``python -m monai.bundle``; its configs are real files
kept in step with the pretrain bundle's by :mod:`pgnm_monai.experiments.bundle_sync` (one source for what they
share); a fine-tuned run writes its own ``models/metadata.json``, which MONAI's checks and exports take."""

from __future__ import annotations

import csv
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_settings import TINY
from monai.bundle import ConfigParser
from PIL import Image

from pgnm_monai.experiments import bundle_sync
from pgnm_monai.experiments.runner import bundles_dir, stage_configs

ROOT = Path(__file__).resolve().parents[1]
FT = ROOT / "bundles" / "pgnm_finetune"
CLASSES = ["benign", "malignant"]


def test_finetune_bundle_is_whole_and_in_step_with_the_pretrain_bundle():
    """No file of the fine-tune bundle is a link, no config needs ``../pgnm_pretrain`` (only the default
    ``pretrained_ckpt`` names the pretrain bundle's output beside a run), the configs are in step with the pretrain
    bundle's (``python -m pgnm_monai.experiments.bundle_sync --check``), and the runner's fine-tune stages resolve to
    the bundle's own files."""
    assert not [p for p in FT.rglob("*") if p.is_symlink()]
    for name in bundle_sync.FINETUNE_IDS:
        text = (FT / "configs" / name).read_text()
        assert text.count("../pgnm_pretrain") == (1 if name == "train.json" else 0), name
    assert json.loads((FT / "configs" / "train.json").read_text())["pretrained_ckpt"]["root"] == "@bundle_root"
    found = bundle_sync.differences()
    assert not found, f"the fine-tune's configs lag the pretrain's; run python -m {bundle_sync.__name__}: {found}"
    own = {"train": ["train.json"], "evaluate": ["train.json", "evaluate.json"], "inference": ["inference.json"]}
    for stage, names in own.items():
        runner = ConfigParser.load_config_files([os.fspath(p) for p in stage_configs("pgnm_finetune", stage)])
        bundle = ConfigParser.load_config_files([os.fspath(FT / "configs" / n) for n in names])
        assert runner == bundle, stage


def test_bundle_sync_copies_pretrain_edits_and_keeps_the_finetune_ids(tmp_path, capsys):
    """An edit of the pretrain bundle's configs (a changed value, a new id, a changed copied file, a link) is listed
    by ``--check`` and copied by a sync, which keeps the fine-tune's own ids; a missing fine-tune id is named."""
    bundles = tmp_path / "bundles"
    for name in ("pgnm_pretrain", "pgnm_finetune"):
        shutil.copytree(bundles_dir() / name / "configs", bundles / name / "configs")
    pre, ft = bundles / "pgnm_pretrain" / "configs", bundles / "pgnm_finetune" / "configs"
    train = json.loads((pre / "train.json").read_text())
    train = {**{k: v for k, v in train.items() if k != "seed"}, "flip_prob": 0.3}
    train = dict(list(train.items())[:5] + [("new_id", 1)] + list(train.items())[5:])
    (pre / "train.json").write_text(json.dumps(train, indent=4) + "\n")
    (pre / "logging.conf").write_text((pre / "logging.conf").read_text().replace("INFO", "WARNING"))
    (ft / "inference.json").unlink()
    (ft / "inference.json").symlink_to("../../pgnm_pretrain/configs/inference.json")

    assert bundle_sync.main(["--check", "--bundles-dir", os.fspath(bundles)]) == 1
    found = capsys.readouterr().out.splitlines()
    for line in ("train.json: flip_prob", "train.json: seed", "train.json: new_id", "logging.conf: (whole file)"):
        assert f"differs: pgnm_finetune/configs/{line}" in found, found
    assert any("inference.json" in line for line in found)
    assert bundle_sync.main(["--bundles-dir", os.fspath(bundles)]) == 0
    assert bundle_sync.differences(bundles) == []
    synced = json.loads((ft / "train.json").read_text())
    assert synced["flip_prob"] == 0.3 and "seed" not in synced and list(synced).index("new_id") == 5
    assert synced["arm"] == "none" and synced["lr"] == 0.001 and synced["warmup_epochs"] == 7  # the fine-tune's own
    assert synced["model"]["network"]["_target_"] == "pgnm_monai.components.load_pretrained"
    assert synced["write_run_settings"]["metadata"] == "@_meta_"
    assert (
        not (ft / "inference.json").is_symlink()
        and (ft / "logging.conf").read_bytes() == (pre / "logging.conf").read_bytes()
    )

    del synced["train_datalist"]["few_shot"]
    (ft / "train.json").write_text(json.dumps(synced, indent=4) + "\n")
    with pytest.raises(KeyError, match="has no 'train_datalist#few_shot', a fine-tune id"):
        bundle_sync.differences(bundles)


def _two_class_folder(root: Path) -> Path:
    """``root/{train,val,test}/{benign,malignant}/*.png``: a 2-class image folder (8, 2 and 3 images per class)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 2), ("test", 3)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray((rng.random((20, 20)) * (120 + 100 * c)).astype("uint8")).save(folder / f"{i}.png")
    return root


def _monai_bundle(argv: list[str], cwd: Path, monkeypatch) -> None:
    """``python -m monai.bundle ARGV`` from ``cwd``, in this process (MONAI's ``__main__`` and its command line)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["monai.bundle", *argv])
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # MONAI's ckpt_export scripts the network
@pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")  # MONAI's notice on trusting a config
def test_finetune_bundle_copied_alone_trains_verifies_evaluates_infers_and_exports(tmp_path, monkeypatch):
    """The bundle folder alone (no ``../pgnm_pretrain``) fine-tunes a 2-class run through ``python -m monai.bundle
    run`` (a fresh process, the bundle folder as ``bundle_root``); then, as the bundle's README gives them,
    ``verify_net_in_out`` passes on the run's own ``models/metadata.json`` with no ``_meta_`` override, the
    evaluation and the inference of a folder run, and ``ckpt_export`` embeds the run's class names in the ``.ts``."""
    bundle = tmp_path / "copied" / "pgnm_finetune"
    shutil.copytree(FT, bundle)
    assert not (bundle.parent / "pgnm_pretrain").exists()
    data = _two_class_folder(tmp_path / "data")
    from pgnm_monai.networks import build_classifier

    torch.manual_seed(0)
    torch.save(build_classifier("small", 1, 4).state_dict(), tmp_path / "heated.pt")  # 4 classes: the head is new
    ids = {**TINY, "tensorboard": False, "epochs": 2, "warmup_epochs": 1, "dataset_kind": "image_folder"}
    ids = {**ids, "dataset_dir": os.fspath(data), "pretrained_ckpt": os.fspath(tmp_path / "heated.pt")}
    args = [a for k, v in {"bundle_root": os.fspath(bundle), **ids}.items() for a in (f"--{k}", str(v))]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "['configs/train.json']", *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    meta = json.loads((bundle / "models" / "metadata.json").read_text())
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == 2 and pred["channel_def"] == {"0": "benign", "1": "malignant"}
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32]
    inference = ["--config_file", "configs/inference.json"]
    _monai_bundle(["verify_net_in_out", "network_def", "--meta_file", "models/metadata.json", *inference],
                  bundle, monkeypatch)  # fmt: skip
    evaluate = ["run", "--config_file", "['configs/train.json','configs/evaluate.json']", *args]
    _monai_bundle(evaluate, bundle, monkeypatch)
    report = json.loads((bundle / "eval" / "metrics.json").read_text())
    assert report["overall"]["n"] == 6 and report["class_names"] == CLASSES
    _monai_bundle(["run", *inference, "--input_files", os.fspath(data / "test")], bundle, monkeypatch)
    with open(bundle / "eval" / "inference_predictions.csv") as f:
        assert len(list(csv.DictReader(f))) == 6

    ts = ["--filepath", "models/model.ts", "--ckpt_file", "models/model.pt", "--meta_file", "models/metadata.json"]
    _monai_bundle(["ckpt_export", "network_def", *ts, *inference], bundle, monkeypatch)
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(bundle / "models" / "model.ts", _extra_files=extra)
    embedded = json.loads(extra["metadata.json"])
    assert embedded["class_names"] == CLASSES and embedded["network_data_format"] == meta["network_data_format"]
    assert scripted(torch.zeros(3, 1, 32, 32)).shape == (3, 2)
