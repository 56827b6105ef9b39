"""The bundles' ``metadata.json`` and ``docs/README.md`` say what is so: the metadata's version is the package's, its
description names networks that exist, its ``network_data_format`` is what ``build_classifier`` builds at the
bundle's defaults (raw logits ``(B, num_classes)``), it passes MONAI's ``verify_metadata`` offline against the schema
each bundle ships (``configs/metadata_schema.json``), and every default in the README id tables is the bundle's
default as a run resolves it (:func:`pgnm_monai.experiments.runner.bundle_defaults`)."""

from __future__ import annotations

import copy
import json
import os
import re
import runpy
import socket
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

import pgnm_monai
from pgnm_monai.data.embedded import EMBEDDED_CLASSES
from pgnm_monai.experiments.runner import bundle_defaults, bundles_dir, stage_configs
from pgnm_monai.networks.classifiers import CLASSIFIERS, build_classifier

BUNDLES = ("pgnm_pretrain", "pgnm_finetune")


def _meta(bundle: str) -> dict:
    return json.loads((bundles_dir() / bundle / "configs" / "metadata.json").read_text())


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_version_is_the_package_version(bundle):
    meta = _meta(bundle)
    assert meta["version"] == pgnm_monai.__version__ == metadata.version("pgnm-monai")
    assert meta["required_packages_version"]["pgnm-monai"] == meta["version"]
    assert max(meta["changelog"], key=_version) == meta["version"]  # the newest entry is this version's


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_names_only_networks_that_exist(bundle):
    """Every network the description or task names (``ResNet-10t``, ``ResNet-18``, ``DenseNet121``, ...) is one
    ``build_classifier`` builds."""
    meta = _meta(bundle)
    for field in ("description", "task"):
        named = re.findall(r"\b((?:ResNet|DenseNet)-?\d+t?)\b", meta[field], flags=re.IGNORECASE)
        unknown = {n for n in named if n.lower().replace("-", "") not in CLASSIFIERS}
        assert not unknown, f"{bundle} metadata {field} names networks that do not exist: {sorted(unknown)}"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_network_data_format_is_what_the_network_takes_and_outputs(bundle):
    """Inputs: ``in_channels`` channels of ``image_size`` per spatial side (the bundle's train and inference
    defaults); output ``pred``: the raw logits ``(B, num_classes)`` that ``build_classifier`` returns, one channel
    per class of the default data (the embedded set), described as the run's classes."""
    meta = _meta(bundle)
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    for stage in ("train", "inference"):  # inference: the trained run's settings, else the training defaults
        d = {**bundle_defaults(bundle, "train"), **bundle_defaults(bundle, stage)}
        assert image["num_channels"] == d["in_channels"], stage
        assert image["spatial_shape"] == [d["image_size"]] * d["spatial_dims"], stage
        assert d["dataset_kind"] is None  # the embedded default, whose classes the output channels count
    assert f"in_channels={d['in_channels']}" in meta["image_classes"]
    assert f"mean {d['intensity_mean']}, std {d['intensity_std']}" in meta["image_classes"]
    num_classes = len(EMBEDDED_CLASSES)
    assert pred["type"] == "logits" and pred["format"] == "classes" and pred["value_range"] == []
    assert pred["num_channels"] == num_classes and pred["spatial_shape"] == [] and pred["dtype"] == "float32"
    assert "logits" in meta["pred_classes"] and "(B, num_classes)" in meta["pred_classes"]
    assert list(pred["channel_def"]) == [str(i) for i in range(num_classes)]
    for i, text in pred["channel_def"].items():
        assert text.startswith(f"logit of the run's class {i} ") and "models/class_map.json" in text, text
        named = {c for c in EMBEDDED_CLASSES if re.search(rf"\b{re.escape(c)}\b", text)}
        # the fine-tune bundle's classes are the downstream task's: it names no modality; pretraining names the
        # embedded default's class of this index only
        assert named == (set() if bundle == "pgnm_finetune" else {EMBEDDED_CLASSES[int(i)]}), text

    net = build_classifier(d["network"], d["in_channels"], num_classes, d["spatial_dims"]).eval()
    leaves = [m for m in net.modules() if not list(m.children())]
    assert isinstance(leaves[-1], torch.nn.Linear)  # nothing after the head: raw logits, no softmax
    x = torch.rand(2, image["num_channels"], *image["spatial_shape"], dtype=getattr(torch, image["dtype"]))
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, pred["num_channels"]) and out.dtype == getattr(torch, pred["dtype"])


