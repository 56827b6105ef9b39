"""``pgnm_monai.settings``: the one typed home of the method's settings. Each field is checked by name, the bundles
read every default from it and wire each id once (into ``run_settings``), and the arm handler a bundle builds
acts on the ids it was given."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import pytest
from bundle_settings import TINY

from pgnm_monai.arms import ARMS, MECHANISMS, Arm, build_arm_handler, register_mechanism
from pgnm_monai.experiments.runner import bundle_defaults, bundles_dir, make_workflow, run_bundle
from pgnm_monai.settings import (
    INPUT,
    OPTIMIZER,
    POLICY,
    AugmentSettings,
    InputSettings,
    OptimizerSettings,
    PolicySettings,
)

TYPED = {"POLICY": PolicySettings, "INPUT": InputSettings, "OPTIMIZER": OptimizerSettings}


def _train_json() -> dict:
    return json.loads((bundles_dir() / "pgnm_pretrain" / "configs" / "train.json").read_text())


@pytest.mark.parametrize(
    ("cls", "changes", "message"),
    [
        (PolicySettings, {"grid": 0}, "'grid' must be an integer >= 1, got 0"),
        (PolicySettings, {"kernel_size": 4}, "'kernel_size' must be an odd integer"),
        (PolicySettings, {"eps": 0.5}, r"'eps' must be in \(0, 0.5\)"),
        (PolicySettings, {"policy_trunk": "resnet10x"}, "'policy_trunk' must be one of .*did you mean 'resnet10t'"),
        (PolicySettings, {"objective": "ppo"}, "'objective' must be one of"),
        (PolicySettings, {"reward_sign": True}, "'reward_sign' must be one of"),
        (PolicySettings, {"policy_momentum": 1.0}, r"'policy_momentum' must be a number in \[0.0, 1.0\)"),
        (PolicySettings, {"policy_lr_factor": 0}, "'policy_lr_factor' must be a finite number > 0"),
        (PolicySettings, {"frozen": "no"}, "'frozen' must be true or false"),
        (InputSettings, {"in_channels": 2}, "'in_channels' must be one of"),
        (InputSettings, {"image_size": 4}, "'image_size' must be an integer >= 8"),
        (OptimizerSettings, {"lr": float("nan")}, "'lr' must be a finite number > 0"),
        (AugmentSettings, {"dropout_holes": 0}, "'dropout_holes' must be an integer >= 1"),
    ],
)
def test_every_setting_is_checked_by_its_id(cls, changes, message):
    with pytest.raises(ValueError, match=message):
        cls(**changes)


def test_from_mapping_takes_its_own_ids_and_overrides_win():
    run = {"grid": 8, "dataset_dir": "/data", "lr": 0.5, "policy_trunk": "small"}  # a run's settings, mixed
    settings = PolicySettings.from_mapping(run, grid=4)
    assert settings == POLICY.replace(grid=4, policy_trunk="small")
    assert OptimizerSettings.from_mapping(run) == OPTIMIZER.replace(lr=0.5)
    assert PolicySettings.preset("fast", grid=4).grid == 4 and PolicySettings.preset("fast").policy_fused_optimizer
    with pytest.raises(ValueError, match="preset must be one of .*did you mean 'fast'"):
        PolicySettings.preset("fsat")


def test_train_json_reads_every_default_from_settings_and_wires_each_id_once():
    """Each id of a typed settings class that ``train.json`` defines is ``$pgnm_monai.settings.<X>.<id>`` (its value
    stated once, in Python), is the class's default once resolved, and is wired into ``run_settings``; a policy id
    is referenced there only (the arm handler reads ``run_settings``)."""
    config = _train_json()
    text = json.dumps(config)
    defaults = bundle_defaults("pgnm_pretrain", "train")
    for const, cls in TYPED.items():
        for name in (f.name for f in dataclasses.fields(cls)):
            if name not in config:
                continue
            assert config[name] == f"$pgnm_monai.settings.{const}.{name}", name
            assert defaults[name] == getattr(cls(), name), name
            assert config["run_settings"]["settings"][name] == f"@{name}", name
            if cls is PolicySettings:  # the method's ids act through run_settings only: no second wiring site
                assert len(re.findall(rf'"@{name}"', text)) == 1, name
    assert "check_args" not in config  # the checks run inside run_settings
    policy_ids = {f.name for f in dataclasses.fields(PolicySettings)} - {"scale_classifier_loss", "frozen"}
    assert policy_ids <= set(config), sorted(policy_ids - set(config))  # every policy setting is a bundle id


def test_every_stage_starts_with_the_one_preflight():
    configs = bundles_dir() / "pgnm_pretrain" / "configs"
    for name in ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json"):
        config = json.loads((configs / name).read_text())
        assert config["initialize"][0] == "@preflight", name
        assert not any("set_determinism" in json.dumps(step) for step in config["initialize"]), name


def test_the_bundle_builds_the_arm_from_the_ids_it_was_given(tmp_path):
    """Through the bundle: ids given on the command line reach the policy, its optimiser and its mask."""
    overrides = {"policy_momentum": 0.5, "policy_lr_factor": 0.2, "lr": 0.05, "kernel_size": 5, "eps": 0.01}
    wf = make_workflow("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), **TINY, **overrides)
    wf.initialize()
    handler = wf.parser.get_parsed_content("train#arm_handler")
    group = handler.optimizer.param_groups[0]
    assert group["momentum"] == 0.5 and group["lr"] == pytest.approx(0.05 * 0.2)
    assert (handler.policy.grid, handler.policy.kernel_size, handler.policy.eps) == (TINY["grid"], 5, 0.01)
    wf.finalize()
    with pytest.raises(ValueError, match=r"config id 'policy_momentum' must be a number in \[0.0, 1.0\), got 1.5"):
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "b"), **TINY, policy_momentum=1.5)


def test_an_arm_needs_a_registered_mechanism():
    assert {arm.mechanism for arm in ARMS.values()} == set(MECHANISMS)
    with pytest.raises(ValueError, match="mechanism of arm 'blur' must be one of .*got 'gaussian_blur'"):
        Arm("blur", "gaussian_blur")
    with pytest.raises(ValueError, match="mechanism 'gaussian' is registered already"):
        register_mechanism("gaussian")(lambda ctx: None)
    with pytest.raises(TypeError, match="build_arm_handler has no option 'trunk'.*'policy_trunk'"):
        build_arm_handler("pgnm", trunk="small")


def test_defaults_in_code_match_the_typed_home():
    """The Python API's defaults are the typed home's: a policy, its handler and the chains built with no
    arguments use :data:`POLICY` and :data:`INPUT`."""
    from pgnm_monai.networks import NoisePolicy
    from pgnm_monai.transforms import eval_transforms

    handler = build_arm_handler("pgnm", policy_trunk="small")
    policy = handler.policy
    assert (policy.grid, policy.kernel_size, policy.sigma, policy.eps) == (
        POLICY.grid,
        POLICY.kernel_size,
        POLICY.sigma,
        POLICY.eps,
    )
    assert handler.optimizer.param_groups[0]["lr"] == pytest.approx(OPTIMIZER.lr * POLICY.policy_lr_factor)
    assert (handler.objective, handler.advantage, handler.reward_sign) == (
        POLICY.objective,
        POLICY.advantage,
        POLICY.reward_sign,
    )
    assert NoisePolicy(trunk="small").in_channels == INPUT.in_channels
    normalize = eval_transforms().transforms[2]
    assert (float(normalize.normalizer.subtrahend), float(normalize.normalizer.divisor)) == (
        INPUT.intensity_mean,
        INPUT.intensity_std,
    )
