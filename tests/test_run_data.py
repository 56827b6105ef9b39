"""Inputs are data, runs know their data (issue 33), through the entry points a user runs (``pgnm``, ``run_bundle``,
``load_datalist``, ``LoadMedicalImage``).

Kinds (test names): a ``$`` expression in ``--dataset-options`` of ``pgnm finetune`` and ``pgnm run`` and a data
path starting with ``@`` (or holding ``#``) arrive as the literal strings; an image over the pixel limit (PNG, JPEG,
NIfTI, DICOM, ``.npy``) is refused naming the file and the limit; a resume on added, removed or changed files is
refused naming them (and allowed by ``allow_data_change``), under another package version it warns; one file
listed by two spellings is one item.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from bundle_settings import QUIET

from pgnm_monai.experiments.runner import as_config_literal, make_workflow, run_bundle

TINY = {**QUIET, "epochs": 1}


def _touch_expression(marker: Path) -> str:
    """A ``$`` expression that would create ``marker`` if it were evaluated."""
    return f"$__import__('pathlib').Path({os.fspath(marker)!r}).touch()"


# user values are data ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["@lr", "$1 + 1", "%lr", "data#1/x@y.png", ["@lr", {"k": "#a"}], {"_target_": "os.getcwd"}, {"x": "$1", "y": 2.5}],
    ids=["reference", "expression", "macro", "hash_and_at", "nested", "component", "options"],
)
def test_an_override_value_arrives_as_the_literal(value):
    wf = make_workflow("pgnm_pretrain", "train", dataset_options=value, bundle_root="unused")
    wf.parser.parse()
    assert wf.parser.get_parsed_content("dataset_options") == value


def test_plain_values_are_passed_unchanged():
    assert as_config_literal("runs/main") == "runs/main"
    assert as_config_literal({"slices": "none", "every_k": 2}) == {"slices": "none", "every_k": 2}


def test_a_data_path_starting_with_at_is_a_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config id 'dataset_dir' points to '@lr', which does not exist"):
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), dataset_kind="image_folder",
                   dataset_dir="@lr", **TINY)  # fmt: skip


@pytest.mark.parametrize("command", ["finetune", "run"])
def test_a_dollar_in_dataset_options_of_pgnm_is_not_run(tmp_path, command):
    """``--dataset-options '{"x": "$<code>"}'``: the code does not run; the option is named as an unknown one."""
    from pgnm_monai.cli import main

    marker = tmp_path / "MARKER"
    options = json.dumps({"x": _touch_expression(marker)})
    args = [command, "--output-dir", os.fspath(tmp_path / "out"), "--dataset-options", options]
    if command == "finetune":
        weights = tmp_path / "weights.pt"
        weights.write_bytes(b"not used: the data is refused first")
        args += ["--pretrained", os.fspath(weights)]
    with pytest.raises(TypeError, match="dataset kind .* has no option 'x'"):
        main(args)
    assert not marker.exists(), "a $ expression given as a value was evaluated"


# the pixel limit ---------------------------------------------------------------------------------------------------


def _png_bomb(path: Path, side: int = 16000) -> Path:
    """A valid grey PNG of ``side`` x ``side`` zeros: about 250 KB on disk for 16000 (256 million pixels)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer, row = zlib.compressobj(9), b"\x00" * (side + 1)  # filter byte 0, then the row
    idat = b"".join([*(packer.compress(row) for _ in range(side)), packer.flush()])
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_a_png_bomb_is_refused_by_name_before_decoding(tmp_path, monkeypatch):
    """A 250 KB PNG stating 16000 x 16000 in an image folder: listed, then refused by the loader at the default limit
    (both decoders: TorchCodec's fast path and Pillow's), naming the file, the limit and how to raise it."""
    from PIL import Image

    import pgnm_monai.data.io as image_io
    from pgnm_monai.data import load_datalist
    from pgnm_monai.settings import MAX_IMAGE_PIXELS
    from pgnm_monai.transforms import LoadMedicalImaged

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for k in range(3):
            Image.new("L", (8, 8), 40 * k).save(tmp_path / name / f"{k}.png")
    bomb = _png_bomb(tmp_path / "a" / "bomb.png")
    assert bomb.stat().st_size < 400_000
    items = load_datalist("image_folder", os.fspath(tmp_path), split="all")
    (item,) = [it for it in items if it["image"].endswith("bomb.png")]
    message = (
        rf"image file \S*bomb\.png is 16000 x 16000 = 256,000,000 pixels, over the limit of {MAX_IMAGE_PIXELS:,} "
        r"pixels per image .* raise the limit with the environment variable PGNM_MAX_IMAGE_PIXELS=256000000\.$"
    )
    with pytest.raises(ValueError, match=message):
        LoadMedicalImaged("image")(item)
    monkeypatch.setattr(image_io, "_decode_8bit", lambda path, limit=None: None)  # Pillow's path (no TorchCodec)
    with pytest.raises(ValueError, match=message):
        LoadMedicalImaged("image")(item)


