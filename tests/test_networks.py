"""The paper's networks (timm) and the weights people have: architecture equality with timm, every checkpoint layout
through the fine-tune bundle, the stem's channel adaptation, checkpoint averaging, ``pgnm finetune``, ONNX export.

Every state dict is built here with timm or torchvision constructors; nothing is downloaded."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from pgnm_monai.experiments.runner import make_workflow, run_bundle
from pgnm_monai.networks import NoisePolicy, average_state_dicts, build_classifier, load_weights
from pgnm_monai.networks.classifiers import CLASSIFIERS, HEAD_PREFIXES, check_classifier
from pgnm_monai.networks.weights import adapt_input_channels

ROOT = Path(__file__).resolve().parents[1]
TINY = {"image_size": 32, "batch_size": 8, "progress_bar": False, "tensorboard": False}
PAPER_NETWORKS = ("resnet10t", "resnet18", "resnet50")


def flops(net: torch.nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("name", PAPER_NETWORKS)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_classifiers_are_timms_networks(name, in_channels):
    """The same modules, state-dict keys, shapes, FLOPs and outputs as ``timm.create_model``."""
    ours = build_classifier(name, in_channels, 5).eval()
    theirs = timm.create_model(name, num_classes=5, in_chans=in_channels).eval()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]
    # the same modules by name; each ours is timm's class (the stem's pool a MaxPool2d subclass, the same values)
    pairs = list(zip(ours.named_modules(), theirs.named_modules(), strict=True))
    assert all(a == b and isinstance(m, type(n)) for (a, m), (b, n) in pairs)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, in_channels, 48, 48)
    assert flops(ours, x) == flops(theirs, x)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_torchvision_resnets_have_the_same_keys():
    """torchvision's ImageNet ResNet-18/50 state dicts fit the classifiers key for key, shape for shape."""
    for name in ("resnet18", "resnet50"):
        tv = getattr(torchvision.models, name)().state_dict()
        ours = build_classifier(name, 3, 1000).state_dict()
        assert {k: v.shape for k, v in tv.items()} == {k: v.shape for k, v in ours.items()}


def test_policy_trunk_is_timms_resnet10t_feature_extractor():
    policy = NoisePolicy(grid=4, in_channels=1)
    reference = timm.create_model("resnet10t", num_classes=0, in_chans=1)
    assert [(k, v.shape) for k, v in policy.trunk.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    reference.load_state_dict(policy.trunk.state_dict())
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert policy.trunk.eval()(x).shape == (2, 512)
        torch.testing.assert_close(policy.trunk(x), reference.eval()(x))


def test_classifiers_script_for_ckpt_export():
    net = build_classifier("resnet10t", 1, 3).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(scripted(x), net(x))


def test_resnet10t_is_timms_2d_network_and_resnet10_the_3d_one():
    """``resnet10t`` names timm's 2D ResNet-10-T only: in 3D it is refused with the 3D name, ``resnet10`` (MONAI's
    ResNet-10 layout with the tiered stem), which in turn is refused in 2D."""
    with pytest.raises(ValueError, match=r"'resnet10t' is timm's 2D ResNet-10-T.*did you mean 'resnet10'"):
        build_classifier("resnet10t", 1, 3, spatial_dims=3)
    with pytest.raises(ValueError, match=r"'resnet10t' is timm's 2D .*did you mean 'resnet10'"):
        build_classifier("resnet10t", 1, 3, spatial_dims=3, init=False)  # the evaluation / inference build
    with pytest.raises(ValueError, match=r"'resnet10' is the 3D ResNet-10.*did you mean 'resnet10t'"):
        build_classifier("resnet10", 1, 3, spatial_dims=2)
    assert "resnet10" in CLASSIFIERS and "resnet10t" in CLASSIFIERS  # the CLI's choices
    net = build_classifier("resnet10", 1, 3, spatial_dims=3).eval()
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]  # one basic block per stage
    stem = [m.out_channels for m in net.conv1 if isinstance(m, torch.nn.Conv3d)]
    assert stem == [24, 32, 64]  # timm's tiered stem, in 3D
    with torch.no_grad():
        assert net(torch.randn(2, 1, 16, 16, 16)).shape == (2, 3)


