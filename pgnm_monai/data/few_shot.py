"""Few-shot training subsets: N items, stratified by label, seeded, nested (the 16 are inside the 32)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from pgnm_monai.data.schema import LABEL

__all__ = ["few_shot_order", "few_shot_subset", "few_shot_subsets"]


def few_shot_order(items: Sequence[dict], seed: int = 0, label_key: str = LABEL) -> list[int]:
    """A seeded order of all item indices whose every prefix is (as nearly as possible) stratified.

    The first K picks hold one item of each of the K classes (most frequent class first); after that each
    pick goes to the class furthest below its share ``(n + 1) * p_c``. Taking prefixes of one order makes the
    subsets nested by construction.
    """
    if len(items) == 0:
        raise ValueError("few-shot subset: the datalist is empty")
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        if label_key not in it:
            raise ValueError(f"few-shot subset: item {i} has no field {label_key!r}")
        by_class[int(it[label_key])].append(i)
    rng = np.random.default_rng(seed)
    queues = {c: [idx[j] for j in rng.permutation(len(idx))] for c, idx in sorted(by_class.items())}
    total = len(items)
    share = {c: len(q) / total for c, q in queues.items()}
    taken = dict.fromkeys(queues, 0)
    order: list[int] = []
    for c in sorted(queues, key=lambda c: (-len(queues[c]), c)):
        order.append(queues[c][0])
        taken[c] = 1
    while len(order) < total:
        n = len(order) + 1
        avail = [c for c in queues if taken[c] < len(queues[c])]
        c = max(avail, key=lambda c: (n * share[c] - taken[c], -c))
        order.append(queues[c][taken[c]])
        taken[c] += 1
    return order


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
