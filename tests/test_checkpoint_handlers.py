"""Checkpoint handlers: atomic files with MONAI's names, the usual permission, training state, key metric, resume."""

from __future__ import annotations

import inspect
import os
import stat

import pytest
import torch
from ignite.engine import Events
from ignite.metrics import Accuracy
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import CheckpointSaver, ValidationHandler, from_engine
from torch import nn

import pgnm_monai.handlers.checkpoint as checkpoint_module
from pgnm_monai.atomic_files import default_file_mode
from pgnm_monai.handlers import AtomicCheckpointSaver, ResumeCheckpointLoader, TrainingStateSaver
from pgnm_monai.handlers.checkpoint import AtomicDiskSaver

EPOCHS = 3
BATCHES = 4


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    """Run the test under a known umask (restored afterwards)."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _data(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"image": torch.randn(2, 4, generator=g), "label": torch.randint(0, 2, (2,), generator=g)} for _ in range(4)
    ]


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, 2)


def _trainer(net: nn.Module, optimizer: torch.optim.Optimizer, max_epochs: int = EPOCHS, **kwargs) -> SupervisedTrainer:
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=_data(),
        network=net,
        optimizer=optimizer,
        loss_function=nn.CrossEntropyLoss(),
        decollate=False,
        **kwargs,
    )


def _sgd(net: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_training_files_names_permission_and_state(tmp_path, umask):
    net = _net()
    optimizer = _sgd(net)
    trainer = _trainer(net, optimizer)
    AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_final=True, final_filename="model.pt"
    ).attach(trainer)
    TrainingStateSaver(save_dir=str(tmp_path), save_dict={"model": net, "optimizer": optimizer}).attach(trainer)
    trainer.run()

    # exactly these files: n_saved=1 keeps the last epoch only, and no temporary file is left
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_epoch=3.pt", "model.pt"]
    for name in ("model.pt", "checkpoint_epoch=3.pt"):
        assert _mode(tmp_path / name) == 0o666 & ~umask == default_file_mode()
        assert _mode(tmp_path / name) != 0o600

    model = torch.load(tmp_path / "model.pt", weights_only=True)  # one object: saved as its state_dict
    for key, value in net.state_dict().items():
        assert torch.equal(model[key], value)

    state = torch.load(tmp_path / "checkpoint_epoch=3.pt", weights_only=True)
    assert set(state) == {"model", "optimizer", "trainer"}
    assert state["trainer"]["iteration"] == EPOCHS * BATCHES
    assert state["trainer"]["max_epochs"] == EPOCHS
    assert state["trainer"]["epoch_length"] == BATCHES
    assert state["optimizer"]["state"]  # momentum buffers
    for key, value in net.state_dict().items():
        assert torch.equal(state["model"][key], value)


def test_same_file_names_as_monai_checkpoint_saver(tmp_path):
    """Final (no fixed name), interval (n_saved=2, iteration level, prefix) and a longer second run."""
    dirs = {"monai": tmp_path / "monai", "atomic": tmp_path / "atomic"}
    net = _net()
    optimizer = _sgd(net)
    trainer = _trainer(net, optimizer)
    for cls, folder in ((CheckpointSaver, dirs["monai"]), (AtomicCheckpointSaver, dirs["atomic"])):
        cls(save_dir=str(folder), save_dict={"net": net}, save_final=True).attach(trainer)
        cls(
            save_dir=str(folder),
            save_dict={"net": net, "opt": optimizer},
            file_prefix="run",
            save_interval=3,
            epoch_level=False,
            n_saved=2,
        ).attach(trainer)
    trainer.run()
    names = sorted(os.listdir(dirs["atomic"]))
    assert names == sorted(os.listdir(dirs["monai"]))
    assert names == [
        "net_final_iteration=12.pt",
        "run_checkpoint_iteration=12.pt",
        "run_checkpoint_iteration=9.pt",
    ]

    trainer.state.max_epochs = EPOCHS + 1  # continue: the earlier final checkpoint is replaced
    trainer.run()
    names = sorted(os.listdir(dirs["atomic"]))
    assert names == sorted(os.listdir(dirs["monai"]))
    assert "net_final_iteration=16.pt" in names and "net_final_iteration=12.pt" not in names


def test_final_checkpoint_on_exception(tmp_path, umask):
    net = _net()
    trainer = _trainer(net, _sgd(net))
    AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_final=True, final_filename="model.pt"
    ).attach(trainer)

    def fail(engine):
        raise RuntimeError("boom")

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=6), fail)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.run()
    assert os.listdir(tmp_path) == ["model.pt"]
    assert _mode(tmp_path / "model.pt") == default_file_mode()
    model = torch.load(tmp_path / "model.pt", weights_only=True)
    for key, value in net.state_dict().items():
        assert torch.equal(model[key], value)


def _evaluator(net: torch.nn.Module) -> SupervisedEvaluator:
    """An evaluator of ``net`` with a key metric (``val_acc``)."""
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=_data(seed=1),
        network=net,
        key_val_metric={"val_acc": Accuracy(output_transform=from_engine(["pred", "label"]))},
        decollate=False,
    )


def test_key_metric_saver_writes_model_best(tmp_path, umask):
    net = _net()
    evaluator = _evaluator(net)
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True, key_metric_filename="model_best.pt"
    )
    saver.attach(evaluator)
    trainer = _trainer(net, _sgd(net), train_handlers=[ValidationHandler(validator=evaluator, interval=1)])
    trainer.run()

    assert os.listdir(tmp_path) == ["model_best.pt"]
    assert _mode(tmp_path / "model_best.pt") == default_file_mode()
    best = torch.load(tmp_path / "model_best.pt", weights_only=True)
    assert set(best) == set(net.state_dict())
    assert saver.key_metric_checkpoint is not None and saver.key_metric_checkpoint.last_checkpoint is not None


def test_key_metric_default_names_and_state(tmp_path):
    """Without a fixed name: MONAI's ``<name>_key_metric=X.XXXX.pt``; the tracking list can be restored."""
    net = _net()
    evaluator = _evaluator(net)
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True, key_metric_save_state=True
    )
    saver.attach(evaluator)
    evaluator.run()
    (name,) = os.listdir(tmp_path)
    assert name == f"model_key_metric={evaluator.state.metrics['val_acc']:.4f}.pt"
    saved = torch.load(tmp_path / name, weights_only=True)
    assert "checkpointer" in saved

    other = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True)
    other.load_state_dict(saved["checkpointer"])
    assert other.key_metric_checkpoint.state_dict() == saver.key_metric_checkpoint.state_dict()


