"""The REINFORCE handler inside SupervisedTrainer: training, arms, paper gradients, resume, SIGKILL (DDP: the
bundles' tests, tests/test_bundles.py and tests/test_ddp.py)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.handlers import StatsHandler
from monai.utils import set_determinism
from torch import nn

from pgnm_monai.arms import ARMS, build_arm_handler
from pgnm_monai.handlers import STATE_ATTRIBUTES, iteration_seed
from pgnm_monai.objectives import paper_objective
from pgnm_monai.transforms import PolicyNoiseMask

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"
sys.path.insert(0, str(SCRIPT.parent))
import train_tiny  # noqa: E402
from train_tiny import tiny_classifier  # noqa: E402

ARM_KWARGS = {
    "image_size": 32,
    "grid": 8,
    "kernel_size": 5,
    "sigma": 2.0,
    "policy_trunk": "small",
    "seed": 0,
}


def make_trainer(x, y, handlers, epochs=1, batch_size=16, lr=0.05, seed=0):
    set_determinism(seed)
    net = tiny_classifier(int(y.max()) + 1)
    items = [{"image": a, "label": b} for a, b in zip(x, y, strict=True)]
    loader = DataLoader(items, batch_size=batch_size, shuffle=False, drop_last=True)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9),
        loss_function=nn.CrossEntropyLoss(),
        train_handlers=handlers,
    )
    return trainer, net


def test_pgnm_trains_inside_supervised_trainer(mednist_small, capsys):
    x, y, _ = mednist_small
    handler = build_arm_handler("pgnm", objective="reinforce", lr=0.1, epochs=3, **ARM_KWARGS)
    policy = handler.policy
    params_before = [p.detach().clone() for p in policy.parameters()]
    base_before = policy.base_alpha.clone()
    stats = StatsHandler(iteration_log=False, state_attributes=list(STATE_ATTRIBUTES), name="pgnm_test")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    trainer, _ = make_trainer(x[order], y[order], [handler, stats], epochs=3)
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"])))
    trainer.run()
    per_epoch = len(losses) // 3
    assert sum(losses[-per_epoch:]) / per_epoch < 0.7 * sum(losses[:per_epoch]) / per_epoch
    assert any(not torch.equal(a, b) for a, b in zip(params_before, policy.parameters(), strict=True))
    assert not torch.equal(base_before, policy.base_alpha)
    for attr in STATE_ATTRIBUTES:
        assert math.isfinite(getattr(trainer.state, attr)), attr
    logged = capsys.readouterr().out + capsys.readouterr().err
    assert "policy_loss: " in logged and "mask_mean: " in logged  # StatsHandler logs them
    assert trainer.state.policy_lr < 0.01  # the cosine schedule stepped


def test_arm_none_is_bit_identical_to_plain_trainer(mednist_small):
    x, y, _ = mednist_small
    plain, plain_net = make_trainer(x[:64], y[:64], [], epochs=2)
    plain.run()
    with_arm, arm_net = make_trainer(x[:64], y[:64], [build_arm_handler("none", **ARM_KWARGS)], epochs=2)
    with_arm.run()
    for a, b in zip(plain_net.state_dict().values(), arm_net.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("arm", [a for a in ARMS if a != "none"])
def test_every_arm_changes_the_training_images(mednist_small, arm):
    x, y, _ = mednist_small
    handler = build_arm_handler(arm, num_classes=int(y[:32].max()) + 1, **ARM_KWARGS)  # the mixes' label count
    trainer, _ = make_trainer(x[:32], y[:32], [handler])
    seen = []
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: seen.append(e.state.output["image"]))
    trainer.run()
    assert len(seen) == 2 and seen[0].shape == (16, 1, 32, 32)
    assert not torch.allclose(seen[0], x[:16])
    assert torch.isfinite(seen[0]).all()


def test_bad_arm_and_objective_are_rejected():
    with pytest.raises(ValueError, match="arm must be one of .*got 'pgmn'; did you mean 'pgnm'"):
        build_arm_handler("pgmn")
    with pytest.raises(ValueError, match="'objective' must be one of .*got 'ppo'"):
        build_arm_handler("pgnm", objective="ppo", policy_trunk="small", grid=4)
    with pytest.raises(ValueError, match=r"grid \(64\) must be <= image_size \(32\)"):
        build_arm_handler("pgnm", image_size=32, grid=64)
    with pytest.raises(ValueError, match="image_size is required"):
        build_arm_handler("coarse_dropout")


def test_nan_guard_stops_training(mednist_small):
    x, y, _ = mednist_small
    handler = build_arm_handler("pgnm", **ARM_KWARGS)
    with torch.no_grad():
        handler.policy.alpha_head[-1].bias.fill_(float("nan"))
    trainer, _ = make_trainer(x[:32], y[:32], [handler])
    with pytest.raises(FloatingPointError, match="noise policy produced a non-finite"):
        trainer.run()
    # a non-finite reward (here: a classifier that outputs NaN) stops training with the handler's guard, at the
    # iteration when the statistics are read every iteration, else at the next read (the epoch's end here)
    handler = build_arm_handler("pgnm", **ARM_KWARGS)
    trainer, net = make_trainer(x[:32], y[:32], [handler])
    with torch.no_grad():
        net[-1].bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite value at iteration 1: read at iteration 2"):
        trainer.run()
    handler = build_arm_handler("pgnm", policy_stats_interval=1, **ARM_KWARGS)
    trainer, net = make_trainer(x[:32], y[:32], [handler])
    with torch.no_grad():
        net[-1].bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite value at iteration 1: policy_loss=nan"):
        trainer.run()


def test_paper_objective_gradients_inside_trainer_equal_the_official_loss(mednist_small):
    x, y, _ = mednist_small
    x, y = x[:16], y[:16]
    handler = build_arm_handler("pgnm", objective="paper", **ARM_KWARGS)
    policy_start = {k: v.clone() for k, v in handler.policy.state_dict().items()}
    trainer, net = make_trainer(x, y, [handler])
    net_start = {k: v.clone() for k, v in net.state_dict().items()}
    captured = {}

    def capture(engine):  # after the policy's backward and both backwards, before the classifier's step
        captured["net"] = [p.grad.clone() for p in net.parameters()]
        captured["policy"] = [p.grad.clone() for p in handler.policy.parameters()]

    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, capture)
    trainer.state.max_epochs = 1
    trainer.state.epoch_length = 1
    trainer.run()

    # the same iteration by hand: same weights, same mask draw, the official loss L = term * CE_mean
    ref_handler = build_arm_handler("pgnm", objective="paper", **ARM_KWARGS)
    ref_handler.policy.load_state_dict(policy_start)
    ref_net = tiny_classifier(int(y.max()) + 1)
    ref_net.load_state_dict(net_start)
    ref_net.train()
    mask = PolicyNoiseMask(ref_handler.policy).set_random_state(iteration_seed(0, 1, 0))
    masked = mask(x)
    logits = ref_net(masked)
    ce = nn.functional.cross_entropy(logits, y, reduction="none")
    term = torch.logsumexp(mask.last_sample.log_prob, dim=1).mean()
    (term * ce.mean()).backward()
    assert paper_objective(mask.last_sample.log_prob, ce).policy_term.item() == pytest.approx(term.item())
    for got, want in zip(captured["net"], [p.grad for p in ref_net.parameters()], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(captured["policy"], [p.grad for p in ref_handler.policy.parameters()], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``train_tiny.py ARGS`` in a fresh Python process (one intra-op thread, as the tests' own process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, **kwargs)


def _assert_states_equal(a: dict, b: dict) -> None:
    for part in ("network", "policy"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"


@pytest.mark.slow
def test_resume_in_a_fresh_process_is_exact(mednist_small, tmp_path):
    """A fresh process resumes bitwise from a checkpoint this process wrote: the RNG states travel in the
    checkpoint, nothing else does (the ``paper`` objective's resume is exact in-process, tests/test_resume.py, and
    through the CLI after a kill)."""
    _, _, data = mednist_small
    common = ["--data", data, "--epochs", "2", "--objective", "reinforce"]
    train_tiny.main([*common, "--out", str(tmp_path / "straight")])
    train_tiny.main([*common, "--out", str(tmp_path / "half"), "--stop-after-epochs", "1"])
    checkpoint = tmp_path / "half" / "checkpoint_epoch=1.pt"
    second = _run([*common, "--out", str(tmp_path / "resumed"), "--resume", str(checkpoint)])
    assert second.returncode == 0, second.stderr[-3000:]
    # the resumed run trained epoch 2 only: it saved no epoch-1 state (a run restarted from epoch 1, fully seeded,
    # would end with the same final.pt)
    assert sorted(p.name for p in (tmp_path / "resumed").glob("checkpoint_*.pt")) == ["checkpoint_epoch=2.pt"]
    a = torch.load(tmp_path / "straight" / "final.pt")
    b = torch.load(tmp_path / "resumed" / "final.pt")
    assert a["iteration"] == b["iteration"] == 2 * 15
    _assert_states_equal(a, b)
    assert torch.equal(a["policy"]["base_alpha"], b["policy"]["base_alpha"])
    model = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    assert model.keys() == a["network"].keys()  # model.pt is the classifier alone


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch(mednist_small, tmp_path):
    """A process killed (SIGKILL) inside an epoch leaves whole iteration checkpoints only; the last one resumes to
    the end of the run."""
    _, _, data = mednist_small
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--data", data, "--epochs", "2", "--out", str(out), "--iteration-checkpoints", "--sleep", "0.3"]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint_iteration=4.pt").exists():
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    checkpoints = sorted(out.glob("checkpoint_iteration=*.pt"), key=lambda p: int(p.stem.split("=")[1]))
    assert checkpoints, "no checkpoint was written before the kill"
    last = checkpoints[-1]
    iteration = int(last.stem.split("=")[1])
    assert 4 <= iteration < 30  # killed mid-run, inside an epoch of 15 iterations or the next
    assert not list(out.glob("*.tmp")) and not list(out.glob("tmp*"))
    resumed = tmp_path / "resumed"
    train_tiny.main(
        ["--data", data, "--epochs", "2", "--out", str(resumed), "--resume", str(last), "--iteration-checkpoints"]
    )
    final = torch.load(resumed / "final.pt")
    assert final["epoch"] == 2 and final["iteration"] == 30
    # the resumed run went on from the iteration after its checkpoint (its own iteration-checkpoint of each step
    # starts there), not from the start of the run or of the epoch
    saved = sorted(int(p.stem.split("=")[1]) for p in resumed.glob("checkpoint_iteration=*.pt"))
    assert saved == list(range(iteration + 1, 31))


def test_parameter_check_finds_nan_and_inf_and_ignores_large_finite_weights():
    """``FiniteCheckHandler.check_parameters``: the fast per-tensor sums never hide a NaN/Inf (it names the tensor)
    and never raise on finite weights whose sum leaves float32's range."""
    from types import SimpleNamespace

    from pgnm_monai.handlers import FiniteCheckHandler
    from pgnm_monai.handlers.training_curves import TrainingCurveWriter

    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    engine = SimpleNamespace(state=SimpleNamespace(epoch=2))
    check = FiniteCheckHandler(net)
    check.check_parameters(engine)  # finite: nothing raised
    with torch.no_grad():
        net[1].weight.fill_(3e38)  # finite, but the tensor's sum overflows float32
    check.check_parameters(engine)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with torch.no_grad():
            net[0].bias[1] = bad
        with pytest.raises(FloatingPointError, match=r"non-finite network parameters \['0.bias'\] after epoch 2"):
            check.check_parameters(engine)
        with torch.no_grad():
            net[0].bias[1] = 0.0
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    expected = sum(float(p.double().pow(2).sum()) for p in net.parameters()) ** 0.5
    assert TrainingCurveWriter(net, "unused.csv").weight_norm() == pytest.approx(expected, rel=1e-6)
