"""Every refusal names the culprit and the way out, on the last line (issue 33, item 3), through the entry points a
user runs (``run_bundle`` = the bundles' ``ConfigWorkflow`` in this process, ``load_datalist``,
``LoadMedicalImaged``, the error hook of ``python -m monai.bundle run`` / ``torchrun``).

Kinds (test names): a class map that disagrees with the model's head (evaluate, inference); MedMNIST-style arrays
with a trailing channel axis (1, 3, 4 channels) read as 2D images, an ambiguous layout refused naming both readings
and the option; a single-slice NIfTI in a clinical CSV read as a 2D image; too few training images and a batch of one
for a learned policy refused by bundle id; an npz of object arrays; each rank's reason under torchrun.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from bundle_settings import QUIET

from pgnm_monai.experiments.runner import run_bundle

TINY = {**QUIET, "epochs": 1}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A finished tiny pretrain run (arm none, 1 epoch, the embedded data): ``models/model.pt`` and its class map."""
    root = tmp_path_factory.mktemp("pretrained")
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(root), arm="none", **TINY)
    assert (root / "models" / "model.pt").is_file() and (root / "models" / "class_map.json").is_file()
    return root


# a class map that is not the model's -------------------------------------------------------------------------------


def test_a_class_map_that_disagrees_with_the_head_is_refused_by_name(pretrained, tmp_path):
    """``class_map.json`` lists 3 classes beside a model with a 2-output head: evaluation and inference stop before
    loading, naming the class map, its count, the model and its head's count; nothing is written."""
    from PIL import Image

    from pgnm_monai.data import load_class_map, save_class_map

    root = tmp_path / "copy"
    shutil.copytree(pretrained / "models", root / "models")
    names = load_class_map(root / "models" / "class_map.json")
    save_class_map(root / "models" / "class_map.json", [*names, "extra"])
    message = (
        rf"\S+class_map\.json lists {len(names) + 1} classes .* but the model \S+model\.pt \(config id 'ckpt_path'\) "
        rf"has a head of {len(names)} outputs: the class map is not the model's\. Put the class_map\.json of the run"
    )
    with pytest.raises(ValueError, match=message):
        run_bundle("pgnm_pretrain", "evaluate", bundle_root=os.fspath(root), **QUIET)
    Image.new("L", (32, 32), 90).save(tmp_path / "x.png")
    infer = {"network": "small", "image_size": 32, "input_files": [os.fspath(tmp_path / "x.png")]}
    with pytest.raises(ValueError, match=message):
        run_bundle("pgnm_pretrain", "inference", bundle_root=os.fspath(root), **infer)
    assert not list((root / "eval").glob("*.csv")) and not list((root / "eval").glob("*.json"))
    save_class_map(root / "models" / "class_map.json", names)  # the model's own map: predicted
    run_bundle("pgnm_pretrain", "inference", bundle_root=os.fspath(root), **infer)
    assert (root / "eval" / "inference_predictions.csv").is_file()


# channels last, single slices and object arrays ---------------------------------------------------------------------


def _npz(path: Path, shape: tuple[int, ...], n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 256, (n, *shape), dtype=np.uint8) for s in ("train", "val", "test")}
    labels = {f"{s}_labels": (np.arange(n) % 2)[:, None].astype(np.uint8) for s in ("train", "val", "test")}
    np.savez(path, **arrays, **labels)
    return path


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_medmnist_arrays_with_a_trailing_channel_axis_are_2d_images(tmp_path, channels):
    """``(N, 12, 12, C)`` ``uint8`` (BloodMNIST's layout for C = 3): 2D images of C channels (alpha dropped), read
    channels first in 2D, and refused by name in 3D."""
    from pgnm_monai.data import load_datalist
    from pgnm_monai.transforms import LoadMedicalImaged

    path = _npz(tmp_path / "colour.npz", (12, 12, channels))
    datalist = load_datalist("medmnist", os.fspath(path), split="train")
    assert not datalist.report["is_3d"]
    image = LoadMedicalImaged("image", channels=None)(datalist.items[1])["image"]
    pixels = np.load(path)["train_images"][1]
    expected = pixels[..., :3].transpose(2, 0, 1) if channels > 1 else pixels[None, ..., 0]
    np.testing.assert_allclose(image.numpy(), expected / 255.0, atol=1e-6)
    if channels > 1:
        message = (
            rf"image <array> of shape \(12, 12, {channels}\) is a 2D image with {channels} channels \(channels last\), "
            r"not a volume; give spatial_dims 2"
        )
        with pytest.raises(ValueError, match=message):
            LoadMedicalImaged("image", spatial_dims=3)(datalist.items[0])