def test_head_prefixes_name_the_head_of_every_classifier():
    """Every name of ``CLASSIFIERS``, in each dimension it is built in, has its head (the only tensors whose shape
    follows the class count) under its ``HEAD_PREFIXES``: what fine-tuning replaces."""
    assert set(HEAD_PREFIXES) == set(CLASSIFIERS)
    for name in CLASSIFIERS:
        for dims in (2, 3):
            try:
                check_classifier(name, dims)
            except ValueError:
                continue
            a = build_classifier(name, 1, 3, spatial_dims=dims, init=False).state_dict()
            b = build_classifier(name, 1, 5, spatial_dims=dims, init=False).state_dict()
            changed = {k for k in a if a[k].shape != b[k].shape}
            head = {k for k in a if k.startswith(HEAD_PREFIXES[name])}
            assert changed and head == changed, (name, dims, sorted(head ^ changed))


# --------------------------------------------------------------------------------------------- checkpoint layouts


def _timm_state(name: str, classes: int, seed: int, in_channels: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = timm.create_model(name, num_classes=classes, in_chans=in_channels)
    with torch.no_grad():  # non-trivial running statistics, as trained weights have
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(1234)
    return net.state_dict()


def _torchvision_imagenet_file(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision ImageNet ResNet-18 weight file: 1000 classes, no ``num_batches_tracked`` (older format)."""
    torch.manual_seed(3)
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if "num_batches_tracked" not in k}
    torch.save(state, path)
    return state


def _layouts(tmp_path: Path) -> dict[str, tuple[str, dict[str, torch.Tensor], Path]]:
    """layout -> (network, source state dict, file), each file as its producer writes it."""
    out = {}
    project = build_classifier("resnet10t", 1, 4).state_dict()  # this project's models/model.pt
    torch.save(project, tmp_path / "model.pt")
    out["project model.pt"] = ("resnet10t", project, tmp_path / "model.pt")
    released = _timm_state("resnet10t", 165, seed=1)  # the authors' released (averaged) plain state dict
    torch.save(released, tmp_path / "resnet10t_gradientp_RIN_64_64_k13_s6.pth")
    out["released heated"] = ("resnet10t", released, tmp_path / "resnet10t_gradientp_RIN_64_64_k13_s6.pth")
    reference = _timm_state("resnet10t", 165, seed=2)  # the official / torchvision reference scripts' checkpoint
    torch.save(
        {
            "model": {f"module.{k}": v for k, v in reference.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]},
            "lr_scheduler": {"step_size": 30, "gamma": 0.1, "last_epoch": 89},
            "epoch": 89,
            "args": argparse.Namespace(model="resnet10t", lr=0.1, batch_size=32, grid=64, data_path="/data/RIN"),
        },
        tmp_path / "model_89.pth",
    )
    out["reference checkpoint, module."] = ("resnet10t", reference, tmp_path / "model_89.pth")
    plain = _timm_state("resnet10t", 165, seed=4)
    torch.save({"model": plain, "epoch": 3}, tmp_path / "model_3.pth")
    out["reference checkpoint"] = ("resnet10t", plain, tmp_path / "model_3.pth")
    out["torchvision imagenet"] = ("resnet18", _torchvision_imagenet_file(tmp_path / "tv.pth"), tmp_path / "tv.pth")
    timm_imagenet = _timm_state("resnet18", 1000, seed=5)
    save_file(timm_imagenet, tmp_path / "model.safetensors")
    out["timm imagenet safetensors"] = ("resnet18", timm_imagenet, tmp_path / "model.safetensors")
    return out


LAYOUTS = (
    "project model.pt",
    "released heated",
    "reference checkpoint, module.",
    "reference checkpoint",
    "torchvision imagenet",
    "timm imagenet safetensors",
)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_checkpoint_layout_loads_through_the_finetune_bundle(layout, tmp_path):
    """The fine-tune bundle's ``model`` after loading (before any step): every non-head tensor equals its source,
    and the features equal timm's forward with the source weights; the head is new (another class count)."""
    network, source, path = _layouts(tmp_path)[layout]
    in_channels = source[next(k for k in source if k.startswith("conv1"))].shape[1]
    wf = make_workflow(
        "pgnm_finetune", "train", bundle_root=os.fspath(tmp_path / "ft"), pretrained_ckpt=os.fspath(path),
        network=network, in_channels=in_channels, **TINY,
    )  # fmt: skip
    wf.initialize()
    try:
        model = wf.parser.get_parsed_content("model").cpu().eval()
    finally:
        wf.finalize()
    state = model.state_dict()
    for key, value in source.items():
        if not key.startswith("fc."):
            assert torch.equal(state[key], value), key
    assert state["fc.weight"].shape[0] == 4  # the embedded set's classes: a new head
    reference = timm.create_model(network, num_classes=0, in_chans=in_channels)
    reference.load_state_dict({k: v for k, v in source.items() if not k.startswith("fc.")}, strict=False)
    x = torch.randn(2, in_channels, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), reference.eval()(x))


def test_head_is_kept_when_the_class_count_matches_and_reset_head_is_off(tmp_path):
    source = _timm_state("resnet10t", 4, seed=6, in_channels=1)
    torch.save(source, tmp_path / "w.pt")
    kept = load_weights(build_classifier("resnet10t", 1, 4), tmp_path / "w.pt", "resnet10t", reset_head=False)
    assert torch.equal(kept.state_dict()["fc.weight"], source["fc.weight"])
    new = load_weights(build_classifier("resnet10t", 1, 3), tmp_path / "w.pt", "resnet10t", reset_head=False)
    assert new.state_dict()["fc.weight"].shape == (3, 512)


@pytest.mark.parametrize(
    "change, message",
    [
        ("other network", r"does not fit network 'resnet10t': keys \d+ missing .*\d+ unexpected"),
        ("extra key", r"1 unexpected \(e.g. \['extra.weight'\]\)"),
        ("missing key", r"1 missing \(e.g. \['layer4.0.bn2.running_var'\]\)"),
        ("reshaped", r"1 of another shape \(e.g. \['layer1.0.conv1.weight: \(64, 64, 1, 1\)"),
        ("no state dict", r"holds no state dict \(found \['epoch', 'optimizer'\]\)"),
    ],
)
def test_weights_of_another_architecture_are_refused_by_name(change, message, tmp_path):
    state = _timm_state("resnet10t", 165, seed=7)
    if change == "other network":
        state = _timm_state("resnet18", 165, seed=7)
    elif change == "extra key":
        state["extra.weight"] = torch.zeros(3)
    elif change == "missing key":
        del state["layer4.0.bn2.running_var"]
    elif change == "reshaped":
        state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    elif change == "no state dict":
        state = {"optimizer": {}, "epoch": 3}
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=message) as info:
        load_weights(build_classifier("resnet10t", 3, 4), path, "resnet10t")
    assert os.fspath(path) in str(info.value)


