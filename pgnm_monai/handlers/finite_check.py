"""Fail fast, and by name, on non-finite values in a MONAI trainer or evaluator.

Hook points (MONAI 1.6.1, ignite 0.5.5), each raising ``FloatingPointError`` that names the engine, the epoch,
the iteration and the files of the batch (the batch's ``image_path`` metadata, when it has one):

- ``Events.GET_BATCH_COMPLETED``: the image of the batch as loaded and preprocessed (before any arm handler
  replaces it on ``ITERATION_STARTED``); the message names the files whose image holds NaN/Inf.
- ``IterationEvents.FORWARD_COMPLETED``: the model output ``pred``.
- ``IterationEvents.LOSS_COMPLETED``: the loss, before the backward pass (no optimiser step on it).
- ``Events.ITERATION_COMPLETED`` (``__call__``): the loss and ``pred`` as the iteration ends, for engines
  without MONAI's iteration events only (on MONAI's engines the two events above have checked them).
- ``Events.EPOCH_COMPLETED`` (with ``network``): the network's parameters, before the handlers attached after
  this one (validation, checkpoints) use them, so no checkpoint with non-finite weights is written.
- ``Events.EXCEPTION_RAISED``: a ``FloatingPointError`` raised elsewhere during the iteration (e.g. by the noise
  policy, whose own checks run first when the arm handler is attached first) is raised again with the
  epoch, iteration and batch files added; every exception is raised again, as ``StatsHandler`` does, so
  attach this handler before ``StatsHandler`` (ignite calls the ``EXCEPTION_RAISED`` handlers only until one
  raises).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.engines import Workflow
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys, IgniteInfo, min_version, optional_import
from torch import nn

from pgnm_monai.data.schema import IMAGE_PATH

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["FiniteCheckHandler"]


class FiniteCheckHandler:
    """Raise ``FloatingPointError`` on a non-finite input image, model output, loss or network parameter.

    Args:
        network: also check its parameters after every epoch (``None``: no parameter check).
        image_key: key of the image in the batch.
        path_key: key of the file path in the batch items (collated to a list of strings).
        max_files: how many files a message lists at most.
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        image_key: str = CommonKeys.IMAGE,
        path_key: str = IMAGE_PATH,
        max_files: int = 8,
    ) -> None:
        self.network = network
        self.image_key = image_key
        self.path_key = path_key
        self.max_files = max_files

    def attach(self, engine: Engine) -> None:
        """Register the checks on ``engine`` (a trainer or an evaluator), before ``StatsHandler``."""
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self.check_input)
        if isinstance(engine, Workflow):  # MONAI's engines fire the iteration events: check there, once
            engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self.check_output, (CommonKeys.PRED,))
            engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self.check_output, (CommonKeys.LOSS,))
        else:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        if self.network is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.check_parameters)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    def __call__(self, engine: Engine) -> None:
        """``ITERATION_COMPLETED``: check the loss and the model output."""
        self.check_output(engine, (CommonKeys.LOSS, CommonKeys.PRED))

    def check_input(self, engine: Engine) -> None:
        """``GET_BATCH_COMPLETED``: check the batch's image; the message names the files at fault."""
        batch = engine.state.batch
        image = batch.get(self.image_key) if isinstance(batch, dict) else None
        if not isinstance(image, torch.Tensor) or not image.is_floating_point() or image.dim() < 2:
            return
        rows = _nonfinite_rows(image)
        if rows:
            raise _located(
                f"non-finite input image ('{self.image_key}': NaN or Inf after preprocessing) at "
                f"{self._where(engine, engine.state.iteration + 1)}: {self._files(batch, rows)}."
            )

    def check_output(self, engine: Engine, keys: Sequence[str]) -> None:
        """Check ``keys`` of ``engine.state.output`` (a batched dict, or the decollated items)."""
        output = engine.state.output
        for key in keys:
            values = [item.get(key) for item in output] if isinstance(output, list) else [output.get(key)]
            values = [torch.as_tensor(v).detach() for v in values if v is not None and not isinstance(v, str)]
            bad = [v for v in values if not bool(torch.isfinite(v).all())]
            if not bad:
                continue
            shown = float(bad[0].flatten()[~torch.isfinite(bad[0].flatten())][0])
            rows = None  # the items at fault, where the values are per item
            if len(values) > 1:  # decollated items
                rows = [i for i, v in enumerate(values) if not bool(torch.isfinite(v).all())]
            elif values[0].dim() > 1:  # a batched pred
                rows = _nonfinite_rows(values[0])
            raise _located(
                f"non-finite {key} ({shown}) at {self._where(engine, engine.state.iteration)}, "
                f"{self._files(engine.state.batch, rows)}; lower the learning rate or check these images."
            )

    @torch.no_grad()
    def check_parameters(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: check the network's parameters.

        A NaN or Inf makes its tensor's sum non-finite, so one sum per tensor and a single host sync clear the
        common case (about 25x faster than testing every value); only when a sum is not finite (a non-finite
        value, or finite values summing past float32's range) is every value tested, and only real NaN/Inf raise.
        """
        params = list(self.network.parameters())
        if not params:
            return
        device = params[0].device
        sums = torch.stack([p.detach().sum(dtype=torch.float32).to(device) for p in params])
        if bool(torch.isfinite(sums).all()):
            return
        bad = [n for n, p in self.network.named_parameters() if not bool(torch.isfinite(p.detach()).all())]
        if bad:
            raise _located(
                f"non-finite network parameters {bad[:3]} after epoch {engine.state.epoch} of "
                f"{type(engine).__name__} ({len(bad)} tensors); lower the learning rate."
            )

    def exception_raised(self, engine: Engine, e: BaseException) -> None:
        """``EXCEPTION_RAISED``: raise ``e`` again; a ``FloatingPointError`` from elsewhere with where it happened."""
        if isinstance(e, FloatingPointError) and not getattr(e, _LOCATED, False):
            where = self._where(engine, engine.state.iteration)
            raise _located(f"{e} (at {where}, {self._files(engine.state.batch)})") from e
        raise e

    def _where(self, engine: Engine, iteration: int) -> str:
        """``epoch E, iteration I (i of the epoch) of <engine>``."""
        length = engine.state.epoch_length
        within = f" ({(iteration - 1) % length + 1} of the epoch)" if length else ""
        return f"epoch {engine.state.epoch}, iteration {iteration}{within} of {type(engine).__name__}"

    def _files(self, batch: Any, rows: list[int] | None = None) -> str:
        """The files of ``batch`` (its rows ``rows`` when given), or a note that the batch names none."""
        if isinstance(batch, dict):
            paths = batch.get(self.path_key)
        elif isinstance(batch, list) and all(isinstance(item, dict) for item in batch):
            paths = [item.get(self.path_key) for item in batch]
        else:
            paths = None
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, Sequence) or any(p is None for p in paths):
            return f"files unknown (the batch has no '{self.path_key}')"
        paths = [str(p) for p in paths]
        if rows is not None:
            paths = [paths[i] for i in rows if i < len(paths)]
        listed = ", ".join(paths[: self.max_files])
        if len(paths) > self.max_files:
            listed += f" and {len(paths) - self.max_files} more"
        return f"files {listed}" if rows is not None else f"batch files {listed}"


_LOCATED = "pgnm_located"  # marks the errors that already say where they happened


def _located(message: str) -> FloatingPointError:
    """A ``FloatingPointError`` whose message says where it happened (not annotated again by an outer engine)."""
    error = FloatingPointError(message)
    setattr(error, _LOCATED, True)
    return error


def _nonfinite_rows(batch: torch.Tensor) -> list[int]:
    """The indices of the items (first dimension) of ``batch`` that hold NaN or Inf."""
    return (~torch.isfinite(batch.detach()).flatten(1).all(dim=1)).nonzero().flatten().tolist()
