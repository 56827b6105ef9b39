"""Training-step time of the baseline vs PGNM (``paper`` and ``fast`` presets), interleaved in one process.

Each step is the real ``monai.engines.SupervisedTrainer`` iteration with its handlers, run through its public
``run()`` one iteration at a time (ignite's ``max_iters``) in an epoch as long as a real one (the policy reads its
statistics every ``policy_stats_interval`` iterations, as in training), timed from ``ITERATION_STARTED`` to
``ITERATION_COMPLETED`` by handlers attached before and after the arm's, so the policy's whole work is inside.
Variants (same classifier initialisation, optimiser, batch and seed):

- ``baseline``: arm ``none``;
- ``pgnm[paper]``: arm ``pgnm``, preset ``paper`` (timm's ResNet-10t policy trunk at full resolution);
- ``pgnm[fast]``: arm ``pgnm``, preset ``fast`` (the trunk sees the image resized to 16 x 16, fused SGD);
- ``pgnm[fast,1-thread]``: the same with the policy's hooks on one CPU thread (for shared CPUs);
- ``pgnm[paper,contiguous]``: the paper preset with the policy trunk in the default memory format (what
  channels-last saves, side by side);
- ``plain``: what a user would write instead: the same network, SGD, batch, memory format and autocast in a
  hand-written PyTorch loop (:class:`PlainLoop`, no trainer); the table states the baseline's ratio to it.

``--channels-last``, ``--amp`` / ``--amp-dtype`` and ``--compile`` set the classifier as the bundles' device ids do
(:class:`~pgnm_monai.settings.DeviceSettings`; defaults: channels-last and mixed precision on a CUDA GPU only).

The classifier is :func:`pgnm_monai.networks.build_classifier`: in 2D timm's network of that name, the one the
paper trains. Each variant's *FLOP floor* is its step's FLOPs over the baseline's (one step of each trainer under
``torch.utils.flop_counter.FlopCounterMode``: forward, backward and the policy's work), the ratio that a
policy costing only its arithmetic would reach.

The variants run round-robin, one step each per round, so load from other processes hits all of them alike.
Reported per variant: median and interquartile range of the step time over ``--steps`` rounds after ``--warmup``,
the ratio of medians to the baseline with its bootstrap interval over the rounds, the FLOP floor, and peak memory
(CUDA: ``max_memory_allocated`` of one step; CPU: the peak growth of the resident set, sampled in a separate pass).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.engines import SupervisedTrainer
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pgnm_monai.arms import PRESETS, build_arm_handler
from pgnm_monai.components.wiring import amp_kwargs, prepare_model, use_amp
from pgnm_monai.networks import CLASSIFIERS, build_classifier
from pgnm_monai.settings import AMP_DTYPES, DEVICE, OBJECTIVES, OPTIMIZER, PAPER_GRID, POLICY

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["PLAIN", "VARIANTS", "PlainLoop", "StepTimer", "build_trainer", "measure", "main", "ratio_interval",
           "run_step", "step_flops"]  # fmt: skip

#: the hand-written loop's label.
PLAIN = "plain"

#: variant label -> keyword arguments of :func:`~pgnm_monai.arms.build_arm_handler`: the baseline, then the
#: ``pgnm`` arm with each preset of :data:`~pgnm_monai.settings.PRESETS`.
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {"arm": "none"},
    **{f"pgnm[{preset}]": {"arm": "pgnm", "preset": preset} for preset in PRESETS},
    "pgnm[fast,1-thread]": {"arm": "pgnm", "preset": "fast", "policy_num_threads": 1},
    "pgnm[paper,contiguous]": {"arm": "pgnm", "preset": "paper", "policy_channels_last": False},
}


class StepTimer:
    """Wall time of each training iteration, from ``ITERATION_STARTED`` to ``ITERATION_COMPLETED``.

    :meth:`handlers` gives the two ends as ``train_handlers`` entries: put the first before and the second after
    every other handler, so that the whole iteration, the arm handler's work included, lies between them.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []
        self._start = 0.0

    def start(self, engine: Any = None) -> None:
        """``ITERATION_STARTED``: start the clock (after the device's queued work)."""
        _synchronise(self.device)
        self._start = time.perf_counter()

    def stop(self, engine: Any = None) -> None:
        """``ITERATION_COMPLETED``: record the iteration's time (after the device's queued work)."""
        _synchronise(self.device)
        self.times.append(time.perf_counter() - self._start)

    def handlers(self) -> tuple[_OnEvent, _OnEvent]:
        """The ``train_handlers`` entries that start and stop the clock."""
        return _OnEvent(Events.ITERATION_STARTED, self.start), _OnEvent(Events.ITERATION_COMPLETED, self.stop)