def _over_limit_files(folder: Path) -> dict[str, Path]:
    """One file per reader, each of more than 10,000 pixels (or voxels)."""
    import numpy as np
    import pydicom.data
    from nibabel.testing import data_path
    from PIL import Image

    files = {"dicom": Path(pydicom.data.get_testdata_file("CT_small.dcm")),  # 128 x 128
             "nifti": Path(data_path) / "anatomical.nii"}  # fmt: skip
    for suffix in ("jpg", "bmp", "gif", "tif", "png"):
        files[suffix] = folder / f"big.{suffix}"
        Image.new("RGB" if suffix == "jpg" else "L", (200, 100), 7).save(files[suffix])
    files["npy"] = folder / "big.npy"
    np.save(files["npy"], np.zeros((120, 120), np.float32))
    return files


def test_every_reader_honours_the_pixel_limit(tmp_path, monkeypatch):
    from pgnm_monai.data.io import read_image

    monkeypatch.setenv("PGNM_MAX_IMAGE_PIXELS", "10000")
    for kind, path in _over_limit_files(tmp_path).items():
        with pytest.raises(ValueError, match=rf"{path.name} is [\d x]+ = [\d,]+ pixels, over the limit of 10,000 "
                                             r"pixels per image .*PGNM_MAX_IMAGE_PIXELS="):  # fmt: skip
            read_image(os.fspath(path), "CT", slice_index=0)
        assert read_image(os.fspath(path), "CT", slice_index=0, max_pixels=10**7).ndim == 3, kind
    monkeypatch.setenv("PGNM_MAX_IMAGE_PIXELS", "many")
    with pytest.raises(ValueError, match="environment variable PGNM_MAX_IMAGE_PIXELS is 'many'; give a whole number"):
        read_image(os.fspath(tmp_path / "big.png"))


# a run knows its data and its code ---------------------------------------------------------------------------------


def _image_folder(root: Path, per_class: int = 8) -> Path:
    from PIL import Image

    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            Image.new("L", (16, 16), 20 * k + 100 * c).save(root / name / f"{name}{k}.png")
    return root


def _stopped_run(tmp_path: Path) -> tuple[Path, dict]:
    """A tiny pretrain run on an image folder, stopped after epoch 1 of 2; the arguments to resume it."""
    data = _image_folder(tmp_path / "data")
    args = {**TINY, "arm": "none", "epochs": 2, "dataset_kind": "image_folder", "dataset_dir": os.fspath(data)}
    root = tmp_path / "run"
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(root), stop_epoch=1, **args)
    return root, {**args, "bundle_root": os.fspath(root), "resume": True}


def _recorded(root: Path) -> dict:
    import torch

    return torch.load(root / "models" / "checkpoint_epoch=1.pt", weights_only=True)["record"]


def test_the_training_state_records_its_data_and_versions(tmp_path):
    import pgnm_monai
    from pgnm_monai.experiments.runner import read_json

    root, _ = _stopped_run(tmp_path)
    record = _recorded(root)
    version = read_json(Path(__file__).resolve().parents[1] / "bundles/pgnm_pretrain/configs/metadata.json")["version"]
    assert record["package_version"] == pgnm_monai.__version__ and record["bundle_version"] == version
    assert set(record["data"]) == {"train", "val"} and len(record["data"]["train"]) >= 8
    (path, (size, mtime_ns, _)), *_ = record["data"]["train"].items()
    assert size == os.stat(path).st_size and mtime_ns == os.stat(path).st_mtime_ns


