"""Exact resume through the bundles: a run stopped after an epoch, or killed (SIGKILL) mid-run, and resumed with
``--resume True`` ends with files bitwise equal to the uninterrupted run's (model.pt, model_best.pt, policy.pt
and the per-epoch CSV/JSON outputs), for arm ``none`` and arm ``pgnm`` with both objectives, on the CPU. Each resumed
run's own log shows it trains from the epoch after its checkpoint (a resume that restarted at epoch 1 would end
with the same files: every run is fully seeded)."""

from __future__ import annotations

import filecmp
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bundle_settings import QUIET

from pgnm_monai.experiments.runner import quiet_logs, run_bundle

ROOT = Path(__file__).resolve().parents[1]
PRE = ROOT / "bundles" / "pgnm_pretrain"
TINY = QUIET
CASES = {
    "none": {"arm": "none"},
    "pgnm-reinforce": {"arm": "pgnm"},
    "pgnm-paper": {"arm": "pgnm", "objective": "paper"},
}


def assert_same_outputs(a: Path, b: Path) -> None:
    """Every model file and every per-epoch output of run ``b`` is bitwise equal to run ``a``'s."""
    models = sorted(p.name for p in (a / "models").glob("*.pt") if not p.name.startswith("checkpoint_"))
    assert "model.pt" in models
    for name in models:
        x, y = torch.load(a / "models" / name, weights_only=True), torch.load(b / "models" / name, weights_only=True)
        assert x.keys() == y.keys(), name
        assert all(torch.equal(x[k], y[k]) for k in x), f"{name}: tensors differ after the resume"
    outputs = sorted(p.name for p in (a / "eval").iterdir())
    assert outputs == sorted(p.name for p in (b / "eval").iterdir())
    for name in outputs:
        assert filecmp.cmp(a / "eval" / name, b / "eval" / name, shallow=False), name


def trained_epochs(log: str) -> list[int]:
    """The epochs of a trainer's iteration log lines (MONAI ``StatsHandler``: ``Epoch: N/M, Iter: i/n -- ...``;
    the evaluators log no iterations), each once, in the order they ran."""
    return list(dict.fromkeys(int(e) for e in re.findall(r"Epoch: (\d+)/\d+, Iter: \d+/\d+", log)))


def resume_in_process(root: Path, **overrides) -> list[int]:
    """Resume the pretraining run of ``root`` in this process (``resume=True``, ``overrides``), its log lines in
    ``root/logs/train.log`` (:func:`quiet_logs`); return the epochs the resumed trainer ran (:func:`trained_epochs`)."""
    log = root / "logs" / "train.log"
    start = log.stat().st_size if log.exists() else 0
    with quiet_logs():
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(root), resume=True, **overrides)
    with open(log, encoding="utf-8") as f:
        f.seek(start)
        return trained_epochs(f.read())


def latest_checkpoint_epoch(root: Path) -> int:
    """The epoch of the newest training state in ``root/models`` (what ``resume=True`` loads)."""
    return max(
        int(re.fullmatch(r"checkpoint_epoch=(\d+)\.pt", p.name)[1])
        for p in (root / "models").glob("checkpoint_epoch=*.pt")
    )


@pytest.mark.parametrize("case", list(CASES))
def test_stop_then_resume_is_bitwise_the_uninterrupted_run(tmp_path, case):
    args = {"epochs": 3, **CASES[case], **TINY}
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "a"), **args)
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "b"), stop_epoch=1, **args)
    assert not (tmp_path / "b" / "models" / "checkpoint_epoch=2.pt").exists()
    assert resume_in_process(tmp_path / "b", **args) == [2, 3]  # from the epoch after the checkpoint, not epoch 1
    assert_same_outputs(tmp_path / "a", tmp_path / "b")
    # only the checkpoints a user needs: the last training state, not the one resumed from
    kept = sorted(p.name for p in (tmp_path / "b" / "models").glob("checkpoint_*"))
    assert kept == ["checkpoint_epoch=3.pt"]


# imported first by a Python process whose PYTHONPATH starts with its folder: SIGKILL the process just before the
# epoch-2 training state replaces its temporary file (the new checkpoint written, the old one not yet pruned)
KILL_DURING_CHECKPOINT = """
import os, signal
_replace = os.replace
def _replace_or_die(src, dst, *args, **kwargs):
    if os.path.basename(os.fspath(dst)) == "checkpoint_epoch=2.pt":
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)
os.replace = _replace_or_die
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_through_the_cli(tmp_path):
    """``python -m monai.bundle run`` killed (SIGKILL) after its epoch-2 checkpoint, and another killed while it
    writes that checkpoint, then both run again with ``resume`` (the first through the CLI, the second in-process):
    both end as the uninterrupted run (in-process: the same bundle, overrides and intra-op thread count)."""
    overrides = {"epochs": 3, "arm": "pgnm", **TINY, "batch_size": 2}  # many iterations per epoch: killed mid-epoch

    def command(root: Path, *extra: str) -> list[str]:
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json"]
        cmd += ["--meta_file", "configs/metadata.json", "--bundle_root", os.fspath(root)]
        for k, v in overrides.items():
            cmd += [f"--{k}", str(v)]
        return cmd + list(extra)

    # one intra-op thread here (conftest) and in the CLI runs: float sums depend on the thread count
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    assert torch.get_num_threads() == 1
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "a"), **overrides)  # the reference
    victim = subprocess.Popen(
        command(tmp_path / "b"), cwd=PRE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    marker = tmp_path / "b" / "models" / "checkpoint_epoch=2.pt"
    deadline = time.monotonic() + 240
    while not marker.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    _, err = victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert marker.exists() and not (tmp_path / "b" / "models" / "model.pt").exists()  # killed before the end
    resumed_from = latest_checkpoint_epoch(tmp_path / "b")
    proc = subprocess.run(command(tmp_path / "b", "--resume", "True"), cwd=PRE, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the CLI run's log (logging.conf: the console) shows it trained from the epoch after its checkpoint only
    assert trained_epochs(proc.stdout + proc.stderr) == list(range(resumed_from + 1, 4)), proc.stdout[-3000:]
    assert_same_outputs(tmp_path / "a", tmp_path / "b")

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_DURING_CHECKPOINT)
    killer = {**env, "PYTHONPATH": os.pathsep.join([os.fspath(hook), env.get("PYTHONPATH", "")])}
    died = subprocess.run(command(tmp_path / "c"), cwd=PRE, env=killer, capture_output=True, text=True)
    assert died.returncode == -signal.SIGKILL, died.stderr[-2000:]
    models = tmp_path / "c" / "models"
    assert (models / "checkpoint_epoch=1.pt").is_file()  # the previous training state is still there
    assert [p.name for p in models.glob(".checkpoint_epoch=2.pt.*.tmp")], sorted(os.listdir(models))
    assert resume_in_process(tmp_path / "c", **overrides) == [2, 3]  # from epoch 1's state: the killed write is not one
    assert_same_outputs(tmp_path / "a", tmp_path / "c")
    assert sorted(p.name for p in models.iterdir() if p.name.startswith((".checkpoint", "checkpoint"))) == [
        "checkpoint_epoch=3.pt"
    ]  # the temporary file of the killed write is gone with the checkpoint it was for