class _OnEvent:
    """A ``train_handlers`` entry that calls ``fn`` on ``event``."""

    def __init__(self, event: Any, fn: Callable) -> None:
        self.event, self.fn = event, fn

    def attach(self, engine: Any) -> None:
        """Register ``fn`` on ``event`` of ``engine``."""
        engine.add_event_handler(self.event, self.fn)


#: the benchmark epoch's length in iterations: longer than any run of the benchmark (no epoch ends inside it)
EPOCH_LENGTH = 1_000_000


class _OneBatch:
    """A loader of one batch, :data:`EPOCH_LENGTH` times: a fresh dict each iteration (handlers replace the image in
    it, the tensors stay)."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch

    def __iter__(self):
        for _ in range(EPOCH_LENGTH):
            yield dict(self.batch)

    def __len__(self) -> int:
        return EPOCH_LENGTH


class PlainLoop:
    """What a user writes instead of the trainer: ``classifier`` on ``batch`` with the same SGD, memory format and
    autocast (float16 with a gradient scaler) in a hand-written loop; :meth:`step` runs and times one iteration."""

    def __init__(
        self,
        classifier: nn.Module,
        device: torch.device,
        batch: dict[str, torch.Tensor],
        amp: bool | None = None,
        amp_dtype: str = DEVICE.amp_dtype,
        channels_last: bool | None = DEVICE.channels_last,
        compile: bool | str = DEVICE.compile,
        spatial_dims: int = 2,
    ) -> None:
        self.device = device
        self.net = prepare_model(classifier, device, channels_last, compile, spatial_dims)
        self.optimizer = _optimizer(self.net)
        self.amp = use_amp(amp, device)
        self.dtype = amp_kwargs(amp_dtype, device)["dtype"]
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp and self.dtype == torch.float16)
        weight = next((p for p in self.net.parameters() if p.ndim == 4), None)
        last = weight is not None and weight.is_contiguous(memory_format=torch.channels_last)
        self.image = batch["image"].contiguous(memory_format=torch.channels_last) if last else batch["image"]
        self.label = batch["label"]
        self.times: list[float] = []

    def step(self) -> float:
        """One training iteration; its time (s), after the device's queued work."""
        _synchronise(self.device)
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.amp):
            loss = nn.functional.cross_entropy(self.net(self.image), self.label)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        _synchronise(self.device)
        self.times.append(time.perf_counter() - start)
        return self.times[-1]


def _optimizer(network: nn.Module) -> torch.optim.SGD:
    """The bundles' classifier optimiser: fused SGD with :data:`~pgnm_monai.settings.OPTIMIZER`'s settings."""
    o = OPTIMIZER
    return torch.optim.SGD(network.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, fused=True)


def build_trainer(
    variant: str,
    classifier: nn.Module,
    device: torch.device,
    in_channels: int,
    objective: str,
    amp: bool | None,
    seed: int,
    spatial_dims: int = 2,
    grid: int = PAPER_GRID,
    batch: dict[str, torch.Tensor] | None = None,
    amp_dtype: str = DEVICE.amp_dtype,
    channels_last: bool | None = DEVICE.channels_last,
    compile: bool | str = DEVICE.compile,
) -> SupervisedTrainer | PlainLoop:
    """A ``SupervisedTrainer`` of ``classifier`` with the variant's handler, set up as the bundles' trainer (fused
    SGD with :data:`~pgnm_monai.settings.OPTIMIZER`'s settings, the policy's learning rate the bundles' fraction
    of it; gradients set to ``None`` between steps; the classifier as the bundles' device ids set it), training on
    ``batch`` (one iteration per epoch) and timing each iteration (``trainer.step_timer``; the arm's handler is
    ``trainer.arm_handler``); :data:`PLAIN`: the :class:`PlainLoop`."""
    if variant == PLAIN:
        return PlainLoop(classifier, device, batch or {}, amp, amp_dtype, channels_last, compile, spatial_dims)
    classifier = prepare_model(classifier, device, channels_last, compile, spatial_dims)
    handler = build_arm_handler(
        device=device,
        in_channels=in_channels,
        spatial_dims=spatial_dims,
        seed=seed,
        objective=objective,
        grid=grid,
        compile=compile,
        **VARIANTS[variant],
    )
    optimizer = _optimizer(classifier)
    timer = StepTimer(device)
    first, last = timer.handlers()
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=_OneBatch(batch or {}),
        network=classifier,
        optimizer=optimizer,
        optim_set_to_none=True,
        loss_function=nn.CrossEntropyLoss(),
        train_handlers=[first, handler, last],
        amp=use_amp(amp, device),
        amp_kwargs=amp_kwargs(amp_dtype, device),
    )
    trainer.step_timer, trainer.arm_handler = timer, handler
    return trainer


