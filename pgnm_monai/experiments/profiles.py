"""The protocol's named settings (``pgnm benchmark --profile NAME``), kept as data in ``profiles.json``.

A profile is a flat mapping of settings (arms, seeds, shots, network, policy, schedule, data); ``extends`` names a
profile whose settings it starts from, and ``description`` says what it is for (both are removed on loading).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["DESCRIPTIONS", "PROFILES", "load_profiles"]


def load_profiles(text: str | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``(profiles, descriptions)`` from ``profiles.json`` (or ``text``), each profile with its ``extends`` resolved.

    Raises:
        ValueError: a profile extends an unknown profile, or profiles extend each other in a cycle.
    """
    raw: dict[str, dict[str, Any]] = json.loads(
        text if text is not None else resources.files(__package__).joinpath("profiles.json").read_text("utf-8")
    )
    resolved: dict[str, dict[str, Any]] = {}

    def resolve(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        if name in seen:
            raise ValueError(f"profiles extend each other in a cycle: {' -> '.join((*seen, name))}.")
        if name not in raw:
            raise ValueError(f"profile {seen[-1]!r} extends unknown profile {name!r}; known: {sorted(raw)}.")
        if name not in resolved:
            own = {k: v for k, v in raw[name].items() if k not in ("extends", "description")}
            parent = raw[name].get("extends")
            resolved[name] = {**(resolve(parent, (*seen, name)) if parent else {}), **own}
        return resolved[name]

    profiles = {name: resolve(name) for name in raw}
    return profiles, {name: raw[name].get("description", "") for name in raw}


PROFILES, DESCRIPTIONS = load_profiles()