# ---------------------------------------------------------------------------------- verify_metadata, offline

SCHEMA = "configs/metadata_schema.json"


@pytest.fixture
def offline(monkeypatch):
    """The network is unreachable: every socket connection fails."""

    def unreachable(self, address):
        raise OSError(f"network unreachable (test): connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", unreachable)
    monkeypatch.setattr(socket.socket, "connect_ex", unreachable)


def monai_bundle(argv: list[str], cwd: Path, monkeypatch) -> None:
    """``python -m monai.bundle ARGV`` run from ``cwd``, in this process (MONAI's ``__main__`` and its ``fire``
    command line, without a new interpreter)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["monai.bundle", *argv])
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)


@pytest.mark.filterwarnings("ignore:No hash value provided:UserWarning")  # the schema is the bundle's own file
@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_metadata_runs_offline_against_the_shipped_schema(bundle, offline, monkeypatch):
    """The bundle README's ``python -m monai.bundle verify_metadata --meta_file configs/metadata.json --filepath
    configs/metadata_schema.json`` passes with the network unreachable: MONAI downloads the URL in ``schema`` only
    when that file is missing. One schema, in each bundle, written from MONAI's specification."""
    import urllib.request

    with pytest.raises(OSError):  # the fixture does cut the network
        urllib.request.urlopen(_meta(bundle)["schema"], timeout=5)
    argv = ["verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", SCHEMA]
    monai_bundle(argv, bundles_dir() / bundle, monkeypatch)
    pre, ft = ((bundles_dir() / b / SCHEMA).read_bytes() for b in BUNDLES)
    assert pre == ft
    assert "not MONAI's published schema" in json.loads(pre)["description"]


def _without(meta: dict, path: str) -> dict:
    meta = copy.deepcopy(meta)
    *parents, last = path.split("#")
    node = meta
    for key in parents:
        node = node[key]
    del node[last]
    return meta


@pytest.mark.filterwarnings("ignore:No hash value provided:UserWarning")
def test_verify_metadata_refuses_metadata_missing_a_required_field(tmp_path, offline):
    """The schema requires the specification's mandatory fields, at the top and in each tensor: without any one of
    them, or with a one-value ``value_range``, the metadata fails (MONAI's ``verify_metadata`` for one, the schema's
    validator for each)."""
    import jsonschema
    from monai.bundle import verify_metadata

    schema_path = bundles_dir() / "pgnm_finetune" / SCHEMA
    meta = _meta("pgnm_finetune")
    wrong = tmp_path / "metadata.json"
    wrong.write_text(json.dumps(_without(meta, "authors")))
    with pytest.raises(ValueError, match="'authors' is a required property"):
        verify_metadata(meta_file=os.fspath(wrong), filepath=os.fspath(schema_path))

    validator = jsonschema.Draft7Validator(json.loads(schema_path.read_text()))
    assert not list(validator.iter_errors(meta))
    required = ["version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version"]
    required += ["task", "description", "authors", "copyright", "network_data_format"]
    required += [f"network_data_format#{io}" for io in ("inputs", "outputs")]
    for tensor in ("inputs#image", "outputs#pred"):
        keys = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range")
        required += [f"network_data_format#{tensor}#{k}" for k in keys]
    for path in required:
        errors = list(validator.iter_errors(_without(meta, path)))
        assert [e.validator for e in errors] == ["required"], (path, [e.message for e in errors])
    bad_range = copy.deepcopy(meta)
    bad_range["network_data_format"]["inputs"]["image"]["value_range"] = [0]
    assert list(validator.iter_errors(bad_range))


