"""Models that describe themselves: a trained run's classifier exported with its class names and normalisation.

A run's ``models/`` folder (``pgnm finetune --output-dir``, a bundle's ``bundle_root``) holds ``model.pt``,
``class_map.json`` and ``run_settings.json``. From them:

- :func:`save_timm_folder` writes ``models/timm/`` in timm's own folder format (``timm.models.save_for_hf``):
  ``config.json`` (architecture, ``num_classes``, ``label_names``, ``in_chans``, ``input_size``, ``mean``, ``std``,
  the centre crop) beside ``model.safetensors``, so that ``timm.create_model("local-dir:RUN/models/timm",
  pretrained=True)`` builds the fine-tuned model with no code of this project. timm's networks only (``resnet10t``,
  ``resnet18``, ``resnet50`` in 2D); another network is skipped with a log line naming why.
- :func:`export_onnx` writes ``models/model.onnx``: input ``image`` ``(batch, C, *spatial)`` and output ``logits``
  ``(batch, num_classes)`` (raw logits, no softmax) with a dynamic ``batch`` axis; the class names and the
  normalisation are in the model's ``metadata_props`` (:data:`ONNX_METADATA_KEYS`).

- :func:`export_torchscript` writes ``models/model.ts`` (MONAI's ``save_net_with_metadata``): its extra file
  ``metadata.json`` is the run's own (:func:`run_metadata`), not the bundle's generic one.
- :func:`run_metadata` is the bundle's ``metadata.json`` made the description of this run: ``network_data_format``
  with the run's input channels and spatial shape and one output channel per class (``channel_def``: the class
  names), and the keys of :func:`run_description` (``class_names``, ``num_classes``, ``network``, ``in_channels``,
  ``image_size``, ``mean``, ``std``, ...). The fine-tune bundle writes it as ``models/metadata.json`` when training
  ends (:func:`write_run_metadata`), so MONAI's ``verify_net_in_out`` and ``ckpt_export`` take it as ``--meta_file``.

The intensities the exported models expect are those of the run's evaluation chain: an image scaled to [0, 1]
(:func:`pgnm_monai.data.io.scale_intensity`), resized (short side) and centre-cropped to ``image_size``, then
``(x - mean) / std`` with one mean and std per input channel (the run's ``intensity_mean`` / ``intensity_std``; a
grey image repeated to ``in_channels`` has the one value on every channel). From the command line::

    python -m pgnm_monai.networks.model_card RUN_DIR [--onnx] [--torchscript]
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pgnm_monai.atomic_files import atomic_write_bytes, atomic_write_text

__all__ = [
    "ONNX_METADATA_KEYS",
    "TIMM_NETWORKS",
    "export_onnx",
    "export_torchscript",
    "load_run_classifier",
    "load_run_metadata",
    "main",
    "onnx_metadata",
    "run_card",
    "run_description",
    "run_metadata",
    "save_timm_folder",
    "settings_card",
    "write_run_metadata",
]

logger = logging.getLogger(__name__)

#: the networks built by timm (in 2D): those :func:`save_timm_folder` writes
TIMM_NETWORKS = ("resnet10t", "resnet18", "resnet50")
#: the keys :func:`export_onnx` writes to the ONNX model's ``metadata_props`` (values are strings; lists as JSON)
ONNX_METADATA_KEYS = (
    "class_names",
    "num_classes",
    "network",
    "spatial_dims",
    "in_channels",
    "image_size",
    "mean",
    "std",
    "output",
)
# fields of timm's default config that describe timm's ImageNet weights, not the run's
_SOURCE_FIELDS = ("tag", "license", "origin_url", "hf_hub_id", "url", "paper_ids", "notes")


def run_card(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What a run's model is and expects, from ``run_dir/models/run_settings.json`` and ``class_map.json``
    (:func:`settings_card`).

    Raises:
        FileNotFoundError: naming the file a run's ``models/`` folder lacks.
    """
    from pgnm_monai.data import load_class_map

    models = Path(run_dir) / "models"
    for name in ("model.pt", "class_map.json", "run_settings.json"):
        if not (models / name).is_file():
            raise FileNotFoundError(
                f"{models / name} does not exist: {os.fspath(run_dir)!r} is not a trained run's folder (the "
                "--output-dir of pgnm finetune, or a bundle_root after training)."
            )
    with open(models / "run_settings.json", encoding="utf-8") as f:
        settings = json.load(f)
    return settings_card(settings, load_class_map(models / "class_map.json"), models / "model.pt")


