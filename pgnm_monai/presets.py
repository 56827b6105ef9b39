"""Named settings of the noise policy: ``paper`` (faithful) and ``fast`` (chosen by measurement).

Both presets draw the *same* mask (grid 64, Gaussian blur kernel 13, sigma 6, reflect padding, the
same Beta pipeline and the same policy architecture: a ResNet-10 trunk and two heads); they differ only
in what the policy's trunk looks at:

- ``paper``: the trunk sees the full-resolution image, as the official code does.
- ``fast``: the trunk sees the image area-resized to 16 x 16 (``policy_input_size=16``), and the
  policy's SGD uses PyTorch's fused kernel (the same update in one kernel per parameter). On a CPU
  shared with other busy processes add ``policy_num_threads=1``: the policy's many small operations
  then stop stalling on thread barriers (measured: ratio 1.28 -> 0.92 under load), but on an idle
  CPU it costs ~70 ms per step (1.17 vs 1.10 at ResNet-18/128²/batch 32). The heads
  work on the trunk's *global* (pooled) 512-d features, so the mask keeps its 64 x 64 cells; only the
  evidence the policy conditions on is coarser. The trunk's FLOPs fall by ``(S / 16)^2`` (64x at
  128²). 16 was chosen over 32 and 64 by ``python -m pgnm_monai.benchmarks.step_time`` on a 2-core
  CPU, where the trunk at 32² still cost about 6% of a ResNet-18 step at 128² (see the README's
  Performance section).

Both presets share the mask computation, which draws the nearest upsampling and the reflect-padded
blur as one small matrix product per spatial dim (:func:`pgnm_monai.mask.upsample_blur_operator`):
mathematically the same as upsample-then-blur, about 40x cheaper on the CPU.

A preset is a dict of keyword arguments of :func:`pgnm_monai.arms.build_policy_handler`, so
``build_arm_handler("pgnm", preset="fast")``, ``build_arm_handler("pgnm", **preset_kwargs("fast"))`` and
``build_arm_handler("pgnm", trunk="resnet10", policy_input_size=32)`` build the same handler; explicit
keyword arguments override the preset. The mask settings (:data:`PAPER_MASK`) are the defaults of
``build_arm_handler`` and are not part of a preset, so small images can use a smaller ``grid`` with
either preset.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "PAPER_MASK", "FAST_POLICY_INPUT_SIZE", "preset_kwargs"]

FAST_POLICY_INPUT_SIZE = 16

#: the mask settings shared by both presets (the defaults of :func:`~pgnm_monai.arms.build_arm_handler`).
PAPER_MASK: dict[str, Any] = {"grid": 64, "kernel_size": 13, "sigma": 6.0}

#: policy keyword arguments of each preset (arguments of :func:`~pgnm_monai.arms.build_policy_handler`).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"trunk": "resnet10", "policy_input_size": None},
    "fast": {
        "trunk": "resnet10",
        "policy_input_size": FAST_POLICY_INPUT_SIZE,
        "fused_optimizer": True,
    },
}


def preset_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """The keyword arguments of preset ``name`` updated with ``overrides``.

    Args:
        name: a key of :data:`PRESETS` (``"paper"`` or ``"fast"``).
        overrides: keyword arguments that replace the preset's values (e.g. ``policy_input_size=32``).

    Returns:
        A new dict, safe to modify.
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {name!r}.")
    return {**PRESETS[name], **overrides}
