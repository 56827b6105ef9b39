"""Does the noise policy learn? A synthetic task with a known optimum, run through ``SupervisedTrainer``.

The task: 32 x 32 one-channel images, 2 classes; the class is a bright (+0.3) or dark (-0.3) offset on the
*left* half only, on top of unit Gaussian noise everywhere; the right half is pure noise. With a 4 x 4 grid
the two left columns of cells cover the informative half exactly. Multiplying by a mask in (0, 1) shrinks
the class evidence where it is small, so

- the cooperative policy (``pgnm-reinforce``, reward ``-CE``) should keep the left half clean: the expected
  mask value ``alpha / (alpha + beta)`` rises on the left relative to the right;
- the adversarial policy (``pgnm-adversarial``, reward ``+CE``) should hide the evidence: it falls;
- the frozen policy (``frozen_policy``) must not move at all.

Measured on a fixed probe batch (policy in eval mode), ``gap = mean_left E[m] - mean_right E[m]``, before and
after 160 steps (20 epochs of 256 images, batch 32; policy SGD lr 0.01, entropy weight 0.05, normalised
advantage). Change of the gap over seeds 0-9 (the test uses seed 0):

- ``pgnm-reinforce``: +0.19 to +0.36 (seed 0: +0.27);
- ``pgnm-adversarial``: -0.28 to -0.53 (seed 0: -0.37);
- ``frozen_policy``: exactly 0;
- policy lr 0 (parameters fixed; only the batch-norm running statistics and the base-vector EMA move):
  -0.05 to -0.01 (seeds 0-2), so the margin of 0.1 fails when the policy stops learning.

With the moving-average baseline instead of the normalised advantage the signal is too weak here (the
classifier's CE falls to ~1e-3 within a few epochs, so ``r - baseline`` is tiny next to the entropy
bonus): at policy lr 0.02 the gap moved by less than 0.08 in either direction (seeds 0-4). Without the
entropy bonus the cells collapse to near-deterministic 0/1 values and the gap lands on multiples of 1/8
(per-seed changes +0.12 to +0.82 and +0.07 to -0.34 at 40 epochs): learning, but less reliably.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import set_determinism
from torch import nn

from pgnm_monai.arms import ARMS, build_arm_handler
from pgnm_monai.components import RunSettings
from pgnm_monai.handlers import STATE_ATTRIBUTES, per_sample_cross_entropy
from pgnm_monai.networks import build_classifier
from pgnm_monai.objectives import reinforce_objective
from pgnm_monai.settings import POLICY

SIZE, GRID, AMPLITUDE = 32, 4, 0.3
#: the task's mask settings: the grid splits the halves cleanly; a small blur keeps the cells local.
MASK = {"image_size": SIZE, "grid": GRID, "kernel_size": 3, "sigma": 1.0, "policy_trunk": "small"}
#: the policy hyperparameters that make the synthetic task reliable (10 of 10 seeds, see the module docstring).
LEARNING = {"lr": 0.1, "entropy_weight": 0.05, "advantage": "normalized"}
EPOCHS, ITEMS, BATCH, CLASSIFIER_LR = 20, 256, 32, 0.05
MARGIN = 0.1
SEED = 0
#: cells of the informative (left) half: cells are row-major over (G, G), the column is the last axis.
LEFT = (torch.arange(GRID * GRID) % GRID) < GRID // 2


def half_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images: unit noise everywhere, plus ``+-AMPLITUDE`` (the class) on the left half only."""
    generator = torch.Generator().manual_seed(seed)
    label = torch.arange(n) % 2
    image = torch.randn(n, 1, SIZE, SIZE, generator=generator)
    image[..., : SIZE // 2] += AMPLITUDE * (2.0 * label - 1.0).view(-1, 1, 1, 1)
    return image, label


@torch.no_grad()
def expected_mask_gap(policy: nn.Module, probe: torch.Tensor) -> float:
    """Mean of ``alpha / (alpha + beta)`` over the left-half cells minus over the right-half cells (eval mode)."""
    training = policy.training
    policy.eval()
    try:
        alpha, beta = policy(probe)
    finally:
        policy.train(training)
    expected = alpha / (alpha + beta)
    return (expected[:, LEFT].mean() - expected[:, ~LEFT].mean()).item()


def trainer_for(handler, seed: int = SEED, epochs: int = EPOCHS, items: int = ITEMS):
    """A ``SupervisedTrainer`` of the small classifier on the synthetic task with ``handler`` attached."""
    set_determinism(seed)
    image, label = half_images(items, seed)
    network = build_classifier("small", 1, 2)
    loader = DataLoader(
        [{"image": x, "label": y} for x, y in zip(image, label, strict=True)],
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=CLASSIFIER_LR, momentum=0.9),
        loss_function=nn.CrossEntropyLoss(),
        train_handlers=[handler],
    )
    return trainer, network