def run_step(trainer: SupervisedTrainer | PlainLoop) -> float:
    """One training iteration through the trainer's public ``run()`` (ignite's ``max_iters`` one further; the plain
    loop: its :meth:`PlainLoop.step`); its time (s)."""
    if isinstance(trainer, PlainLoop):
        return trainer.step()
    trainer.state.max_epochs = None  # count iterations, not epochs
    trainer.state.max_iters = trainer.state.iteration + 1
    trainer.run()
    return trainer.step_timer.times[-1]


def step_flops(trainer: SupervisedTrainer) -> int:
    """The FLOPs of one training iteration of ``trainer`` (forward, backward, the arm's work), counted by
    ``torch.utils.flop_counter.FlopCounterMode``."""
    counter = FlopCounterMode(display=False)
    with counter:
        run_step(trainer)
    return counter.get_total_flops()


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _peak_memory(step: Callable[[], None], device: torch.device) -> float:
    """Peak memory (MiB) of one call of ``step``: CUDA max allocated, or CPU peak RSS growth (sampled)."""
    if device.type == "cuda":
        _synchronise(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        _synchronise(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    start = _rss_bytes()
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    step()
    done.set()
    thread.join()
    return (max(peak[0], _rss_bytes()) - start) / 2**20


def measure(
    model: str = "resnet18",
    image_size: int = 128,
    batch_size: int = 16,
    steps: int = 20,
    warmup: int = 3,
    channels: int = 3,
    classes: int = 6,
    objective: str = POLICY.objective,
    device: str = "auto",
    amp: bool | None = DEVICE.amp,
    seed: int = 0,
    memory: bool = True,
    variants: tuple[str, ...] = (*VARIANTS, PLAIN),
    spatial_dims: int = 2,
    grid: int = PAPER_GRID,
    amp_dtype: str = DEVICE.amp_dtype,
    channels_last: bool | None = DEVICE.channels_last,
    compile: bool | str = DEVICE.compile,
) -> dict[str, dict[str, float]]:
    """Time the variants interleaved; returns ``{variant: {median_s, q1_s, q3_s, ratio, gflops, floor,
    peak_mib}}`` (``floor``: the variant's FLOPs over the first variant's, the baseline)."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else device.replace("auto", "cpu"))
    torch.manual_seed(seed)
    template = build_classifier(model, channels, classes, spatial_dims)
    generator = torch.Generator().manual_seed(seed)
    batch = {
        "image": torch.randn(batch_size, channels, *(image_size,) * spatial_dims, generator=generator).to(dev),
        "label": torch.randint(0, classes, (batch_size,), generator=generator).to(dev),
    }
    trainers = {
        v: build_trainer(
            v,
            copy.deepcopy(template).to(dev),
            dev,
            channels,
            objective,
            amp,
            seed,
            spatial_dims,
            grid,
            batch,
            amp_dtype,
            channels_last,
            compile,
        )  # fmt: skip
        for v in variants
    }
    flops = {v: step_flops(trainers[v]) for v in variants}  # also the first warm-up step of each
    times: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(warmup + steps):
        order = variants[i % len(variants) :] + variants[: i % len(variants)]  # rotate who goes first
        for v in order:
            seconds = run_step(trainers[v])
            if i >= warmup:
                times[v].append(seconds)
    results: dict[str, dict[str, float]] = {}
    for v in variants:
        q1, median, q3 = statistics.quantiles(times[v], n=4, method="inclusive")
        results[v] = {"median_s": median, "q1_s": q1, "q3_s": q3, "gflops": flops[v] / 1e9}
        if memory:
            results[v]["peak_mib"] = _peak_memory(lambda v=v: run_step(trainers[v]), dev)
    base, base_flops = results[variants[0]]["median_s"], flops[variants[0]]
    for v in variants:
        results[v]["ratio"] = results[v]["median_s"] / base
        results[v]["ratio_low"], results[v]["ratio_high"] = ratio_interval(times[v], times[variants[0]], seed)
        results[v]["floor"] = flops[v] / base_flops
    return results


def ratio_interval(
    times: list[float], base_times: list[float], seed: int = 0, n_boot: int = 2000
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``median(times) / median(base_times)``, resampling the interleaved rounds
    (the two lists are paired by round): the ratio's own noise."""
    t, b = np.asarray(times), np.asarray(base_times)
    rounds = np.random.default_rng(seed).integers(len(t), size=(n_boot, len(t)))
    ratios = np.median(t[rounds], axis=1) / np.median(b[rounds], axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def format_table(results: dict[str, dict[str, float]], title: str) -> str:
    """A markdown table of :func:`measure`'s results."""
    lines = [
        f"### {title}",
        "",
        "| variant | median step (s) | IQR (s) | ratio to baseline [95% CI] | GFLOPs per step | FLOP floor "
        "| ratio / floor | peak memory (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v, r in results.items():
        peak = f"{r['peak_mib']:.0f}" if "peak_mib" in r else "-"
        lines.append(
            f"| {v} | {r['median_s']:.3f} | {r['q1_s']:.3f}-{r['q3_s']:.3f} | {r['ratio']:.3f} "
            f"[{r.get('ratio_low', r['ratio']):.3f}, {r.get('ratio_high', r['ratio']):.3f}] | {r['gflops']:.1f} "
            f"| {r['floor']:.3f} | {r['ratio'] / r['floor']:.3f} | {peak} |"
        )
    if PLAIN in results and "baseline" in results:
        lines += ["", f"baseline / plain: {results['baseline']['median_s'] / results[PLAIN]['median_s']:.3f}"]
    lines += [
        "",
        "Ratio interval: 95% bootstrap over the interleaved rounds (the ratio's own noise). "
        "FLOP floor: the variant's FLOPs per step over the baseline's (torch.utils.flop_counter), the ratio a "
        "variant costing only its arithmetic would reach.",
        "Peak memory: CUDA max allocated in one step; on the CPU the growth of the resident set during one step "
        "(rough: memory the process already holds is reused, so a later variant can read lower).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Command-line entry point; prints one table per (model, image size)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=["resnet18"], choices=CLASSIFIERS)
    parser.add_argument("--image-size", nargs="+", type=int, default=[128])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed rounds (each variant once per round)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--objective", default=POLICY.objective, choices=OBJECTIVES)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=DEVICE.amp,
        help="classifier autocast (CUDA only; default: on a CUDA GPU)",
    )  # fmt: skip
    parser.add_argument("--amp-dtype", default=DEVICE.amp_dtype, choices=AMP_DTYPES)
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=DEVICE.channels_last,
        help="the classifier in channels-last memory format (default: on a CUDA GPU)",
    )  # fmt: skip
    parser.add_argument(
        "--compile", nargs="?", const=True, default=DEVICE.compile,
        help="torch.compile the classifier and the policy (a backend's name, or none: the default backend)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    parser.add_argument("--variants", nargs="+", default=[*VARIANTS, PLAIN], choices=[*VARIANTS, PLAIN])
    parser.add_argument("--spatial-dims", type=int, default=2, choices=[2, 3], help="3: volumes of image-size^3")
    parser.add_argument("--grid", type=int, default=PAPER_GRID, help="mask cells per side (default: the paper's)")
    args = parser.parse_args(argv)
    variants = tuple(dict.fromkeys(["baseline", *args.variants]))
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device "
        f"{'cuda' if args.device != 'cpu' and torch.cuda.is_available() else 'cpu'}, batch {args.batch_size}, "
        f"{args.steps} timed rounds after {args.warmup} warm-up, objective {args.objective}, seed {args.seed}, "
        f"amp {args.amp} ({args.amp_dtype}), channels_last {args.channels_last}, compile {args.compile}",
        flush=True,
    )
    out = {}
    for model in args.model:
        for size in args.image_size:
            results = measure(
                model, size, args.batch_size, args.steps, args.warmup, args.channels, args.classes,
                args.objective, args.device, args.amp, args.seed, not args.no_memory, variants, args.spatial_dims,
                args.grid, args.amp_dtype, args.channels_last, args.compile,
            )  # fmt: skip
            shape = "x".join([str(size)] * args.spatial_dims)
            title = f"{model}, {shape}, batch {args.batch_size}"
            print(format_table(results, title) + "\n", flush=True)
            out[f"{model}@{size}"] = results
    return out


if __name__ == "__main__":
    main()
