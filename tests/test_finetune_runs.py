"""``pgnm finetune`` as a user runs it, through the CLI's ``main`` in this process (issue 32): the console line of
what the weights load did, per-channel ``--mean`` / ``--std`` recorded by the run and used by ``pgnm predict``, no
lock file left behind, a finished run refused without ``--overwrite`` and cleared before training with it.

One tiny run (the ``small`` network, 1 epoch, 32 px, the embedded set) serves every test; the tests that change a
run work on a copy."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pgnm_monai.cli import main
from pgnm_monai.networks import build_classifier
from pgnm_monai.run_lock import LOCK_NAME, FinishedRunError, _outside_path

MEAN, STD = ["0.5", "0.4", "0.3"], ["0.2", "0.25", "0.3"]


def finetune_args(weights: Path, out: Path) -> list[str]:
    return [
        "finetune", "--pretrained", os.fspath(weights), "--network", "small", "--in-channels", "3",
        "--mean", *MEAN, "--std", *STD, "--epochs", "1", "--image-size", "32", "--batch-size", "8",
        "--output-dir", os.fspath(out),
    ]  # fmt: skip


def lock_files(folder: Path) -> list[Path]:
    """The lock files of ``folder``'s run: inside it, and the one kept outside it (named by its path)."""
    outside = [_outside_path(p, ".lock") for p in (folder, folder / "models", folder / "eval", folder / "logs")]
    return sorted(folder.rglob("*.lock")) + [p for p in outside if p.exists()]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path, str]:
    """``(run folder, weight file, stdout)`` of ``pgnm finetune`` from 1-channel, 7-class ``small`` weights to a
    3-channel, 4-class network with a per-channel mean and std."""
    root = tmp_path_factory.mktemp("finetune")
    weights = root / "small7.pt"
    torch.save(build_classifier("small", 1, 7).state_dict(), weights)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(finetune_args(weights, root / "run")) == 0
    return root / "run", weights, out.getvalue()


def test_the_console_says_what_the_weights_load_did(run):
    folder, weights, printed = run
    total = len(build_classifier("small", 3, 4).state_dict())
    line = (
        f"weights: {total - 2} of {total} tensors loaded from {weights}; stem adapted from 1 to 3 input channels; "
        "head replaced (7 -> 4 classes)"
    )
    assert line in printed.splitlines()
    assert printed.index(line) < printed.index("| modality |")  # said when loaded, before the results


def test_per_channel_mean_and_std_are_recorded_and_predict_uses_them(run, tmp_path, capsys, monkeypatch):
    """``--mean``/``--std`` per channel land in ``run_settings.json``; ``pgnm predict`` gives the probabilities of
    the run's model on images normalised with them (not with the default one grey value), with a progress bar on
    stderr when it is a terminal."""
    from pgnm_monai.networks.weights import load_checkpoint_file, unwrap_state_dict
    from pgnm_monai.transforms import eval_transforms

    folder = run[0]
    settings = json.loads((folder / "models" / "run_settings.json").read_text())
    mean, std = [float(v) for v in MEAN], [float(v) for v in STD]
    assert (settings["intensity_mean"], settings["intensity_std"]) == (mean, std)
    rng = np.random.default_rng(0)
    paths = [tmp_path / "new" / f"im{i}.png" for i in range(3)]
    paths[0].parent.mkdir()
    for path in paths:
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(path)
    output = tmp_path / "p.csv"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["predict", os.fspath(folder), *map(os.fspath, paths), "--output", os.fspath(output)]) == 0
    assert "Iteration: [1/1] 100%" in capsys.readouterr().err  # ignite's ProgressBar: one batch
    with open(output, newline="") as f:
        rows = list(csv.DictReader(f))
    names = [h[len("prob_") :] for h in rows[0] if h.startswith("prob_")]
    predicted = torch.tensor([[float(r[f"prob_{c}"]) for c in names] for r in rows])

    net = build_classifier("small", 3, len(names))
    net.load_state_dict(unwrap_state_dict(load_checkpoint_file(folder / "models" / "model.pt")))

    def probabilities(**normalisation) -> torch.Tensor:
        chain = eval_transforms(image_size=32, channels=3, **normalisation)
        with torch.no_grad():
            return net.eval()(torch.stack([chain({"image": os.fspath(p)})["image"] for p in paths])).softmax(1)

    torch.testing.assert_close(predicted, probabilities(mean=mean, std=std), atol=1e-4, rtol=0)
    assert not torch.allclose(predicted, probabilities(), atol=1e-4)  # the default values give other ones


