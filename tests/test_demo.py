"""``pgnm demo``: masks before/after a few REINFORCE steps, on the embedded slices and on whole volumes."""

from __future__ import annotations

import json
import math
import os

import pytest

from pgnm_monai.cli import main
from pgnm_monai.data.utils import shared_data_dir
from pgnm_monai.handlers import STATE_ATTRIBUTES


def _check(out, summary, classes):
    assert summary["classes"] == classes and summary["iterations"] == 3
    assert set(summary["first"]) == set(summary["last"]) == {"loss", *STATE_ATTRIBUTES}
    assert all(math.isfinite(v) for v in summary["last"].values()) and summary["figure"] == str(out / "masks.png")
    assert (out / "masks.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text()) == summary


def test_demo_on_the_embedded_slices(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--output-dir", os.fspath(out), "--image-size", "32", "--grid", "8", "--iterations", "3"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    _check(out, summary, ["CT", "MR", "US", "X-ray"])


def test_demo_on_volumes(tmp_path, capsys):
    adrenal = shared_data_dir() / "medmnist" / "adrenalmnist3d.npz"
    if not adrenal.exists():
        pytest.skip(f"AdrenalMNIST3D is not available at {adrenal} (set PGNM_SHARED_DATA to the shared data folder)")
    out = tmp_path / "demo3d"
    args = ["demo", "--output-dir", os.fspath(out), "--image-size", "16", "--grid", "4", "--iterations", "3"]
    args += ["--spatial-dims", "3", "--dataset-kind", "medmnist", "--dataset-dir", os.fspath(adrenal)]
    assert main([*args, "--dataset-options", '{"slices": "none"}']) == 0
    summary = json.loads(capsys.readouterr().out)
    _check(out, summary, ["normal", "hyperplasia"])
