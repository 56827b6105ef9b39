"""No silent traps (issue 32, item 4): a warm-up longer than the run is refused by the fine-tune bundle and shortened
with a warning by ``pgnm finetune``; the dataset kind is guessed from the path; a clinical CSV's ``split`` column
is kept. Every file is made here."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_settings import QUIET
from PIL import Image

from pgnm_monai.components.checks import check_warmup
from pgnm_monai.components.data import load_data
from pgnm_monai.data import KINDS, guess_kind, load_datalist
from pgnm_monai.experiments.runner import run_bundle
from pgnm_monai.networks import build_classifier

# ----------------------------------------------------------------------------------------------------- warm-up


def _small_weights(path: Path) -> Path:
    torch.save(build_classifier("small", 1, 4).state_dict(), path)
    return path


def test_check_warmup_refuses_a_warmup_the_run_cannot_finish():
    with pytest.raises(ValueError, match=r"'warmup_epochs' \(7\) must be < 'epochs' \(2\).*15% of 'lr'.*<= 1"):
        check_warmup({"warmup_epochs": 7, "warmup_start_factor": 0.01, "epochs": 2, "lr": 1e-3})
    with pytest.raises(ValueError, match=r"'warmup_epochs' \(3\) must be < 'epochs' \(3\)"):
        check_warmup({"warmup_epochs": 3, "warmup_start_factor": 0.01, "epochs": 3, "lr": 1e-3})
    with pytest.raises(ValueError, match="'warmup_epochs' is 0 with 'warmup_start_factor' 0.01.*1.0"):
        check_warmup({"warmup_epochs": 0, "warmup_start_factor": 0.01, "epochs": 5, "lr": 1e-3})
    with pytest.warns(UserWarning, match="'epochs' is 1 with 'warmup_epochs' 7"):
        assert check_warmup({"warmup_epochs": 7, "warmup_start_factor": 0.01, "epochs": 1}) == pytest.approx(0.01)


def test_check_warmup_logs_the_learning_rate_the_last_epoch_reaches(caplog):
    with caplog.at_level(logging.INFO, logger="pgnm_monai.components.checks"):
        assert check_warmup({"warmup_epochs": 1, "warmup_start_factor": 0.01, "epochs": 2, "lr": 1e-3}) == 1.0
        assert check_warmup({"warmup_epochs": 0, "warmup_start_factor": 1.0, "epochs": 1, "lr": 1e-3}) == 1.0
    assert "the last epoch trains at 1 * lr = 0.001" in caplog.text


def test_finetune_bundle_refuses_the_default_warmup_on_a_two_epoch_run(tmp_path):
    weights = _small_weights(tmp_path / "small.pt")
    with pytest.raises(ValueError, match=r"'warmup_epochs' \(7\) must be < 'epochs' \(2\)"):
        run_bundle(
            "pgnm_finetune", "train", bundle_root=os.fspath(tmp_path / "ft"), pretrained_ckpt=os.fspath(weights),
            epochs=2, **QUIET,
        )  # fmt: skip
    assert not (tmp_path / "ft" / "models" / "model.pt").exists()


@pytest.mark.slow
def test_pgnm_finetune_shortens_the_default_warmup_with_a_warning(tmp_path, monkeypatch):
    from pgnm_monai.cli import main

    weights = _small_weights(tmp_path / "small.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(
        UserWarning, match=r"default warmup_epochs \(7\) is not shorter than --epochs \(2\).*to warmup_epochs 1\."
    ):
        assert main([
            "finetune", "--pretrained", os.fspath(weights), "--network", "small", "--epochs", "2",
            "--image-size", "32", "--batch-size", "8", "--output-dir", "run",
        ]) == 0  # fmt: skip
    assert (tmp_path / "run" / "models" / "model.pt").is_file()
    log = (tmp_path / "run" / "logs" / "train.log").read_text()
    assert "linear warm-up over 1 of 2 epoch(s)" in log and "the last epoch trains at 1 * lr" in log


# ------------------------------------------------------------------------------------------------ guessed kinds


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, dtype=np.uint8)).save(path)
    return path


def test_guess_kind_reads_the_layout(tmp_path):
    for name, kind in (("set.npz", "medmnist"), ("labels.CSV", "clinical"), ("union.json", "union")):
        (tmp_path / name).write_bytes(b"")
        assert guess_kind(tmp_path / name) == kind
    classes = tmp_path / "classes"
    _png(classes / "glioma" / "a.png")
    _png(classes / "notumor" / "b.jpg")
    assert guess_kind(classes) == "image_folder"
    splits = tmp_path / "splits"
    _png(splits / "Training" / "glioma" / "a.png")
    _png(splits / "Testing" / "glioma" / "b.png")
    assert guess_kind(splits) == "image_folder"
    series = tmp_path / "series"
    series.mkdir()
    (series / "slice1.dcm").write_bytes(b"")
    assert guess_kind(series) == "clinical"
    bare = tmp_path / "bare_series"  # DICOM files without a suffix: the DICM marker at byte 128
    bare.mkdir()
    (bare / "IM0001").write_bytes(b"\0" * 128 + b"DICM")
    assert guess_kind(bare) == "clinical"
    labelled = tmp_path / "clinical"
    labelled.mkdir()
    (labelled / "labels.csv").write_text("path,label\n")
    assert guess_kind(labelled) == "clinical"


def test_guess_kind_refuses_what_it_cannot_tell_listing_the_kinds(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    for path in (tmp_path / "empty", tmp_path / "notes.txt"):
        with pytest.raises(ValueError, match="cannot guess the kind of dataset") as e:
            guess_kind(path, "--dataset-kind")
        assert "give --dataset-kind" in str(e.value) and all(k in str(e.value) for k in KINDS)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        guess_kind(tmp_path / "nope.npz")


def test_a_kind_left_out_is_guessed_by_load_datalist_and_load_data(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(tmp_path / "tinymnist.npz", **arrays)
    dl = load_datalist(None, os.fspath(tmp_path / "tinymnist.npz"), split="val")
    assert dl.kind == "medmnist" and len(dl) == 4
    for c in ("glioma", "notumor"):
        for k in range(4):
            _png(tmp_path / "folder" / c / f"{k}.png", 40 * k)
    dl = load_data(None, os.fspath(tmp_path / "folder"), "all")
    assert dl.kind == "image_folder" and dl.class_names == ["glioma", "notumor"] and len(dl) == 8


# ------------------------------------------------------------------------------------------ CSV split column


def _clinical_csv(tmp_path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "patient_id", "split"])
        for k, (label, patient, split, _) in enumerate(rows):
            w.writerow([_png(tmp_path / f"img{k}.png", 30 * k).name, label, patient, split])
    return path


ROWS = [
    ("lesion", "P1", "train", ""),
    ("normal", "P2", "train", ""),
    ("lesion", "P3", "val", ""),
    ("normal", "P4", "VAL", ""),
    ("lesion", "P5", "test", ""),
    ("normal", "P6", " test ", ""),
    ("normal", "P6", "test", ""),
]


def test_a_csv_split_column_is_kept(tmp_path):
    path = _clinical_csv(tmp_path, ROWS)
    patients = {
        split: sorted(it["patient_id"] for it in load_datalist("clinical", os.fspath(path), split=split))
        for split in ("train", "val", "test")
    }
    assert patients == {"train": ["P1", "P2"], "val": ["P3", "P4"], "test": ["P5", "P6", "P6"]}
    assert [it["patient_id"] for it in load_datalist(None, os.fspath(path), split="val", seed=5)] == ["P3", "P4"]


def test_a_csv_split_value_outside_train_val_test_is_refused_naming_the_line(tmp_path):
    path = _clinical_csv(tmp_path, [*ROWS[:2], ("lesion", "P3", "holdout", ""), *ROWS[3:]])
    with pytest.raises(ValueError, match=r"line 4: field 'split' is 'holdout'; expected one of \('train', 'val'"):
        load_datalist("clinical", os.fspath(path), split="train")
    path = _clinical_csv(tmp_path, [*ROWS[:6], ("normal", "P6", "train", "")])
    with pytest.raises(ValueError, match=r"patient 'P6' is in split 'test' on line 7 and in split 'train' on line 8"):
        load_datalist("clinical", os.fspath(path), split="train")
