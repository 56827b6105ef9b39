"""The bundles' dataset: preprocessed items cached in memory, or on disk and shared between runs.

In memory (the default) is MONAI's ``CacheDataset``: every run decodes its items once. With ``cache_dir``
it is MONAI's ``PersistentDataset``: the output of the chain's deterministic prefix (everything before
the first random transform: the whole evaluation chain, the decoding of the training chain) is written
once per item to ``cache_dir`` and read back by every later run, process or bundle that uses the same
folder, so a protocol decodes each task once across arms, seeds and ``N``. The cache key hashes the item
(its path or pixels, label and metadata) and the deterministic transforms with their parameters, so one
folder can serve several chains and image sizes. A file changed in place keeps its path, and so its key:
delete the folder after editing images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import pickle_hashing

__all__ = ["cached_dataset"]


def cached_dataset(
    data: Sequence,
    transform: Callable,
    cache_dir: str | os.PathLike | None = None,
    cache_rate: float = 1.0,
    num_workers: int | None = 1,
) -> Dataset:
    """``CacheDataset(data, transform)`` in memory, or ``PersistentDataset`` in ``cache_dir`` when it is given.

    Both give the same tensors (``tests/test_datasets.py``).

    Args:
        data: datalist items.
        transform: the chain (a ``Compose``).
        cache_dir: folder of the on-disk cache, shared between runs (``None``: in memory, this run only).
        cache_rate: fraction of the items cached in memory (``CacheDataset`` only).
        num_workers: threads filling the in-memory cache (``CacheDataset`` only).
    """
    if cache_dir is None or str(cache_dir) == "":
        return CacheDataset(data, transform, cache_rate=cache_rate, num_workers=num_workers, progress=False)
    return PersistentDataset(data, transform, cache_dir=cache_dir, hash_transform=pickle_hashing)
