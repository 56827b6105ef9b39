"""A tiny SupervisedTrainer run with an arm handler, for the handler's resume and SIGKILL tests.

Run as a script (a fresh process) or in-process with ``main([...])``. Writes epoch (or iteration) checkpoints with
AtomicCheckpointSaver, a classifier-only ``model.pt``, and ``final.pt`` with the classifier and policy states.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.handlers import CheckpointLoader
from monai.utils import set_determinism
from torch import nn
from torch.utils.data import DistributedSampler

from pgnm_monai.arms import build_arm_handler
from pgnm_monai.handlers import AtomicCheckpointSaver


def tiny_classifier(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, 2, 1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, 2, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--arm", default="pgnm")
    parser.add_argument("--objective", default="reinforce")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--stop-after-epochs", type=int, default=0)
    parser.add_argument("--resume", default="")
    parser.add_argument("--iteration-checkpoints", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args(argv)

    set_determinism(0)
    data = torch.load(args.data)
    items = [{"image": x, "label": y} for x, y in zip(data["image"], data["label"], strict=True)]
    sampler = DistributedSampler(items, num_replicas=1, rank=0, seed=0)  # seeded per epoch (the trainer sets it)
    loader = DataLoader(items, batch_size=16, sampler=sampler, drop_last=True, num_workers=0)
    net = tiny_classifier(int(data["label"].max()) + 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    arm = build_arm_handler(
        args.arm,
        image_size=32,
        grid=8,
        kernel_size=5,
        sigma=2.0,
        policy_trunk="small",
        objective=args.objective,
        epochs=args.epochs,
        lr=0.1,
        seed=0,
    )
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=args.epochs,
        train_data_loader=loader,
        network=net,
        optimizer=optimizer,
        loss_function=nn.CrossEntropyLoss(),
        train_handlers=[arm],
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: scheduler.step())
    state = {"network": net, "optimizer": optimizer, "lr_scheduler": scheduler, "trainer": trainer, "arm": arm}
    if args.resume:
        CheckpointLoader(load_path=args.resume, load_dict=state).attach(trainer)
    save_dir = Path(args.out)
    AtomicCheckpointSaver(
        save_dir=str(save_dir),
        save_dict=state,
        save_interval=1,
        n_saved=None,
        epoch_level=not args.iteration_checkpoints,
    ).attach(trainer)
    AtomicCheckpointSaver(
        save_dir=str(save_dir), save_dict={"model": net}, save_final=True, final_filename="model.pt"
    ).attach(trainer)
    if args.stop_after_epochs:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=args.stop_after_epochs), lambda e: e.terminate())
    if args.sleep:
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: time.sleep(args.sleep))
    trainer.run()

    final = {"network": net.state_dict(), "iteration": trainer.state.iteration, "epoch": trainer.state.epoch}
    if args.arm == "pgnm":
        final["policy"] = arm.policy.state_dict()
    torch.save(final, save_dir / "final.pt")


if __name__ == "__main__":
    main()
