"""DDP that matches one process: ``torchrun`` with 2 gloo processes at per-rank batch B/2 against 1 process at
batch B (a world of one, in the test's process), through the pretrain bundle's ``multi_gpu_train.json`` on the same
seeded data and order.

Both runs use the same ``DistributedSampler`` permutation (seeded), so every step sees the same B images; DDP
averages the two ranks' gradients, which equals the gradient of the B-image mean loss. What differs is batch
norm: without ``sync_bn`` each rank normalises with the statistics of its own B/2 images. With ``sync_bn``
(``GlobalBatchNorm`` on the CPU, ``nn.SyncBatchNorm`` on GPUs) the statistics are those of the B images, and
the loss curves and final weights agree with one process up to float summation order (``TOL``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pgnm_monai.distributed import cleanup_distributed

ROOT = Path(__file__).resolve().parents[1]
PRE = ROOT / "bundles" / "pgnm_pretrain"
SCRIPTS = os.fspath(ROOT / "tests" / "scripts")  # ddp_loss_log.GlobalLossLog
B = 8
TOL = 1e-5  # absolute, on per-iteration losses (~1) and on every weight: float summation order only (measured 2e-7)
SETTINGS = {"arm": "none", "network": "small", "image_size": 32, "epochs": 2, "lr": 0.05, "max_train_items": 16}


def parity_config(root: Path) -> Path:
    """The test's overlay: the deterministic evaluation chain for training too (the same images every run) and a
    log of the all-rank mean loss of every iteration."""
    extra = root / "parity.json"
    root.mkdir(parents=True)
    extra.write_text(
        json.dumps(
            {
                "train#preprocessing": "@validate#preprocessing",
                "loss_log": {"_target_": "ddp_loss_log.GlobalLossLog", "path": os.fspath(root / "losses.json")},
                "train#trainer#train_handlers": "$[@train#arm_handler] + @train#handlers + [@loss_log] + "
                "(@train#writers if pgnm_monai.distributed.is_main_process() else [])",
            }
        )
    )
    return extra


def outputs(root: Path) -> tuple[list[float], dict[str, torch.Tensor]]:
    losses = json.loads((root / "losses.json").read_text())
    return losses, torch.load(root / "models" / "model.pt", weights_only=True)


def run_two_processes(roots: dict[Path, bool]) -> dict[Path, tuple[list[float], dict[str, torch.Tensor]]]:
    """One ``torchrun --nproc_per_node=2`` of train.json + multi_gpu_train.json at batch B/2, once per root
    (``sync_bn`` the root's value; tests/scripts/ddp_parity_runs.py: the bundle through ``monai.bundle.run`` in the
    same process group; its command line under torchrun: tests/test_bundles.py::test_ddp_gloo_two_processes)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [os.fspath(Path(SCRIPTS) / "ddp_parity_runs.py"), *parity_args(roots, B // 2)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([SCRIPTS, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    proc = subprocess.run(cmd, cwd=PRE, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {root: outputs(root) for root in roots}


def run_one_process(root: Path, monkeypatch) -> tuple[list[float], dict[str, torch.Tensor]]:
    """The same script at batch B as the one process of a world of 1, in this process (what ``torchrun
    --nproc_per_node=1`` sets up: the rank's environment; one intra-op thread, as the two processes)."""
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.syspath_prepend(SCRIPTS)
    import ddp_parity_runs

    assert torch.get_num_threads() == 1
    try:
        ddp_parity_runs.main(parity_args({root: False}, B))
    finally:
        cleanup_distributed()  # the bundle's finalize did it, unless the run failed: no group left behind
    import ignite.distributed as idist

    # the bundle's cleanup leaves this process a single-process one for ignite too (its savers ask it the rank)
    assert idist.model_name() == "serial" and idist.get_rank() == 0
    return outputs(root)


def parity_args(roots: dict[Path, bool], batch_size: int) -> list[str]:
    """tests/scripts/ddp_parity_runs.py's arguments: the bundle's configs, the overrides, ``ROOT=SYNC_BN`` per run
    (each root gets its overlay)."""
    configs = [os.fspath(PRE / "configs" / f) for f in ("train.json", "multi_gpu_train.json")]
    overrides = {**SETTINGS, "batch_size": batch_size, "progress_bar": False, "tensorboard": False}
    runs = []
    for root, sync_bn in roots.items():
        parity_config(root)
        runs.append(f"{root}={str(sync_bn).lower()}")
    return [json.dumps(configs), json.dumps(overrides), *runs]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:parsing config_file")  # MONAI's notice that a config runs code (ours)
def test_two_processes_with_sync_bn_match_one_process(tmp_path, monkeypatch):
    one_loss, one = run_one_process(tmp_path / "one", monkeypatch)
    runs = run_two_processes({tmp_path / "two": True, tmp_path / "plain": False})  # sync_bn first: a fresh group
    (two_loss, two), (plain_loss, plain) = runs[tmp_path / "two"], runs[tmp_path / "plain"]
    assert len(one_loss) == len(two_loss) == SETTINGS["epochs"] * SETTINGS["max_train_items"] // B
    assert max(abs(a - b) for a, b in zip(one_loss, two_loss, strict=True)) < TOL
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k].float(), two[k].float(), atol=TOL, rtol=0), k
    # without sync_bn the ranks normalise with half-batch statistics: the runs part
    weight_gap = max((one[k].float() - plain[k].float()).abs().max().item() for k in one)
    assert max(abs(a - b) for a, b in zip(one_loss, plain_loss, strict=True)) > 100 * TOL or weight_gap > 100 * TOL
