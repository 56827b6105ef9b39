"""The augmentations a practitioner would pick instead (``trivialaugment``, ``randaugment``, ``mixup``, ``cutmix``):
torchvision's and MONAI's own transforms, seeded, and every arm through the pretrain bundle."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from bundle_settings import QUIET
from monai.transforms import CutMix, MixUp
from torchvision.transforms import v2

from pgnm_monai.arms import ARMS, build_arm_handler
from pgnm_monai.experiments.runner import run_bundle
from pgnm_monai.metrics import ClassificationEpochMetric
from pgnm_monai.transforms.augment import RandBatchMix, RandTorchvisionPolicy

TINY = QUIET
MEAN, STD = 0.3, 0.25


@pytest.mark.parametrize(
    "policy, reference", [("trivialaugment", v2.TrivialAugmentWide), ("randaugment", v2.RandAugment)]
)
@pytest.mark.parametrize("channels", [1, 3])
def test_torchvision_policy_is_torchvisions_on_the_8_bit_image(policy, reference, channels):
    torch.manual_seed(0)
    image = ((torch.rand(channels, 24, 24) - MEAN) / STD).float()
    transform = RandTorchvisionPolicy(policy, MEAN, STD).set_random_state(7)
    out = transform(image)
    seed = np.random.RandomState(7).randint(0, 2**31 - 1)  # the draw set_random_state(7) makes first
    pixels = ((image * STD + MEAN).clamp(0, 1) * 255).round().to(torch.uint8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        expected = (reference()(pixels).float() / 255 - MEAN) / STD
    assert out.shape == image.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    assert torch.equal(transform.set_random_state(7)(image), out)  # seeded: the same draw again


@pytest.mark.parametrize("mix, reference", [("mixup", MixUp), ("cutmix", CutMix)])
def test_batch_mix_is_monais_with_the_same_weights_on_the_labels(mix, reference):
    torch.manual_seed(0)
    images, labels = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    transform = RandBatchMix(mix, num_classes=4, alpha=1.0).set_random_state(3)
    mixed, soft = transform(images, labels)
    seed = np.random.RandomState(3).randint(0, 2**31 - 1)
    monai_mix = reference(batch_size=6, alpha=1.0).set_random_state(seed=seed)
    torch.testing.assert_close(mixed, monai_mix(images))
    weights, perm, _ = monai_mix._params  # the draw MONAI made: one weight and one partner per image
    onehot = torch.nn.functional.one_hot(labels, 4).float()
    torch.testing.assert_close(soft, weights[:, None] * onehot + (1 - weights[:, None]) * onehot[perm])
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(6))


def test_mix_arms_need_the_class_count_and_torchvision_arms_need_2d():
    with pytest.raises(ValueError, match="num_classes is required for arm 'mixup'"):
        build_arm_handler("mixup", image_size=32)
    with pytest.raises(ValueError, match="arm 'trivialaugment' augments 2D images"):
        build_arm_handler("trivialaugment", image_size=32, spatial_dims=3)


def test_the_train_metric_reads_soft_labels_as_their_dominant_class():
    metric = ClassificationEpochMetric(metric="accuracy")
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    metric.update((logits, torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])))
    assert metric.compute() == pytest.approx(2 / 3)


@pytest.mark.parametrize("arm", ["trivialaugment", "randaugment", "mixup", "cutmix"])
def test_practitioner_arm_trains_through_the_bundle(tmp_path, arm):
    assert ARMS[arm].mechanism in ("torchvision", "mix")
    wf = run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm=arm, epochs=1, **TINY)
    handler = wf.parser.get_parsed_content("train#arm_handler")
    assert handler.mix_labels == (arm in ("mixup", "cutmix"))
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert (tmp_path / "models" / "run_settings.json").is_file()


def test_the_flip_is_an_id_a_source_with_left_right_classes_sets_off(tmp_path):
    from monai.transforms import RandFlipd

    from pgnm_monai.experiments.runner import make_workflow

    wf = make_workflow("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="none", flip_prob=0.0, **TINY)
    flips = [t for t in wf.parser.get_parsed_content("train#preprocessing").transforms if isinstance(t, RandFlipd)]
    assert len(flips) == 1 and flips[0].prob == 0.0
    with pytest.raises(ValueError, match=r"config id 'flip_prob' must be a probability in \[0, 1\], got 2"):
        run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="none", flip_prob=2, **TINY)
    assert not (tmp_path / "models").exists()