def test_a_real_bloodmnist_file_is_read_as_colour_images():
    from pgnm_monai.data import load_datalist
    from pgnm_monai.transforms import LoadMedicalImaged

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist" / "bloodmnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    datalist = load_datalist("medmnist", os.fspath(path), split="val")
    assert not datalist.report["is_3d"] and len(datalist.class_names) == 8
    assert tuple(LoadMedicalImaged("image", channels=None)(datalist.items[0])["image"].shape) == (3, 28, 28)


def test_an_ambiguous_array_names_both_readings_and_the_option(tmp_path):
    """``(N, 4, 4, 3)``: 4 x 4 images of 3 channels or 4 x 4 x 3 volumes: refused naming the array, both readings and
    the option ``layout``; each value of the option reads it its way."""
    from pgnm_monai.data import load_datalist
    from pgnm_monai.transforms import LoadMedicalImaged

    path = _npz(tmp_path / "small.npz", (4, 4, 3))
    message = (
        r"MedMNIST file \S+small\.npz: array 'train_images' of shape \(4, 4, 4, 3\) reads two ways: 4 2D images of "
        r"4 x 4 with 3 channel\(s\) \(channels last\), or 4 volumes of 4 x 4 x 3 voxels; pick one with the dataset "
        r"option 'layout': 'channels_last' or 'volumes'"
    )
    with pytest.raises(ValueError, match=message):
        load_datalist("medmnist", os.fspath(path), split="train")
    with pytest.raises(ValueError, match=message):  # through the bundle, before any training
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "run"), dataset_kind="medmnist",
                   dataset_dir=os.fspath(path), **TINY)  # fmt: skip
    images = load_datalist("medmnist", os.fspath(path), split="train", layout="channels_last")
    assert LoadMedicalImaged("image", channels=None)(images.items[0])["image"].shape == (3, 4, 4)
    volumes = load_datalist("medmnist", os.fspath(path), split="train", layout="volumes")
    assert volumes.report["is_3d"]
    assert LoadMedicalImaged("image", spatial_dims=3)(volumes.items[0])["image"].shape == (1, 4, 4, 3)


def test_an_npz_of_object_arrays_is_refused_by_name(tmp_path):
    from pgnm_monai.data import load_datalist

    path = tmp_path / "objects.npz"
    images = np.empty(2, dtype=object)
    images[:] = [np.zeros((8, 8), np.uint8), np.zeros((9, 9), np.uint8)]
    np.savez(path, train_images=images, train_labels=np.array([0, 1]), allow_pickle=True)
    message = (
        r"MedMNIST file \S+objects\.npz: array 'train_images' holds Python objects \(dtype object\), which are never "
        r"read .*; expected a numeric array"
    )
    with pytest.raises(ValueError, match=message):
        load_datalist("medmnist", os.fspath(path), split="train")
    np.save(tmp_path / "objects.npy", images, allow_pickle=True)
    from pgnm_monai.data.io import read_image

    with pytest.raises(ValueError, match=r"array file \S+objects\.npy holds Python objects \(dtype object\)"):
        read_image(os.fspath(tmp_path / "objects.npy"))


