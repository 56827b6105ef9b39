"""Nothing lost, nothing silent: faults of checkpoints, resume, inference, error reporting and data, through the
entry points a user runs (``run_bundle`` = the bundles' ``ConfigWorkflow`` in this process, ``python -m
monai.bundle run``, ``load_datalist``). Each case asserts the error type, the id or file it names, and that no
partial output is left. The kill during a checkpoint write is in ``tests/test_resume.py``.

Kinds (test names): disk full at a checkpoint write; resume with a changed setting (lr, arm, grid, batch size,
split seed) refused, ``epochs`` extended with a warning; evaluation at another image size; inference without
inputs, with an empty list, with a misspelt override, on a locked folder; two roots sharing a ``ckpt_dir``; a
transform error, unknown loader options, bad numbers and malformed options as the last line or the error; task
query values typed; a multi-series DICOM folder, a 4-D NIfTI, EXIF orientation, zero split fractions, a few-shot
subset smaller than the class count, ``intensity_std`` 0.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_settings import QUIET

from pgnm_monai.data import load_datalist
from pgnm_monai.experiments.runner import run_bundle
from pgnm_monai.run_lock import BundleRootInUseError

ROOT = Path(__file__).resolve().parents[1]
PRE = ROOT / "bundles" / "pgnm_pretrain"
TINY = QUIET
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def bundle_cli(config: str, root: Path, **overrides) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--meta_file", "configs/metadata.json"]
    cmd += ["--logging_file", "configs/logging.conf", "--bundle_root", os.fspath(root)]
    for k, v in overrides.items():
        cmd += [f"--{k}", str(v)]
    return subprocess.run(cmd, cwd=PRE, env=ENV, capture_output=True, text=True, timeout=300)


def last_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny pretrain run (arm pgnm, 2 epochs) stopped after epoch 1: its training state is there to resume."""
    root = tmp_path_factory.mktemp("trained")
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(root), arm="pgnm", epochs=2, stop_epoch=1, **TINY)
    assert (root / "models" / "checkpoint_epoch=1.pt").is_file()
    return root


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(root), arm="none", epochs=1, **TINY)
    return root


# checkpoints -----------------------------------------------------------------------------------------------------


def test_disk_full_at_the_run_lock_names_the_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    """ENOSPC while the run lock's holder file (``.pgnm_run.json``) is written at ``initialize``: an ``OSError``
    naming that file, and no zero-byte temporary file left in the run's folder."""
    import pgnm_monai.atomic_files as atomic_files

    real_mkstemp = tempfile.mkstemp

    def full_disk(prefix="", suffix="", dir=None):  # noqa: A002 - tempfile's own keyword
        fd, path = real_mkstemp(prefix=prefix, suffix=suffix, dir=dir)
        if ".pgnm_run.json" in prefix and dir is not None and os.fspath(dir) == os.fspath(tmp_path):
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
        return fd, path

    monkeypatch.setattr(atomic_files.tempfile, "mkstemp", full_disk)
    with pytest.raises(OSError, match=r"No space left on device: \S*\.pgnm_run\.json was not written") as info:
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="none", **TINY)
    assert info.value.errno == errno.ENOSPC
    assert not [p for p in tmp_path.rglob("*.tmp")] and not list(tmp_path.glob(".pgnm_run.json*")), "a file was left"


def test_disk_full_at_a_checkpoint_names_the_file_and_the_run_resumes(tmp_path, monkeypatch):
    """ENOSPC while the epoch-2 training state is written: an ``OSError`` naming that file, the epoch-1 state and
    nothing half-written left; ``--resume True`` then ends the run."""
    import pgnm_monai.atomic_files as atomic_files

    real_mkstemp = tempfile.mkstemp

    def full_disk(prefix="", suffix="", dir=None):  # noqa: A002 - tempfile's own keyword
        fd, path = real_mkstemp(prefix=prefix, suffix=suffix, dir=dir)
        if prefix.startswith(".checkpoint_epoch=2.pt"):
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
        return fd, path

    monkeypatch.setattr(atomic_files.tempfile, "mkstemp", full_disk)
    args = {"arm": "pgnm", "epochs": 3, **TINY}
    with pytest.raises(OSError, match=r"No space left on device: \S*checkpoint_epoch=2\.pt was not written") as info:
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), **args)
    assert info.value.errno == errno.ENOSPC
    models = tmp_path / "models"
    assert (models / "checkpoint_epoch=1.pt").is_file() and not (models / "model.pt").exists()
    assert not [p for p in tmp_path.rglob("*.tmp")], "a temporary file was left"
    monkeypatch.undo()
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), resume=True, **args)
    assert (models / "model.pt").is_file() and sorted(p.name for p in models.glob("checkpoint_*")) == [
        "checkpoint_epoch=3.pt"
    ]