def test_a_resume_on_other_data_is_refused_naming_the_files(tmp_path):
    """A training file removed and another rewritten: refused, naming both; nothing written. With
    ``allow_data_change`` the run goes on, with a warning naming them."""
    from PIL import Image

    root, args = _stopped_run(tmp_path)
    changed, removed = sorted(_recorded(root)["data"]["train"])[:2]
    before = sorted(p.name for p in (root / "models").iterdir())
    Image.new("L", (20, 20), 3).save(changed)
    message = (
        rf"the data differs from the data of the training state \S+checkpoint_epoch=1\.pt: train split: 1 changed "
        rf"\({re.escape(changed)}\)\. Resume on the data .*give --allow_data_change True to go on"
    )
    with pytest.raises(ValueError, match=message):
        run_bundle("pgnm_pretrain", "train", **args)
    os.remove(removed)  # the split is drawn again: other files may move between train and val
    with pytest.raises(ValueError, match=rf"train split: .*removed \([^)]*{re.escape(removed)}"):
        run_bundle("pgnm_pretrain", "train", **args)
    assert sorted(p.name for p in (root / "models").iterdir()) == before
    with pytest.warns(UserWarning, match=r"the data differs .*removed .*allow_data_change is true"):
        run_bundle("pgnm_pretrain", "train", allow_data_change=True, **args)
    assert (root / "models" / "checkpoint_epoch=2.pt").is_file()


def test_a_file_added_to_the_dataset_is_named(tmp_path):
    from PIL import Image

    root, args = _stopped_run(tmp_path)
    for k in range(4):  # some land in train or val, whatever the re-drawn split
        Image.new("L", (16, 16), 7 + k).save(tmp_path / "data" / "a" / f"new{k}.png")
    with pytest.raises(ValueError, match=r"the data differs .* split: \d+ added \([^)]*new\d\.png"):
        run_bundle("pgnm_pretrain", "train", **args)


def test_a_resume_under_another_version_warns(tmp_path, monkeypatch):
    import pgnm_monai

    root, args = _stopped_run(tmp_path)
    monkeypatch.setattr(pgnm_monai, "__version__", "99.0")
    with pytest.warns(UserWarning, match=rf"written by pgnm-monai {_recorded(root)['package_version']} .*this run is "
                                         r"pgnm-monai 99\.0"):  # fmt: skip
        run_bundle("pgnm_pretrain", "train", **args)


# one file, one item ------------------------------------------------------------------------------------------------


def test_one_file_under_several_spellings_is_one_item(tmp_path):
    """A CSV listing one file relatively, absolutely, through ``..`` and through a symbolic link: one item, with a
    warning naming the spellings; a contradicting label under another spelling is refused naming both."""
    import shutil

    import pydicom.data

    from pgnm_monai.data import load_datalist

    (tmp_path / "sub").mkdir()
    shutil.copy(pydicom.data.get_testdata_file("MR_small.dcm"), tmp_path / "mr.dcm")
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    os.symlink(tmp_path / "mr.dcm", tmp_path / "link.dcm")
    rows = ["path,label,patient_id", "mr.dcm,a,P1", f"{tmp_path / 'mr.dcm'},a,P1", "sub/../mr.dcm,a,P1",
            "link.dcm,a,P1", "ct.dcm,b,P2"]  # fmt: skip
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match=r"3 repeated row\(s\) used once: .*mr\.dcm and \S*mr\.dcm \(lines 2 and 3\)"
                                         r".*mr\.dcm and link\.dcm \(lines 2 and 5\)"):  # fmt: skip
        items = load_datalist("clinical", os.fspath(tmp_path / "labels.csv"), split="all")
    assert sorted(os.path.basename(it["image"]) for it in items) == ["ct.dcm", "mr.dcm"]
    (tmp_path / "labels.csv").write_text("\n".join([*rows[:2], "link.dcm,b,P1", rows[-1]]) + "\n")
    with pytest.raises(ValueError, match=r"file 'mr\.dcm' is listed on line 2 with label 'a' and on line 3 \(as "
                                         r"'link\.dcm'\) with label 'b'; give each file one row"):  # fmt: skip
        load_datalist("clinical", os.fspath(tmp_path / "labels.csv"), split="all")


def test_inference_inputs_are_each_file_once(tmp_path, monkeypatch):
    from PIL import Image

    from pgnm_monai.components import inference_items

    Image.new("L", (8, 8), 9).save(tmp_path / "x.png")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"'input_files' lists 1 file\(s\) twice .*'\S+x\.png' \(the file 'x\.png'\)"):
        items = inference_items(["x.png", os.fspath(tmp_path / "x.png")])
    assert [it["image"] for it in items] == ["x.png"]
    # one path, or a folder, is one input (tests/test_predict.py: folders and CSVs): the folder's one image, once
    assert [it["image"] for it in inference_items([os.fspath(tmp_path), "x.png"])] == [os.fspath(tmp_path / "x.png")]