def test_resume_restores_epoch_and_weights(tmp_path):
    net = _net()
    optimizer = _sgd(net)
    trainer = _trainer(net, optimizer)
    TrainingStateSaver(save_dir=str(tmp_path), save_dict={"model": net, "optimizer": optimizer}, n_saved=None).attach(
        trainer
    )
    trainer.run()
    assert sorted(os.listdir(tmp_path)) == [f"checkpoint_epoch={e}.pt" for e in range(1, EPOCHS + 1)]
    final = {k: v.clone() for k, v in net.state_dict().items()}
    saved = torch.load(tmp_path / "checkpoint_epoch=2.pt", weights_only=True)

    resumed_net = _net(seed=123)
    resumed_optimizer = _sgd(resumed_net)
    resumed = _trainer(resumed_net, resumed_optimizer)
    ResumeCheckpointLoader(
        load_path=str(tmp_path / "checkpoint_epoch=2.pt"),
        load_dict={"model": resumed_net, "optimizer": resumed_optimizer},
        map_location="cpu",
    ).attach(resumed)
    seen = {}

    @resumed.on(Events.EPOCH_STARTED(once=3))
    def _record(engine):
        seen["epoch"], seen["iteration"] = engine.state.epoch, engine.state.iteration
        seen["weights"] = {k: v.clone() for k, v in resumed_net.state_dict().items()}

    resumed.run()
    assert seen["epoch"] == 3 and seen["iteration"] == 2 * BATCHES  # epochs 1-2 not run again
    for key, value in saved["model"].items():
        assert torch.equal(seen["weights"][key], value)
    for key, value in final.items():  # same data, same optimizer state: the same last epoch
        assert torch.allclose(resumed_net.state_dict()[key], value)
    assert resumed.state.epoch == EPOCHS


def test_resume_loader_without_path_does_nothing(tmp_path):
    net = _net()
    trainer = _trainer(net, _sgd(net), max_epochs=1)
    ResumeCheckpointLoader(load_path=None, load_dict={"model": net}).attach(trainer)
    trainer.run()
    assert trainer.state.epoch == 1


def test_disk_saver_keeps_old_file_when_a_save_fails(tmp_path, umask):
    saver = AtomicDiskSaver(tmp_path, filename="model.pt")
    saver({"w": torch.ones(2)}, "ignored_name.pt")
    assert os.listdir(tmp_path) == ["model.pt"]
    assert _mode(tmp_path / "model.pt") == 0o666 & ~umask
    with pytest.raises(AttributeError, match="Can't pickle local object"):  # a lambda cannot be pickled
        saver({"w": lambda: 0}, "ignored_name.pt")
    assert os.listdir(tmp_path) == ["model.pt"]  # temporary file removed, old checkpoint intact
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["w"], torch.ones(2))
    saver.remove("ignored_name.pt")  # fixed name: the next save replaces it, nothing is deleted
    assert os.listdir(tmp_path) == ["model.pt"]

    plain = AtomicDiskSaver(tmp_path / "plain")
    plain({"w": torch.zeros(1)}, "a.pt")
    plain.remove("a.pt")
    assert os.listdir(tmp_path / "plain") == []


def test_training_state_saver_needs_a_positive_interval(tmp_path):
    with pytest.raises(ValueError, match="save_interval must be a positive number of epochs, got 0"):
        TrainingStateSaver(save_dir=str(tmp_path), save_dict={"model": _net()}, save_interval=0)


def test_public_api_only():
    source = inspect.getsource(checkpoint_module)
    for private in ("._atomic", "__class__ =", "_interval_checkpoint", "._saved"):
        assert private not in source
    assert "(CheckpointSaver)" not in source  # not a subclass of MONAI's CheckpointSaver