def test_single_slice_volumes_in_a_clinical_csv_are_2d_images(tmp_path):
    """NIfTI files of shape (H, W, 1) listed in a CSV: 2D images (no slice to set); ``slices='none'`` on them is
    refused with advice a CSV user can follow (the option and the bundle id)."""
    import nibabel as nib

    from pgnm_monai.data import load_datalist
    from pgnm_monai.transforms import LoadMedicalImaged

    rows = ["path,label,patient_id"]
    for k in range(6):
        pixels = np.full((10, 12, 1), 20.0 * k, np.float32)
        pixels[2:5, 3:7] = 200
        nib.save(nib.Nifti1Image(pixels, np.eye(4)), tmp_path / f"s{k}.nii.gz")
        rows.append(f"s{k}.nii.gz,{'ab'[k % 2]},P{k}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    items = load_datalist("clinical", os.fspath(tmp_path / "labels.csv"), split="all")
    assert len(items) == 6
    image = LoadMedicalImaged("image", channels=None)(items[0])["image"]
    assert tuple(image.shape) == (1, 10, 12)
    message = (
        r"line 2: \S+s0\.nii\.gz is not a volume \(one slice\); slices='none' .* For 2D images give the dataset "
        r"option slices 'middle' .* spatial_dims 2"
    )
    with pytest.raises(ValueError, match=message):
        load_datalist("clinical", os.fspath(tmp_path / "labels.csv"), split="all", slices="none")
    root = tmp_path / "run"  # through the bundle: trained as 2D images
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(root), dataset_kind="clinical",
               dataset_dir=os.fspath(tmp_path / "labels.csv"), arm="none", **TINY)  # fmt: skip
    assert (root / "models" / "model.pt").is_file()


# too few training images --------------------------------------------------------------------------------------------


def test_too_few_training_images_are_refused_by_bundle_id(tmp_path):
    """One training image (``max_train_items`` 1), and a batch of one for a learned policy: refused before training,
    naming the bundle ids to change, not a DataLoader argument; no model is written."""
    root = tmp_path / "run"
    with pytest.raises(ValueError, match=r"the training split holds 1 image\(s\): too few for a training batch of >= 2 "
                                         r"images .* raise config id 'max_train_items'"):  # fmt: skip
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(root), arm="pgnm", max_train_items=1, **TINY)
    with pytest.raises(ValueError, match=r"config id 'batch_size' is 1 but arm 'pgnm' trains a noise policy, .* give "
                                         r"batch_size >= 2"):  # fmt: skip
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(root), arm="pgnm", **{**TINY, "batch_size": 1})
    assert not list((root / "models").glob("*.pt"))


# each rank's reason under torchrun ----------------------------------------------------------------------------------


def test_each_rank_names_its_reason_on_its_last_line(tmp_path, monkeypatch, capsys):
    """The error hook of a ``torchrun`` rank (``RANK``/``WORLD_SIZE`` set): its last line is ``[rank R of W]`` and the
    project's error under MONAI's wrapper, also written to ``TORCHELASTIC_ERROR_FILE`` for torchrun's summary."""
    import sys

    from pgnm_monai.components.errors import rank_error_line, show_root_error_last

    assert rank_error_line(ValueError("x")) is None  # not under torchrun
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)  # restored after the test
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", os.fspath(tmp_path / "error.json"))
    show_root_error_last()
    try:
        try:
            raise ValueError("config id 'lr' must be > 0,\n got -1.")
        except ValueError as e:
            raise RuntimeError("Failed to instantiate {'_target_': 'x'}") from e
    except RuntimeError as wrapped:
        sys.excepthook(type(wrapped), wrapped, wrapped.__traceback__)
    line = "[rank 1 of 2] ValueError: config id 'lr' must be > 0, got -1."
    assert capsys.readouterr().err.strip().splitlines()[-1] == line
    recorded = json.loads((tmp_path / "error.json").read_text())["message"]
    assert recorded["message"] == line and recorded["extraInfo"]["py_callstack"] == line


@pytest.mark.slow
def test_torchrun_summary_shows_each_rank_reason(tmp_path):
    """Two gloo ranks refused at the start of training (one image for two ranks): each rank's stderr ends with its
    line, and torchrun's summary names the reason of each failed rank."""
    import subprocess
    import sys

    pre = Path(__file__).resolve().parents[1] / "bundles" / "pgnm_pretrain"
    args = {"bundle_root": tmp_path, "max_train_items": 1, **TINY}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle",
           "run", "--config_file", "['configs/train.json','configs/multi_gpu_train.json']", "--logging_file",
           "configs/logging.conf", *[x for k, v in args.items() for x in (f"--{k}", str(v))]]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=pre, capture_output=True, text=True, timeout=240, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    reason = "ValueError: the training split holds 1 image(s) (1 per rank over 2 ranks): too few"
    for rank in (0, 1):
        assert f"[rank {rank} of 2] {reason}" in log, log[-4000:]
    summary = log[log.index("Root Cause") :] if "Root Cause" in log else log[-3000:]
    assert summary.count(reason) >= 1 and "To enable traceback see" not in summary, summary
