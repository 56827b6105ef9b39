"""A short, offline demo of the method on the embedded DICOM/NIfTI images (or any dataset, 2D or 3D).

It draws noise masks from a fresh policy, trains the policy with REINFORCE for a few
``SupervisedTrainer`` iterations next to a small classifier, draws again, and writes a picture of
image / mask / masked image for one training image of each class before and after (the middle slice of
volumes), plus the logged policy statistics. On a terminal, a tqdm bar (ignite's ``ProgressBar``) follows the steps.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.utils import set_determinism

from pgnm_monai.atomic_files import atomic_save_figure, atomic_write_text
from pgnm_monai.components import load_data
from pgnm_monai.experiments.policy_figures import middle_slice
from pgnm_monai.handlers import STATE_ATTRIBUTES, LossProgressBar
from pgnm_monai.handlers.policy_factory import build_policy_handler
from pgnm_monai.networks import build_classifier
from pgnm_monai.settings import INPUT, OPTIMIZER, POLICY, default_network
from pgnm_monai.transforms import PolicyNoiseMask, eval_transforms

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)


def _one_per_class(dataset: Dataset, class_names: list[str]) -> dict[str, torch.Tensor]:
    """The first training image of each class, named by its class (read until every class has one)."""
    picked: dict[str, torch.Tensor] = {}
    for i in range(len(dataset)):
        item = dataset[i]
        picked.setdefault(str(item.get("label_name", class_names[int(item["label"])])), item["image"])
        if len(picked) == len(class_names):
            break
    return picked


def _plane(x: torch.Tensor) -> np.ndarray:
    """One image ``(H, W)``, or a volume's middle slice (:func:`.policy_figures.middle_slice`), as an array."""
    return middle_slice(x.detach()).cpu().numpy()


def _save_figure(rows: dict[str, list[np.ndarray]], titles: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(titles), figsize=(2.2 * len(titles), 2.2 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c, image in enumerate(images):
            axes[r][c].imshow(
                image, cmap="gray", vmin=0 if "mask" in titles[c] else None, vmax=1 if "mask" in titles[c] else None
            )
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if r == 0:
                axes[r][c].set_title(titles[c], fontsize=8)
        axes[r][0].set_ylabel(name)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=100)


def run_demo(
    output_dir: str = "runs/demo",
    image_size: int = INPUT.image_size,
    grid: int = POLICY.grid,
    iterations: int = 30,
    batch_size: int = 8,
    seed: int = 0,
    device: str | None = None,
    dataset_dir: str | None = None,
    dataset_kind: str | None = None,
    dataset_options: dict | None = None,
    spatial_dims: int = 2,
    progress_bar: bool | None = None,
) -> dict:
    """Run the demo and return its summary (also written to ``output_dir/summary.json``).

    Args:
        output_dir: where ``masks.png`` and ``summary.json`` go.
        image_size: side of the images (resize + centre crop; a cube for volumes).
        grid: mask cells per side (G³ cells in 3D).
        iterations: REINFORCE iterations.
        batch_size: images per iteration.
        seed: seed of everything random.
        device: ``"cpu"``/``"cuda"``; default: CUDA when present.
        dataset_dir: the images (``None``: the embedded DICOM/NIfTI set).
        dataset_kind: kind of ``dataset_dir``.
        dataset_options: loader options (e.g. ``{"slices": "none"}``: whole volumes).
        spatial_dims: 2 (images) or 3 (volumes: 3D classifier, policy and mask).
        progress_bar: a tqdm bar of the REINFORCE steps on stderr (``None``: when stderr is a terminal).
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a whole number >= 1 (REINFORCE steps), got {iterations!r}.")
    set_determinism(seed)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    datalist = load_data(dataset_kind, dataset_dir, "train", seed=seed, options=dataset_options)
    chain = eval_transforms(image_size=image_size, spatial_dims=spatial_dims)
    dataset = Dataset(datalist.items, transform=chain)
    examples = _one_per_class(dataset, datalist.class_names)
    batch = torch.stack(list(examples.values())).to(dev)

    network = default_network(spatial_dims)
    classifier = build_classifier(network, INPUT.in_channels, datalist.num_classes, spatial_dims).to(dev)
    # statistics read every iteration: the summary reports the first and the last
    handler = build_policy_handler(
        POLICY, grid=grid, spatial_dims=spatial_dims, device=dev, seed=seed, policy_stats_interval=1
    )
    probe = PolicyNoiseMask(handler.policy)

    def draw() -> tuple[list[np.ndarray], list[np.ndarray]]:
        handler.policy.eval()  # a look only: no base update, no BN statistics update
        with torch.no_grad():
            masked = probe.set_random_state(seed)(batch)
        return [_plane(m) for m in probe.last_sample.mask[:, 0]], [_plane(x) for x in masked[:, 0]]

    masks_before, masked_before = draw()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=0)
    epochs = max(1, -(-iterations // max(1, len(loader))))
    trainer = SupervisedTrainer(
        device=dev,
        max_epochs=epochs,
        train_data_loader=loader,
        network=classifier,
        optimizer=torch.optim.SGD(
            classifier.parameters(), lr=OPTIMIZER.lr, momentum=OPTIMIZER.momentum, weight_decay=OPTIMIZER.weight_decay
        ),
        loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=[handler],
    )
    history: list[dict[str, float]] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: history.append(
            {"loss": float(e.state.output[0]["loss"])} | {a: getattr(e.state, a) for a in STATE_ATTRIBUTES}
        ),
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=iterations), lambda e: e.terminate())  # exactly that many
    LossProgressBar(sys.stderr.isatty() if progress_bar is None else progress_bar, persist=False).attach(trainer)
    trainer.run()
    masks_after, masked_after = draw()

    rows = {
        name: [_plane(batch[i, 0]), masks_before[i], masked_before[i], masks_after[i], masked_after[i]]
        for i, name in enumerate(examples)
    }
    _save_figure(
        rows, ["image", "mask (fresh policy)", "masked", "mask (after REINFORCE)", "masked"], out / "masks.png"
    )
    first, last = history[0], history[-1]
    summary = {
        "images": len(datalist),
        "classes": datalist.class_names,
        "iterations": len(history),
        "first": first,
        "last": last,
        "figure": str(out / "masks.png"),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary
