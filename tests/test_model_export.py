"""Models that describe themselves (issue 32, item 2): a run's classifier in timm's own folder format, as ONNX and as
TorchScript, each carrying the run's class names and normalisation, and the run's own MONAI ``metadata.json``
(:mod:`pgnm_monai.networks.model_card`)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from pgnm_monai.data import save_class_map
from pgnm_monai.networks import build_classifier
from pgnm_monai.networks.model_card import (
    export_onnx,
    export_torchscript,
    load_run_classifier,
    load_run_metadata,
    main,
    save_timm_folder,
)

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


def _run(
    tmp_path: Path, network: str = "resnet10t", in_channels: int = 1, size: int = 32, classes: list[str] = CLASSES
) -> tuple[Path, torch.nn.Module]:
    """A trained run's folder as ``pgnm finetune`` leaves it: ``models/`` with ``model.pt``, the class map and the
    run's settings (imagenet normalisation, to tell it from the default)."""
    torch.manual_seed(0)
    net = build_classifier(network, in_channels, len(classes)).eval()
    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    torch.save(net.state_dict(), models / "model.pt")
    save_class_map(models / "class_map.json", classes, dataset_kind="image_folder")
    settings = {
        "network": network, "spatial_dims": 2, "in_channels": in_channels, "image_size": size,
        "intensity_mean": 0.449, "intensity_std": 0.226,
    }  # fmt: skip
    (models / "run_settings.json").write_text(json.dumps(settings))
    return tmp_path / "run", net


def test_timm_folder_builds_the_runs_model_with_no_project_code(tmp_path):
    import timm

    run, net = _run(tmp_path, in_channels=3)
    folder = save_timm_folder(run)
    assert folder == run / "models" / "timm"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet10t" and config["num_classes"] == 4
    assert config["label_names"] == CLASSES and config["model_args"]["in_chans"] == 3
    assert "origin_url" not in config["pretrained_cfg"] and config["pretrained_cfg"]["tag"] == "pgnm_finetune"

    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    cfg = model.pretrained_cfg
    assert cfg["label_names"] == CLASSES and tuple(cfg["input_size"]) == (3, 32, 32)
    assert list(cfg["mean"]) == [0.449] * 3 and list(cfg["std"]) == [0.226] * 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)
        torch.testing.assert_close(model(x), load_run_classifier(run)(x), rtol=0, atol=0)
    data = timm.data.resolve_data_config({}, model=model)
    assert data["crop_mode"] == "center" and data["crop_pct"] == pytest.approx(32 / 37)

    save_timm_folder(run)  # a second call replaces the folder whole, leaving no temporary folder
    assert sorted(p.name for p in (run / "models").iterdir()) == [
        "class_map.json", "model.pt", "run_settings.json", "timm",
    ]  # fmt: skip


def test_timm_folder_is_skipped_for_a_network_timm_does_not_build(tmp_path, caplog):
    run, _ = _run(tmp_path, network="small")
    with caplog.at_level(logging.INFO, logger="pgnm_monai.networks.model_card"):
        assert save_timm_folder(run) is None
    assert "'small'" in caplog.text and "not one of timm's" in caplog.text
    assert not (run / "models" / "timm").exists()


def test_a_folder_that_is_not_a_run_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="model.pt"):
        save_timm_folder(tmp_path)
    assert main([os.fspath(tmp_path)]) == 1
    assert "not a trained run's folder" in capsys.readouterr().err


@pytest.mark.slow
def test_onnx_export_has_a_dynamic_batch_named_tensors_and_the_class_names(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")

    run, net = _run(tmp_path)
    assert main([os.fspath(run), "--onnx"]) == 0  # the command: the timm folder and models/model.onnx
    path = run / "models" / "model.onnx"
    assert f"written: {path}" in capsys.readouterr().out and (run / "models" / "timm" / "config.json").is_file()
    assert export_onnx(run) == path  # again: replaced atomically

    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    (image,), (logits,) = session.get_inputs(), session.get_outputs()
    assert (image.name, logits.name) == ("image", "logits")
    assert image.shape[0] == logits.shape[0] == "batch"
    x = torch.randn(3, 1, 32, 32)
    (out,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), net(x), rtol=0, atol=1e-5)

    props = session.get_modelmeta().custom_metadata_map
    assert json.loads(props["class_names"]) == CLASSES
    assert json.loads(props["mean"]) == [0.449] and json.loads(props["std"]) == [0.226]
    assert props["image_size"] == "32" and props["output"].startswith("logits")
    model = onnx.load(path)  # the same through the onnx package
    assert json.loads({p.key: p.value for p in model.metadata_props}["class_names"]) == CLASSES


