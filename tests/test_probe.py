"""End to end: pretrain two arms x two seeds on the embedded data, probe them, summarise with paired bootstrap CIs."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from pgnm_monai.data import few_shot_subset
from pgnm_monai.experiments import runner
from pgnm_monai.experiments.probe import (
    RUN_COLUMNS,
    draw_episodes,
    extract_features,
    feature_extractor,
    preprocess,
    run_probe,
    stratified_quotas,
)
from pgnm_monai.experiments.probe_report import probe_report_markdown, probe_summary, write_probe_report
from pgnm_monai.experiments.statistics import bootstrap_interval
from pgnm_monai.experiments.tasks import Task
from pgnm_monai.networks import build_classifier

ARMS = ("none", "pgnm-reinforce")
SEEDS = (0, 1)
EPISODES = 20
SETTINGS = {"network": "small", "image_size": 32, "in_channels": 1, "spatial_dims": 2, "batch_size": 8, "device": "cpu"}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    for arm in ARMS:
        for seed in SEEDS:
            runner.pretrain(
                out / "pretrain" / f"{arm}_seed{seed}",
                arm=arm,
                seed=seed,
                epochs=1,
                network="small",
                image_size=32,
                grid=8,
                kernel_size=3,
                sigma=1.0,
                batch_size=8,
                progress_bar=False,
                tensorboard=False,
            )
    return out


@pytest.fixture(scope="module")
def probed(pretrained):
    args = ([Task("embedded", None, None)], ARMS, SEEDS, (8,))
    first = run_probe(pretrained, *args, n_episodes=EPISODES, seed=0, n_jobs=2, **SETTINGS)
    shutil.rmtree(pretrained / "probe")  # recompute from scratch, in one process: the same rows
    second = run_probe(pretrained, *args, n_episodes=EPISODES, seed=0, n_jobs=1, **SETTINGS)
    return pretrained, first, second


@pytest.mark.slow
def test_probe_is_incremental_per_model(pretrained, tmp_path):
    """Models probed with the same settings are read back; new seeds, new settings or a changed model are probed."""
    out = tmp_path / "out"
    for arm in ARMS:
        for seed in SEEDS:
            shutil.copytree(
                pretrained / "pretrain" / f"{arm}_seed{seed}" / "models",
                out / "pretrain" / f"{arm}_seed{seed}" / "models",
            )
    task = [Task("embedded", None, None)]
    run_probe(out, task, ARMS, SEEDS[:1], (8,), n_episodes=5, n_jobs=1, **SETTINGS)
    cached = sorted((out / "probe" / "embedded").glob("*.csv"))
    assert [p.name.rsplit("-", 1)[0] for p in cached] == ["none_seed0", "pgnm-reinforce_seed0"]
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    frame = run_probe(out, task, ARMS, SEEDS, (8,), n_episodes=5, n_jobs=1, **SETTINGS)  # adds seed 1 only
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps
    assert len(list((out / "probe" / "embedded").glob("*.csv"))) == 4 and len(frame) == 4 * 5 * 4  # x 4 probes
    run_probe(out, task, ARMS, SEEDS, (8,), n_episodes=6, n_jobs=1, **SETTINGS)  # new settings: recomputed
    assert len(list((out / "probe" / "embedded").glob("*.csv"))) == 4  # stale files replaced, not kept
    assert all(not p.exists() for p in cached)
    # a retrained model (other bytes) is probed again
    model = out / "pretrain" / "none_seed0" / "models" / "model.pt"
    state = torch.load(model, weights_only=True)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, model)
    before = {p.name for p in (out / "probe" / "embedded").glob("none_seed0-*.csv")}
    run_probe(out, task, ARMS, SEEDS, (8,), n_episodes=6, n_jobs=1, **SETTINGS)
    after = {p.name for p in (out / "probe" / "embedded").glob("none_seed0-*.csv")}
    assert len(after) == 1 and after != before
    assert len(pd.read_csv(out / "probe_runs.csv")) == 4 * 6 * 4


def test_episodes_are_stratified_seeded_and_match_few_shot_counts():
    labels = np.array([0] * 30 + [1] * 9 + [2] * 3 + [3] * 1)
    items = [{"label": int(y)} for y in labels]
    for n in (2, 4, 7, 16, 43):
        expected = np.bincount([it["label"] for it in few_shot_subset(items, n, seed=3)], minlength=4)
        np.testing.assert_array_equal(stratified_quotas(np.bincount(labels), n), expected)
    episodes = draw_episodes(labels, 8, 50, seed=1)
    assert all(len(e) == 8 and len(set(e)) == 8 and set(labels[e]) == {0, 1, 2, 3} for e in episodes)
    assert len({tuple(e) for e in episodes}) > 40  # episodes differ
    again = draw_episodes(labels, 8, 50, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(episodes, again, strict=True))
    assert not np.array_equal(draw_episodes(labels, 8, 1, seed=2)[0], episodes[0])


def test_feature_extractor_gives_the_head_input(pretrained):
    path = pretrained / "pretrain" / "none_seed0" / "models" / "model.pt"
    model, classes = feature_extractor(path, "small", 1, 2)
    assert classes == 4 and isinstance(model.fc, torch.nn.Identity)
    full = build_classifier("small", 1, classes)
    full.load_state_dict(torch.load(path, weights_only=True))
    full.eval()
    from pgnm_monai.components import load_data

    items = load_data(None, None, "test").items
    images = preprocess(items, 32, 1, 2)
    feats = extract_features(model, images, batch_size=4, device="cpu")
    assert feats.shape == (len(items), 64)
    with torch.no_grad():
        logits = full(images).numpy()
    np.testing.assert_allclose(
        feats @ full.fc.weight.detach().numpy().T + full.fc.bias.detach().numpy(), logits, rtol=1e-4, atol=1e-4
    )


@pytest.mark.slow
def test_run_probe_rows_shared_episodes_and_determinism(probed):
    out, frame, again = probed
    assert list(frame.columns) == list(RUN_COLUMNS)
    assert len(frame) == len(ARMS) * len(SEEDS) * 1 * EPISODES * 4  # arms x seeds x N x episodes x probes
    assert set(frame["probe"]) == {"linear", "centroid", "linear_bn", "centroid_bn"} and set(frame["n"]) == {8}
    assert frame[["macro_f1", "balanced_accuracy"]].notna().all().all()
    assert frame["n_test"].eq(9).all()
    # the same episodes for every arm and pretrain seed
    hashes = frame.groupby(["task", "n", "episode"])["episode_hash"].nunique()
    assert hashes.eq(1).all()
    assert frame["episode_hash"].nunique() > EPISODES // 2
    pd.testing.assert_frame_equal(frame, again)
    pd.testing.assert_frame_equal(pd.read_csv(out / "probe_runs.csv"), frame, check_dtype=False)
    # models differ: not every arm/seed gives the same scores
    assert frame.groupby(["arm", "pretrain_seed"])["macro_f1"].mean().nunique() > 1


def test_hierarchical_bootstrap_includes_seed_variation():
    rng = np.random.default_rng(0)
    noise = 0.02 * rng.standard_normal((4, 200))
    same = 0.5 + noise
    shifted = same + np.array([[-0.1], [0.0], [0.05], [0.1]])  # pretrain seeds that differ
    for values in (same, shifted):
        assert bootstrap_interval(values, 500, 0)[0] == pytest.approx(values.mean())
    _, lo, hi = bootstrap_interval(shifted, 500, 0)
    _, elo, ehi = bootstrap_interval(shifted, 500, 0, resample_seeds=False)
    assert hi - lo > 5 * (ehi - elo)
    _, lo, hi = bootstrap_interval(same, 500, 0)
    _, elo, ehi = bootstrap_interval(same, 500, 0, resample_seeds=False)
    assert hi - lo < 3 * (ehi - elo)


def test_summary_paired_deltas_and_report(probed):
    out, frame, _ = probed
    summary = probe_summary(frame, n_boot=300)
    assert len(summary) == 4 * len(ARMS)  # probes (2 feature sets x 2) x arms for the one task and N
    base = summary[summary["arm"] == "none"]
    other = summary[summary["arm"] == "pgnm-reinforce"]
    assert base["delta"].isna().all() and (base["result"] == "").all()
    assert set(other["result"]) <= {"win", "tie", "loss"}
    assert (other[["seeds", "episodes"]] == [len(SEEDS), EPISODES]).all().all()
    for probe, row in other.set_index("probe").iterrows():
        sub = frame[frame["probe"] == probe]
        pivot = sub.pivot_table(index=["pretrain_seed", "episode"], columns="arm", values="macro_f1")
        paired = (pivot["pgnm-reinforce"] - pivot["none"]).mean()
        assert row["delta"] == pytest.approx(paired)
        assert row["delta_low"] <= row["delta"] <= row["delta_high"]
        assert row["delta_half"] == pytest.approx((row["delta_high"] - row["delta_low"]) / 2)
        diffs = (pivot["pgnm-reinforce"] - pivot["none"]).unstack("episode").to_numpy()  # seeds x episodes
        assert (row["delta"], row["delta_low"], row["delta_high"]) == pytest.approx(bootstrap_interval(diffs, 300, 0))
    # the interval includes the pretrain-seed variation: shift one pretrain seed of one arm by a constant; the
    # episodes-only half-width is unchanged, the hierarchical one grows with the gap between the seeds
    shifted = frame.copy()
    moved = (shifted["arm"] == "pgnm-reinforce") & (shifted["pretrain_seed"] == 1)
    shifted.loc[moved, "macro_f1"] += 0.3
    wide = probe_summary(shifted, n_boot=300).set_index(["probe", "arm"]).loc[(slice(None), "pgnm-reinforce"), :]
    narrow = other.set_index(["probe", "arm"])
    np.testing.assert_allclose(wide["delta_half_episodes"], narrow["delta_half_episodes"], atol=1e-9)
    assert (wide["delta_half"] > 0.1).all() and (wide["delta_half"] > 1.5 * narrow["delta_half"]).all()
    assert (wide["delta_half"] > 1.5 * wide["delta_half_episodes"]).all()
    assert probe_summary(frame, n_boot=300).equals(summary)
    text = probe_report_markdown(summary)
    assert "hierarchical bootstrap" in text and "pgnm-reinforce" in text and "Win / tie / loss" in text
    assert write_probe_report(frame, out, n_boot=300).equals(summary)
    assert (out / "probe_report.md").read_text() == "# PGNM probe protocol\n\n" + text
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "probe_summary.csv", keep_default_na=False).iloc[:, :4], summary.iloc[:, :4]
    )


def test_batchnorm_statistics_are_re_estimated_on_the_given_images():
    """``reestimate_batchnorm``: every BN layer's running mean and variance become those of its inputs over the
    clean images (whatever they were: here garbage), the weights stay, and the model is left in eval mode."""
    from pgnm_monai.experiments.probe import reestimate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    bn = model[1]
    bn.running_mean.fill_(50.0)
    bn.running_var.fill_(1e-3)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    images = torch.rand(10, 1, 8, 8) * 3 + 1
    reestimate_batchnorm(model, images, batch_size=10, device="cpu")  # one batch: the exact statistics
    with torch.no_grad():
        conv = model[0](images)
    torch.testing.assert_close(bn.running_mean, conv.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(bn.running_var, conv.var(dim=(0, 2, 3), unbiased=True))
    assert not model.training and all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


def test_a_model_with_masked_image_statistics_probes_clean_images_better_once_they_are_re_estimated():
    """The probe's BN mismatch on a toy: two oriented edge detectors with a brightness (DC) term, their batch norm's
    statistics learned on Beta-masked images (train-mode passes, as pretraining leaves them). On clean, brighter
    images every unit is pushed into ReLU's linear range, the pooled features lose the orientation and the linear
    probe is at chance; re-estimated on clean, unlabelled images (:func:`reestimate_batchnorm`) it separates them."""
    import math

    from pgnm_monai.experiments.probe import PROBES, extract_features, reestimate_batchnorm
    from pgnm_monai.transforms import RandomBetaMask

    g = torch.Generator().manual_seed(0)

    def stripes(n: int) -> tuple[torch.Tensor, np.ndarray]:  # class 0: horizontal stripes, class 1: vertical
        labels, c = torch.arange(n) % 2, torch.arange(16.0)
        period, phase = 4 + 4 * torch.rand(n, 1, 1, generator=g), 2 * math.pi * torch.rand(n, 1, 1, generator=g)
        rows = torch.sin(2 * math.pi * c[None, :, None] / period + phase).expand(n, 16, 16)
        cols = torch.sin(2 * math.pi * c[None, None, :] / period + phase).expand(n, 16, 16)
        x = torch.where(labels[:, None, None] == 0, rows, cols)
        return (0.5 + 0.2 * x + 0.05 * torch.randn(n, 16, 16, generator=g))[:, None], labels.numpy()

    conv = torch.nn.Conv2d(1, 2, 3, bias=False)
    edge = torch.tensor([[-1.0, -1.0, -1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]) / 3
    with torch.no_grad():
        conv.weight.copy_(torch.stack([edge, edge.T])[:, None] + 0.5)
    model = torch.nn.Sequential(
        conv, torch.nn.BatchNorm2d(2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    mask = RandomBetaMask(grid=4, alpha=1.0, beta=3.0, kernel_size=3, sigma=1.0)
    mask.set_random_state(0)
    train, _ = stripes(256)
    model.train()
    with torch.no_grad():
        for i in range(0, 256, 32):
            model(mask(train[i : i + 32]))  # the statistics of masked images (mean intensity 0.125, not 0.5)
    clean, labels = stripes(200)

    def probe_accuracy() -> float:
        features = extract_features(model, clean, device="cpu")
        probe = PROBES["linear"]().fit(features[:100], labels[:100])
        return float((probe.predict(features[100:]) == labels[100:]).mean())

    as_trained = probe_accuracy()
    reestimate_batchnorm(model, clean[:100], device="cpu")  # the training half only, no labels
    assert as_trained < 0.65 and probe_accuracy() > 0.9