def run_arm(arm: str, seed: int = SEED, **kwargs):
    """Train ``arm`` on the synthetic task; return the handler, the trainer and the gap before and after."""
    handler = build_arm_handler(arm, seed=seed, **{**MASK, **LEARNING, **kwargs})
    probe, _ = half_images(64, 10_000 + seed)
    before = expected_mask_gap(handler.policy, probe)
    trainer, _ = trainer_for(handler, seed)
    trainer.run()
    return handler, trainer, before, expected_mask_gap(handler.policy, probe)


@pytest.mark.parametrize(("arm", "direction"), [("pgnm-reinforce", 1.0), ("pgnm-adversarial", -1.0)])
def test_policy_moves_the_informative_half_in_the_direction_of_its_reward(arm, direction):
    handler, trainer, before, after = run_arm(arm)
    change = after - before
    # cooperative: keep the class evidence (left) cleaner than the noise (right); adversarial: the opposite
    assert direction * change > MARGIN, f"{arm}: gap {before:+.4f} -> {after:+.4f} (change {change:+.4f})"
    assert handler.frozen is False and handler.reward_sign == (-1 if direction > 0 else 1)
    assert math.isfinite(trainer.state.policy_grad_norm) and trainer.state.policy_grad_norm > 0


def test_frozen_policy_does_not_move():
    handler = build_arm_handler("frozen_policy", seed=SEED, epochs=EPOCHS, **{**MASK, **LEARNING})
    assert handler.frozen
    state = {k: v.clone() for k, v in handler.policy.state_dict().items()}
    probe, _ = half_images(64, 10_000 + SEED)
    before = expected_mask_gap(handler.policy, probe)
    trainer, network = trainer_for(handler, epochs=3)
    net_start = [p.detach().clone() for p in network.parameters()]
    masked = []
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: masked.append(e.state.output["image"]))
    trainer.run()
    after_state = handler.policy.state_dict()
    assert state.keys() == after_state.keys()
    for key, value in state.items():  # parameters and buffers (BN statistics, base vectors): bitwise equal
        assert torch.equal(value, after_state[key]), key
    assert expected_mask_gap(handler.policy, probe) == before
    assert not handler.policy.training
    assert all(p.grad is None for p in handler.policy.parameters())
    assert handler.optimizer.state_dict()["state"] == {}  # never stepped
    assert handler.lr_scheduler.last_epoch == 0 and handler.optimizer.param_groups[0]["lr"] == pytest.approx(
        LEARNING["lr"] * POLICY.policy_lr_factor
    )
    assert not bool(handler.baseline.initialized)
    # the classifier still trains on masked images, and the statistics are logged
    assert any(not torch.equal(a, b) for a, b in zip(net_start, network.parameters(), strict=True))
    assert len(masked) == 3 * ITEMS // BATCH and not masked[0].requires_grad
    assert trainer.state.policy_loss == 0.0 and trainer.state.policy_grad_norm == 0.0
    for attr in STATE_ATTRIBUTES:
        assert math.isfinite(getattr(trainer.state, attr)), attr


def _first_iteration(arm: str, **kwargs):
    """Run one iteration of ``arm``; return the loss the classifier back-propagated, the per-sample CE, the
    policy's gradients and the handler."""
    handler = build_arm_handler(arm, seed=SEED, **{**MASK, **kwargs})
    trainer, _ = trainer_for(handler, epochs=1, items=BATCH)
    seen = {}

    def capture(engine):  # registered after the handler: after the policy's backward and step
        output = engine.state.output
        seen["loss"] = output["loss"].detach().clone()
        seen["ce"] = per_sample_cross_entropy(output["pred"], output["label"])
        seen["log_prob"] = handler.mask.last_sample.log_prob.detach().clone()
        seen["policy_grad"] = [p.grad.clone() for p in handler.policy.parameters()]

    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, capture)
    trainer.run()
    return seen, handler, trainer


