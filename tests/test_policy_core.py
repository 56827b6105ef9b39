"""The noise-policy core: policy network, mask sampling, transforms and objectives."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from monai.data import MetaTensor
from torch import nn

from pgnm_monai.mask import apply_noise_mask, blur, sample_cells
from pgnm_monai.networks import NoisePolicy
from pgnm_monai.objectives import RewardBaseline, normalized_advantage, paper_objective, reinforce_objective
from pgnm_monai.transforms import PolicyNoiseMask, PolicyNoiseMaskd, RandomBetaMask, RandomBetaMaskd


def small_policy(grid: int = 4, in_channels: int = 1, seed: int = 0, **kwargs) -> NoisePolicy:
    torch.manual_seed(seed)
    return NoisePolicy(grid=grid, in_channels=in_channels, trunk="small", head_hidden=32, **kwargs)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("grid", "size"), [(4, 32), (8, 32), (32, 32), (7, 48), (16, 48)])
def test_mask_shape_and_range(channels, grid, size):
    policy = small_policy(grid=grid, in_channels=channels, kernel_size=5, sigma=2.0)
    transform = PolicyNoiseMask(policy).set_random_state(3)
    image = torch.randn(3, channels, size, size)
    out = transform(image)
    sample = transform.last_sample
    assert out.shape == image.shape
    assert sample.mask.shape == (3, 1, size, size)
    assert sample.cells.shape == sample.log_prob.shape == sample.entropy.shape == (3, grid * grid)
    eps = policy.eps
    assert sample.cells.min() >= eps and sample.cells.max() <= 1 - eps
    # a blur is a convex combination: the mask stays inside the cells' range
    assert sample.mask.min() >= eps - 1e-6 and sample.mask.max() <= 1 - eps + 1e-6
    torch.testing.assert_close(out, image * sample.mask)
    assert torch.isfinite(sample.log_prob).all() and torch.isfinite(sample.entropy).all()


def test_same_seed_same_mask_different_seed_different_mask():
    image = torch.randn(4, 1, 32, 32)

    def draw(seed: int) -> torch.Tensor:
        policy = small_policy(grid=8).eval()  # eval: no base update, so only the draw differs
        return PolicyNoiseMask(policy).set_random_state(seed)(image)

    torch.testing.assert_close(draw(1), draw(1), rtol=0, atol=0)
    assert not torch.equal(draw(1), draw(2))
    # and a transform's successive draws differ
    t = RandomBetaMask(grid=8, kernel_size=5, sigma=2.0).set_random_state(5)
    assert not torch.equal(t(image), t(image))


def test_random_beta_mask_uniform_cells():
    t = RandomBetaMask(grid=16, kernel_size=1, sigma=1.0).set_random_state(0)
    t(torch.ones(64, 1, 16, 16))
    cells = t.last_sample.cells
    assert abs(cells.mean().item() - 0.5) < 0.01
    assert abs(cells.var().item() - 1 / 12) < 0.005  # variance of Uniform(0, 1)


def test_mask_carries_no_gradient_log_prob_reaches_policy_only():
    policy = small_policy(grid=4)
    image = torch.randn(4, 1, 16, 16, requires_grad=True)
    out = PolicyNoiseMask(policy).set_random_state(0)
    masked = out(image)
    assert not masked.requires_grad
    sample = out.last_sample
    assert not sample.mask.requires_grad and not sample.cells.requires_grad
    assert sample.log_prob.requires_grad and sample.entropy.requires_grad
    sample.log_prob.sum().backward()
    assert image.grad is None
    grads = [p.grad for p in policy.parameters()]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_metatensor_and_dict_transform_wrap_the_array_transform():
    policy = small_policy(grid=4).eval()
    image = MetaTensor(torch.randn(2, 1, 16, 16), meta={"filename_or_obj": "batch"})
    array_out = PolicyNoiseMask(policy).set_random_state(7)(image)
    assert isinstance(array_out, MetaTensor) and array_out.meta["filename_or_obj"] == "batch"
    dict_t = PolicyNoiseMaskd(keys="image", policy=policy).set_random_state(7)
    assert isinstance(dict_t.mask, PolicyNoiseMask)  # the dictionary transform wraps the array one
    d = dict_t({"image": image, "label": torch.tensor([0, 1])})
    torch.testing.assert_close(d["image"].as_tensor(), array_out.as_tensor(), rtol=0, atol=0)
    assert d["label"].tolist() == [0, 1]
    assert dict_t.last_sample is dict_t.last_samples["image"]
    rand_d = RandomBetaMaskd(keys=["image"], grid=4, kernel_size=3, sigma=1.0).set_random_state(1)
    assert isinstance(rand_d.mask, RandomBetaMask)
    ref = RandomBetaMask(grid=4, kernel_size=3, sigma=1.0).set_random_state(1)(image)
    torch.testing.assert_close(rand_d({"image": image})["image"].as_tensor(), ref.as_tensor(), rtol=0, atol=0)


def test_blur_is_torchvision_gaussian_blur_with_reflect_padding():
    x = torch.rand(2, 1, 40, 40)
    torch.testing.assert_close(blur(x, 13, 6.0), TF.gaussian_blur(x, [13, 13], [6.0, 6.0]), atol=1e-5, rtol=0)
    assert torch.equal(blur(x, 1, 1.0), x)


def test_3d_volumes():
    policy = small_policy(grid=4, spatial_dims=3, kernel_size=3, sigma=1.0)
    x = torch.randn(2, 1, 16, 16, 16)
    transform = PolicyNoiseMask(policy).set_random_state(0)
    out = transform(x)
    sample = transform.last_sample
    assert sample.mask.shape == (2, 1, 16, 16, 16) and sample.cells.shape == sample.log_prob.shape == (2, 64)
    torch.testing.assert_close(out, x * sample.mask)
    assert policy.base_alpha.shape == (1, 64)


def test_policy_input_size_equal_to_image_gives_the_same_mask():
    image = torch.randn(4, 1, 32, 32)
    full = PolicyNoiseMask(small_policy(grid=8).eval()).set_random_state(0)(image)
    same = PolicyNoiseMask(small_policy(grid=8, input_size=32).eval()).set_random_state(0)(image)
    torch.testing.assert_close(full, same, rtol=0, atol=0)
    low = PolicyNoiseMask(small_policy(grid=8, input_size=16).eval()).set_random_state(0)(image)
    assert low.shape == image.shape and not torch.equal(low, full)


def _beta_logpdf(m: float, a: float, b: float) -> float:
    log_beta_fn = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return (a - 1) * math.log(m) + (b - 1) * math.log(1 - m) - log_beta_fn


def test_paper_objective_matches_reference_and_official_gradients():
    torch.manual_seed(0)
    batch, cells = 3, 4
    log_a = torch.randn(batch, cells, dtype=torch.float64, requires_grad=True)  # stands in for the policy
    log_b = torch.randn(batch, cells, dtype=torch.float64, requires_grad=True)
    classifier = nn.Linear(5, 2).double()
    x, y = torch.randn(batch, 5, dtype=torch.float64), torch.tensor([0, 1, 1])
    alpha, beta = log_a.exp(), log_b.exp()
    m, log_prob, _ = sample_cells(alpha, beta, eps=1e-4, generator=torch.Generator().manual_seed(0))
    ce = nn.functional.cross_entropy(classifier(x), y, reduction="none")

    # an independent reference, by hand with math.lgamma: mean_b(log sum_k pdf) * CE_mean
    per_image = []
    for i in range(batch):
        logpdfs = [_beta_logpdf(m[i, k].item(), alpha[i, k].item(), beta[i, k].item()) for k in range(cells)]
        top = max(logpdfs)
        per_image.append(top + math.log(sum(math.exp(v - top) for v in logpdfs)))
    reference = sum(per_image) / batch * ce.mean().item()

    out = paper_objective(log_prob, ce)
    assert out.policy_term.item() * ce.mean().item() == pytest.approx(reference, rel=1e-10)
    assert out.classifier_scale.item() == pytest.approx(sum(per_image) / batch, rel=1e-10)

    # gradients of the split losses == gradients of the official loss L = policy_term * CE_mean
    params = [log_a, log_b, *classifier.parameters()]
    official = torch.autograd.grad(out.policy_term * ce.mean(), params, retain_graph=True)
    split = torch.autograd.grad(out.policy_loss + out.classifier_scale * ce.mean(), params, retain_graph=True)
    for g_official, g_split in zip(official, split, strict=True):
        torch.testing.assert_close(g_split, g_official, rtol=1e-12, atol=1e-12)
    # classifier gradient == plain CE gradient scaled by the policy term
    plain = torch.autograd.grad(ce.mean(), list(classifier.parameters()), retain_graph=True)
    for g_plain, g_split in zip(plain, split[2:], strict=True):
        torch.testing.assert_close(g_split, g_plain * out.classifier_scale, rtol=1e-12, atol=1e-12)


def test_paper_objective_uses_logsumexp_without_overflow():
    log_prob = torch.full((2, 8), 1000.0)
    out = paper_objective(log_prob, torch.ones(2))
    assert torch.isfinite(out.policy_term) and out.policy_term.item() == pytest.approx(1000 + math.log(8))


def test_reinforce_objective_values():
    log_prob = torch.tensor([[0.0, -1.0], [-2.0, 0.5]], requires_grad=True)
    ce = torch.tensor([1.0, 3.0])
    entropy = torch.tensor([[0.1, 0.3], [0.2, 0.2]], requires_grad=True)
    out = reinforce_objective(log_prob, ce, baseline=-2.0, entropy=entropy, entropy_weight=0.5)
    assert out.reward.tolist() == [-1.0, -3.0]
    assert out.advantage.tolist() == [1.0, -1.0]
    # -(1 * -1 + -1 * -1.5) / 2 - 0.5 * mean_b(sum_k H) = -0.25 - 0.5 * 0.4
    assert out.policy_loss.item() == pytest.approx(-0.45)
    adversarial = reinforce_objective(log_prob, ce, baseline=2.0, reward_sign=1)
    assert adversarial.reward.tolist() == [1.0, 3.0] and adversarial.advantage.tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match="reward_sign"):
        reinforce_objective(log_prob, ce, baseline=0.0, reward_sign=0)
    with pytest.raises(ValueError, match="entropy"):
        reinforce_objective(log_prob, ce, baseline=0.0, entropy_weight=0.1)
    with pytest.raises(ValueError, match="ce must be"):
        reinforce_objective(log_prob, torch.ones(3), baseline=0.0)


def test_reinforce_entropy_bonus_is_summed_over_cells_like_the_policy_term():
    torch.manual_seed(0)
    log_prob, entropy, ce = torch.randn(4, 16), torch.randn(4, 16), torch.rand(4)
    plain = reinforce_objective(log_prob, ce, baseline=-0.5).policy_loss
    with_bonus = reinforce_objective(log_prob, ce, baseline=-0.5, entropy=entropy, entropy_weight=0.1).policy_loss
    # per-sample entropy summed over the cells, averaged over the batch
    torch.testing.assert_close(with_bonus - plain, -0.1 * entropy.sum(dim=1).mean())
    # commensurate with the policy term at any grid: twice the cells doubles both terms, the ratio is unchanged
    doubled = reinforce_objective(
        torch.cat([log_prob, log_prob], 1), ce, -0.5, torch.cat([entropy, entropy], 1), entropy_weight=0.1
    ).policy_loss
    torch.testing.assert_close(doubled, 2 * with_bonus)
    # entropy_weight 0 ignores the entropy entirely (the default runs are unchanged)
    assert torch.equal(reinforce_objective(log_prob, ce, -0.5, entropy, 0.0).policy_loss, plain)


def test_normalized_advantage():
    log_prob = torch.randn(4, 3, requires_grad=True)
    ce = torch.tensor([1.0, 2.0, 4.0, 5.0])
    out = reinforce_objective(log_prob, ce, advantage="normalized")
    reward = -ce
    expected = (reward - reward.mean()) / (reward.std(correction=0) + 1e-8)
    torch.testing.assert_close(out.advantage, expected)
    assert abs(out.advantage.mean().item()) < 1e-6 and out.advantage.std(correction=0).item() == pytest.approx(1.0)
    torch.testing.assert_close(out.policy_loss, -(expected * log_prob.sum(1)).mean())
    # invariant to the reward's scale and offset (the baseline argument is ignored unless given as the mean)
    torch.testing.assert_close(reinforce_objective(log_prob, 10 * ce + 3, advantage="normalized").advantage, expected)
    adversarial = reinforce_objective(log_prob, ce, advantage="normalized", reward_sign=1)
    torch.testing.assert_close(adversarial.advantage, -expected)
    # explicit (e.g. all-rank) statistics
    torch.testing.assert_close(normalized_advantage(reward, mean=-3.0, std=2.0), (reward + 3.0) / (2.0 + 1e-8))
    # equal rewards and a batch of one give zero advantages, not NaN
    assert normalized_advantage(torch.full((4,), 0.7)).abs().max().item() < 1e-3
    assert normalized_advantage(torch.tensor([1.5])).tolist() == [0.0]
    assert not normalized_advantage(reward.requires_grad_()).requires_grad
    with pytest.raises(ValueError, match="advantage must be one of"):
        reinforce_objective(log_prob, ce, 0.0, advantage="gae")
    with pytest.raises(ValueError, match="baseline is required"):
        reinforce_objective(log_prob, ce)


def test_reward_baseline_moving_average_and_state():
    baseline = RewardBaseline(momentum=0.5)
    assert baseline(torch.tensor(2.0)).item() == 2.0  # first batch: its own mean
    assert baseline(torch.tensor(4.0)).item() == 2.0  # then: the average before this batch
    assert baseline.value.item() == 3.0
    restored = RewardBaseline(momentum=0.5)
    restored.load_state_dict(baseline.state_dict())
    assert restored(torch.tensor(0.0)).item() == 3.0


def test_reinforce_policy_learns_a_bandit():
    """Reward = mean cell value in the left half minus the right half: the policy must open the left
    half (cells -> 1) and close the right half (cells -> 0)."""
    grid = 4
    policy = small_policy(grid=grid, kernel_size=1, sigma=1.0)
    transform = PolicyNoiseMask(policy).set_random_state(0)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    baseline = RewardBaseline(momentum=0.9)
    left = torch.zeros(grid, grid, dtype=torch.bool)
    left[:, : grid // 2] = True
    left = left.flatten()
    generator = torch.Generator().manual_seed(0)

    def gap() -> float:
        cells = transform.last_sample.cells
        return (cells[:, left].mean() - cells[:, ~left].mean()).item()

    gaps = []
    for _ in range(300):
        transform(torch.randn(16, 1, 16, 16, generator=generator))
        sample = transform.last_sample
        reward = sample.cells[:, left].mean(1) - sample.cells[:, ~left].mean(1)
        ce = -reward  # reinforce_objective rewards -CE
        loss = reinforce_objective(sample.log_prob, ce, baseline(-ce.mean())).policy_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        gaps.append(gap())
    assert sum(gaps[:20]) / 20 < 0.1  # starts near chance
    assert sum(gaps[-20:]) / 20 > 0.5  # learned: left cells well above right cells


def test_base_vectors_update_rule_and_state_dict():
    policy = small_policy(grid=4)
    before_a, before_b = policy.base_alpha.clone(), policy.base_beta.clone()
    captured = {}
    policy.alpha_head.register_forward_hook(lambda m, i, o: captured.__setitem__("a", o.detach()))
    policy.beta_head.register_forward_hook(lambda m, i, o: captured.__setitem__("b", o.detach()))
    alpha, beta = policy(torch.randn(6, 1, 16, 16))
    torch.testing.assert_close(alpha, torch.exp((0.9 * before_a + 0.1 * captured["a"]).clamp(-10, 10)))
    torch.testing.assert_close(beta, torch.exp((0.9 * before_b + 0.1 * captured["b"]).clamp(-10, 10)))
    torch.testing.assert_close(policy.base_alpha, 0.99 * before_a + 0.01 * captured["a"].mean(0, keepdim=True))
    torch.testing.assert_close(policy.base_beta, 0.99 * before_b + 0.01 * captured["b"].mean(0, keepdim=True))

    state = policy.state_dict()
    assert "base_alpha" in state and "base_beta" in state
    fresh = small_policy(grid=4, seed=123)
    assert not torch.equal(fresh.base_alpha, policy.base_alpha)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.base_alpha, policy.base_alpha) and torch.equal(fresh.base_beta, policy.base_beta)

    policy.eval()  # eval mode leaves the base alone
    frozen = policy.base_alpha.clone()
    policy(torch.randn(2, 1, 16, 16))
    assert torch.equal(policy.base_alpha, frozen)


@pytest.mark.slow
def test_no_nan_after_2000_steps_on_hostile_inputs():
    policy = small_policy(grid=4, kernel_size=3, sigma=1.0)
    transform = PolicyNoiseMask(policy).set_random_state(0)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5, momentum=0.9)
    baseline = RewardBaseline()
    hostile = [torch.zeros(4, 1, 8, 8), torch.full((4, 1, 8, 8), 3.0), torch.full((4, 1, 8, 8), 1e6)]
    hostile.append(torch.cat([hostile[0][:2], hostile[2][:2]]))  # zeros and huge values in one batch
    for step in range(2000):
        transform(hostile[step % len(hostile)])
        sample = transform.last_sample
        ce = torch.rand(4) * 5
        if step % 2:
            loss = paper_objective(sample.log_prob, ce).policy_loss
        else:
            loss = reinforce_objective(sample.log_prob, ce, baseline(-ce.mean()), sample.entropy, 0.01).policy_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss), f"step {step}: policy loss {loss.item()}"
        assert torch.isfinite(sample.image).all() and torch.isfinite(sample.log_prob).all(), f"step {step}"
    assert all(torch.isfinite(p).all() for p in policy.parameters())
    assert torch.isfinite(policy.base_alpha).all() and torch.isfinite(policy.base_beta).all()


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"kernel_size": 4}, "kernel_size"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"eps": 0.0}, "eps"),
        ({"eps": 0.5}, "eps"),
        ({"grid": 0}, "grid"),
    ],
)
def test_bad_parameters_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        small_policy(**kwargs)
    rand_kwargs = {"grid": 4, **kwargs}
    with pytest.raises(ValueError, match=argument):
        RandomBetaMask(**rand_kwargs)


def test_bad_images_name_the_problem():
    transform = PolicyNoiseMask(small_policy(grid=8, kernel_size=3, sigma=1.0))
    with pytest.raises(ValueError, match=r"grid \(8\) is larger than the image"):
        transform(torch.randn(2, 1, 4, 4))
    with pytest.raises(ValueError, match="must have 4 dims"):
        transform(torch.randn(1, 16, 16))
    with pytest.raises(ValueError, match="must have 4 dims"):
        transform(torch.randn(2, 1, 16, 16, 16))
    bad = torch.randn(2, 1, 16, 16)
    bad[0, 0, 3, 3] = float("nan")
    base = transform.policy.base_alpha.clone()
    with pytest.raises(ValueError, match="NaN"):
        transform(bad)
    assert torch.equal(transform.policy.base_alpha, base)  # the policy never saw the bad batch
    with pytest.raises(ValueError, match="channels"):
        transform(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="alpha/beta"):
        apply_noise_mask(
            torch.randn(2, 1, 16, 16), torch.ones(2, 5), torch.ones(2, 5), grid=4, kernel_size=3, sigma=1.0, eps=1e-4
        )
    with pytest.raises(ValueError, match="in_channels"):
        NoisePolicy(grid=4, in_channels=0)
    with pytest.raises(ValueError, match="input_size"):
        NoisePolicy(grid=8, input_size=0)
    with pytest.raises(ValueError, match="batch of >= 2"):
        transform(torch.randn(1, 1, 16, 16))


@pytest.mark.parametrize(("a", "b"), [(0.3, 0.7), (1.0, 1.0), (0.9, 1.1), (5.0, 0.5), (50.0, 80.0), (0.05, 0.08)])
def test_cpu_beta_sampler_draws_the_beta_distribution(a, b):
    """The vectorised CPU sampler (Marsaglia-Tsang gamma draws, boosted below 1) against scipy's Beta CDF."""
    from scipy import stats

    from pgnm_monai.mask import sample_beta

    n = 20_000
    generator = torch.Generator().manual_seed(0)
    draws = sample_beta(torch.full((n,), a), torch.full((n,), b), generator)
    assert draws.dtype == torch.float32 and bool(((draws >= 0) & (draws <= 1)).all())
    values = draws.double().numpy()
    if min(a, b) < 0.1:  # most mass within float32's spacing of 0 or 1: compare the share below the median instead
        share = float((values < stats.beta(a, b).median()).mean())
        assert abs(share - 0.5) < 0.02, share
    else:
        assert stats.kstest(values, stats.beta(a, b).cdf).pvalue > 1e-3
    again = sample_beta(torch.full((n,), a), torch.full((n,), b), torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)  # the same generator seed, the same draws


def test_cpu_beta_sampler_ends_on_non_finite_concentrations():
    """A NaN or infinite concentration (a diverged policy) draws at once, NaN where it is NaN, instead of being
    rejected forever; the handler's finiteness check then names the iteration."""
    from pgnm_monai.mask import sample_beta

    alpha = torch.tensor([float("nan"), float("inf"), 2.0, 0.0])
    beta = torch.tensor([1.0, 1.0, float("nan"), 1.0])
    draws = sample_beta(alpha, beta, torch.Generator().manual_seed(0))
    assert torch.isnan(draws[0]) and draws[1] == 1.0 and torch.isnan(draws[2]) and draws[3] == 0.0