def test_no_lock_file_is_left_and_a_finished_run_is_refused(run):
    folder, weights, _ = run
    assert lock_files(folder) == []  # the run ended: its locks are released and removed
    model = (folder / "models" / "model.pt").read_bytes()
    message = (
        rf"--output-dir '{folder}' holds a finished run \(models/model\.pt, eval/metrics\.json\); give --overwrite"
    )
    with pytest.raises(FinishedRunError, match=message):
        main(finetune_args(weights, folder))
    assert (folder / "models" / "model.pt").read_bytes() == model and lock_files(folder) == []


def test_overwrite_deletes_the_old_run_before_training(run, tmp_path, monkeypatch):
    """``--overwrite``: models/, eval/, logs/ (TensorBoard files) and predictions/ are gone when training starts;
    another file of the folder stays."""
    folder = tmp_path / "run"
    shutil.copytree(run[0], folder)
    (folder / "predictions").mkdir(exist_ok=True)
    (folder / "predictions" / "old.csv").write_text("path,prediction\n")
    (folder / "notes.txt").write_text("mine")
    assert list((folder / "logs").glob("events.out.tfevents.*"))
    seen = {}

    def training(bundle_root, *args, **kwargs):
        seen["left"] = sorted(p.name for p in Path(bundle_root).iterdir())
        raise KeyboardInterrupt  # stop before training: what was deleted is what the test reads

    monkeypatch.setattr("pgnm_monai.experiments.finetune.runner.finetune", training)
    with pytest.raises(KeyboardInterrupt):
        main([*finetune_args(run[1], folder), "--overwrite"])
    assert seen["left"] == ["notes.txt"] and lock_files(folder) == []
    assert not (folder / LOCK_NAME).exists()


def test_normalization_is_timms_per_channel_and_mean_std_are_checked_by_flag(run, tmp_path):
    """``--normalization imagenet``: timm's per-channel ImageNet values for 3 channels, their means for 1;
    ``--mean``/``--std`` replace them, and a wrong count or a std <= 0 is refused naming the flag, before any run."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from pgnm_monai.experiments.finetune import input_normalization

    imagenet = (list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD))
    assert input_normalization("imagenet", in_channels=3) == imagenet
    assert input_normalization("imagenet", in_channels=1) == (0.449, 0.226)
    assert input_normalization("imagenet", std=[0.5], in_channels=3) == (imagenet[0], 0.5)
    assert input_normalization(mean=[0.1, 0.2, 0.3], in_channels=3) == ([0.1, 0.2, 0.3], None)  # std: the bundle's
    with pytest.raises(ValueError, match=r"--std must be a finite number > 0 \(or one per channel\), got \[0\.2, 0"):
        input_normalization(std=[0.2, 0.0, 0.2], in_channels=3)
    args = finetune_args(run[1], tmp_path / "new")
    args[args.index("--mean") + 1 : args.index("--std")] = ["0.1", "0.2"]
    with pytest.raises(ValueError, match=r"--mean gives 2 values \[0\.1, 0\.2\] for 3 input channel\(s\); expected 1"):
        main(args)
    assert not (tmp_path / "new").exists()


def test_pgnm_run_refuses_a_finished_stage_folder_before_any_stage(tmp_path):
    """``pgnm run`` into a folder whose stage holds a finished run stops at once, naming it, and leaves it whole."""
    model = tmp_path / "out" / "finetune_none" / "models" / "model.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"earlier run")
    with pytest.raises(
        FinishedRunError, match=r"finetune_none' holds a finished run \(models/model\.pt\); give --overwrite"
    ):
        main(["run", "--output-dir", os.fspath(tmp_path / "out"), "--arms", "none", "--pretrain-epochs", "1"])
    assert model.read_bytes() == b"earlier run"
    assert not (tmp_path / "out" / "pretrain_none").exists()  # refused before the first stage
