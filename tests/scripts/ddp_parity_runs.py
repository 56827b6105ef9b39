"""Under ``torchrun``: the pretrain bundle (train.json + multi_gpu_train.json + an overlay) run once per
``ROOT=SYNC_BN`` argument, one after the other in the same process group (tests/test_ddp.py).

``monai.bundle.run`` is what ``python -m monai.bundle run`` calls; the bundle's ``finalize`` (which would
destroy the process group) runs after the last run only.

Usage: ``torchrun --nproc_per_node=2 ddp_parity_runs.py CONFIGS_JSON OVERRIDES_JSON ROOT=true ROOT=false``.
"""

from __future__ import annotations

import json
import sys

from monai.bundle import run


def main(argv: list[str]) -> None:
    configs, overrides = json.loads(argv[0]), json.loads(argv[1])
    runs = [arg.rsplit("=", 1) for arg in argv[2:]]
    for index, (root, sync_bn) in enumerate(runs):
        last = index == len(runs) - 1
        files = [*configs, f"{root}/parity.json"]
        run(config_file=files, final_id="finalize" if last else "keep_the_process_group", bundle_root=root,
            sync_bn=sync_bn == "true", **overrides)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
