"""The bundles' dataset (pgnm_monai.data.cached_dataset): the on-disk cache gives the in-memory tensors, is
shared between runs and processes, keys on the transforms' parameters, and is read by the bundles; the shared
in-memory cache gives the same tensors and is reused within a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from bundle_settings import QUIET
from monai.data import CacheDataset, PersistentDataset
from monai.utils import set_determinism

from pgnm_monai.data import cached_dataset, load_datalist
from pgnm_monai.experiments.runner import run_bundle
from pgnm_monai.transforms import eval_transforms, train_transforms

TINY = QUIET


def _images(dataset, epochs: int = 1) -> list[torch.Tensor]:
    return [
        dataset[i]["image"].as_tensor() if hasattr(dataset[i]["image"], "as_tensor") else dataset[i]["image"]
        for _ in range(epochs)
        for i in range(len(dataset))
    ]


def test_disk_cache_gives_the_in_memory_tensors(tmp_path):
    items = load_datalist("embedded", split="train").items
    for chain in (lambda: eval_transforms(32, 1), lambda: train_transforms(32, 1)):
        tensors = []
        for cache_dir in (None, tmp_path / "cache", tmp_path / "cache"):  # in memory, disk (fill), disk (read)
            set_determinism(seed=3)
            ds = cached_dataset(items, chain(), cache_dir=cache_dir)
            assert isinstance(ds, PersistentDataset if cache_dir else CacheDataset)
            tensors.append(_images(ds, epochs=2))
        for other in tensors[1:]:
            assert all(torch.equal(a, b) for a, b in zip(tensors[0], other, strict=True))
    set_determinism(None)


def test_memory_cache_is_shared_between_the_runs_of_a_process(monkeypatch):
    """``cache_dir=":memory:"``: the in-memory tensors; a later dataset of the same items and deterministic
    transforms reuses the first one's preprocessed items (nothing recomputed); another chain gets its own; the
    number of shared datasets is bounded."""
    from pgnm_monai.data import datasets

    monkeypatch.setattr(datasets, "_shared", type(datasets._shared)())
    items = load_datalist("embedded", split="train").items
    for chain in (lambda: eval_transforms(32, 1), lambda: train_transforms(32, 1)):
        set_determinism(seed=3)
        reference = _images(cached_dataset(items, chain()), epochs=2)
        set_determinism(seed=3)
        first = cached_dataset(items, chain(), cache_dir=datasets.MEMORY)
        assert all(torch.equal(a, b) for a, b in zip(reference, _images(first, epochs=2), strict=True))
        second = cached_dataset(items, chain(), cache_dir=datasets.MEMORY)
        assert second._cache is first._cache and all(entry is not None for entry in second._cache)
        filled = list(second._cache)
        set_determinism(seed=3)
        assert all(torch.equal(a, b) for a, b in zip(reference, _images(second, epochs=2), strict=True))
        assert all(a is b for a, b in zip(filled, second._cache, strict=True))  # read, not recomputed
    set_determinism(None)
    assert len(datasets._shared) == 2  # the eval chain and the train chain's loading step
    cached_dataset(items, eval_transforms(48, 1), cache_dir=datasets.MEMORY)  # another size: its own list
    assert len(datasets._shared) == 3
    for size in range(8, 8 + datasets.MEMORY_DATASETS):
        cached_dataset(items, eval_transforms(size, 1), cache_dir=datasets.MEMORY)
    assert len(datasets._shared) == datasets.MEMORY_DATASETS


@pytest.mark.slow
def test_memory_caches_are_not_modified_by_the_random_transforms(monkeypatch):
    """No deep copy before the random part of the chain (``copy_cache=False``): the training chain leaves the
    cached items as they were, and gives the tensors of MONAI's copying ``CacheDataset``."""
    import copy

    from pgnm_monai.data import datasets

    monkeypatch.setattr(datasets, "_shared", type(datasets._shared)())
    items = load_datalist("embedded", split="train").items
    for channels in (1, 3):
        set_determinism(seed=3)
        reference = _images(CacheDataset(items, train_transforms(32, channels), progress=False), epochs=3)
        for cache_dir in (None, datasets.MEMORY):
            chain = train_transforms(32, channels)
            ds = cached_dataset(items, chain, cache_dir=cache_dir)
            assert not ds.copy_cache
            set_determinism(seed=3)
            assert all(torch.equal(a, b) for a, b in zip(reference, _images(ds, epochs=3), strict=True))
            for item, cached in zip(items, ds._cache, strict=True):  # the loading step's output, untouched
                loaded = chain.transforms[0](copy.deepcopy(item))
                assert loaded.keys() == cached.keys()
                assert torch.equal(torch.as_tensor(loaded["image"]), torch.as_tensor(cached["image"]))
                assert all(loaded[k] == cached[k] for k in loaded if k != "image")
    set_determinism(None)


