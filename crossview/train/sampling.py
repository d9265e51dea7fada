"""Batch construction: one sample per location per batch, GPS-neighbour and visual-similarity hard negatives.

The official Sample4Geo/MFRGN "custom shuffle" (MFRGN_SPEC c.5) fills each batch with a seed location
followed by up to ``neighbour_select`` of its neighbours (half the nearest, half drawn at random from the
rest of the first ``neighbour_range``), so the InfoNCE negatives inside a batch are hard. The diagonal
targets of the loss are only valid if no location appears twice in a batch; this module guarantees that.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import numpy as np
import torch

NeighbourTable = Mapping[int, np.ndarray]


def location_batches(
    locations: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    neighbours: NeighbourTable | None = None,
    neighbour_select: int = 64,
    neighbour_range: int = 128,
    max_failures: int = 1024,
) -> list[np.ndarray]:
    """Split sample indices into batches with every location at most once per batch.

    ``locations[i]`` is sample i's location key (CVUSA/CVACT pair id, VIGOR positive satellite index,
    University-1652 class). Each sample is used at most once per epoch; the incomplete last batch is
    dropped (as the official code does). With ``neighbours`` (location → neighbour locations, nearest
    first), each accepted seed pulls in the ``neighbour_select // 2`` nearest neighbours plus as many drawn
    at random from the rest of its first ``neighbour_range``; for each, one random unused sample of that
    location is added.
    """
    locations = np.asarray(locations)
    n = len(locations)
    if batch_size < 2:
        raise ValueError("batch_size must be at least 2 (InfoNCE needs negatives)")
    if len(np.unique(locations)) < batch_size:
        raise ValueError(
            f"only {len(np.unique(locations))} distinct locations for batch_size {batch_size}: "
            "lower the batch size or add data"
        )
    order = rng.permutation(n)
    used = np.zeros(n, dtype=bool)
    # Samples of each location in a random order; a pointer walks them as they are used.
    by_loc: dict[int, list[int]] = {}
    for i in order:
        by_loc.setdefault(int(locations[i]), []).append(int(i))
    half = neighbour_select // 2

    batches: list[np.ndarray] = []
    current: list[int] = []
    in_batch: set[int] = set()
    pending = deque(int(i) for i in order)
    failures = 0

    def add(i: int) -> None:
        used[i] = True
        current.append(i)
        in_batch.add(int(locations[i]))

    def flush_if_full() -> None:
        nonlocal current
        if len(current) == batch_size:
            batches.append(np.asarray(current, dtype=np.int64))
            current = []
            in_batch.clear()

    while pending and failures < max_failures:
        i = pending.popleft()
        if used[i]:
            continue
        loc = int(locations[i])
        if loc in in_batch:
            pending.append(i)
            failures += 1
            continue
        failures = 0
        add(i)
        flush_if_full()
        if neighbours is None or not current:
            continue
        near = np.asarray(neighbours.get(loc, ()), dtype=np.int64)[:neighbour_range]
        near = near[near >= 0]
        if len(near) > half:
            rest = near[half:]
            extra = rng.choice(rest, size=min(half, len(rest)), replace=False)
            near = np.concatenate([near[:half], extra])
        for other in near:
            if len(current) >= batch_size:
                break
            other = int(other)
            if other in in_batch:
                continue
            free = [j for j in by_loc.get(other, ()) if not used[j]]
            if free:
                add(free[int(rng.integers(len(free)))])
        flush_if_full()
    return batches


def mine_similar_neighbours(
    query_desc: torch.Tensor,
    ref_desc: torch.Tensor,
    query_positive: np.ndarray,
    k: int,
    block: int = 4096,
) -> dict[int, np.ndarray]:
    """Visual-similarity hard negatives: for each training query, its ``k`` most similar wrong references.

    Returns ``{positive reference index: neighbour reference indices, most similar first}`` — the location
    table that :func:`location_batches` consumes. As in the official ``calc_sim``, a location with several
    queries keeps the list of its last query. Computed in query blocks (top-(k+1) per block, the positive
    removed), so no Q×R matrix is held.
    """
    query_positive = np.asarray(query_positive)
    k_eff = min(k + 1, ref_desc.shape[0])
    table: dict[int, np.ndarray] = {}
    for start in range(0, query_desc.shape[0], block):
        q = query_desc[start : start + block]
        sims = q.float() @ ref_desc.float().t()
        top = sims.topk(k_eff, dim=1).indices.cpu().numpy()
        for row, pos in zip(top, query_positive[start : start + block]):
            table[int(pos)] = row[row != pos][:k]
    return table