# every refusal names the culprit -----------------------------------------------------------------------------------


def test_a_folder_where_a_file_is_expected_is_named_as_a_folder(tmp_path):
    from pgnm_monai.cli import main

    with pytest.raises(IsADirectoryError, match=r"--pretrained '\S+' is a folder, expected a weight file"):
        main(["finetune", "--pretrained", os.fspath(tmp_path), "--output-dir", os.fspath(tmp_path / "out")])
    with pytest.raises(IsADirectoryError, match=r"config id 'pretrained_ckpt' points to '\S+', which is a folder, "
                                                r"expected a file; run the pretrain bundle first"):  # fmt: skip
        run_bundle("pgnm_finetune", "train", bundle_root=os.fspath(tmp_path / "ft"), pretrained_ckpt=tmp_path, **TINY)
    (tmp_path / "models").mkdir()
    with pytest.raises(IsADirectoryError, match=r"config id 'resume' points to '\S+', which is a folder, expected"):
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "p"), resume=os.fspath(tmp_path), **TINY)


def test_a_split_file_refuses_a_file_name_that_is_not_utf8(tmp_path):
    from PIL import Image

    from pgnm_monai.data import load_datalist

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for k in range(3):
            Image.new("L", (8, 8), 30 * k).save(tmp_path / name / f"{k}.png")
    odd = os.path.join(os.fsencode(tmp_path / "a"), b"caf\xe9.png")  # Latin-1, not UTF-8
    try:
        Image.new("L", (8, 8), 5).save(os.fsdecode(odd))
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take a file name that is not UTF-8")
    split_file = tmp_path / "split.csv"
    with pytest.raises(ValueError, match=r"split file \S+split\.csv cannot record the file \S+caf\\xe9\.png: its name "
                                         r"is not valid UTF-8; rename it"):  # fmt: skip
        load_datalist("image_folder", os.fspath(tmp_path), split="all", split_file=os.fspath(split_file))
    assert not split_file.exists() and not list(tmp_path.glob(".split.csv.*"))


def test_a_negative_split_seed_is_refused_by_id(tmp_path):
    from pgnm_monai.data import load_datalist

    with pytest.raises(ValueError, match=r"the split seed is -1; give a whole number >= 0 \(the bundles' config id "
                                         r"'split_seed'\)"):  # fmt: skip
        load_datalist("embedded", split="train", seed=-1)
    with pytest.raises(ValueError, match=r"config id 'split_seed' must be an integer >= 0, got -1"):
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), split_seed=-1, **TINY)
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


def test_pgnm_demo_refuses_zero_iterations(tmp_path, capsys):
    from pgnm_monai.cli import main
    from pgnm_monai.demo import run_demo

    with pytest.raises(SystemExit) as info:
        main(["demo", "--iterations", "0", "--output-dir", os.fspath(tmp_path)])
    assert info.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .endswith("argument --iterations: expected a whole number >= 1, got '0'")
    )
    with pytest.raises(ValueError, match=r"iterations must be a whole number >= 1 \(REINFORCE steps\), got 0"):
        run_demo(output_dir=os.fspath(tmp_path), iterations=0)
    assert list(tmp_path.iterdir()) == []


def test_a_dicom_without_its_decoder_names_the_package_on_one_line():
    import pydicom.data

    from pgnm_monai.data.io import read_image

    path = pydicom.data.get_testdata_file("JPEGLSNearLossless_16.dcm")
    try:
        read_image(path, "CT")
    except ValueError as e:
        message = str(e)
    else:
        pytest.skip("a JPEG-LS decoder is installed")
    assert "\n" not in message, message
    expected = (
        r"DICOM file \S+JPEGLSNearLossless_16\.dcm is compressed with JPEG-LS .*, which no installed decoder reads; "
        r"install one of: .*pylibjpeg.* \(e\.g\. pip install .*\)\."
    )
    assert re.fullmatch(expected, message), message


# the run lock survives the deletion of its folder ------------------------------------------------------------------


