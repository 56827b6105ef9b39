"""The named components that the bundle configs call, so that the configs read as wiring.

- :mod:`~pgnm_monai.components.preflight`: the first step of every stage (:func:`preflight`);
- :mod:`~pgnm_monai.components.checks`: a run's settings and output folders (:func:`check_run_settings`,
  :func:`check_output_dirs`, :func:`require_file`);
- :mod:`~pgnm_monai.components.overrides`: override ids that name nothing (:func:`check_cli_overrides`,
  :func:`check_override_ids`);
- :mod:`~pgnm_monai.components.data`: a checked split (:func:`load_data`), the items to predict
  (:func:`inference_data`), the run's label map (:func:`label_map`, :func:`class_names`, :func:`check_num_classes`);
- :mod:`~pgnm_monai.components.checkpoints`: the training state to resume from (:func:`find_checkpoint`) and the
  weights to warm-start from (:func:`load_pretrained`);
- :mod:`~pgnm_monai.components.run_settings`: the settings a run was trained with (:class:`RunSettings`), checked
  when made, compared on resume, evaluation and inference (:func:`check_trained_settings`);
- :mod:`~pgnm_monai.components.run_record`: what a run trained on and with (:class:`RunRecord`: a fingerprint of
  its splits, the package and bundle versions), compared on resume (:func:`check_resumed_run`);
- :mod:`~pgnm_monai.components.wiring`: switches, folders and sizes (:func:`subfolder`, :func:`is_off`,
  :func:`eval_resize`, :func:`policy_of`, :func:`probe_batch`, :func:`use_amp`, :func:`amp_kwargs`,
  :func:`prepare_model`);
- :mod:`~pgnm_monai.components.errors`: the project's message as an error's last line (:func:`root_error`,
  :func:`show_root_error_last`).

Each takes plain keyword values, so a config calls it as a component (``{"_target_":
"pgnm_monai.components.load_data", "kind": "@dataset_kind", ...}``), and each check raises an error that names the
config id (or file) at fault and what was expected. The Python API is the library behind them
(:func:`pgnm_monai.data.load_datalist`, :func:`pgnm_monai.arms.build_arm_handler`,
:func:`pgnm_monai.networks.load_weights`, ...); the CLI, the runner and the experiments reuse :func:`load_data`
and the error helpers.
"""

from __future__ import annotations

from pgnm_monai.components.checkpoints import check_checkpoint, find_checkpoint, load_pretrained
from pgnm_monai.components.checks import check_output_dirs, check_run_settings, require_file
from pgnm_monai.components.data import (
    check_num_classes,
    class_names,
    inference_data,
    inference_items,
    label_map,
    load_data,
)
from pgnm_monai.components.errors import root_error, show_root_error_last
from pgnm_monai.components.overrides import check_cli_overrides, check_override_ids
from pgnm_monai.components.preflight import preflight
from pgnm_monai.components.run_record import RunRecord, check_resumed_run
from pgnm_monai.components.run_settings import (
    RunSettings,
    check_trained_settings,
    trained_input_settings,
    write_run_settings,
)
from pgnm_monai.components.wiring import (
    amp_kwargs,
    as_bool,
    eval_resize,
    is_off,
    policy_of,
    prepare_model,
    probe_batch,
    subfolder,
    use_amp,
)

__all__ = [
    "RunRecord",
    "RunSettings",
    "check_resumed_run",
    "check_trained_settings",
    "amp_kwargs",
    "as_bool",
    "check_checkpoint",
    "check_cli_overrides",
    "check_num_classes",
    "check_output_dirs",
    "check_override_ids",
    "check_run_settings",
    "class_names",
    "eval_resize",
    "find_checkpoint",
    "inference_data",
    "inference_items",
    "is_off",
    "label_map",
    "load_data",
    "load_pretrained",
    "policy_of",
    "preflight",
    "prepare_model",
    "probe_batch",
    "require_file",
    "root_error",
    "show_root_error_last",
    "subfolder",
    "trained_input_settings",
    "use_amp",
    "write_run_settings",
]
