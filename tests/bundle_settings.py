"""The tiny bundle settings of the tests that run the bundles: small networks and policy trunk, 32 px, a grid of 8;
and the most lines the quiet main job prints. (The bundles' own defaults: :func:`pgnm_monai.experiments.runner.
bundle_defaults`.)"""

from __future__ import annotations

TINY = {
    "image_size": 32,
    "network": "small",
    "policy_trunk": "small",
    "grid": 8,
    "batch_size": 8,
    "progress_bar": False,
}
#: the same without TensorBoard event files.
QUIET = {**TINY, "tensorboard": False}
#: the most console lines of the quiet main job (``pgnm run``): a line per stage and the comparison table.
QUIET_LINES = 20