def test_the_run_lock_survives_the_deletion_of_its_folder(tmp_path):
    """A live run holds ``bundle_root``; the folder is deleted and made again: a second run is still refused, naming
    the holder."""
    import shutil
    import subprocess
    import sys

    from pgnm_monai.run_lock import BundleRootInUseError, BundleRunLock

    root = tmp_path / "root"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pgnm_monai.run_lock import BundleRunLock; "
         f"lock = BundleRunLock({os.fspath(root)!r}); lock.acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        shutil.rmtree(root)
        root.mkdir()
        with pytest.raises(BundleRootInUseError, match=rf"bundle_root '\S+root' is in use by another run \(pid "
                                                       rf"{holder.pid} on host"):  # fmt: skip
            BundleRunLock(root).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = BundleRunLock(root)  # the holder's death frees both locks
    assert lock.acquire()
    lock.release()


def test_no_lock_file_stays_after_the_last_holder_releases(tmp_path):
    """Nested holders in one process (the main job around its stages) share the lock: its files stay until the last
    one releases, then none is left, inside the folders or in the temporary folder."""
    from pgnm_monai.run_lock import LOCK_NAME, BundleRunLock, _outside_path

    root = tmp_path / "root"
    outer, inner = BundleRunLock(root, output_dir=root / "eval"), BundleRunLock(root)
    outer.acquire()
    inner.acquire()
    inner.release()
    assert (root / LOCK_NAME).is_file() and (root / "eval" / LOCK_NAME).is_file()
    outer.release()
    assert not list(root.rglob("*.lock")) and not _outside_path(root, ".lock").exists()
    assert outer.acquire()  # taken again: the files are made again
    outer.release()


def test_an_interrupted_bundle_run_leaves_no_lock_file(tmp_path):
    """Ctrl-C (``KeyboardInterrupt``) while the fine-tune bundle loads its weights, the run lock held: released and
    its files removed."""
    import torch

    from pgnm_monai.networks import build_classifier
    from pgnm_monai.networks.weights import on_weights_loaded
    from pgnm_monai.run_lock import _outside_path

    torch.save(build_classifier("small", 1, 4).state_dict(), tmp_path / "small.pt")

    def interrupt(report):
        assert (tmp_path / "ft" / ".pgnm_run.lock").is_file()  # held at this point
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), on_weights_loaded(interrupt):
        run_bundle("pgnm_finetune", "train", bundle_root=os.fspath(tmp_path / "ft"),
                   pretrained_ckpt=os.fspath(tmp_path / "small.pt"), warmup_epochs=0, warmup_start_factor=1.0,
                   **TINY)  # fmt: skip
    assert not list(tmp_path.rglob("*.lock")) and not _outside_path(tmp_path / "ft", ".lock").exists()


# an interrupted pgnm run -------------------------------------------------------------------------------------------


def test_an_interrupted_pgnm_run_names_its_stage_and_leaves_no_earlier_comparison(tmp_path, capsys, monkeypatch):
    """SIGTERM during the pretrain stage of ``pgnm run`` in a folder holding an earlier run's comparison: the stage
    is named, the exit status is 143, and no comparison is left beside the new outputs."""
    import signal

    from pgnm_monai.cli import main
    from pgnm_monai.experiments import runner
    from pgnm_monai.experiments.pipeline import COMPARISON_FILES

    for name in COMPARISON_FILES:
        (tmp_path / name).write_text("an earlier run's\n")

    def terminated(root, **overrides):
        (Path(root) / "models").mkdir(parents=True)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(runner, "pretrain", terminated)
    with pytest.raises(SystemExit) as info:
        main(["run", "--output-dir", os.fspath(tmp_path), "--arms", "none"])
    assert info.value.code == 128 + signal.SIGTERM
    assert re.search(r"\[none\] pretrain: interrupted after [\d.]+ s \(\S+pretrain_none\): SIGTERM; no comparison",
                     capsys.readouterr().out)  # fmt: skip
    assert not [name for name in COMPARISON_FILES if (tmp_path / name).exists()]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_a_file_where_a_folder_is_expected_is_named_as_a_file(tmp_path):
    """A dataset root that exists but is a file: "is a file, expected a folder", not "does not exist"."""
    from PIL import Image

    from pgnm_monai.data import load_datalist

    image = tmp_path / "x.png"
    Image.new("L", (8, 8)).save(image)
    for kind, what in (("image_folder", "image folder root"), ("radimagenet", "RadImageNet root")):
        with pytest.raises(NotADirectoryError, match=rf"{what} \S+x\.png is a file, expected a folder"):
            load_datalist(kind, os.fspath(image), split="train")
        with pytest.raises(FileNotFoundError, match=rf"{what} \S+nothing does not exist"):
            load_datalist(kind, os.fspath(tmp_path / "nothing"), split="train")
