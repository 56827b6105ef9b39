"""The tiny bundle settings of the tests that run the bundles: small networks and policy trunk, 32 px, a grid of 8;
the most lines the quiet main job prints; and the bundles' own defaults, as a run resolves them
(:func:`bundle_default_values`)."""

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


def _is_plain(content: object) -> bool:
    """A config value that needs no other id: plain JSON, or a ``$`` expression without ``@`` references (and no
    ``_target_`` component, ``@`` reference or ``%`` macro inside)."""
    if isinstance(content, str):
        return not content.startswith(("@", "%")) and not (content.startswith("$") and "@" in content)
    if isinstance(content, dict):
        return "_target_" not in content and all(_is_plain(v) for v in content.values())
    if isinstance(content, list):
        return all(_is_plain(v) for v in content)
    return True


def bundle_default_values(bundle: str = "pgnm_pretrain", stage: str = "train", overlays=()) -> dict:
    """The bundle's defaults: every top-level id of ``stage``'s merged configs (then ``overlays``, config files
    merged last, e.g. ``multi_gpu_train.json``) whose content is plain or a ``$`` expression without ``@``
    references, resolved by MONAI's ``ConfigParser`` as a run resolves it. A default written as an expression
    (``"$pgnm_monai.settings.POLICY.grid"``) gives its value."""
    import os

    from monai.bundle import ConfigParser

    from pgnm_monai.experiments.runner import stage_configs

    parser = ConfigParser()
    parser.read_config([os.fspath(f) for f in [*stage_configs(bundle, stage), *overlays]])
    config = parser.get()
    if "imports" in config:  # the configs' own imports, for the expressions that name them
        parser.get_parsed_content("imports")
    skip = {"imports", "_meta_"}
    return {k: parser.get_parsed_content(k) for k, v in config.items() if k not in skip and _is_plain(v)}
