"""The dataset kinds: each source's loader registered once under its name, the one vocabulary of kinds.

A source module registers its loader where it defines it::

    @register_kind("image_folder")
    def load_image_folder(dataset_dir, split="train", seed=0, **its_options) -> Datalist: ...

:data:`LOADERS` maps each kind to its loader and :data:`KINDS` is a live, read-only view of its names (in
registration order), so a new kind is one registration. How :func:`pgnm_monai.data.load_datalist` calls a
loader follows from its signature: no ``dataset_dir`` parameter (``embedded``) means it reads no files, a
``dataset_dir`` that defaults to ``None`` (``union``) is optional, any other ``dataset_dir`` is required.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from pgnm_monai.validation import check_choice

if TYPE_CHECKING:
    from pgnm_monai.data.schema import Datalist

__all__ = ["KINDS", "LOADERS", "get_loader", "register_kind"]

#: kind -> its loader, filled by :func:`register_kind` when the source modules are imported.
LOADERS: dict[str, Callable[..., Datalist]] = {}

_F = TypeVar("_F", bound=Callable[..., "Datalist"])


def register_kind(name: str) -> Callable[[_F], _F]:
    """Decorator registering a loader as dataset kind ``name`` (a name registered twice is a ``ValueError``)."""

    def register(loader: _F) -> _F:
        known = LOADERS.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (loader.__module__, loader.__qualname__):
            raise ValueError(f"dataset kind {name!r} is already registered to {known.__module__}.{known.__qualname__}")
        LOADERS[name] = loader
        return loader

    return register


class _Kinds(Sequence[str]):
    """The registered kinds' names: a live, read-only view of the keys of :data:`LOADERS`, shown as a tuple."""

    def __getitem__(self, index):
        return tuple(LOADERS)[index]

    def __len__(self) -> int:
        return len(LOADERS)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(LOADERS))

    def __contains__(self, kind: object) -> bool:
        return isinstance(kind, str) and kind in LOADERS

    def __repr__(self) -> str:
        return repr(tuple(LOADERS))


#: the dataset kinds' names (``choices=KINDS`` in the CLI).
KINDS: Sequence[str] = _Kinds()


def get_loader(kind: str) -> Callable[..., Datalist]:
    """The loader of dataset ``kind``; an unknown kind is a ``ValueError`` naming it and the known ones."""
    return LOADERS[check_choice("dataset kind", kind, KINDS)]