def test_stem_channels_are_adapted_as_timm_does(tmp_path, caplog):
    """3-channel weights into a 1-channel network (and back): the stem summed (repeated and scaled), so a grey
    image gives the source network's features of that image repeated on every channel; the load's report (logged,
    and handed to :func:`on_weights_loaded`'s callbacks) says so, with the tensors loaded and the head replaced."""
    from pgnm_monai.networks.weights import on_weights_loaded

    rgb = _timm_state("resnet10t", 165, seed=8, in_channels=3)
    torch.save(rgb, tmp_path / "rgb.pth")
    reports = []
    with caplog.at_level(logging.INFO, logger="pgnm_monai.networks.weights"), on_weights_loaded(reports.append):
        grey_net = load_weights(build_classifier("resnet10t", 1, 4), tmp_path / "rgb.pth", "resnet10t").eval()
    (report,) = reports
    n = len(grey_net.state_dict())
    assert str(report) == (
        f"weights: {n - 2} of {n} tensors loaded from {tmp_path / 'rgb.pth'}; stem adapted from 3 to 1 input "
        "channels; head replaced (165 -> 4 classes)"
    )
    assert str(report) in caplog.text
    assert torch.equal(grey_net.state_dict()["conv1.0.weight"], rgb["conv1.0.weight"].sum(1, keepdim=True))
    source = timm.create_model("resnet10t", num_classes=0)
    source.load_state_dict({k: v for k, v in rgb.items() if not k.startswith("fc.")}, strict=False)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        features = grey_net.forward_head(grey_net.forward_features(x), pre_logits=True)
        torch.testing.assert_close(features, source.eval()(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)
    # the reverse: one-channel weights into a 3-channel network
    torch.save(grey_net.state_dict(), tmp_path / "grey.pt")
    rgb_net = load_weights(build_classifier("resnet10t", 3, 4), tmp_path / "grey.pt", "resnet10t").eval()
    torch.testing.assert_close(
        rgb_net.state_dict()["conv1.0.weight"], grey_net.state_dict()["conv1.0.weight"].expand(-1, 3, -1, -1) / 3
    )
    with torch.no_grad():
        torch.testing.assert_close(
            rgb_net.forward_features(x.expand(-1, 3, -1, -1)), grey_net.forward_features(x), rtol=1e-4, atol=1e-4
        )
    # 3D kernels too (MONAI's 3D networks)
    w3 = torch.randn(8, 3, 3, 3, 3)
    torch.testing.assert_close(adapt_input_channels(w3, 1), w3.sum(1, keepdim=True))


# ---------------------------------------------------------------------------------------------------- averaging


def test_average_state_dicts_means_floats_and_keeps_the_last_integers():
    a = {
        "w": torch.tensor([1.0, 2.0]),
        "bn.running_var": torch.tensor([1.0]),
        "bn.num_batches_tracked": torch.tensor(3),
    }
    b = {
        "w": torch.tensor([3.0, 6.0]),
        "bn.running_var": torch.tensor([3.0]),
        "bn.num_batches_tracked": torch.tensor(6),
    }
    avg = average_state_dicts([a, b])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0])) and torch.equal(avg["bn.running_var"], torch.tensor([2.0]))
    assert avg["bn.num_batches_tracked"].dtype == torch.int64 and int(avg["bn.num_batches_tracked"]) == 6
    with pytest.raises(ValueError, match="other keys or shapes"):
        average_state_dicts([a, {"w": torch.zeros(2)}])


