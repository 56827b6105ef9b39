"""Run folders: made and parsed back in one place, spelled as the committed results spell them; every figure of a run
rebuilt from the run's own ``run_settings.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from pgnm_monai.arms import ARMS
from pgnm_monai.experiments.run_folders import (
    PretrainRun,
    finetune_folder,
    pretrain_runs,
    read_run_settings,
    run_settings_path,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("arm", list(ARMS))
@pytest.mark.parametrize("seed", [0, 7, 12])
def test_pretrain_run_names_round_trip(arm, seed):
    run = PretrainRun(arm, seed)
    assert run.name == f"{arm}_seed{seed}"
    assert PretrainRun.parse(run.name) == run


def test_todays_spelling(tmp_path):
    run = PretrainRun("frozen_policy", 2)
    assert run.folder(tmp_path) == tmp_path / "pretrain" / "frozen_policy_seed2"
    assert run.model(tmp_path) == tmp_path / "pretrain" / "frozen_policy_seed2" / "models" / "model.pt"
    assert (
        run.probe_rows(tmp_path, "mednist", "0123abcd")
        == tmp_path / "probe" / "mednist" / "frozen_policy_seed2-0123abcd.csv"
    )
    assert run.probe_rows_pattern() == "frozen_policy_seed2-*.csv"
    assert (
        finetune_folder(tmp_path, "mednist", 16, 1, run)
        == tmp_path / "finetune" / "mednist_n16_ft1_frozen_policy_seed2"
    )
    assert run_settings_path(run.folder(tmp_path)) == run.folder(tmp_path) / "models" / "run_settings.json"


def test_committed_results_parse_back():
    """The run names the committed preset benchmark wrote read back to themselves."""
    pairs = pd.read_csv(ROOT / "results" / "presets" / "preset_masks.csv")
    for name in {*pairs["a"], *pairs["b"]}:
        run = PretrainRun.parse(name)
        assert run.name == name and run.arm in ("paper", "fast")


@pytest.mark.parametrize("name", ["none", "none_seed", "none_seedx", "_seed0x", "none-seed0"])
def test_other_names_are_refused(name):
    with pytest.raises(ValueError, match="not a pretrain run folder name"):
        PretrainRun.parse(name)


def test_pretrain_runs_lists_run_folders_only(tmp_path):
    for name in ("pgnm-reinforce_seed1", "none_seed0", "none_seed10", "notes", "scratch_seedling"):
        (tmp_path / "pretrain" / name).mkdir(parents=True)
    found = pretrain_runs(tmp_path)
    assert [run for run, _ in found] == [
        PretrainRun("none", 0),
        PretrainRun("none", 10),
        PretrainRun("pgnm-reinforce", 1),
    ]
    assert all(path == run.folder(tmp_path) for run, path in found)
    assert pretrain_runs(tmp_path / "elsewhere") == []


def test_a_run_without_settings_is_refused_by_name(tmp_path):
    run = PretrainRun("pgnm-reinforce", 0).folder(tmp_path)
    (run / "models").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="run_settings.json"):
        read_run_settings(run)
    (run / "models" / "run_settings.json").write_text(json.dumps({"arm": "pgnm-reinforce", "seed": 0}))
    assert read_run_settings(run) == {"arm": "pgnm-reinforce", "seed": 0}


def _settings(**overrides) -> dict:
    """A small run's ``run_settings.json`` (the ids the policy and the evaluation chain read)."""
    ids = {"policy_trunk": "small", "policy_input_size": None, "grid": 4, "kernel_size": 3, "sigma": 1.0}
    ids |= {"image_size": 32, "in_channels": 1, "spatial_dims": 2, "spacing": None}
    ids |= {"intensity_mean": 0.3162, "intensity_std": 0.3213, "network": "small", "epochs": 1, "lr": 0.1}
    return {**ids, **overrides}


def test_the_policy_figures_rebuild_each_run_from_its_own_settings(tmp_path):
    """An override given to one run (its policy's input size, its seed) is what its figures use."""
    from pgnm_monai.arms import build_arm_handler
    from pgnm_monai.experiments import policy_figures

    settings = {"paper": _settings(arm="pgnm-reinforce", seed=3), "fast": _settings(arm="pgnm-reinforce", seed=3)}
    settings["fast"]["policy_input_size"] = 8
    trained = {}
    for name, values in settings.items():
        run = PretrainRun(name, 3).folder(tmp_path)
        (run / "models").mkdir(parents=True)
        (run / "models" / "run_settings.json").write_text(json.dumps(values))
        policy = build_arm_handler(values["arm"], values, device="cpu").policy
        trained[name] = {k: v + 0.5 if v.is_floating_point() else v for k, v in policy.state_dict().items()}
        torch.save(trained[name], run / "models" / "policy.pt")
    for name in settings:
        run = PretrainRun(name, 3).folder(tmp_path)
        policy = policy_figures.load_policy(run)
        assert policy.input_size == settings[name]["policy_input_size"]
        for key, value in policy.state_dict().items():
            torch.testing.assert_close(value, trained[name][key])
        initial = policy_figures.load_policy(run, trained=False)  # the run's seeded initialisation
        fresh = build_arm_handler("pgnm-reinforce", settings[name], device="cpu").policy.state_dict()
        for key, value in initial.state_dict().items():
            torch.testing.assert_close(value, fresh[key])
    chain = policy_figures.eval_chain(settings["paper"])
    assert chain is not None
    with pytest.raises(FileNotFoundError, match="run_settings.json"):
        policy_figures.load_policy(tmp_path / "pretrain" / "none_seed0")


def test_the_mask_rows_come_from_the_runs_of_one_seed(tmp_path):
    """The initial policy's row is the seeded initialisation of a trained run; runs of other seeds are not used."""
    from pgnm_monai.arms import build_arm_handler
    from pgnm_monai.experiments import policy_figures

    assert policy_figures.mask_policies(tmp_path, 0) == {}
    for arm, seed in (("pgnm-reinforce", 0), ("pgnm-paper", 1)):
        run = PretrainRun(arm, seed).folder(tmp_path)
        (run / "models").mkdir(parents=True)
        values = _settings(arm=arm, seed=seed)
        (run / "models" / "run_settings.json").write_text(json.dumps(values))
        torch.save(build_arm_handler(arm, values, device="cpu").policy.state_dict(), run / "models" / "policy.pt")
    assert list(policy_figures.mask_policies(tmp_path, 0)) == ["initial policy", "cooperative (pgnm-reinforce)"]
    assert list(policy_figures.mask_policies(tmp_path, 1)) == ["initial policy", "official (pgnm-paper)"]