def test_paper_unscaled_keeps_plain_ce_and_the_official_policy_gradient():
    paper, paper_handler, _ = _first_iteration("pgnm-paper")
    unscaled, unscaled_handler, _ = _first_iteration("pgnm-paper-unscaled")
    assert paper_handler.scales_classifier_loss and not unscaled_handler.scales_classifier_loss
    term = torch.logsumexp(paper["log_prob"], dim=1).mean()
    assert term.item() > 1.0  # about log(G^2) at the start: a visible scale
    # the same draw and the same classifier, so the same CE; paper scales the classifier loss, unscaled does not
    torch.testing.assert_close(unscaled["ce"], paper["ce"])
    torch.testing.assert_close(unscaled["loss"], paper["ce"].mean(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(paper["loss"], paper["ce"].mean() * term, rtol=1e-6, atol=1e-6)
    # and the policy gradient is the official one in both
    for a, b in zip(paper["policy_grad"], unscaled["policy_grad"], strict=True):
        torch.testing.assert_close(a, b)


def test_normalized_advantage_inside_the_trainer():
    seen, handler, trainer = _first_iteration("pgnm-reinforce", advantage="normalized")
    assert handler.advantage == "normalized"
    expected = reinforce_objective(seen["log_prob"], seen["ce"], advantage="normalized").policy_loss
    assert trainer.state.policy_loss == pytest.approx(expected.item(), rel=1e-5)
    assert not bool(handler.baseline.initialized)  # no moving baseline
    default, default_handler, default_trainer = _first_iteration("pgnm-reinforce")
    assert default_handler.advantage == "baseline" and bool(default_handler.baseline.initialized)
    with pytest.raises(ValueError, match="'advantage' must be one of"):
        build_arm_handler("pgnm", advantage="gae", **MASK)


def test_arm_vocabulary_of_the_controls():
    assert ARMS["frozen_policy"].mechanism == ARMS["pgnm-adversarial"].mechanism == "pgnm"
    adversarial = build_arm_handler("pgnm-adversarial", reward_sign=-1, **MASK)  # the arm's setting wins
    assert adversarial.objective == "reinforce" and adversarial.reward_sign == 1
    unscaled = build_arm_handler("pgnm-paper-unscaled", objective="reinforce", **MASK)
    assert unscaled.objective == "paper" and not unscaled.scales_classifier_loss
    frozen = build_arm_handler("frozen_policy", **MASK)
    assert frozen.frozen and frozen.objective == "reinforce"


def test_run_settings_validate_reward_sign_and_advantage():
    from pgnm_monai.experiments.runner import bundle_defaults

    valid = bundle_defaults("pgnm_pretrain", "train")  # the bundle's values
    settings = RunSettings({**valid, "arm": "pgnm-adversarial", "reward_sign": 1, "advantage": "normalized"})
    assert settings.state_dict()["advantage"] == "normalized"
    with pytest.raises(ValueError, match=r"config id 'reward_sign' must be one of \(-1, 1\), got 0"):
        RunSettings({**valid, "reward_sign": 0})
    with pytest.raises(ValueError, match="config id 'reward_sign'.*got True"):
        RunSettings({**valid, "reward_sign": True})
    with pytest.raises(ValueError, match="config id 'advantage' must be one of .*got 'gae'"):
        RunSettings({**valid, "advantage": "gae"})
    with pytest.raises(ValueError, match="config id 'lr' must be a finite number > 0, got inf"):
        RunSettings({**valid, "lr": float("inf")})
    with pytest.raises(ValueError, match="config id 'policy_momentum' must be a number in"):
        RunSettings({**valid, "policy_momentum": 1.5})


def test_bundle_selects_the_control_arms_by_name(tmp_path):
    from bundle_settings import TINY as tiny

    from pgnm_monai.experiments.runner import make_workflow

    for arm, overrides, want in (
        ("frozen_policy", {}, {"frozen": True, "reward_sign": -1, "advantage": "baseline"}),
        (
            "pgnm-adversarial",
            {"advantage": "normalized"},
            {"frozen": False, "reward_sign": 1, "advantage": "normalized"},
        ),
        ("pgnm", {"reward_sign": 1}, {"frozen": False, "reward_sign": 1, "advantage": "baseline"}),
    ):
        wf = make_workflow("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm=arm, **tiny, **overrides)
        wf.initialize()
        handler = wf.parser.get_parsed_content("train#arm_handler")
        assert {k: getattr(handler, k) for k in want} == want, arm
    wf = make_workflow("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), advantage="gae", **tiny)
    with pytest.raises(Exception) as info:
        wf.initialize()
    messages = []
    exc = info.value
    while exc is not None:
        messages.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert "config id 'advantage' must be one of" in "\n".join(messages)


def test_policy_grad_norm_is_the_norm_of_the_stepped_gradient():
    seen, handler, trainer = _first_iteration("pgnm-reinforce")
    want = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in seen["policy_grad"]]))
    assert trainer.state.policy_grad_norm == pytest.approx(want.item(), rel=1e-6)
    assert "policy_grad_norm" in STATE_ATTRIBUTES
