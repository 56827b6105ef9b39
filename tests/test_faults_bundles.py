"""Fault injection through the bundles' public entry points: ``python -m monai.bundle run`` (subprocess),
``pgnm_monai.experiments.runner.run_bundle`` / ``make_workflow`` (the same ``ConfigWorkflow``, in this process)
and the ``pgnm`` CLI (``pgnm_monai.cli.main``). Each case asserts the error type (or exit status and last line),
the id, folder or file named in the message, and that no partial output (``model.pt``, ``eval/`` files) is left.

Kinds covered (test ids):

1. ``lock_held``: a second run on a ``bundle_root`` that a live process holds -> ``BundleRootInUseError`` naming
   the folder and the holder's pid; nothing written.
2. ``lock_stale``: the lock of a SIGKILLed holder does not block the next run (which completes).
3. ``bundle_root_is_file``: ``bundle_root`` is a regular file -> ``PermissionError`` naming ``bundle_root``.
4. ``readonly_models`` (CLI): a read-only ``models/`` -> refused before training, last line names ``ckpt_dir``.
5. ``readonly_eval``: a read-only ``eval/`` -> refused before training, names ``output_dir``.
6. ``nan_input_pgnm``: NaN images (``intensity_mean`` NaN), arm ``pgnm`` -> ``FloatingPointError`` with the
   epoch, the iteration and the files; no ``model.pt``/``policy.pt``.
7. ``diverging_none``: ``lr`` 1e30, arm ``none`` -> ``FloatingPointError`` (non-finite output) with the epoch,
   iteration and files; ``models/`` and ``eval/`` empty.
8. ``diverging_pgnm``: ``lr`` 1e30, arm ``pgnm`` (the noise policy fails first) -> its ``FloatingPointError`` with
   the epoch, iteration and files added.
9. ``truncated_resume``: ``--resume True`` on a truncated ``checkpoint_epoch=N.pt`` -> ``ValueError`` naming
   ``resume`` and the path, at initialisation; the file is kept.
10. ``resume_not_a_training_state``: ``resume`` points to a ``model.pt`` -> ``ValueError`` naming what it lacks.
11. ``resume_nothing``: ``resume`` true in an empty folder -> ``FileNotFoundError`` naming ``resume``.
12. ``garbage_pretrained``: a fine-tune ``pretrained_ckpt`` of random bytes -> ``ValueError`` naming the id and path.
13. ``garbage_eval_ckpt``: evaluation of a garbage ``models/model.pt`` -> ``ValueError`` naming ``ckpt_path``.
14. ``unknown_id``, ``unknown_section``, ``unknown_list_item``: override ids the configs do not define ->
    ``ValueError`` naming the id and the closest defined ids (``run_bundle``).
15. ``unknown_id_cli`` (CLI): the same through ``python -m monai.bundle run`` -> last line names it.
16. ``bad_arm``, ``bad_objective``: -> ``ValueError`` naming the config id and the allowed values.
17. ``pgnm_unknown_option``, ``pgnm_bad_arm``: the ``pgnm`` CLI refuses them (exit status 2, named).
18. ``pgnm_missing_dataset``: ``pgnm run --dataset-dir`` of a missing folder -> ``FileNotFoundError`` naming
    ``dataset_dir`` (not MONAI's wrapper); no comparison written.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bundle_settings import QUIET

from pgnm_monai.components import root_error
from pgnm_monai.experiments.runner import make_workflow, run_bundle
from pgnm_monai.run_lock import INFO_NAME, BundleRootInUseError

ROOT = Path(__file__).resolve().parents[1]
PRE = ROOT / "bundles" / "pgnm_pretrain"
TINY = {**QUIET, "epochs": 1}
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
DATA_FILE = (".dcm", ".nii")  # the embedded images are DICOM/NIfTI files


def bundle_cli(root: Path, *extra: str, config: str = "configs/train.json", drop_root: bool = False, **overrides):
    """``python -m monai.bundle run`` of the pretrain bundle into ``root``; ``drop_root``: without root's
    power to write anywhere (``setpriv``), so that a read-only folder is read-only."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--meta_file", "configs/metadata.json"]
    cmd += ["--logging_file", "configs/logging.conf", "--bundle_root", os.fspath(root)]
    for k, v in {**TINY, **overrides}.items():
        cmd += [f"--{k}", str(v)]
    if drop_root and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: a read-only folder cannot be made")
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", *cmd]
    return subprocess.run([*cmd, *extra], cwd=PRE, env=ENV, capture_output=True, text=True, timeout=300)


def last_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def files_under(folder: Path) -> list[str]:
    """Every file under ``folder`` but the run lock's own."""
    if not folder.exists():
        return []
    return sorted(
        os.fspath(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".pgnm_run" not in p.name
    )


def hold_lock(root: Path) -> subprocess.Popen:
    """A process that takes the run lock of ``root`` and keeps it."""
    code = (
        "import sys, time\nfrom pgnm_monai.run_lock import BundleRunLock\n"
        "lock = BundleRunLock(sys.argv[1])\nlock.acquire()\nprint('held', flush=True)\ntime.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, os.fspath(root)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


# 1-3: one live run per output folder ---------------------------------------------------------------------------


def test_lock_held(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(BundleRootInUseError) as info:
            run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="none", **TINY)
        message = str(info.value)
        assert repr(os.fspath(tmp_path)) in message and f"pid {holder.pid}" in message
        assert files_under(tmp_path) == [] and not (tmp_path / "models").exists()  # refused before anything
    finally:
        holder.kill()
        holder.wait()


def test_lock_stale(tmp_path):
    holder = hold_lock(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / INFO_NAME).is_file()  # the dead holder's description is left, its lock is not
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="none", **TINY)
    assert (tmp_path / "models" / "model.pt").is_file()
    assert not (tmp_path / INFO_NAME).exists()  # released at finalize


def test_bundle_root_is_file(tmp_path):
    root = tmp_path / "root"
    root.write_text("not a folder")
    with pytest.raises(PermissionError, match="'bundle_root'") as info:
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(root), arm="none", **TINY)
    assert os.fspath(root) in str(info.value)


# 4-5: read-only output folders, found before training ----------------------------------------------------------


@pytest.mark.slow
def test_readonly_models(tmp_path):
    (tmp_path / "models").mkdir(mode=0o555)
    line = last_line(bundle_cli(tmp_path, drop_root=True, arm="none"))
    assert line.startswith("PermissionError: config id 'ckpt_dir'"), line
    assert repr(os.fspath(tmp_path / "models")) in line
    assert files_under(tmp_path) == [] and not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_readonly_eval(tmp_path):
    (tmp_path / "eval").mkdir(mode=0o555)
    line = last_line(bundle_cli(tmp_path, drop_root=True, arm="pgnm"))
    assert line.startswith("PermissionError: config id 'output_dir'"), line
    assert repr(os.fspath(tmp_path / "eval")) in line and files_under(tmp_path) == []


# 6-8: non-finite values -----------------------------------------------------------------------------------------


def test_nan_input_pgnm(tmp_path):
    """A non-finite input image (here: a normalisation std so small that the float32 image overflows; the loaders
    refuse NaN pixels) stops training at its first batch, naming the files; a NaN setting is refused before any
    data is read."""
    with pytest.raises(FloatingPointError, match=r"^non-finite input image.*epoch 1, iteration 1") as info:
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="pgnm", intensity_std=1e-40, **TINY)
    assert any(ext in str(info.value) for ext in DATA_FILE), info.value
    assert files_under(tmp_path / "models") == [] and files_under(tmp_path / "eval") == []
    with pytest.raises(ValueError, match="config id 'intensity_mean' must be a finite number, got nan"):
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "b"), intensity_mean=float("nan"), **TINY)


def test_diverging_none(tmp_path):
    with pytest.raises(FloatingPointError, match=r"non-finite .* at epoch 1, iteration \d+") as info:
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="none", **{**TINY, "lr": 1e30})
    assert any(ext in str(info.value) for ext in DATA_FILE), info.value
    assert files_under(tmp_path) == []  # no model.pt that would look like a finished run


def test_diverging_pgnm(tmp_path):
    with pytest.raises(FloatingPointError, match=r"epoch 1, iteration \d+") as info:
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="pgnm", **{**TINY, "lr": 1e30})
    assert any(ext in str(info.value) for ext in DATA_FILE), info.value
    assert files_under(tmp_path) == []


# 9-13: checkpoints ----------------------------------------------------------------------------------------------


def test_truncated_resume(tmp_path):
    ckpt = tmp_path / "models" / "checkpoint_epoch=1.pt"
    ckpt.parent.mkdir()
    torch.save({"model": {"w": torch.zeros(1000)}, "trainer": {"epoch": 1}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    wf = make_workflow("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), resume=True, arm="none", **TINY)
    with pytest.raises(RuntimeError) as info:
        wf.initialize()  # refused at the start (MONAI's wrapper around the project's error)
    wf.finalize()
    error = root_error(info.value)
    assert isinstance(error, ValueError) and "config id 'resume'" in str(error), error
    assert repr(os.fspath(ckpt)) in str(error) and "truncated or corrupt" in str(error)
    assert files_under(tmp_path) == ["models/checkpoint_epoch=1.pt"]  # kept, nothing else written


def test_resume_not_a_training_state(tmp_path):
    model = tmp_path / "model.pt"
    torch.save({"fc.weight": torch.zeros(4, 8)}, model)
    with pytest.raises(ValueError, match=r"config id 'resume' .* lacks \['model', 'trainer'\]"):
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), resume=os.fspath(model), **TINY)
    assert files_under(tmp_path / "models") == []


def test_resume_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="config id 'resume' is true but .* holds no training-state"):
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), resume=True, **TINY)