@pytest.mark.slow
def test_pgnm_finetune_writes_the_timm_folder_that_timm_loads(tmp_path, monkeypatch, capsys):
    import timm

    from pgnm_monai.cli import main as pgnm

    torch.manual_seed(3)
    torch.save(timm.create_model("resnet10t", num_classes=7, in_chans=3).state_dict(), tmp_path / "weights.pth")
    monkeypatch.chdir(tmp_path)
    assert pgnm([
        "finetune", "--pretrained", "weights.pth", "--network", "resnet10t", "--epochs", "1", "--image-size", "32",
        "--output-dir", "run",
    ]) == 0  # fmt: skip
    folder = tmp_path / "run" / "models" / "timm"
    assert "timm.create_model('local-dir:run/models/timm', pretrained=True)" in capsys.readouterr().out
    names = json.loads((tmp_path / "run" / "models" / "class_map.json").read_text())["class_names"]
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert model.pretrained_cfg["label_names"] == names  # the embedded set's classes
    assert list(model.pretrained_cfg["mean"]) == [0.3162] and list(model.pretrained_cfg["std"]) == [0.3213]
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), load_run_classifier(tmp_path / "run")(x), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # MONAI's convert_to_torchscript scripts the network
def test_torchscript_export_carries_the_runs_metadata(tmp_path, capsys):
    """``model_card RUN --torchscript``: ``models/model.ts`` holds the run's ``metadata.json`` (its class names as
    the output's ``channel_def``, its input and normalisation), not the bundle's generic one; outputs unchanged."""
    run, net = _run(tmp_path, in_channels=3)
    assert main([os.fspath(run), "--torchscript"]) == 0
    path = run / "models" / "model.ts"
    assert f"written: {path}" in capsys.readouterr().out
    extra = {"metadata.json": ""}
    scripted = torch.jit.load(path, _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    pred, image = meta["network_data_format"]["outputs"]["pred"], meta["network_data_format"]["inputs"]["image"]
    assert pred["channel_def"] == {str(i): c for i, c in enumerate(CLASSES)} and pred["num_channels"] == 4
    assert meta["class_names"] == CLASSES and meta["num_classes"] == 4 and meta["network"] == "resnet10t"
    assert image["num_channels"] == meta["in_channels"] == 3 and image["spatial_shape"] == [32, 32]
    assert meta["mean"] == [0.449] * 3 and meta["std"] == [0.226] * 3
    assert "CT" not in json.dumps(meta["network_data_format"]) and "glioma" in meta["pred_classes"]
    assert meta["version"] and meta["monai_version"]  # the bundle's own fields are kept
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=0, atol=1e-5)
    written = run / "models" / "metadata.json"  # a run trained by the bundle has its own: that one is embedded
    written.write_text(json.dumps({**meta, "name": "the run's own"}))
    extra = {"metadata.json": ""}
    torch.jit.load(export_torchscript(run, tmp_path / "again.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["name"] == "the run's own"


@pytest.mark.filterwarnings("ignore:No hash value provided:UserWarning")  # the schema is the bundle's own file
def test_a_two_class_runs_metadata_passes_monais_checks(tmp_path):
    """The metadata the fine-tune bundle writes when training ends (``write_run_settings`` with ``@_meta_``)
    describes a 2-class run: MONAI's ``verify_net_in_out`` (with the fine-tune bundle's ``inference.json``, reading
    the run's settings) passes with no ``_meta_`` override, and ``verify_metadata`` passes against the shipped
    schema, offline."""
    from monai.bundle import verify_metadata, verify_net_in_out

    from pgnm_monai.components import RunSettings, write_run_settings
    from pgnm_monai.experiments.runner import bundles_dir

    run, _ = _run(tmp_path, network="small", classes=["benign", "malignant"])
    models = run / "models"
    settings = {**json.loads((models / "run_settings.json").read_text()), "pretrained_ckpt": "heated.pt"}
    (models / "run_settings.json").write_text(json.dumps(settings))
    derived = load_run_metadata(run)  # no metadata.json yet: from the fine-tune bundle's (a pretrained_ckpt)
    configs = bundles_dir() / "pgnm_finetune" / "configs"
    bundle_meta = json.loads((configs / "metadata.json").read_text())
    write_run_settings(RunSettings(settings), models, metadata=bundle_meta)
    meta = json.loads((models / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "benign", "1": "malignant"}
    assert meta == derived and meta["name"] == bundle_meta["name"]

    def verify(meta_file: Path) -> None:
        config_file = os.fspath(configs / "inference.json")
        verify_net_in_out(net_id="network_def", meta_file=os.fspath(meta_file), config_file=config_file,
                          bundle_root=os.fspath(run), device="cpu")  # fmt: skip

    verify(models / "metadata.json")
    with pytest.raises(ValueError, match="output channel number `2` doesn't match: `4`"):  # the bundle's: 4 classes
        verify(configs / "metadata.json")
    verify_metadata(meta_file=os.fspath(models / "metadata.json"), filepath=os.fspath(configs / "metadata_schema.json"))
