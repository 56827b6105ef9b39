"""PolicyStatisticsHandler: probe statistics against hand computations, the CSV and metrics inside a
SupervisedTrainer (resume included), the checkpointed initial policy, and a frozen policy that does not move."""

from __future__ import annotations

import csv
import math
import os

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.utils import set_determinism
from torch import nn
from torch.distributions import Beta, kl_divergence

from pgnm_monai.arms import build_arm_handler
from pgnm_monai.handlers import PolicyStatisticsHandler
from pgnm_monai.handlers.policy_statistics import EPOCH_STATISTICS, PROBE_STATISTICS
from pgnm_monai.networks import build_classifier
from pgnm_monai.transforms import PolicyNoiseMask

KW = {"image_size": 16, "grid": 4, "kernel_size": 3, "sigma": 1.0, "policy_trunk": "small", "seed": 0}
COLUMNS = ["epoch", *PROBE_STATISTICS, *EPOCH_STATISTICS]


def probe(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def policy_handler(**kwargs):
    return build_arm_handler("pgnm", **{**KW, **kwargs})


def make_trainer(handlers, epochs: int = 3, n_batches: int = 3, batch_size: int = 4) -> SupervisedTrainer:
    set_determinism(0)
    g = torch.Generator().manual_seed(2)
    n = n_batches * batch_size
    x = torch.randn(n, 1, 16, 16, generator=g)
    y = torch.arange(n) % 2
    x[y == 1, :, :8] += 1.0  # a learnable signal
    items = [{"image": a, "label": b} for a, b in zip(x, y, strict=True)]
    net = build_classifier("small", 1, 2)
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=DataLoader(items, batch_size=batch_size, shuffle=False, drop_last=True),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.05),
        loss_function=nn.CrossEntropyLoss(),
        train_handlers=handlers,
    )


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_statistics_match_hand_computation_and_kl_is_zero_at_init():
    policy = policy_handler().policy
    images = probe()
    stats_handler = PolicyStatisticsHandler(policy, images, csv_path=None, batch_size=4)  # chunks of 4 + 2
    base = policy.base_alpha.clone()
    assert policy.training
    stats = stats_handler.statistics()
    assert policy.training and torch.equal(policy.base_alpha, base)  # mode restored, base untouched
    assert list(stats) == list(PROBE_STATISTICS)

    policy.eval()
    with torch.no_grad():
        alpha, beta = policy(images)
    policy.train()
    assert alpha.shape == (6, 16)
    dist = Beta(alpha.double(), beta.double())
    log_a, log_b, mean = alpha.double().log(), beta.double().log(), dist.mean
    hand = {
        "log_alpha_mean": log_a.mean(),
        "log_alpha_between_std": log_a.std(0, correction=0).mean(),
        "log_beta_mean": log_b.mean(),
        "log_beta_between_std": log_b.std(0, correction=0).mean(),
        "mask_mean": mean.mean(),
        "mask_within_std": torch.stack([m.std(correction=0) for m in mean]).mean(),
        "mask_between_std": torch.stack([mean[:, k].std(correction=0) for k in range(16)]).mean(),
        "sample_std": dist.stddev.mean(),
        "kl_to_init": torch.tensor(0.0),
    }
    for key, value in hand.items():
        assert stats[key] == pytest.approx(float(value), rel=1e-6, abs=1e-12), key
    assert stats["kl_to_init"] == 0.0
    assert all(math.isfinite(v) for v in stats.values())
    # at initialisation images barely differ (DESIGN.md section 6): between-image spread << sampling noise
    assert stats["mask_between_std"] < 0.1 * stats["sample_std"]

    with torch.no_grad():
        policy.alpha_head[-1].bias.add_(0.5 * torch.randn(16, generator=torch.Generator().manual_seed(3)))
        policy.base_beta.add_(0.2)
    moved = stats_handler.statistics()
    policy.eval()
    with torch.no_grad():
        alpha1, beta1 = policy(images)
    expected_kl = kl_divergence(Beta(alpha1.double(), beta1.double()), dist).mean()
    assert moved["kl_to_init"] > 1e-3
    assert moved["kl_to_init"] == pytest.approx(float(expected_kl), rel=1e-6)
    # any policy can be measured against the handler's initial one
    assert stats_handler.statistics(stats_handler.initial_policy)["kl_to_init"] == 0.0


def test_rejects_bad_probe():
    policy = policy_handler().policy
    with pytest.raises(ValueError, match="probe_images must be"):
        PolicyStatisticsHandler(policy, torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="channels"):
        PolicyStatisticsHandler(policy, torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="NoisePolicy"):
        PolicyStatisticsHandler(nn.Linear(2, 2), torch.zeros(2, 1, 16, 16))


