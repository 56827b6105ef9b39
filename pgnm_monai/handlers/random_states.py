"""Every random state a training run draws from, as one checkpointable object (exact resume).

A run that is stopped (or killed) and resumed from ``checkpoint_epoch=N.pt`` repeats the uninterrupted run
bit for bit only if epoch ``N + 1`` draws the same random numbers: the data order (the ``DataLoader``'s
shuffle is seeded from torch's global generator), the random transforms of the training chain (each MONAI
``Randomizable`` has its own ``RandomState``), and anything seeded from the global numpy, Python or CUDA
generators. The policy's masks and the batch augmentations need nothing here: they are seeded from
``(seed, iteration, rank)`` (:func:`pgnm_monai.handlers.iteration_seed`).

:class:`RandomStates` has ``state_dict``/``load_state_dict``, so it goes into the training-state checkpoint
(:class:`~pgnm_monai.handlers.TrainingStateSaver`, saved last on ``EPOCH_COMPLETED``) and is restored by
:class:`~pgnm_monai.handlers.ResumeCheckpointLoader` on ``STARTED``, the same point of the run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, Randomizable, Transform

__all__ = ["RandomStates"]


class RandomStates:
    """The global torch (CPU and CUDA), numpy and Python generators, and the random transforms of ``transform``.

    Args:
        transform: the training chain (a ``Compose``, possibly nested, or one transform); every
            ``Randomizable`` in it, and those it holds (a dictionary transform draws from its inner array
            transform's ``RandomState``), is saved and restored in order. None: only the global generators.
    """

    def __init__(self, transform: Callable | None = None) -> None:
        self.transforms: list[Randomizable] = _randomizables(transform) if transform is not None else []

    def state_dict(self) -> dict[str, Any]:
        """The current states (tensors, arrays and tuples: safe for ``torch.load(weights_only=True)``)."""
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.stack(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else torch.empty(0),
            "numpy": _numpy_state(np.random.get_state()),
            "python": _python_state(random.getstate()),
            "transforms": [_numpy_state(t.R.get_state()) for t in self.transforms],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the states of :meth:`state_dict`; the transforms must be the same chain."""
        missing = {"torch", "numpy", "python", "transforms"} - set(state)
        if missing:
            raise ValueError(f"random-state checkpoint lacks {sorted(missing)}; keys found: {sorted(state)}.")
        if len(state["transforms"]) != len(self.transforms):
            raise ValueError(
                f"the checkpoint holds {len(state['transforms'])} random transform states, the training chain has "
                f"{len(self.transforms)} random transforms: resume with the chain the run was started with."
            )
        torch.set_rng_state(state["torch"])
        cuda = state.get("cuda")
        if cuda is not None and len(cuda) and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(list(cuda))
        np.random.set_state(_from_numpy_state(state["numpy"]))
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
        for t, s in zip(self.transforms, state["transforms"], strict=True):
            t.R.set_state(_from_numpy_state(s))


def _randomizables(transform: Any) -> list[Randomizable]:
    """Every ``Randomizable`` in ``transform``: the chain's transforms and the transforms they hold, depth first."""
    found: list[Randomizable] = []
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, Compose):
            for t in obj.transforms:
                visit(t)
            return
        if isinstance(obj, Randomizable):
            found.append(obj)
        if isinstance(obj, Transform):
            for value in vars(obj).values():
                for inner in value if isinstance(value, (list, tuple)) else (value,):
                    if isinstance(inner, Transform):
                        visit(inner)

    visit(transform)
    return found


def _numpy_state(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
        "name": str(name),
    }


def _from_numpy_state(state: dict[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return (state["name"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"])


def _python_state(state: tuple) -> tuple:
    version, internal, gauss = state
    return (version, torch.tensor(internal, dtype=torch.int64), gauss)