# resume ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, old",
    [({"lr": 0.5}, 0.1), ({"arm": "none"}, "'pgnm'"), ({"grid": 4}, 8), ({"batch_size": 4}, 8), ({"split_seed": 3}, 0)],
    ids=["lr", "arm", "grid", "batch_size", "split_seed"],
)
def test_resume_refuses_a_changed_setting(trained, change, old):
    ((key, new),) = change.items()
    before = sorted(p.name for p in (trained / "models").iterdir())
    args = {"arm": "pgnm", "epochs": 2, **TINY, **change}
    with pytest.raises(ValueError, match=rf"config id '{key}' is {new!r} but the training state \S+checkpoint_epoch=1"
                       rf"\.pt was trained with {old}; give --{key}"):  # fmt: skip
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(trained), resume=True, **args)
    assert sorted(p.name for p in (trained / "models").iterdir()) == before  # nothing written, nothing removed


@pytest.mark.slow
def test_resume_refusal_is_the_last_line_of_the_cli(trained):
    line = last_line(bundle_cli("configs/train.json", trained, resume=True, arm="pgnm", epochs=2, lr=0.5, **TINY))
    assert line.startswith("ValueError: config id 'lr' is 0.5 but the training state"), line


def test_resume_may_extend_epochs_with_a_warning(tmp_path):
    root = os.fspath(tmp_path)
    run_bundle("pgnm_pretrain", "train", bundle_root=root, arm="none", epochs=1, **TINY)
    with pytest.warns(UserWarning, match="config id 'epochs' is 2 but the training state .* was trained with 1"):
        run_bundle("pgnm_pretrain", "train", bundle_root=root, arm="none", epochs=2, resume=True, **TINY)
    assert (tmp_path / "models" / "checkpoint_epoch=2.pt").is_file()


# evaluation and inference ----------------------------------------------------------------------------------------


def test_evaluation_at_another_image_size_is_refused(finished):
    with pytest.raises(ValueError, match=r"config id 'image_size' is 48 but the model in \S+run_settings.json was "
                                         r"trained with 32"):  # fmt: skip
        run_bundle("pgnm_pretrain", "evaluate", bundle_root=os.fspath(finished), **{**TINY, "image_size": 48})
    assert not (finished / "eval" / "predictions.csv").exists()


def test_inference_needs_named_inputs(finished):
    infer = {"bundle_root": os.fspath(finished), "network": "small", "image_size": 32}
    with pytest.raises(ValueError, match="nothing to predict: give config id 'input_files'"):
        run_bundle("pgnm_pretrain", "inference", **infer)
    with pytest.raises(ValueError, match="config id 'input_files' is an empty list"):
        run_bundle("pgnm_pretrain", "inference", input_files=[], **infer)
    assert not (finished / "eval" / "inference_predictions.csv").exists()


@pytest.mark.slow
def test_inference_refuses_a_misspelt_override(finished):
    proc = bundle_cli("configs/inference.json", finished, network="small", image_size=32, input_fils="['a.png']")
    line = last_line(proc)
    assert line.startswith("ValueError: unknown config id 'input_fils'") and "did you mean 'input_files'" in line
    assert not (finished / "eval" / "inference_predictions.csv").exists()


def hold_lock(root: Path, **folders: Path) -> subprocess.Popen:
    """Another process that takes the run locks of ``root`` and ``folders`` (config id -> folder) and keeps them."""
    code = (
        "import json, sys, time\nfrom pgnm_monai.run_lock import BundleRunLock\n"
        "lock = BundleRunLock(sys.argv[1], **json.loads(sys.argv[2]))\nlock.acquire()\nprint('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    args = [os.fspath(root), json.dumps({k: os.fspath(v) for k, v in folders.items()})]
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_inference_waits_for_no_one_on_a_locked_folder(finished, tmp_path):
    holder = hold_lock(tmp_path / "other", output_dir=finished / "eval")
    try:
        with pytest.raises(BundleRootInUseError, match=rf"output_dir '{finished / 'eval'}' is in use by another run"):
            run_bundle("pgnm_pretrain", "inference", bundle_root=os.fspath(finished), network="small",
                       image_size=32, dataset_kind="embedded")  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert not (finished / "eval" / "inference_predictions.csv").exists()


def test_two_roots_cannot_share_a_checkpoint_folder(tmp_path):
    shared = tmp_path / "shared_models"
    holder = hold_lock(tmp_path / "a", ckpt_dir=shared)  # a live run of root a writes its models there
    try:
        with pytest.raises(BundleRootInUseError, match=rf"ckpt_dir '{shared}' is in use by another run"):
            run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "b"), ckpt_dir=os.fspath(shared),
                       arm="none", epochs=1, **TINY)  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert not list(shared.glob("*.pt"))


# errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_unreadable_image_during_training_is_the_last_line(tmp_path):
    """A file that passes the loader (validation off) and fails in the transform chain: the project's message,
    naming the file, is the last line, not MONAI's ``applying transform <object at 0x...>``."""
    import pydicom.data

    whole = Path(pydicom.data.get_testdata_file("MR_small.dcm")).read_bytes()
    rows = []
    for k in range(8):  # half of each class cut short: some land in train or val whatever the split
        (tmp_path / f"cut{k}.dcm").write_bytes(whole[:2000] if k % 2 else whole)
        rows.append([f"cut{k}.dcm", "ab"[k // 4], f"P{k}"])
    labels = _labels(tmp_path, rows)
    proc = bundle_cli("configs/train.json", tmp_path / "run", arm="none", epochs=1, dataset_kind="clinical",
                      dataset_dir=labels, dataset_options="{'validate': False}", **TINY)  # fmt: skip
    line = last_line(proc)
    assert line.startswith("ValueError: DICOM file") and "cut" in line and "applying transform" not in line, line


@pytest.mark.slow
def test_unknown_loader_option_is_named_with_a_suggestion(tmp_path):
    line = last_line(bundle_cli("configs/train.json", tmp_path, arm="none", dataset_options="{'max_per_volme': 2}"))
    assert line == (
        "TypeError: dataset kind 'embedded' has no option 'max_per_volme'; did you mean 'max_per_volume'? "
        "Its options: ['fractions', 'max_per_volume']."
    )
    with pytest.raises(TypeError, match="dataset kind 'clinical' has no option 'slice'; did you mean 'slices'"):
        load_datalist("clinical", os.fspath(tmp_path), slice="none")


@pytest.mark.parametrize(
    "override, message",
    [
        ({"lr": float("inf")}, "config id 'lr' must be a finite number > 0, got inf"),
        ({"val_batch_size": 0}, "config id 'val_batch_size' must be an integer >= 1, got 0"),
        ({"max_train_items": 0}, "config id 'max_train_items' must be an integer >= 1, got 0"),
        ({"intensity_std": 0.0}, "config id 'intensity_std' must be a finite number > 0, got 0.0"),
        ({"dataset_options": "{slices: none"}, "config id 'dataset_options' must be a mapping"),
    ],
    ids=["lr_inf", "val_batch_size_0", "max_train_items_0", "intensity_std_0", "malformed_dataset_options"],
)
def test_bad_numbers_and_options_are_refused_by_id(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="none", **{**TINY, **override})
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


def test_task_query_values_take_the_options_types():
    from pgnm_monai.experiments.tasks import parse_task

    task = parse_task("brain=clinical:/data/labels.csv?every_k=2&validate=false&fractions=0.7,0.15,0.15&slices=all")
    assert task.options == {"every_k": 2, "validate": False, "fractions": (0.7, 0.15, 0.15), "slices": "all"}
    with pytest.raises(ValueError, match="option 'every_k' of dataset kind 'clinical' must be int .*got 'two'"):
        parse_task("brain=clinical:/data/labels.csv?every_k=two")
    with pytest.raises(TypeError, match="no option 'evry_k'; did you mean 'every_k'"):
        parse_task("brain=clinical:/data/labels.csv?evry_k=2")


# data ------------------------------------------------------------------------------------------------------------


def _labels(folder: Path, rows: list[list[str]]) -> Path:
    path = folder / "labels.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "patient_id"], *rows])
    return path


def test_a_folder_of_two_dicom_series_is_refused(tmp_path):
    import pydicom
    import pydicom.data

    base = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    folder = tmp_path / "two_series"
    folder.mkdir()
    for k, (series, orientation) in enumerate([("1.2.3.1", "axial"), ("1.2.3.1", "axial"), ("1.2.3.2", "sagittal")]):
        ds = base.copy()
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.InstanceNumber = series, orientation, k + 1
        ds.save_as(folder / f"s{k}.dcm")
    labels = _labels(
        tmp_path, [[os.fspath(folder), "a", "P1"], [pydicom.data.get_testdata_file("MR_small.dcm"), "b", "P2"]]
    )
    with pytest.raises(ValueError, match=r"DICOM series folder \S*two_series holds 2 series \(SeriesInstanceUID "
                                         r"1\.2\.3\.1 e\.g\. s0\.dcm; 1\.2\.3\.2 e\.g\. s2\.dcm\)"):  # fmt: skip
        load_datalist("clinical", os.fspath(labels), split="all", slices="all")
    from pgnm_monai.data.io import read_image  # the reader checks the datasets it reads (validation off, items)

    with pytest.raises(ValueError, match=r"DICOM series folder \S*two_series holds 2 series"):
        read_image(os.fspath(folder), "CT", slice_index=0)


def test_a_4d_nifti_needs_its_time_point(tmp_path):
    from nibabel.testing import data_path

    four_d = os.fspath(Path(data_path) / "example4d.nii.gz")
    labels = _labels(tmp_path, [[four_d, "a", "P1"], [os.fspath(Path(data_path) / "anatomical.nii"), "b", "P2"]])
    with pytest.raises(ValueError, match=r"example4d\.nii\.gz \(CSV line 2\) is 4-D \(128, 96, 24, 2\) .*'time_point' "
                                         r"\(0\.\.1\)"):  # fmt: skip
        load_datalist("clinical", os.fspath(labels), split="all")
    first, second = (load_datalist("clinical", os.fspath(labels), split="all", time_point=t) for t in (0, 1))
    assert [it["frame_index"] for it in first if "example4d" in it["image"]] == [0]
    from pgnm_monai.data.io import read_image

    a, b = (read_image(four_d, "MR", slice_index=12, frame_index=t) for t in (0, 1))
    assert a.shape == b.shape == (1, 128, 96) and not np.array_equal(a, b)
    with pytest.raises(ValueError, match=r"example4d\.nii\.gz is 4-D .* set the item's 'frame_index' \(0\.\.1\)"):
        read_image(four_d, "MR", slice_index=12)


def test_exif_orientation_is_one_rule_for_both_decoders(tmp_path, monkeypatch):
    from PIL import Image

    from pgnm_monai.data import io

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = os.fspath(tmp_path / "rotated.jpg")
    image.save(path, exif=exif, quality=100)
    fast = io.read_image(path)
    monkeypatch.setattr(io, "_has_codec", False)  # Pillow's path
    slow = io.read_image(path)
    assert fast.shape == slow.shape == (3, 40, 20)  # as a viewer shows it
    np.testing.assert_allclose(fast, slow, atol=2 / 255)


def test_zero_split_fractions_are_honoured():
    every = load_datalist("embedded", split="all")
    train = load_datalist("embedded", split="train", fractions=(1.0, 0.0, 0.0))
    assert len(train) == len(every)
    assert len(load_datalist("embedded", split="val", fractions=(0.8, 0.0, 0.2))) == 0
    assert len(load_datalist("embedded", split="test", fractions=(0.8, 0.2, 0.0))) == 0


def test_a_few_shot_subset_smaller_than_the_class_count_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"config id 'few_shot' \(3\) is smaller than the 4 classes of dataset "
                                         r"'embedded'"):  # fmt: skip
        run_bundle("pgnm_finetune", "train", bundle_root=os.fspath(tmp_path), few_shot=3, pretrained_ckpt=None,
                   epochs=1, **TINY)  # fmt: skip
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").glob("*.pt"))


def test_intensity_std_zero_is_refused_by_the_chains():
    from pgnm_monai.transforms import eval_transforms

    with pytest.raises(ValueError, match=r"config id 'intensity_std'\) must be a finite number > 0, got 0"):
        eval_transforms(image_size=32, channels=1, mean=0.0, std=0)


def test_the_training_state_records_its_settings(trained):
    state = torch.load(trained / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert state["settings"]["arm"] == "pgnm" and state["settings"]["lr"] == 0.1 and state["settings"]["grid"] == 8
