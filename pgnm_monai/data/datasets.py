"""The bundles' dataset: preprocessed items cached in memory, or on disk and shared between runs.

In memory (the default) is MONAI's ``CacheDataset``: every run decodes its items once. With ``cache_dir``
it is MONAI's ``PersistentDataset``: the output of the chain's deterministic prefix (everything before
the first random transform: the whole evaluation chain, the decoding of the training chain) is written
once per item to ``cache_dir`` and read back by every later run, process or bundle that uses the same
folder, so a protocol decodes each task once across arms, seeds and ``N``. The cache key hashes the item
(its path or pixels, label and metadata) and the deterministic transforms with their parameters, so one
folder can serve several chains and image sizes. A file changed in place keeps its path, and so its key:
delete the folder after editing images.

With ``cache_dir=":memory:"`` it is ``CacheDataset`` whose cache list is shared by every dataset of the same
items and deterministic transforms in this process (kept for the last :data:`MEMORY_DATASETS` such lists):
what the protocol's in-process fine-tunes and evaluations use, so a task's items are preprocessed once for
every arm, seed and ``N`` without reading files back.

The in-memory caches hand their items to the random part of the chain without a deep copy (MONAI's
``copy_cache=False``): every transform here returns new tensors and dicts and leaves its input as it was
(``tests/test_datasets.py`` checks the cache after training epochs), so a chain that is overridden must not
add a transform that modifies its input in place after the first random one.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence

from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import pickle_hashing
from monai.transforms import Compose, RandomizableTrait, Transform

__all__ = ["MEMORY", "MEMORY_DATASETS", "cached_dataset"]

#: ``cache_dir`` value of the in-memory cache shared between the runs of one process
MEMORY = ":memory:"
#: how many datasets' cache lists the shared in-memory cache keeps (least recently used dropped first)
MEMORY_DATASETS = 8
_shared: OrderedDict[bytes, list] = OrderedDict()


def _shared_cache(data: Sequence, transform: Compose) -> list:
    """The cache list of ``data`` under ``transform``'s deterministic prefix (what ``CacheDataset`` caches)."""
    first_random = transform.get_index_of_first(
        lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform)
    )
    prefix = transform.transforms[:first_random]
    key = pickle_hashing(list(data)) + pickle_hashing(prefix)
    if key not in _shared:
        _shared[key] = [None] * len(data)
        while len(_shared) > MEMORY_DATASETS:
            _shared.popitem(last=False)
    _shared.move_to_end(key)
    return _shared[key]


def cached_dataset(
    data: Sequence,
    transform: Callable,
    cache_dir: str | os.PathLike | None = None,
    cache_rate: float = 1.0,
    num_workers: int | None = 1,
) -> Dataset:
    """``CacheDataset(data, transform)`` in memory, ``PersistentDataset`` in a ``cache_dir`` folder, or with
    ``cache_dir=":memory:"`` a ``CacheDataset`` sharing its cache with this process's other runs (module docstring).

    All give the same tensors (``tests/test_datasets.py``).

    Args:
        data: datalist items.
        transform: the chain (a ``Compose``).
        cache_dir: folder of the on-disk cache, shared between runs (``None``: in memory, this run only;
            ``":memory:"``: in memory, shared between the runs of this process).
        cache_rate: fraction of the items cached in memory (``CacheDataset`` only).
        num_workers: threads filling the in-memory cache (``CacheDataset`` only).
    """
    if cache_dir is None or str(cache_dir) == "":
        return CacheDataset(
            data, transform, cache_rate=cache_rate, num_workers=num_workers, progress=False, copy_cache=False
        )
    if str(cache_dir) == MEMORY:
        shared = _shared_cache(data, transform)
        return CacheDataset(data, transform, runtime_cache=shared, progress=False, copy_cache=False)
    return PersistentDataset(data, transform, cache_dir=cache_dir, hash_transform=pickle_hashing)