# ------------------------------------------------------------------------------------------- README id tables


def _cell_value(text: str):
    """A table default as the config writes it: ``null``, ``true``, numbers, ``{}`` as JSON; other text as a
    string (backticks dropped)."""
    text = text.strip()
    if len(text) > 1 and text[0] == text[-1] == "`":
        text = text[1:-1]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def readme_defaults(bundle: str) -> dict[str, object]:
    """id -> documented default of every row of the ``| id | default | meaning |`` tables of the bundle's README
    (a row may list several ids, with as many defaults)."""
    lines = (bundles_dir() / bundle / "docs" / "README.md").read_text().splitlines()
    out: dict[str, object] = {}
    in_table = False
    for line in lines:
        if re.match(r"^\|\s*id\s*\|\s*default\s*\|", line):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
        if not in_table or line.startswith("|---"):
            continue
        ids_cell, default_cell = line.split("|")[1:3]
        ids = re.findall(r"`([^`]+)`", ids_cell)
        values = [_cell_value(v) for v in default_cell.split(", ")]
        assert ids and len(values) == len(ids), f"{bundle} README row with {ids} has defaults {values}: {line[:120]}"
        for config_id, value in zip(ids, values, strict=True):
            assert config_id not in out, f"{bundle} README lists {config_id!r} twice"
            out[config_id] = value
    return out


def _overlays(bundle: str) -> list[Path]:
    """``multi_gpu_train.json``: the README lists its ``sync_bn`` too."""
    return [bundles_dir() / bundle / "configs" / "multi_gpu_train.json"]


def _same(documented: object, actual: object) -> bool:
    """Equal values of the same kind (``true`` is not 1; ``6`` and ``6.0`` are the same number)."""
    if isinstance(documented, bool) or isinstance(actual, bool):
        return documented is actual
    if isinstance(documented, (int, float)) and isinstance(actual, (int, float)):
        return documented == actual
    return type(documented) is type(actual) and documented == actual


@pytest.mark.parametrize("bundle", BUNDLES)
def test_readme_id_tables_state_the_bundle_defaults(bundle):
    documented = readme_defaults(bundle)
    assert documented
    defaults = bundle_defaults(bundle, "train", overlays=_overlays(bundle))
    parser = ConfigParser()
    parser.read_config([str(p) for p in stage_configs(bundle, "train")])
    wrong = {}
    for config_id, value in documented.items():
        if config_id in defaults:
            if not _same(value, defaults[config_id]):
                wrong[config_id] = (value, defaults[config_id])
            continue
        raw = parser.get(config_id)
        if value == "from the data":  # num_classes: the class count of the training split
            assert isinstance(raw, str) and "@train_datalist" in raw, (config_id, raw)
        elif isinstance(raw, dict) and raw.get("_target_", "").endswith("subfolder"):  # a path in bundle_root
            assert raw["root"] == "@bundle_root" and raw["name"] == value, (config_id, raw, value)
        else:
            pytest.fail(f"{bundle} README documents {config_id!r} = {value!r}; the config has {raw!r}")
    assert not wrong, f"{bundle} README defaults (documented, actual): {wrong}"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_readme_id_tables_list_every_plain_id(bundle):
    """Pretraining: every plain top-level id of ``train.json``; fine-tuning: every plain id its overlay adds or
    changes (the others are the pretrain bundle's)."""
    documented = readme_defaults(bundle)
    if bundle == "pgnm_pretrain":
        own = bundle_defaults(bundle, "train")
    else:
        pretrain = bundle_defaults("pgnm_pretrain", "train")
        own = {k: v for k, v in bundle_defaults(bundle, "train").items() if pretrain.get(k, object()) != v}
    missing = sorted(set(own) - set(documented))
    assert not missing, f"ids of {bundle}'s train config missing from its README table: {missing}"
