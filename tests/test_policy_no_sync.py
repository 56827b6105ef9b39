"""The policy's step waits for the device only when it reads its statistics (``handlers.noise_policy``,
``policy_stats_interval``): between two reads its hooks make no host read of a tensor, and a non-finite value is
still reported, naming the iteration where it first appeared. On a GPU, ``torch.cuda.set_sync_debug_mode``
checks the same (run by ``python -m pgnm_monai.benchmarks.gpu_checks``)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from monai.engines import SupervisedTrainer

from pgnm_monai.arms import build_arm_handler
from pgnm_monai.handlers.noise_policy import NoisePolicyHandler
from pgnm_monai.networks import build_classifier

#: what reads a tensor's value to the host (on a GPU: a synchronisation).
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy")
POLICY = {"image_size": 16, "grid": 4, "kernel_size": 3, "sigma": 1.0, "policy_trunk": "small", "seed": 0}


@contextlib.contextmanager
def no_host_reads():
    """Within the block, a host read of any tensor raises ``AssertionError`` naming the method."""
    saved = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def refuse(name):
        def read(self, *args, **kwargs):
            raise AssertionError(f"host read Tensor.{name} inside the policy's step")

        return read

    for name in HOST_READS:
        setattr(torch.Tensor, name, refuse(name))
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


class Guarded(NoisePolicyHandler):
    """The handler with every hook run under :func:`no_host_reads` on the iterations that do not read."""

    def _guard(self, hook, engine):
        with no_host_reads() if not self.reads_statistics(engine) else contextlib.nullcontext():
            hook(engine)

    def __call__(self, engine):
        self._guard(super().__call__, engine)

    def compute_policy_loss(self, engine):
        self._guard(super().compute_policy_loss, engine)

    def step_policy(self, engine):
        self._guard(super().step_policy, engine)


def _trainer(handler, device, iterations=8, nan_at=None):
    torch.manual_seed(0)
    x = torch.randn(iterations * 4, 1, 16, 16)
    if nan_at is not None:
        x[(nan_at - 1) * 4] = float("nan")
    items = [{"image": a, "label": int(i % 2)} for i, a in enumerate(x)]
    net = build_classifier("small", 1, 2).to(device)
    return SupervisedTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=torch.utils.data.DataLoader(items, batch_size=4),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
        loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=[handler],
    )


@pytest.mark.parametrize("arm", ["pgnm-reinforce", "pgnm-paper", "frozen_policy"])
def test_no_host_read_between_two_reads(arm):
    handler = build_arm_handler(arm, POLICY, policy_stats_interval=4)
    handler.__class__ = Guarded  # the same handler, its hooks guarded
    trainer = _trainer(handler, "cpu")
    trainer.run()
    assert handler.stats_interval == 4 and trainer.state.iteration == 8
    assert all(torch.isfinite(torch.tensor(getattr(trainer.state, a))) for a in ("policy_loss", "mask_mean"))


def test_a_non_finite_value_is_reported_at_the_next_read_naming_its_iteration():
    handler = build_arm_handler("pgnm", POLICY, policy_stats_interval=4, epochs=1)
    handler.mask.check_finite = False  # the batch reaches the policy, as on a GPU between two reads
    trainer = _trainer(handler, "cpu", nan_at=2)
    with pytest.raises(FloatingPointError, match=r"non-finite value at iteration 2: read at iteration 4"):
        trainer.run()


def test_one_read_every_iteration_refuses_a_non_finite_batch_before_the_policy_sees_it():
    handler = build_arm_handler("pgnm", POLICY, policy_stats_interval=1)
    assert handler.mask.check_finite and not build_arm_handler("pgnm", POLICY).mask.check_finite
    trainer = _trainer(handler, "cpu", nan_at=2)
    with pytest.raises(ValueError, match="image contains NaN"):
        trainer.run()
    assert trainer.state.iteration == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="set_sync_debug_mode needs a CUDA GPU (none here)")
def test_cuda_iteration_makes_no_synchronising_call():
    """A whole training iteration on the GPU (data already there, no other handler) between two reads of the
    policy's statistics: ``torch.cuda.set_sync_debug_mode("error")`` raises on any synchronising call."""
    from ignite.engine import Events

    device = torch.device("cuda")
    handler = build_arm_handler("pgnm-reinforce", POLICY, device=device, policy_stats_interval=4)
    torch.manual_seed(0)
    images = torch.randn(32, 1, 16, 16, device=device)
    items = [{"image": a, "label": torch.tensor(i % 2, device=device)} for i, a in enumerate(images)]
    net = build_classifier("small", 1, 2).to(device)
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=torch.utils.data.DataLoader(items, batch_size=4),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01, fused=True),
        loss_function=torch.nn.CrossEntropyLoss(),
        decollate=False,
    )
    guarded = []

    def started(engine):
        if not handler.reads_statistics(engine):
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            guarded.append(engine.state.iteration)

    trainer.add_event_handler(Events.ITERATION_STARTED, started)  # before the policy's hooks
    handler.attach(trainer)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: torch.cuda.set_sync_debug_mode("default"))
    try:
        trainer.run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert guarded == [1, 2, 3, 5, 6, 7]
