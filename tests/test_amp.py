"""Mixed precision: the bundles' ``amp`` / ``amp_dtype`` ids (CUDA only; ignored with a warning on the CPU), and
the policy's log-probabilities kept in float32 under autocast."""

from __future__ import annotations

import os

import pytest
import torch
from bundle_settings import TINY as BUNDLE_TINY

from pgnm_monai.components import amp_kwargs, use_amp
from pgnm_monai.experiments.runner import make_workflow
from pgnm_monai.networks import NoisePolicy
from pgnm_monai.transforms import PolicyNoiseMask

TINY = {**BUNDLE_TINY, "epochs": 1}


def test_use_amp_is_cuda_only():
    assert use_amp(False, "cpu") is False
    with pytest.warns(UserWarning, match="amp=True is ignored on device cpu"):
        assert use_amp(True, "cpu") is False
    assert amp_kwargs("float16") == {"dtype": torch.float16}
    with pytest.raises(ValueError, match="amp_dtype must be one of"):
        amp_kwargs("float8")


def test_bundle_amp_on_the_cpu_warns_and_trains_in_float32(tmp_path):
    wf = make_workflow("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="pgnm", amp=True, **TINY)
    wf.initialize()
    with pytest.warns(UserWarning, match="amp=True is ignored"):
        trainer = wf.parser.get_parsed_content("train#trainer")
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    assert trainer.amp is False and evaluator.amp is False
    wf.run()
    wf.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()


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
