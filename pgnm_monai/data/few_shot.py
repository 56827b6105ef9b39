"""Few-shot training subsets: N items, stratified by label, seeded, nested (the 16 are inside the 32)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from pgnm_monai.data.schema import LABEL

__all__ = ["few_shot_order", "few_shot_subset", "few_shot_subsets", "stratified_class_sequence"]


def stratified_class_sequence(counts: Sequence[int]) -> list[int]:
    """The class (an index into ``counts``) of every successive pick of a stratified order of all items.

    The first picks take one item of each class (most frequent class first, ties: the lower index); after
    that each pick goes to the class furthest below its share ``(n + 1) * p_c`` (ties: the lower index), among
    the classes with items left. Any prefix of length ``n`` gives the class counts of a stratified subset of
    ``n`` items: :func:`few_shot_order` and the probe episodes of :mod:`pgnm_monai.experiments.probe` share it.
    """
    total = int(sum(counts))
    share = [c / total for c in counts]
    taken = [0] * len(counts)
    sequence = sorted((c for c in range(len(counts)) if counts[c] > 0), key=lambda c: (-counts[c], c))
    for c in sequence:
        taken[c] = 1
    while len(sequence) < total:
        n = len(sequence) + 1
        c = max((c for c in range(len(counts)) if taken[c] < counts[c]), key=lambda c: (n * share[c] - taken[c], -c))
        sequence.append(c)
        taken[c] += 1
    return sequence


def few_shot_order(items: Sequence[dict], seed: int = 0, label_key: str = LABEL) -> list[int]:
    """A seeded order of all item indices whose every prefix is (as nearly as possible) stratified.

    Each class's items are shuffled (seeded) and dealt out in the class order of
    :func:`stratified_class_sequence`. Taking prefixes of one order makes the subsets nested by construction.
    """
    if len(items) == 0:
        raise ValueError("few-shot subset: the datalist is empty")
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        if label_key not in it:
            raise ValueError(f"few-shot subset: item {i} has no field {label_key!r}")
        by_class[int(it[label_key])].append(i)
    rng = np.random.default_rng(seed)
    queues = [[idx[j] for j in rng.permutation(len(idx))] for _, idx in sorted(by_class.items())]
    dealt = [iter(q) for q in queues]
    return [next(dealt[c]) for c in stratified_class_sequence([len(q) for q in queues])]


def few_shot_subset(items: Sequence[dict], n: int, seed: int = 0, label_key: str = LABEL) -> list[dict]:
    """The first ``n`` items of :func:`few_shot_order`: stratified, seeded, nested across ``n``."""
    if n < 1 or n > len(items):
        raise ValueError(f"few-shot subset: n must be in [1, {len(items)}] (the datalist size), got {n}")
    return [items[i] for i in few_shot_order(items, seed, label_key)[:n]]


def few_shot_subsets(
    items: Sequence[dict], sizes: Sequence[int] = (16, 32, 64, 128, 256), seed: int = 0
) -> dict[int, list[dict]]:
    """Nested subsets for several sizes at once (sizes larger than the datalist are left out)."""
    order = few_shot_order(items, seed)
    return {int(n): [items[i] for i in order[: int(n)]] for n in sizes if 1 <= int(n) <= len(items)}