def settings_card(settings: Mapping[str, Any], class_names: Sequence[str], model: str | os.PathLike) -> dict[str, Any]:
    """The card of a run trained with ``settings`` (bundle id -> value) on ``class_names``.

    Returns:
        ``network``, ``spatial_dims``, ``in_channels``, ``image_size``, ``mean`` and ``std`` (the run's
        ``intensity_mean`` / ``intensity_std``, one float per input channel; an id ``settings`` lacks:
        :data:`pgnm_monai.settings.INPUT`'s), ``class_names``, ``num_classes`` and ``model`` (the ``model.pt``
        path).
    """
    from pgnm_monai.settings import INPUT, default_network

    dims = int(settings.get("spatial_dims", INPUT.spatial_dims))
    chans = int(settings.get("in_channels", INPUT.in_channels))

    def per_channel(value: Any) -> list[float]:  # one value for every channel, or one per channel
        return [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * chans

    return {
        "network": settings.get("network") or default_network(dims),
        "spatial_dims": dims,
        "in_channels": chans,
        "image_size": int(settings.get("image_size", INPUT.image_size)),
        "mean": per_channel(settings.get("intensity_mean", INPUT.intensity_mean)),
        "std": per_channel(settings.get("intensity_std", INPUT.intensity_std)),
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "model": Path(model),
    }


def load_run_classifier(run_dir: str | os.PathLike, card: dict[str, Any] | None = None) -> nn.Module:
    """The run's classifier (:func:`~pgnm_monai.networks.build_classifier`) with ``model.pt`` loaded strictly, in
    evaluation mode on the CPU."""
    from pgnm_monai.networks.classifiers import build_classifier
    from pgnm_monai.networks.weights import load_checkpoint_file, unwrap_state_dict

    card = card or run_card(run_dir)
    net = build_classifier(card["network"], card["in_channels"], card["num_classes"], card["spatial_dims"], init=False)
    state = unwrap_state_dict(load_checkpoint_file(card["model"], "model"), os.fspath(card["model"]))
    net.load_state_dict(state, strict=True)
    return net.eval()


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Put the finished folder ``tmp`` at ``folder`` (an earlier ``folder`` is removed once it is replaced)."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
        os.replace(folder, old / folder.name)
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_timm_folder(run_dir: str | os.PathLike, folder: str | os.PathLike | None = None) -> Path | None:
    """Write the run's classifier in timm's own folder format (``config.json`` + ``model.safetensors``).

    ``timm.create_model("local-dir:<folder>", pretrained=True)`` then builds it with the run's weights; its
    ``pretrained_cfg`` holds ``label_names``, ``input_size``, ``mean``, ``std``, ``crop_pct`` (the evaluation
    chain's resize then centre crop) and ``interpolation``. The folder is written whole (a temporary folder beside
    it, then renamed) and replaces an earlier one.

    Args:
        run_dir: a trained run's folder (see :func:`run_card`).
        folder: where to write (``None``: ``run_dir/models/timm``).

    Returns:
        the folder, or ``None`` when the run's network is not one of timm's (:data:`TIMM_NETWORKS` in 2D; logged).
    """
    import timm

    from pgnm_monai.settings import eval_resize

    card = run_card(run_dir)
    if card["network"] not in TIMM_NETWORKS or card["spatial_dims"] != 2:
        logger.info(
            f"timm folder not written for {os.fspath(run_dir)!r}: its network {card['network']!r} "
            f"({card['spatial_dims']}D) is not one of timm's ({', '.join(TIMM_NETWORKS)} in 2D)."
        )
        return None
    net = load_run_classifier(run_dir, card)
    folder = Path(folder) if folder is not None else Path(run_dir) / "models" / "timm"
    folder.parent.mkdir(parents=True, exist_ok=True)
    size, chans = card["image_size"], card["in_channels"]
    data_config = {
        "input_size": (chans, size, size),
        "mean": tuple(card["mean"]),
        "std": tuple(card["std"]),
        "crop_pct": size / eval_resize(size),
        "crop_mode": "center",
        "interpolation": "bilinear",
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        timm.models.save_for_hf(
            net, os.fspath(tmp), model_config={"label_names": card["class_names"]}, safe_serialization=True,
            data_config=data_config,
        )  # fmt: skip
        config_path = tmp / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for key in _SOURCE_FIELDS:
            config["pretrained_cfg"].pop(key, None)
        config["pretrained_cfg"]["tag"] = "pgnm_finetune"
        atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")
        _replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(f"timm folder written: {folder} (timm.create_model('local-dir:{folder}', pretrained=True))")
    return folder


def run_description(card: Mapping[str, Any]) -> dict[str, Any]:
    """What the run's model is and expects as plain JSON values, under the names of :data:`ONNX_METADATA_KEYS`:
    the class names, the network and its input (channels, side, the per-channel mean and std), and ``output``."""
    return {
        "class_names": list(card["class_names"]),
        "num_classes": card["num_classes"],
        "network": card["network"],
        "spatial_dims": card["spatial_dims"],
        "in_channels": card["in_channels"],
        "image_size": card["image_size"],
        "mean": list(card["mean"]),
        "std": list(card["std"]),
        "output": "logits: raw (batch, num_classes) scores in the order of class_names, no softmax; the input is "
        "an image scaled to [0, 1], resized and centre-cropped to image_size, then (x - mean) / std",
    }


def onnx_metadata(card: Mapping[str, Any]) -> dict[str, str]:
    """The ``metadata_props`` of a run's ONNX model: :func:`run_description`, all strings (lists and numbers as
    JSON)."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in run_description(card).items()}


def _values(values: list[float]) -> str:
    """One value for every channel as that value (``0.3162``), else the list."""
    return str(values[0]) if len(set(values)) == 1 else str(values)


def _tensor(spec: dict[str, Any]) -> dict[str, Any]:
    """A tensor format specifier of ``spec``, keys in the order of MONAI's bundle specification."""
    full = {"modality": "n/a", "dtype": "float32", "value_range": [], "is_patch_data": False, **spec}
    order = ("type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data")
    return {k: full[k] for k in (*order, "channel_def")}


def run_metadata(card: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle's ``metadata.json`` (``base``) made the description of the run of ``card``.

    ``network_data_format``: input ``image`` of the run's ``in_channels`` and spatial shape, output ``pred`` of one
    raw logit per class with the class names as its ``channel_def``; ``image_classes``, ``label_classes`` and
    ``pred_classes`` name the run's normalisation and classes; the keys of :func:`run_description` but ``output``
    are added. Everything else (version, task, authors, ...) is ``base``'s.
    """
    desc = run_description(card)
    names, chans, n = desc["class_names"], desc["in_channels"], desc["num_classes"]
    meta = copy.deepcopy(dict(base))
    classes = ", ".join(f"{i} {name}" for i, name in enumerate(names))
    meta["image_classes"] = (
        f"{'single' if chans == 1 else chans} channel image (in_channels={chans}) scaled to [0, 1], resized (short "
        f"side) and centre-cropped to {desc['image_size']} per side, normalised with mean {_values(desc['mean'])}, "
        f"std {_values(desc['std'])}"
    )
    meta["label_classes"] = f"class index of the run's models/class_map.json: {classes}"
    meta["pred_classes"] = f"{n} raw logits (B, {n}), no softmax: {classes}"
    meta["eval_metrics"] = {"note": "the run's own: eval/metrics.json once evaluate.json has run"}
    image = {
        "type": "image",
        "format": "magnitude",
        "num_channels": chans,
        "spatial_shape": [desc["image_size"]] * desc["spatial_dims"],
        "channel_def": {"0": "image"} if chans == 1 else {str(i): f"image channel {i}" for i in range(chans)},
    }
    pred = {
        "type": "logits",
        "format": "classes",
        "num_channels": n,
        "spatial_shape": [],
        "channel_def": {str(i): name for i, name in enumerate(names)},
    }
    meta["network_data_format"] = {"inputs": {"image": _tensor(image)}, "outputs": {"pred": _tensor(pred)}}
    meta.update({k: v for k, v in desc.items() if k != "output"})
    return meta


def write_run_metadata(path: str | os.PathLike, card: Mapping[str, Any], base: Mapping[str, Any]) -> Path:
    """Write :func:`run_metadata` of ``card`` and ``base`` to ``path`` (JSON, atomically); return ``path``."""
    path = Path(path)
    atomic_write_text(path, json.dumps(run_metadata(card, base), indent=4) + "\n")
    return path


def load_run_metadata(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's ``models/metadata.json`` (what the fine-tune bundle writes when training ends); for a run without
    one, :func:`run_metadata` of the run and of the bundle that trained it (``pgnm_finetune`` when its
    ``run_settings.json`` names a ``pretrained_ckpt``, else ``pgnm_pretrain``)."""
    card = run_card(run_dir)
    path = Path(run_dir) / "models" / "metadata.json"
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    from pgnm_monai.bundle_files import bundles_dir  # the bundles shipped with the package

    with open(Path(run_dir) / "models" / "run_settings.json", encoding="utf-8") as f:
        bundle = "pgnm_finetune" if "pretrained_ckpt" in json.load(f) else "pgnm_pretrain"
    with open(bundles_dir() / bundle / "configs" / "metadata.json", encoding="utf-8") as f:
        return run_metadata(card, json.load(f))


def export_torchscript(run_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Export the run's classifier to TorchScript (MONAI's ``convert_to_torchscript``, scripted) with the run's
    :func:`load_run_metadata` as the extra file ``metadata.json`` (MONAI's ``save_net_with_metadata``; read it back
    with ``monai.data.load_net_with_metadata`` or ``torch.jit.load(path, _extra_files={"metadata.json": ""})``).

    Args:
        run_dir: a trained run's folder (see :func:`run_card`).
        path: the ``.ts`` file (``None``: ``run_dir/models/model.ts``).

    Returns:
        the written path (written atomically).
    """
    from monai.data import save_net_with_metadata
    from monai.networks.utils import convert_to_torchscript

    card = run_card(run_dir)
    meta = load_run_metadata(run_dir)
    path = Path(path) if path is not None else Path(run_dir) / "models" / "model.ts"
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted = convert_to_torchscript(load_run_classifier(run_dir, card))
    buffer = io.BytesIO()
    save_net_with_metadata(scripted, buffer, include_config_vals=False, meta_values=meta)
    atomic_write_bytes(path, buffer.getvalue())
    logger.info(f"TorchScript model written: {path}")
    return path


def export_onnx(run_dir: str | os.PathLike, path: str | os.PathLike | None = None, opset: int | None = None) -> Path:
    """Export the run's classifier to ONNX, input ``image``, output ``logits``, a dynamic ``batch`` axis, and the
    class names and normalisation in ``metadata_props`` (:func:`onnx_metadata`).

    Uses PyTorch's ``torch.export``-based exporter (``dynamic_shapes``; PyTorch's default); a network it cannot
    export falls back to the TorchScript-based one (``dynamic_axes``), with a log line. Needs the ``onnx`` and
    ``onnxscript`` packages (the ``dev`` extra). Written atomically.

    Args:
        run_dir: a trained run's folder (see :func:`run_card`).
        path: the ``.onnx`` file (``None``: ``run_dir/models/model.onnx``).
        opset: the ONNX opset (``None``: the exporter's default).

    Returns:
        the written path.
    """
    import onnx

    card = run_card(run_dir)
    net = load_run_classifier(run_dir, card)
    path = Path(path) if path is not None else Path(run_dir) / "models" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    size = card["image_size"]
    example = torch.zeros(2, card["in_channels"], *(size,) * card["spatial_dims"])
    names = {"input_names": ["image"], "output_names": ["logits"], "opset_version": opset}
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as scratch:
        tmp = os.path.join(scratch, "model.onnx")
        with torch.no_grad():
            try:
                torch.onnx.export(
                    net, (example,), tmp, dynamo=True, external_data=False, verbose=False,
                    dynamic_shapes=({0: torch.export.Dim("batch")},), **names,
                )  # fmt: skip
            except Exception as error:  # noqa: BLE001 - a network torch.export cannot trace
                logger.info(f"torch.export could not export {card['network']!r} ({error!r}); exporting it traced")
                torch.onnx.export(
                    net, (example,), tmp, dynamo=False,
                    dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, **names,
                )  # fmt: skip
        model = onnx.load(tmp)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **onnx_metadata(card)})
    atomic_write_bytes(path, model.SerializeToString())
    logger.info(f"ONNX model written: {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m pgnm_monai.networks.model_card RUN_DIR [--onnx] [--torchscript]``: write ``RUN_DIR/models/timm/``
    (and ``models/model.onnx``, ``models/model.ts``); return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m pgnm_monai.networks.model_card",
        description="Write a trained run's model in timm's folder format (models/timm/: config.json with the class "
        "names, input size, mean and std, beside model.safetensors) and, with --onnx / --torchscript, as "
        "models/model.onnx / models/model.ts (each with the class names and normalisation).",
    )
    parser.add_argument("run_dir", help="a trained run's folder (pgnm finetune --output-dir, a bundle_root)")
    parser.add_argument("--onnx", action="store_true", help="also write models/model.onnx (needs onnx, onnxscript)")
    parser.add_argument(
        "--torchscript", action="store_true", help="also write models/model.ts (the run's metadata.json inside)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)  # this module's lines, not the exporters' passes
    try:
        folder = save_timm_folder(args.run_dir)
        written = [folder] if folder is not None else []
        if args.onnx:
            written.append(export_onnx(args.run_dir))
        if args.torchscript:
            written.append(export_torchscript(args.run_dir))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