def test_garbage_pretrained(tmp_path):
    garbage = tmp_path / "heated.pt"
    garbage.write_bytes(os.urandom(4096))
    root = tmp_path / "ft"
    with pytest.raises(ValueError, match="config id 'pretrained_ckpt'") as info:
        run_bundle("pgnm_finetune", "train", bundle_root=os.fspath(root), pretrained_ckpt=os.fspath(garbage), **TINY)
    assert repr(os.fspath(garbage)) in str(info.value)
    assert files_under(root / "models") == [] and files_under(root / "eval") == []


def test_garbage_eval_ckpt(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="config id 'ckpt_path'") as info:
        run_bundle("pgnm_pretrain", "evaluate", bundle_root=os.fspath(tmp_path), **TINY)
    assert repr(os.fspath(tmp_path / "models" / "model.pt")) in str(info.value)
    assert files_under(tmp_path / "eval") == []


def test_evaluate_refuses_data_of_another_label_map(tmp_path):
    """The train stage saves the one label map beside the models; evaluating data with other classes is refused."""
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="none", **TINY)
    import json

    saved = json.loads((tmp_path / "models" / "class_map.json").read_text())
    from pgnm_monai.data import load_datalist

    assert saved["class_names"] == list(load_datalist("embedded", split="train").class_names)
    other = dict(saved, class_names=list(reversed(saved["class_names"])))
    (tmp_path / "models" / "class_map.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="was trained with the classes of .*class_map.json") as info:
        run_bundle("pgnm_pretrain", "evaluate", bundle_root=os.fspath(tmp_path), **TINY)
    assert "'test' data has classes" in str(info.value)
    assert not (tmp_path / "eval" / "metrics.json").exists()


# 14-16: overrides -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        pytest.param({"epoch": 3}, "id 'epoch': 'epoch' is not defined in .*did you mean 'epochs'", id="id"),
        pytest.param({"trian#trainer#amp": True}, "'trian' is not defined in .*did you mean 'train'", id="section"),
        pytest.param(
            {"train#preprocessing#transforms#9#prob": 0.0},
            "'train#preprocessing#transforms' is a list of 6 items, which has no item '9'",
            id="item",
        ),
    ],
)
def test_unknown_override(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), **{**TINY, **override})
    assert not tmp_path.joinpath("models").exists()


def test_new_keyword_of_a_component_is_allowed():
    # epoch_length is SupervisedTrainer's own argument, not in train.json: a new key of an existing section
    wf = make_workflow("pgnm_pretrain", "train", **{"train#trainer#epoch_length": 2})
    assert wf.parser["train#trainer#epoch_length"] == 2


@pytest.mark.slow
def test_unknown_id_cli(tmp_path):
    line = last_line(bundle_cli(tmp_path, netwrok="small"))
    assert line.startswith("ValueError: unknown config id 'netwrok'") and "did you mean 'network'" in line, line
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("key, value", [("arm", "pgmn"), ("objective", "reinforcee")], ids=["bad_arm", "bad_objective"])
def test_bad_choice(tmp_path, key, value):
    with pytest.raises(ValueError, match=f"config id '{key}' must be one of .*got '{value}'"):
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), **{**TINY, key: value})
    assert files_under(tmp_path) == []


# 17-18: the pgnm CLI --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, named",
    [(["--some_unknown_id", "3"], "--some_unknown_id"), (["--arms", "pgmn"], "'pgmn'")],
    ids=["pgnm_unknown_option", "pgnm_bad_arm"],
)
def test_pgnm_cli_refuses(tmp_path, capsys, args, named):
    from pgnm_monai.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", "--output-dir", os.fspath(tmp_path), *args])
    assert info.value.code == 2 and named in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_pgnm_missing_dataset(tmp_path):
    from pgnm_monai.cli import main

    missing = tmp_path / "no_such_data"
    with pytest.raises(FileNotFoundError, match="config id 'dataset_dir' points to") as info:
        main(["run", "--output-dir", os.fspath(tmp_path / "out"), "--dataset-dir", os.fspath(missing)])
    assert os.fspath(missing) in str(info.value)
    assert files_under(tmp_path / "out") == []  # no comparison, no model
