"""The MONAI bundles (bundles/pgnm_pretrain, bundles/pgnm_finetune) on tiny overrides: ConfigWorkflow and CLI runs,
pretrain -> fine-tune chain, resume, bad overrides, ckpt_export, verify_net_in_out, metadata, 2-process gloo DDP.
The fine-tune bundle on its own (copied alone, through ``python -m monai.bundle``): tests/test_finetune_bundle.py."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bundle_settings import TINY
from monai.bundle import ConfigWorkflow

from pgnm_monai.data import save_class_map
from pgnm_monai.experiments.runner import make_workflow as workflow
from pgnm_monai.experiments.runner import run_bundle as run

ROOT = Path(__file__).resolve().parents[1]
PRE = ROOT / "bundles" / "pgnm_pretrain"
FT = ROOT / "bundles" / "pgnm_finetune"

MEDNIST = ROOT.parent / "shared" / "data" / "mednist" / "MedNIST.tar.gz"
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def cli(bundle: Path, *args: str, torchrun: bool = False, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", *args]
    if torchrun:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "monai.bundle",
            *args,
        ]
    proc = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def overrides_cli(d: dict) -> list[str]:
    out = []
    for k, v in d.items():
        out += [f"--{k}", str(v)]
    return out


def errors_of(exc: BaseException) -> str:
    text = []
    while exc is not None:
        text.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(text)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Pretrain with the policy: stop after epoch 1 of 2, then resume; record what the resume saw."""
    root = tmp_path_factory.mktemp("pretrain")
    args = {"bundle_root": os.fspath(root), "arm": "pgnm", "epochs": 2, **TINY}
    run("pgnm_pretrain", "train", stop_epoch=1, **args)
    ckpt1 = torch.load(root / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    seen = {}
    wf = workflow("pgnm_pretrain", "train", resume=True, **args)
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    handler = wf.parser.get_parsed_content("train#arm_handler")

    def snapshot(engine):  # registered after the bundle's handlers: runs after the resume loader
        seen["epoch"] = engine.state.epoch
        seen["policy"] = {k: v.clone() for k, v in handler.policy.state_dict().items()}

    from ignite.engine import Events

    trainer.add_event_handler(Events.STARTED, snapshot)
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.setdefault("epochs_run", []).append(e.state.epoch))
    wf.run()
    wf.finalize()
    return {"root": root, "ckpt1": ckpt1, "seen": seen, "trainer_epoch": trainer.state.epoch}


