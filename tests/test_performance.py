"""The ``fast`` preset: same mask as ``paper`` at full resolution, statistically alike masks, still learns.

Timings are not tested here (they depend on the machine); they come from
``python -m pgnm_monai.benchmarks.step_time`` (see docs/performance.md).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from torch import nn

from pgnm_monai.arms import build_arm_handler
from pgnm_monai.handlers import BatchAugmentationHandler, ThreadLimitedNoisePolicyHandler
from pgnm_monai.mask import blur, cells_to_mask
from pgnm_monai.settings import PRESETS, PolicySettings

# mask statistics of the fast preset must be within this of the paper preset's (absolute, mask in (0, 1))
MASK_MEAN_TOL = 0.01
MASK_STD_TOL = 0.01


def _upsampled(images: torch.Tensor, size: int) -> torch.Tensor:
    """Real MedNIST images (32 px) bilinearly resized to ``size`` (grid 64 needs images >= 64 px)."""
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def _draw(preset: str, images: torch.Tensor, draws: int = 1, **overrides):
    handler = build_arm_handler("pgnm", in_channels=1, seed=0, preset=preset, **overrides)
    samples = []
    for i in range(draws):
        handler.mask.set_random_state(i)
        handler.mask(images)
        samples.append(handler.mask.last_sample)
    return handler, samples


def test_presets_are_plain_policy_ids():
    paper = PolicySettings.preset("paper")
    assert paper == PolicySettings() and paper.policy_input_size is None
    fast = PRESETS["fast"]["policy_input_size"]
    assert PolicySettings.preset("fast").policy_input_size == fast
    a = build_arm_handler("pgnm", preset="fast", seed=0)
    b = build_arm_handler("pgnm", seed=0, **PRESETS["fast"])
    c = build_arm_handler("pgnm", preset="fast", policy_input_size=64, seed=0)  # explicit ids win
    assert a.policy.input_size == b.policy.input_size == fast and c.policy.input_size == 64
    assert build_arm_handler("pgnm", preset="paper", seed=0).policy.input_size is None
    none = build_arm_handler("none", preset="fast")  # other arms ignore the preset
    assert type(none) is BatchAugmentationHandler and none.transform is None
    assert not isinstance(a, ThreadLimitedNoisePolicyHandler)
    one = build_arm_handler("pgnm", preset="fast", policy_num_threads=1, seed=0)
    assert isinstance(one, ThreadLimitedNoisePolicyHandler) and one.num_threads == 1
    assert a.optimizer.defaults["fused"] is True
    # the fast preset's 16 px trunk in the default memory format (channels-last only adds weight copies there)
    assert a.policy.memory_format == torch.contiguous_format
    assert build_arm_handler("pgnm", preset="paper", seed=0).policy.memory_format == torch.channels_last


def test_fused_upsample_blur_equals_interpolate_then_blur():
    cases = [(64, (128, 128), 13, 6.0), (64, (224, 224), 13, 6.0), (7, (30, 45), 5, 2.0), (4, (16, 16, 16), 3, 1.0)]
    for grid, size, kernel_size, sigma in cases:
        cells = torch.rand(3, grid ** len(size), generator=torch.Generator().manual_seed(grid))
        up = F.interpolate(cells.reshape(3, 1, *([grid] * len(size))), size=size, mode="nearest")
        expected = blur(up, kernel_size, sigma)  # the reference: nearest upsample, then separable blur
        torch.testing.assert_close(cells_to_mask(cells, grid, size, kernel_size, sigma), expected, atol=1e-6, rtol=0)


def test_fast_path_equals_paper_path_at_full_resolution(mednist_small):
    images = _upsampled(mednist_small[0][:8], 64)
    paper, [p] = _draw("paper", images)
    # the fast code path at the image's resolution (and the paper's memory format): the paper's draw, bitwise
    fast, [f] = _draw("fast", images, policy_input_size=64, policy_channels_last=True)
    for key in ("image", "mask", "cells", "log_prob", "alpha", "beta"):
        assert torch.equal(getattr(p, key), getattr(f, key)), key
    assert torch.equal(paper.policy.base_alpha, fast.policy.base_alpha)
    _, [low] = _draw("fast", images)  # the default fast preset really differs: no silent change
    assert not torch.equal(low.cells, p.cells)


def test_fast_masks_are_statistically_like_paper_masks(mednist_small):
    x, y, _ = mednist_small
    images = _upsampled(x[::5], 128)  # 48 real images, 8 per class
    stats = {}
    for preset in ("paper", "fast"):
        _, samples = _draw(preset, images, draws=3)
        masks = torch.stack([s.mask for s in samples])
        stats[preset] = (masks.mean().item(), masks.std().item())
    (pm, ps), (fm, fs) = stats["paper"], stats["fast"]
    assert 0.05 < pm < 0.95 and ps > 0.01, stats
    assert abs(pm - fm) < MASK_MEAN_TOL and abs(ps - fs) < MASK_STD_TOL, stats


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 6),
    )  # fmt: skip


def test_short_pretrain_with_fast_preset_moves_the_policy(mednist_small):
    x, y, _ = mednist_small
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    data = [{"image": i, "label": int(t)} for i, t in zip(_upsampled(x[order], 64), y[order], strict=True)]
    handler = build_arm_handler("pgnm", in_channels=1, preset="fast", lr=0.1, epochs=3, seed=0, policy_stats_interval=1)
    before = [p.detach().clone() for p in handler.policy.parameters()]
    base_before = handler.policy.base_alpha.clone()
    net = _classifier()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=3,
        train_data_loader=DataLoader(data, batch_size=16, shuffle=False, drop_last=True),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9),
        loss_function=nn.CrossEntropyLoss(),
        train_handlers=[handler],
    )
    rewards: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: rewards.append(e.state.reward_mean))
    trainer.run()
    per_epoch = len(rewards) // 3
    first, last = sum(rewards[:per_epoch]) / per_epoch, sum(rewards[-per_epoch:]) / per_epoch
    assert last > first + 0.1, (first, last)  # reward = -CE improves
    moved = max((p.detach() - b).abs().max().item() for p, b in zip(handler.policy.parameters(), before, strict=True))
    assert moved > 1e-3
    assert not torch.equal(handler.policy.base_alpha, base_before)


def test_channels_last_policy_is_the_same_policy(mednist_small):
    """The trunk in channels-last memory format: same parameters, same concentrations up to float rounding."""
    from pgnm_monai.networks import NoisePolicy

    x = mednist_small[0][:8]
    policies = []
    for channels_last in (True, False):
        torch.manual_seed(0)
        policies.append(NoisePolicy(grid=8, in_channels=1, channels_last=channels_last).eval())
    fast, plain = policies
    assert fast.trunk.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.trunk.conv1[0].weight.is_contiguous()
    for a, b in zip(fast.state_dict().values(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        (a1, b1), (a2, b2) = fast(x), plain(x)
    torch.testing.assert_close(a1, a2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b1, b2, rtol=1e-4, atol=1e-5)
    # a state dict saved from one format loads into the other and keeps the receiving module's format
    plain.load_state_dict(fast.state_dict())
    assert plain.trunk.conv1[0].weight.is_contiguous()


def test_mask_agreement_tells_the_same_pattern_from_another():
    import numpy as np

    from pgnm_monai.benchmarks.preset_curves import mask_agreement

    rng = np.random.default_rng(0)
    pattern, other = rng.random(64), rng.random(64)
    specific = rng.normal(0, 0.05, (20, 64))
    same = mask_agreement(pattern + specific, pattern + specific + rng.normal(0, 0.01, (20, 64)))
    assert same["pattern_corr"] > 0.99 and same["image_specific_corr"] > 0.9
    different = mask_agreement(pattern + specific, other + rng.normal(0, 0.05, (20, 64)))
    assert abs(different["pattern_corr"]) < 0.5 and abs(different["image_specific_corr"]) < 0.2


def test_step_time_harness_runs_one_real_iteration_per_step():
    """The step-time benchmark drives the trainer through its public ``run()``: each step is exactly one
    ``SupervisedTrainer`` iteration with the arm handler inside it (the policy and the classifier both step),
    and every step's time is recorded."""
    from pgnm_monai.benchmarks.step_time import build_trainer, run_step
    from pgnm_monai.networks import build_classifier

    batch = {"image": torch.rand(4, 1, 32, 32), "label": torch.tensor([0, 1, 0, 1])}
    image_before = batch["image"].clone()
    net = build_classifier("small", 1, 2)
    trainer = build_trainer("pgnm[fast]", net, torch.device("cpu"), 1, "reinforce", False, 0, 2, 8, batch)
    weights = [p.detach().clone() for p in net.parameters()]
    policy = [p.detach().clone() for p in trainer.arm_handler.policy.parameters()]
    seconds = [run_step(trainer) for _ in range(3)]
    assert trainer.state.iteration == 3 and trainer.state.epoch == 3
    assert seconds == trainer.step_timer.times and all(s > 0 for s in seconds)
    assert any(not torch.equal(a, b) for a, b in zip(weights, net.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(policy, trainer.arm_handler.policy.parameters(), strict=True))
    assert torch.equal(batch["image"], image_before)  # the masked image replaced the loader's copy only


def test_plain_loop_is_the_same_step_without_the_trainer():
    """``step_time``'s ``plain`` variant: the same network, optimiser and batch in a hand-written loop, so its
    arithmetic equals the baseline trainer's (FLOP floor 1) and one step moves the same weights the same way."""
    from pgnm_monai.benchmarks.step_time import PLAIN, PlainLoop, build_trainer, run_step, step_flops
    from pgnm_monai.networks import build_classifier

    batch = {"image": torch.rand(4, 1, 32, 32), "label": torch.tensor([0, 1, 0, 1])}
    torch.manual_seed(0)
    net = build_classifier("small", 1, 2)
    plain = build_trainer(PLAIN, copy.deepcopy(net), torch.device("cpu"), 1, "reinforce", False, 0, 2, 8, batch)
    base = build_trainer("baseline", copy.deepcopy(net), torch.device("cpu"), 1, "reinforce", False, 0, 2, 8, batch)
    assert isinstance(plain, PlainLoop) and step_flops(plain) == step_flops(base)
    for a, b in zip(plain.net.parameters(), base.network.parameters(), strict=True):
        torch.testing.assert_close(a, b)  # one step of each: the same update
    assert run_step(plain) > 0 and len(plain.times) == 2


def test_gpu_checks_compute_their_verdicts_and_need_a_gpu():
    from pgnm_monai.benchmarks import gpu_checks

    def table(base, plain, fast, paper, floor):
        med = {"baseline": base, "plain": plain, "pgnm[fast]": fast, "pgnm[paper]": paper}
        floors = {"pgnm[paper]": floor}
        return {v: {"median_s": m, "ratio": m / base, "floor": floors.get(v, 1.0)} for v, m in med.items()}

    good = gpu_checks.verdicts({"resnet50-224-b128-bf16": table(1.0, 0.97, 1.04, 1.40, 1.272)})
    assert [v["met"] for v in good] == [True, True, False] and good[2]["ratio"] == pytest.approx(1.40 / 1.272)
    slow = gpu_checks.verdicts({"resnet50-224-b128-bf16": table(1.48, 1.0, 1.50, 1.9, 1.272)})
    assert [v["met"] for v in slow] == [False, True, True]
    assert gpu_checks.verdicts({}) == []
    if not torch.cuda.is_available():
        assert gpu_checks.main(["--output-dir", "unused"]) == 2


@pytest.mark.parametrize("name,spatial_dims", [("resnet10t", 2), ("resnet18", 3), ("densenet121", 2), ("small", 2)])
def test_uninitialised_classifier_loads_to_the_same_network_without_random_draws(name, spatial_dims):
    """``build_classifier(init=False)`` (evaluation, inference): no random numbers drawn; loaded strictly, it is
    the same network."""
    from pgnm_monai.networks import build_classifier

    torch.manual_seed(0)
    trained = build_classifier(name, 3, 4, spatial_dims).eval()
    state = torch.get_rng_state()
    empty = build_classifier(name, 3, 4, spatial_dims, init=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(t.device.type == "cpu" for t in empty.state_dict().values())
    empty.load_state_dict(trained.state_dict(), strict=True)
    x = torch.randn(2, 3, *(32,) * spatial_dims)
    with torch.no_grad():
        assert torch.equal(empty.eval()(x), trained(x))


def test_channels_last_max_pool_is_max_pool():
    """The classifiers' stem pool: nn.MaxPool2d's values and gradients, in the input's memory format."""
    from pgnm_monai.networks import build_classifier
    from pgnm_monai.networks.classifiers import ChannelsLastMaxPool2d

    fast, plain = ChannelsLastMaxPool2d(3, 2, 1), nn.MaxPool2d(3, 2, 1)
    x = torch.randn(4, 8, 17, 16)
    with torch.no_grad():
        for inp in (x, x.contiguous(memory_format=torch.channels_last)):
            out = fast(inp)
            assert torch.equal(out, plain(inp))
            cl = inp.is_contiguous(memory_format=torch.channels_last)
            assert out.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast(a).square().sum().backward()
    plain(b).square().sum().backward()
    assert torch.equal(a.grad, b.grad)
    net = build_classifier("resnet18", 1, 3)
    assert isinstance(net.maxpool, ChannelsLastMaxPool2d)
    assert isinstance(build_classifier("resnet18", 1, 3, spatial_dims=3).maxpool, nn.MaxPool3d)


def test_step_time_ratio_interval_brackets_the_ratio_and_narrows_with_rounds():
    """The ratio's own noise: a bootstrap over the interleaved rounds, around the ratio of medians."""
    import numpy as np

    from pgnm_monai.benchmarks.step_time import ratio_interval

    rng = np.random.default_rng(0)
    few, many = (list(1.0 + 0.05 * rng.standard_normal(n)) for n in (10, 200))
    low, high = ratio_interval([1.08 * t for t in few], few)
    assert low <= 1.08 <= high  # paired rounds: the variant costs 8% more in every round
    wide = ratio_interval(list(1.08 + 0.05 * rng.standard_normal(10)), few)
    narrow = ratio_interval(list(1.08 + 0.05 * rng.standard_normal(200)), many)
    assert wide[0] < 1.08 < wide[1] and narrow[1] - narrow[0] < wide[1] - wide[0]