def test_csv_and_metrics_inside_supervised_trainer(tmp_path, monkeypatch):
    handler = policy_handler(lr=0.5, policy_stats_interval=1)  # the policy's lr: lr * policy_lr_factor; read every step
    path = tmp_path / "eval" / "policy_stats.csv"
    stats_handler = PolicyStatisticsHandler(handler.policy, probe(), csv_path=path)
    trainer = make_trainer([handler, stats_handler])
    rewards: list[float] = []
    seen: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: rewards.append(e.state.reward_mean))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))
    replaced: list[str] = []
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):
        replaced.append(os.fspath(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    trainer.run()
    monkeypatch.undo()

    assert replaced.count(os.fspath(path)) == 3  # one atomic replace per epoch
    assert os.listdir(path.parent) == ["policy_stats.csv"]  # no temporary file left
    with open(path) as f:
        assert f.readline().strip().split(",") == COLUMNS
    rows = read_csv(path)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    has_grad_norm = hasattr(trainer.state, "policy_grad_norm")
    for row in rows:
        for key in COLUMNS[1:]:
            value = float(row[key])
            assert math.isfinite(value) or (key == "policy_grad_norm" and not has_grad_norm), (key, row[key])
    assert float(rows[-1]["kl_to_init"]) > 0.0  # the policy was trained
    assert float(rows[-1]["reward_mean"]) == pytest.approx(sum(rewards[-3:]) / 3, rel=1e-6)
    for row, metrics in zip(rows, seen, strict=True):
        for key in COLUMNS[1:]:
            value = metrics["policy/" + key]
            assert isinstance(value, float)
            assert (math.isnan(value) and row[key] == "nan") or value == pytest.approx(float(row[key]), rel=1e-12)


def test_resume_replaces_rows_from_the_current_epoch(tmp_path):
    path = tmp_path / "policy_stats.csv"
    path.write_text("epoch,kl_to_init\n1,111\n2,222\n3,333\n4,444\n")
    stats_handler = PolicyStatisticsHandler(policy_handler().policy, probe(), csv_path=path, prefix="p/")
    trainer = make_trainer([stats_handler], epochs=3)

    def resume_at_epoch_1(engine):  # what a checkpoint loader does at STARTED
        engine.state.epoch, engine.state.iteration = 1, engine.state.epoch_length

    trainer.add_event_handler(Events.STARTED, resume_at_epoch_1)
    trainer.run()
    rows = read_csv(path)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert rows[0]["kl_to_init"] == "111" and rows[0]["mask_mean"] == ""  # kept as it was
    assert [float(r["kl_to_init"]) for r in rows[1:]] == [0.0, 0.0]  # replaced; the policy was never trained
    assert rows[1]["reward_mean"] == "nan"  # no policy handler: nothing to average
    assert "p/kl_to_init" in trainer.state.metrics


def test_state_dict_round_trip_keeps_the_initial_policy(tmp_path):
    policy = policy_handler().policy
    images = probe()
    first = PolicyStatisticsHandler(policy, images)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(4)))
    kl = first.statistics()["kl_to_init"]
    assert kl > 0.0
    torch.save({"policy_stats": first.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["policy_stats"]

    resumed = PolicyStatisticsHandler(policy, images)  # built on the trained policy: reference is wrong...
    assert resumed.statistics()["kl_to_init"] == 0.0
    resumed.load_state_dict(state)  # ...until the checkpoint restores it
    assert resumed.statistics()["kl_to_init"] == pytest.approx(kl, rel=1e-12)
    for key, value in first.initial_policy.state_dict().items():
        assert torch.equal(resumed.initial_policy.state_dict()[key], value), key
    assert not resumed.initial_policy.training
    with pytest.raises(ValueError, match="initial_policy"):
        resumed.load_state_dict({"policy": {}})


def test_frozen_policy_keeps_kl_zero_and_statistics_constant(tmp_path):
    """A policy sampled at its initialisation, never updated (eval mode: no EMA, no batch-norm update)."""
    policy = policy_handler().policy
    policy.eval()
    mask = PolicyNoiseMask(policy).set_random_state(0)
    path = tmp_path / "policy_stats.csv"
    stats_handler = PolicyStatisticsHandler(policy, probe(), csv_path=path)

    def frozen_mask(engine):
        with torch.no_grad():
            engine.state.batch["image"] = mask(engine.state.batch["image"])

    trainer = make_trainer([stats_handler], epochs=3)
    trainer.add_event_handler(Events.ITERATION_STARTED, frozen_mask)
    trainer.run()
    assert not policy.training  # the handler restored eval mode
    rows = read_csv(path)
    assert len(rows) == 3
    for row in rows:
        assert float(row["kl_to_init"]) == 0.0
        assert all(row[k] == rows[0][k] for k in PROBE_STATISTICS)


def test_zero_learning_rate_is_not_a_frozen_policy():
    """lr 0 inside NoisePolicyHandler: no parameter moves, but the train-mode forward still updates the base
    EMA and the batch-norm statistics, so the policy (and KL to the initial one) moves. A frozen control must
    sample in eval mode, as the test above."""
    handler = policy_handler(policy_momentum=0.0, policy_weight_decay=0.0)
    handler.optimizer.param_groups[0]["lr"] = 0.0  # a zero learning rate is refused as a setting; set it here
    params = [p.detach().clone() for p in handler.policy.parameters()]
    stats_handler = PolicyStatisticsHandler(handler.policy, probe())
    make_trainer([handler, stats_handler], epochs=2).run()
    assert all(torch.equal(a, b) for a, b in zip(params, handler.policy.parameters(), strict=True))
    assert stats_handler.statistics()["kl_to_init"] > 0.0