def test_pretrain_outputs_and_resume(pretrained):
    root = pretrained["root"]
    models = sorted(p.name for p in (root / "models").iterdir())
    assert {"model.pt", "model_best.pt", "checkpoint_epoch=2.pt"} <= set(models)
    heated = torch.load(root / "models" / "model.pt", weights_only=True)
    assert "fc.weight" in heated and "policy" not in heated  # classifier only
    # the trained policy beside it, with its base vectors: it loads into a fresh policy of the same settings
    from pgnm_monai.arms import build_policy_handler

    policy_state = torch.load(root / "models" / "policy.pt", weights_only=True)
    fresh = build_policy_handler(in_channels=1, grid=8, policy_trunk="small", seed=123).policy
    assert any("base" in k for k in policy_state) and not all(
        torch.equal(v, fresh.state_dict()[k]) for k, v in policy_state.items()
    )
    final_state = torch.load(root / "models" / "checkpoint_epoch=2.pt", weights_only=True)["arm"]["policy"]
    assert policy_state.keys() == final_state.keys()
    assert all(torch.equal(policy_state[k], final_state[k]) for k in policy_state)
    fresh.load_state_dict(policy_state)
    fresh.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        alpha, beta = fresh(x)
    assert alpha.shape == (2, 64) and bool((alpha > 0).all() and (beta > 0).all())
    history = json.loads((root / "eval" / "val_metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and "val_macro_f1" in history[0]
    with open(root / "eval" / "train_curves.csv") as f:  # one row per epoch, continued across the resume
        curves = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in curves] == [1, 2]
    assert all(float(r["train_loss"]) > 0 and float(r["weight_norm"]) > 0 for r in curves)
    # resume: continued at epoch 2 with the policy state saved after epoch 1
    seen = pretrained["seen"]
    assert seen["epoch"] == 1 and seen["epochs_run"] == [2] and pretrained["trainer_epoch"] == 2
    saved = pretrained["ckpt1"]["arm"]["policy"]
    assert saved.keys() == seen["policy"].keys()
    for k in saved:
        assert torch.equal(saved[k], seen["policy"][k]), k


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # MONAI's ckpt_export scripts the network
def test_pretrain_evaluate_inference_export(pretrained, tmp_path):
    root = os.fspath(pretrained["root"])
    run("pgnm_pretrain", "evaluate", bundle_root=root, **TINY)
    with open(Path(root) / "eval" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and {"modality", "anatomy", "label", "pred", "prob_CT", "image_path"} <= set(rows[0])
    report = json.loads((Path(root) / "eval" / "metrics.json").read_text())
    assert report["overall"]["n"] == 9 and sorted(report["by_modality"]) == ["CT", "MR", "US", "X-ray"]
    run("pgnm_pretrain", "inference", bundle_root=root, network="small", image_size=32, dataset_kind="embedded")
    with open(Path(root) / "eval" / "inference_predictions.csv") as f:
        inferred = list(csv.DictReader(f))
    assert [r["image_path"] for r in inferred] == [r["image_path"] for r in rows]  # the same 9 test items
    # ckpt_export (what `python -m monai.bundle ckpt_export network_def ...` calls, the bundle's README command; the
    # command line itself: test_onnx_export_through_monai_bundle_matches_pytorch) gives the checkpoint's outputs
    from monai.bundle import ckpt_export

    ts = tmp_path / "model.ts"
    ckpt_export(
        "network_def",
        filepath=os.fspath(ts),
        ckpt_file=f"{root}/models/model.pt",
        meta_file=os.fspath(PRE / "configs" / "metadata.json"),
        config_file=os.fspath(PRE / "configs" / "inference.json"),
        network="small",
        bundle_root=root,  # the run whose models/class_map.json gives the class count
    )
    from pgnm_monai.networks import build_classifier

    net = build_classifier("small", 1, 4).eval()
    net.load_state_dict(torch.load(f"{root}/models/model.pt", weights_only=True))
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(ts)(x), net(x), atol=1e-5)


def test_finetune_chain_loads_heated_trunk(pretrained, tmp_path):
    heated_path = pretrained["root"] / "models" / "model.pt"
    heated = torch.load(heated_path, weights_only=True)
    args = {"bundle_root": os.fspath(tmp_path), "pretrained_ckpt": os.fspath(heated_path), **TINY}
    wf = workflow("pgnm_finetune", "train", epochs=2, warmup_epochs=1, few_shot=12, **args)
    wf.initialize()
    model = wf.parser.get_parsed_content("model")  # loaded, before any training step
    state = model.state_dict()
    trunk = [k for k in heated if not k.startswith("fc.")]
    assert trunk and all(torch.equal(state[k], heated[k]) for k in trunk)
    assert not torch.equal(state["fc.weight"], heated["fc.weight"])  # a new head
    assert len(wf.parser.get_parsed_content("train#dataset")) == 12
    wf.run()
    wf.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()
    run("pgnm_finetune", "evaluate", **args)
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["overall"]["n"] == 9


def test_check_properties_metadata_and_verify(tmp_path):
    from monai.bundle import verify_net_in_out

    required = {"version", "changelog", "monai_version", "pytorch_version", "numpy_version", "task", "description"}
    required |= {"authors", "copyright", "network_data_format", "required_packages_version", "schema"}
    tensor_keys = {"type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range"}
    tensor_keys |= {"is_patch_data", "channel_def"}
    for bundle in (PRE, FT):
        for name in ("LICENSE", "docs/README.md", "configs/logging.conf", "configs/multi_gpu_train.json",
                     "configs/metadata_schema.json"):  # fmt: skip
            assert (bundle / name).is_file(), (bundle, name)
        meta = json.loads((bundle / "configs" / "metadata.json").read_text())
        assert required <= set(meta), required - set(meta)
        assert meta["version"] in meta["changelog"]
        for t in (meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]):
            assert tensor_keys <= set(t)
        base = [bundle / "configs" / "train.json"]  # each bundle on its own
        for configs, kind, extra in (
            (base, "train", {}),
            # outside torchrun: skip the process-group set-up, check the merged ids only
            ([*base, bundle / "configs" / "multi_gpu_train.json"], "train", {"initialize": ["$None"]}),
            # no model.pt needed; the run's class map and named inputs are
            ([bundle / "configs" / "inference.json"], "infer", {"initialize": ["$None"], "dataset_kind": "embedded"}),
        ):
            extra = {**extra, "bundle_root": os.fspath(tmp_path)}  # resolving the handlers creates logs/
            if kind == "infer":  # a trained run's class map
                save_class_map(tmp_path / "models" / "class_map.json", ["a", "b"], dataset_kind="embedded")
            if bundle == FT and kind == "train":
                extra = {**extra, "pretrained_ckpt": None}  # resolving the trainer would load it
            wf = ConfigWorkflow(
                config_file=[os.fspath(c) for c in configs],
                meta_file=os.fspath(bundle / "configs" / "metadata.json"),
                workflow_type=kind,
                **extra,
            )
            wf.initialize()
            assert wf.check_properties() in (None, []), (bundle, configs)
        verify_net_in_out(
            net_id="network_def",
            meta_file=os.fspath(bundle / "configs" / "metadata.json"),
            config_file=os.fspath(bundle / "configs" / "inference.json"),
            network="small",
            num_classes=4,  # no trained run here: the class count given (a run's comes from its class_map.json)
        )


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"arm": "bogus"}, "config id 'arm' must be one of"),
        ({"objective": "bogus"}, "config id 'objective' must be one of"),
        ({"arm": "pgnm", "grid": 64}, "'grid' (64) must be <= 'image_size' (32)"),
        ({"dataset_dir": "/nonexistent/data", "dataset_kind": "mednist"}, "'dataset_dir' points to"),
        ({"num_classes": 5}, "'num_classes' is 5 but dataset 'embedded' has 4 classes"),
        ({"network": "vgg"}, "config id 'network' must be one of"),
    ],
)
def test_bad_overrides(tmp_path, overrides, message):
    wf = workflow("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), **{**TINY, **overrides})
    with pytest.raises(Exception) as info:
        wf.initialize()
    assert message in errors_of(info.value)


def test_finetune_missing_pretrained(tmp_path):
    wf = workflow("pgnm_finetune", "train", bundle_root=os.fspath(tmp_path), pretrained_ckpt="/nope/model.pt", **TINY)
    wf.initialize()
    with pytest.raises(Exception) as info:
        wf.run()
    assert "'pretrained_ckpt' points to" in errors_of(info.value)


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(not MEDNIST.is_file(), reason=f"MedNIST tarball not found at {MEDNIST}")
def test_mednist_chain(tmp_path):
    data = {"dataset_dir": os.fspath(MEDNIST), "dataset_kind": "mednist", "max_train_items": 48, "max_val_items": 24}
    run("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "pre"), arm="pgnm", epochs=1, **data, **TINY)
    ft = {"bundle_root": os.fspath(tmp_path / "ft"), "pretrained_ckpt": os.fspath(tmp_path / "pre/models/model.pt")}
    run("pgnm_finetune", "train", epochs=1, few_shot=24, **ft, **data, **TINY)
    run("pgnm_finetune", "evaluate", max_eval_items=30, **ft, **data, **TINY)
    report = json.loads((tmp_path / "ft" / "eval" / "metrics.json").read_text())
    assert report["overall"]["n"] == 30 and len(report["class_names"]) == 6
    inf = {"bundle_root": os.fspath(tmp_path / "ft"), "network": "small", "image_size": 32, "max_items": 12}
    run("pgnm_finetune", "inference", **inf, **{k: data[k] for k in ("dataset_dir", "dataset_kind")})
    assert len((tmp_path / "ft" / "eval" / "inference_predictions.csv").read_text().splitlines()) == 1 + 12


@pytest.mark.slow
def test_ddp_gloo_two_processes(tmp_path):
    """``torchrun`` with two processes: the policy trains and stays the same on both ranks, every rank runs the
    same number of iterations, and only rank 0 writes checkpoints."""
    extra = tmp_path / "dump_policy.json"
    dump = (
        "$torch.save({'policy': @train#arm_handler.policy.state_dict(), 'iteration': @train#trainer.state.iteration}, "
        "@bundle_root + '/policy_rank%d.pt' % torch.distributed.get_rank())"
    )
    extra.write_text(json.dumps({"finalize": [dump, "$pgnm_monai.distributed.cleanup_distributed()"]}))
    files = f"['configs/train.json','configs/multi_gpu_train.json','{extra}']"
    args = {"bundle_root": tmp_path, "arm": "pgnm", "epochs": 2, **TINY}
    proc = cli(
        PRE,
        "run",
        "--config_file",
        files,
        "--logging_file",
        "configs/logging.conf",
        *overrides_cli(args),
        torchrun=True,
    )
    log = proc.stdout + proc.stderr
    want = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= 2 else "gloo"
    assert f"backend={want}" in log
    saved = [line for line in log.splitlines() if "saved final checkpoint" in line]
    assert sum("model.pt" in line for line in saved) == 1 and sum("policy.pt" in line for line in saved) == 1
    assert sorted(p.name for p in (tmp_path / "models").glob("checkpoint_*")) == ["checkpoint_epoch=2.pt"]
    assert (tmp_path / "models" / "model.pt").is_file()
    r0 = torch.load(tmp_path / "policy_rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "policy_rank1.pt", weights_only=True)
    assert r0["iteration"] == r1["iteration"] > 0
    for k in r0["policy"]:
        assert torch.equal(r0["policy"][k], r1["policy"][k]), f"policy.{k} differs across ranks"
    wf = workflow("pgnm_pretrain", "train", **{**args, "bundle_root": os.fspath(tmp_path / "untrained")})
    wf.initialize()
    untrained = wf.parser.get_parsed_content("train#arm_handler").policy.state_dict()
    wf.finalize()
    assert untrained.keys() == r0["policy"].keys()
    assert not all(torch.equal(untrained[k], r0["policy"][k]) for k in untrained)  # it did train


def test_multi_gpu_train_is_a_pure_overlay():
    """The single-process train.json knows nothing of DDP; the DDP overlay picks rank-0 handlers by rank (the
    fine-tune bundle's is the same file: tests/test_finetune_bundle.py)."""
    train = (PRE / "configs" / "train.json").read_text()
    assert "sampler" not in train and "wrap_ddp" not in train and "is_main_process" not in train
    multi = json.loads((PRE / "configs" / "multi_gpu_train.json").read_text())
    assert "pgnm_monai.distributed.on_main_process(@train#writers)" in multi["train#trainer#train_handlers"]
    assert multi["validate#evaluator#val_handlers"] == "$pgnm_monai.distributed.on_main_process(@validate#handlers)"
    assert "[:" not in json.dumps(multi)  # no positional slicing of handler lists


@pytest.mark.parametrize("channels", [1, 3])
def test_bundle_transform_chains_equal_the_python_chains(tmp_path, channels):
    """train#preprocessing / validate#preprocessing (inline, overridable) give the Python chains' tensors."""
    from monai.data import get_track_meta
    from monai.utils import set_determinism

    from pgnm_monai.data import load_datalist
    from pgnm_monai.transforms import eval_transforms, train_transforms

    wf = workflow("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), **TINY, in_channels=channels)
    wf.initialize()
    assert not get_track_meta()  # the bundle runs its chains without MONAI's metadata (track_meta: false)
    items = load_datalist("embedded", split="train").items[:4]
    for name, python_chain in (
        ("train#preprocessing", train_transforms(image_size=32, channels=channels)),
        ("validate#preprocessing", eval_transforms(image_size=32, channels=channels)),
    ):
        config_chain = wf.parser.get_parsed_content(name)
        for chain in (config_chain, python_chain):
            chain.set_random_state(seed=3)
        for item in items:
            a, b = config_chain(dict(item))["image"], python_chain(dict(item))["image"]
            assert a.shape == (channels, 32, 32) and torch.equal(a, b), name
    wf.finalize()
    assert get_track_meta()  # restored for whatever runs next in the process
    set_determinism(None)
    if channels == 3:
        return
    # one transform overridden from the command line
    wf = workflow(
        "pgnm_pretrain",
        "train",
        bundle_root=os.fspath(tmp_path),
        **{**TINY, "train#preprocessing#transforms#2#prob": 0.0},
    )
    wf.initialize()
    assert wf.parser.get_parsed_content("train#preprocessing").transforms[2].prob == 0.0


def test_tensorboard_event_files_hold_losses_metrics_and_policy_state(pretrained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (pretrained["root"] / "logs").glob("events.out.tfevents.*"):
        acc = EventAccumulator(os.fspath(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert "train_loss" in tags and "val_macro_f1" in tags
    assert {"policy_loss", "reward_mean", "mask_std"} <= tags, tags
    assert {"policy/kl_to_init", "policy/mask_between_std", "policy/log_alpha_mean"} <= tags, tags
    with open(pretrained["root"] / "eval" / "policy_stats.csv") as f:  # per epoch, continued across the resume
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["kl_to_init"]) > 0  # the policy moved from its seeded initialisation


@pytest.mark.slow
def test_mlflow_tracking_through_monai(tmp_path):
    """``--tracking mlflow`` (MONAI's MLFlowHandler) logs the run to a local store under eval/, no server."""
    mlflow = pytest.importorskip("mlflow", reason="mlflow is an optional dependency (pip install '.[tracking]')")
    pytest.importorskip("sqlalchemy", reason="MLflow's local SQLite store needs sqlalchemy")
    args = {"bundle_root": os.fspath(tmp_path), "arm": "pgnm", "epochs": 2, "tensorboard": False, **TINY}
    run("pgnm_pretrain", "train", tracking="mlflow", **args)
    uri = "sqlite:///" + os.fspath(tmp_path / "eval" / "mlruns.db")
    runs = mlflow.tracking.MlflowClient(tracking_uri=uri).search_runs(
        [e.experiment_id for e in mlflow.tracking.MlflowClient(tracking_uri=uri).search_experiments()]
    )
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert {"train_loss", "val_macro_f1"} <= set(metrics), sorted(metrics)
    assert not list((tmp_path / "logs").glob("events.out.tfevents.*"))  # tensorboard off


@pytest.mark.parametrize("arm", ["frozen_policy", "pgnm-adversarial", "pgnm-paper-unscaled"])
def test_control_arms_through_the_bundle(tmp_path, arm):
    """Each control arm pretrains through the bundle by name; only the frozen policy stays at its initialisation."""
    run("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm=arm, epochs=1, tensorboard=False, **TINY)
    assert (tmp_path / "models" / "model.pt").is_file() and (tmp_path / "models" / "policy.pt").is_file()
    with open(tmp_path / "eval" / "policy_stats.csv") as f:
        stats = list(csv.DictReader(f))
    kl = float(stats[-1]["kl_to_init"])
    assert kl == 0.0 if arm == "frozen_policy" else kl > 0.0, (arm, kl)


def test_checkpoint_interval_zero_saves_no_training_state(tmp_path):
    """``checkpoint_interval 0``: the model files only, no resumable training state (the protocol's fine-tunes)."""
    run("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "zero"), arm="pgnm", epochs=2, checkpoint_interval=0,
        tensorboard=False, **TINY)  # fmt: skip
    run("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "one"), arm="pgnm", epochs=2, tensorboard=False,
        **TINY)  # fmt: skip
    zero = sorted(p.name for p in (tmp_path / "zero" / "models").iterdir())
    one = sorted(p.name for p in (tmp_path / "one" / "models").iterdir())
    assert "model.pt" in zero and "policy.pt" in zero and not [n for n in zero if n.startswith("checkpoint")]
    assert sorted(set(one) - set(zero)) == ["checkpoint_epoch=2.pt"]


def test_val_interval_zero_never_validates(tmp_path):
    """``val_interval 0``: no validation run, no ``model_best.pt``, no validation metrics; the model is saved."""
    run("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path), arm="none", epochs=2, val_interval=0,
        tensorboard=False, **TINY)  # fmt: skip
    models = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert "model.pt" in models and "model_best.pt" not in models
    assert not (tmp_path / "eval" / "val_metrics.json").exists()


def test_configs_read_as_wiring():
    """The logic lives in named Python components: few ``$`` expressions across the bundles' configs (the pretrain
    bundle's, and the fine-tune's own ids: the rest of its configs is the pretrain's, kept in step by
    ``pgnm_monai.experiments.bundle_sync``), none with a loop, a comprehension or a conditional beyond a one-line
    switch. Defaults read from their typed home (``$pgnm_monai.settings.POLICY.grid``) and one key of a component's
    dict (``$@trained_settings['network']``) are plain references, not logic."""
    from pgnm_monai.experiments.bundle_sync import FINETUNE_IDS

    texts = [(PRE / "configs" / name).read_text() for name in FINETUNE_IDS]
    for name, ids in FINETUNE_IDS.items():
        config = json.loads((FT / "configs" / name).read_text())
        for path in ids:
            value = config
            for key in path:
                value = value[key]
            texts.append(json.dumps(value))
    expressions, defaults = [], []
    for text in texts:
        for e in re.findall(r'"(\$[^"]*)"', text):
            plain = e.startswith("$pgnm_monai.settings.") or re.fullmatch(r"\$@\w+\['\w+'\]", e)
            (defaults if plain else expressions).append(e)
    assert len(expressions) <= 40, len(expressions)
    for e in defaults:  # a default from its typed home, or one key of a component's dict: references, not logic
        assert re.fullmatch(r"\$pgnm_monai\.settings\.[A-Z]+\.[a-z_]+|\$@\w+\['\w+'\]", e), e
    for e in expressions:
        assert not any(word in f" {e} " for word in (" for ", " while ", " lambda ", "getattr(")), e


def test_inference_class_names_come_from_the_trained_runs_class_map(tmp_path):
    """``inference.json``'s class names: the run's ``models/class_map.json`` (not the training split, which
    inference never needs); a model copied without it is refused, naming the file, with no fallback."""
    from pgnm_monai.components import class_names
    from pgnm_monai.data import save_class_map

    models = tmp_path / "models"
    with pytest.raises(FileNotFoundError, match=r"models/class_map.json does not exist: the class names"):
        class_names(models)
    save_class_map(models / "class_map.json", ["benign", "malignant"], dataset_kind="clinical")
    assert class_names(models) == ["benign", "malignant"]