def test_average_last_writes_the_mean_of_the_last_epochs_and_finetune_starts_from_it(tmp_path):
    root = tmp_path / "pre"
    run_bundle(
        "pgnm_pretrain", "train", bundle_root=os.fspath(root), arm="none", network="small", epochs=3,
        average_last=2, **TINY,
    )  # fmt: skip
    models = root / "models"
    epochs = sorted(p.name for p in (models / "epochs").iterdir())
    assert epochs == ["model_epoch=2.pt", "model_epoch=3.pt"]
    e2, e3 = (torch.load(models / "epochs" / n, weights_only=True) for n in epochs)
    final = torch.load(models / "model.pt", weights_only=True)
    assert all(torch.equal(e3[k], final[k]) for k in final)  # the last epoch's file is the final network
    avg = torch.load(models / "model_avg.pt", weights_only=True)
    for key, value in avg.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (e2[key] + e3[key]) / 2)
            assert not torch.equal(e2[key], e3[key]) or torch.equal(value, e3[key])
        else:
            assert torch.equal(value, e3[key])
    assert not torch.equal(avg["fc.weight"], final["fc.weight"])
    wf = make_workflow(
        "pgnm_finetune", "train", bundle_root=os.fspath(tmp_path / "ft"),
        pretrained_ckpt=os.fspath(models / "model_avg.pt"), network="small", **TINY,
    )  # fmt: skip
    wf.initialize()
    try:
        state = wf.parser.get_parsed_content("model").state_dict()
    finally:
        wf.finalize()
    assert all(torch.equal(state[k].cpu(), avg[k]) for k in avg if not k.startswith("fc."))


