"""The device settings (``pgnm_monai.settings.DeviceSettings``): mixed precision (``amp`` / ``amp_dtype``: on by
default on a CUDA GPU, bfloat16 where supported; ``amp=True`` on the CPU is ignored with a warning), the classifier's
memory format (``channels_last``) and ``compile``, through the bundle; and the policy's log-probabilities kept in
float32 under autocast. The tests that need a GPU run in ``python -m pgnm_monai.benchmarks.gpu_checks``."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch
from bundle_settings import TINY as BUNDLE_TINY

from pgnm_monai.components import amp_kwargs, prepare_model, use_amp
from pgnm_monai.experiments.runner import make_workflow, run_bundle
from pgnm_monai.networks import NoisePolicy, build_classifier
from pgnm_monai.transforms import PolicyNoiseMask

TINY = {**BUNDLE_TINY, "epochs": 1}


def test_use_amp_is_cuda_only_and_on_by_default_there():
    assert use_amp(False, "cpu") is False and use_amp(None, "cpu") is False  # the default: no warning
    assert use_amp(None, "cuda") is True and use_amp(False, "cuda") is False
    with pytest.warns(UserWarning, match="amp=True is ignored on device cpu"):
        assert use_amp(True, "cpu") is False
    assert amp_kwargs("float16") == {"dtype": torch.float16}
    assert amp_kwargs("auto", "cpu") == {"dtype": torch.bfloat16}
    with pytest.raises(ValueError, match="amp_dtype must be one of"):
        amp_kwargs("float8")


def test_bundle_amp_follows_the_device(tmp_path):
    """``amp=True`` through the bundle: mixed precision on a GPU; on the CPU a warning and float32. Passes on
    either machine."""
    wf = make_workflow("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="pgnm", amp=True, **TINY)
    wf.initialize()
    on_gpu = torch.device(wf.parser.get_parsed_content("device")).type == "cuda"
    with pytest.warns(UserWarning, match="amp=True is ignored") if not on_gpu else contextlib.nullcontext():
        trainer = wf.parser.get_parsed_content("train#trainer")
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    assert trainer.amp is on_gpu and evaluator.amp is on_gpu
    wf.run()
    wf.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()


def test_prepare_model_sets_the_memory_format_and_compiles_in_place():
    net = build_classifier("small", 1, 2)
    keys = list(net.state_dict())
    assert prepare_model(net, "cpu") is net and net.features[0].weight.is_contiguous()  # defaults: off on the CPU
    prepare_model(net, "cpu", channels_last=True, compile="eager")
    assert net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert list(net.state_dict()) == keys  # in place: a checkpoint keeps timm's / MONAI's keys
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 2)


def test_bundle_trains_with_channels_last_and_compile(tmp_path, monkeypatch):
    """Through the bundle: ``--channels_last True --compile eager`` (tracing, no code generation: seconds on the
    CPU) trains the classifier and the policy compiled, and the saved model loads with every key strict."""
    compiled = []
    compile_in_place = torch.nn.Module.compile

    def spy(module, *args, **kwargs):
        compiled.append((module, kwargs))
        return compile_in_place(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", spy)
    wf = run_bundle(
        "pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="pgnm", channels_last=True, compile="eager",
        **TINY,
    )  # fmt: skip
    model = wf.parser.get_parsed_content("model")
    policy = wf.parser.get_parsed_content("train#arm_handler").policy
    assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert {id(m) for m, _ in compiled} == {id(m) for m in (model, policy.trunk, policy.alpha_head, policy.beta_head)}
    assert all(kwargs == {"backend": "eager"} for _, kwargs in compiled)
    fresh = build_classifier(TINY["network"], 1, 4)
    fresh.load_state_dict(torch.load(tmp_path / "models" / "model.pt", weights_only=True), strict=True)


def test_policy_log_probabilities_stay_float32_under_autocast():
    torch.manual_seed(0)
    mask = PolicyNoiseMask(NoisePolicy(grid=4, in_channels=1, trunk="small"))
    mask.set_random_state(0)
    x = torch.rand(4, 1, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mask(x)
    sample = mask.last_sample
    assert sample.log_prob.dtype == torch.float32 and sample.entropy.dtype == torch.float32
    assert sample.log_prob.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the amp path needs a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_bundle_amp_on_cuda(tmp_path, dtype):
    wf = make_workflow(
        "pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="pgnm", amp=True, amp_dtype=dtype, **TINY
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.amp is True and trainer.amp_kwargs == {"dtype": getattr(torch, dtype)}
    wf.run()
    wf.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()