@pytest.mark.slow
def test_disk_cache_keys_on_the_item_and_the_transform_parameters(tmp_path):
    items = load_datalist("embedded", split="test").items
    cache = tmp_path / "cache"
    _images(cached_dataset(items, eval_transforms(32, 1), cache_dir=cache))
    first = set(os.listdir(cache))
    assert len(first) == len(items)
    _images(cached_dataset(items, eval_transforms(32, 1), cache_dir=cache))  # the same chain: read, not written
    assert set(os.listdir(cache)) == first
    bigger = cached_dataset(items, eval_transforms(48, 1), cache_dir=cache)  # another size: its own entries
    assert all(t.shape[-1] == 48 for t in _images(bigger))
    assert len(os.listdir(cache)) == 2 * len(items)
    # the key is the same in a fresh process (so later runs of the protocol reuse the files)
    code = (
        "from pgnm_monai.data import cached_dataset, load_datalist; from pgnm_monai.transforms import eval_transforms;"
        "ds = cached_dataset(load_datalist('embedded', split='test').items, eval_transforms(32, 1), cache_dir='x');"
        "print(ds.transform_hash)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    here = cached_dataset(items, eval_transforms(32, 1), cache_dir=cache).transform_hash
    assert out.stdout.strip() == here and all(name.endswith(here + ".pt") for name in first)


def test_bundles_read_the_shared_cache(tmp_path):
    """Fine-tune + evaluate with ``cache_dir``: the in-memory run's model and predictions; the cache filled once."""
    pre = tmp_path / "pre"
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(pre), arm="none", epochs=1, **TINY)
    results = {}
    for name, cache_dir in (("memory", None), ("disk", tmp_path / "cache"), ("disk-again", tmp_path / "cache")):
        root = tmp_path / name
        args = {"bundle_root": os.fspath(root), "cache_dir": os.fspath(cache_dir) if cache_dir else None, **TINY}
        run_bundle(
            "pgnm_finetune",
            "train",
            pretrained_ckpt=os.fspath(pre / "models" / "model.pt"),
            epochs=2,
            warmup_epochs=1,
            few_shot=12,
            **args,
        )
        run_bundle("pgnm_finetune", "evaluate", **args)
        results[name] = (
            torch.load(root / "models" / "model.pt", weights_only=True),
            (root / "eval" / "predictions.csv").read_text(),
            json.loads((root / "eval" / "metrics.json").read_text())["overall"],
        )
        if name == "disk":
            filled = set(os.listdir(tmp_path / "cache"))
    assert filled and set(os.listdir(tmp_path / "cache")) == filled  # the second run wrote nothing new
    base_state, base_preds, base_metrics = results["memory"]
    for state, preds, metrics in (results["disk"], results["disk-again"]):
        assert all(torch.equal(state[k], base_state[k]) for k in base_state)
        assert preds == base_preds and metrics == base_metrics
