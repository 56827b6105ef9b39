"""Refusal of override ids that name nothing in a bundle's configs (MONAI adds any ``--id value`` silently)."""

from __future__ import annotations

import ast
import difflib
import inspect
import os
import sys
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["check_cli_overrides", "check_override_ids"]


def check_override_ids(config: Mapping, ids: Iterable[str], files: str = "the bundle's configs") -> bool:
    """Refuse override ids that name nothing in ``config`` (the merged config files), with close matches.

    A top-level id must be defined; a nested ``a#b#c`` may add a key to the section ``a#b`` (e.g. a keyword of
    a component) but that section must exist; a list item must exist. ``_meta_#...`` ids are not checked.

    Args:
        config: the merged content of the config files, before the overrides.
        ids: the override ids (``#`` or ``::`` separated).
        files: how to name the config files in the error.

    Raises:
        ValueError: naming the first unknown id and its closest defined ids.
    """
    from monai.bundle import ConfigParser
    from monai.bundle.reference_resolver import ReferenceResolver

    parser = ConfigParser(dict(config))
    for raw in ids:
        parts = ReferenceResolver.split_id(str(raw))
        if parts[0] == "_meta_" or ReferenceResolver.normalize_id(str(raw)) in parser:
            continue
        depth = 0  # parts[:depth] is defined, parts[: depth + 1] is not
        while "#".join(parts[: depth + 1]) in parser:
            depth += 1
        known = "#".join(parts[:depth])
        section = parser[known] if known else parser.get()
        if isinstance(section, dict) and 0 < depth == len(parts) - 1:
            continue  # a new key of an existing section (e.g. a component's keyword)
        missing = "#".join(parts[: depth + 1])
        if isinstance(section, dict):
            matches = difflib.get_close_matches(parts[depth], [str(k) for k in section], n=3, cutoff=0.6)
            hint = "; did you mean " + " or ".join(repr(f"{known}#{m}".lstrip("#")) for m in matches) + "?"
            where = f"{missing!r} is not defined in {files}" + (hint if matches else ".")
        elif isinstance(section, list):
            where = f"{known!r} is a list of {len(section)} items, which has no item {parts[depth]!r}."
        else:
            where = f"{known!r} is a {type(section).__name__}, which has no item {parts[depth]!r}."
        raise ValueError(f"unknown config id {raw!r}: {where}")
    return True


def check_cli_overrides(argv: Sequence[str] | None = None) -> bool:
    """Refuse unknown override ids given to ``python -m monai.bundle run`` (:func:`check_override_ids`).

    MONAI adds any ``--id value`` to the config, so a misspelt id would be ignored silently. This reads the
    command line (``sys.argv``) of ``python -m monai.bundle run`` and the config files it names; in any other
    process (the Python API, which checks in :func:`pgnm_monai.experiments.runner.make_workflow`) it does
    nothing. Overrides given through ``--args_file`` are not checked.
    """
    from monai.bundle import ConfigParser, scripts

    argv = list(sys.argv if argv is None else argv)
    main = os.path.join("monai", "bundle", "__main__.py")
    if len(argv) < 2 or not os.path.normpath(argv[0]).endswith(main) or argv[1] != "run":
        return True
    args: dict[str, str] = {}
    tokens = argv[2:]
    if "--" in tokens:  # what follows a lone "--" is for fire itself
        tokens = tokens[: tokens.index("--")]
    for i, token in enumerate(tokens):
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            args[name.replace("-", "_")] = value if eq else (tokens[i + 1] if i + 1 < len(tokens) else "")
    files = args.get("config_file")
    if files is None:
        return True
    try:
        files = ast.literal_eval(files)
    except (ValueError, SyntaxError):
        pass
    own = set(inspect.signature(scripts.run).parameters) | {"workflow_type", "properties_path"}
    ids = [k for k in args if k not in own]
    return check_override_ids(ConfigParser.load_config_files(files), ids, f"--config_file {args['config_file']}")
