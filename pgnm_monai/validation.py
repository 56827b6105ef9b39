"""One rule for checking a named choice: an error that names the id, the value and what it may be."""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Iterable

__all__ = ["check_choice", "check_keywords", "check_positive"]


def _did_you_mean(value: object, choices: Iterable[object]) -> str:
    matches = difflib.get_close_matches(str(value), [str(c) for c in choices], n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(map(repr, matches))}?" if matches else "."


def check_choice(what: str, value: object, choices: Collection[object]) -> object:
    """Return ``value`` when it is one of ``choices``, else raise ``ValueError`` naming ``what``.

    Args:
        what: how the error names the setting, e.g. ``"objective"`` or ``"config id 'objective'"``.
        value: the given value.
        choices: the values it may take (e.g. :data:`pgnm_monai.objectives.OBJECTIVES`).
    """
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{what} must be one of {tuple(choices)}, got {value!r}{_did_you_mean(value, choices)}")
    return value


def check_keywords(what: str, given: Iterable[str], accepted: Collection[str]) -> None:
    """Raise ``TypeError`` naming ``what`` and the first keyword of ``given`` that is not in ``accepted``."""
    for key in given:
        if key not in accepted:
            raise TypeError(
                f"{what} has no option {key!r}{_did_you_mean(key, accepted)} Its options: {sorted(accepted)}."
            )


def check_positive(what: str, value: object) -> object:
    """Return ``value`` when it is a finite number > 0 (not a bool), else raise ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}.")
    return value