def test_average_last_must_be_a_positive_count(tmp_path):
    from pgnm_monai.handlers import CheckpointAverager

    with pytest.raises(ValueError, match="'average_last' must be a positive number of epochs"):
        CheckpointAverager(torch.nn.Linear(2, 2), tmp_path, last=-1)


# ------------------------------------------------------------------------------------------------- pgnm finetune


# ``pgnm finetune`` through the CLI's ``main`` in this process (``python -m pgnm_monai`` calls it; the command line
# in a fresh process: tests/test_cli.py and tests/test_packaging.py)


@pytest.mark.slow
def test_pgnm_finetune_from_released_weights_on_the_embedded_set(tmp_path, monkeypatch, capsys):
    from pgnm_monai.cli import main

    released = _timm_state("resnet10t", 165, seed=9)
    torch.save(released, tmp_path / "resnet10t_gradientp_RIN_64_64_k13_s6.pth")
    monkeypatch.chdir(tmp_path)
    assert main([
        "finetune", "--pretrained", "resnet10t_gradientp_RIN_64_64_k13_s6.pth", "--network", "resnet10t",
        "--epochs", "1", "--image-size", "32", "--output-dir", "run",
    ]) == 0  # fmt: skip
    run = tmp_path / "run"
    assert (run / "models" / "model.pt").is_file() and (run / "eval" / "predictions.csv").is_file()
    table = (run / "eval" / "metrics_by_modality.md").read_text()
    assert "| modality |" in table and "| all | 9 |" in table and table in capsys.readouterr().out


@pytest.mark.slow
def test_pgnm_finetune_on_a_clinical_csv_with_imagenet_weights(clinical_csv, tmp_path, monkeypatch):
    import json

    from pgnm_monai.cli import main

    _torchvision_imagenet_file(tmp_path / "resnet18-imagenet.pth")
    monkeypatch.chdir(tmp_path)
    assert main([
        "finetune", "--pretrained", os.fspath(tmp_path / "resnet18-imagenet.pth"), "--network", "resnet18",
        "--dataset-kind", "clinical", "--dataset-dir", os.fspath(clinical_csv), "--normalization", "imagenet",
        "--dataset-options", '{"time_point": 0}',
        "--epochs", "1", "--image-size", "32", "--batch-size", "4", "--output-dir", os.fspath(tmp_path / "run"),
    ]) == 0  # fmt: skip

    report = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert report["overall"]["n"] > 0 and report["by_modality"]
    with open(tmp_path / "run" / "eval" / "predictions.csv") as f:
        header = f.readline()
    assert "modality" in header and "prob_lesion" in header


# ------------------------------------------------------------------------------------------------------- export


@pytest.mark.slow
def test_onnx_export_through_monai_bundle_matches_pytorch(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from monai.bundle import onnx_export

    net = build_classifier("resnet10t", 1, 4).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    configs = ROOT / "bundles" / "pgnm_pretrain" / "configs"
    onnx_export(  # what `python -m monai.bundle onnx_export network_def ...` (the bundle's README command) calls
        "network_def", filepath=os.fspath(tmp_path / "model.onnx"), ckpt_file=os.fspath(tmp_path / "model.pt"),
        meta_file=os.fspath(configs / "metadata.json"), config_file=os.fspath(configs / "inference.json"),
        input_shape=[2, 1, 64, 64], use_trace=True,
        num_classes=4,  # a weight file without its run: the class count given
    )  # fmt: skip
    session = ort.InferenceSession(os.fspath(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 1, 64, 64)
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), net(x), rtol=1e-4, atol=1e-4)
