"""Batch construction: one sample per location per batch, GPS-neighbour and visual-similarity hard negatives.

The official Sample4Geo/MFRGN "custom shuffle" (docs/official_code_notes.md) fills each batch with a seed location
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
    _check_batch_size(locations, batch_size)
    order = rng.permutation(len(locations))
    # Samples of each location in a random order; a pointer walks them as they are used.
    by_loc: dict[int, list[int]] = {}
    for i in order:
        by_loc.setdefault(int(locations[i]), []).append(int(i))
    half = neighbour_select // 2

    batch = _BatchBuilder(locations, batch_size)
    pending = deque(int(i) for i in order)
    failures = 0
    while pending and failures < max_failures:
        i = pending.popleft()
        if batch.used[i]:
            continue
        loc = int(locations[i])
        if loc in batch.in_batch:
            pending.append(i)
            failures += 1
            continue
        failures = 0
        batch.add(i)
        batch.flush_if_full()
        if neighbours is None or not batch.current:
            continue
        _add_neighbours(batch, _hard_neighbours(neighbours, loc, rng, half, neighbour_range), by_loc, rng)
        batch.flush_if_full()
    return batch.batches


def _check_batch_size(locations: np.ndarray, batch_size: int) -> None:
    """Raise ValueError when no batch of ``batch_size`` distinct locations (and at least one negative) exists."""
    if batch_size < 2:
        raise ValueError("batch_size must be at least 2 (InfoNCE needs negatives)")
    if len(np.unique(locations)) < batch_size:
        raise ValueError(
            f"only {len(np.unique(locations))} distinct locations for batch_size {batch_size}: "
            "lower the batch size or add data"
        )


class _BatchBuilder:
    """The batches made so far, the one being filled, the locations in it and the samples already used."""

    def __init__(self, locations: np.ndarray, batch_size: int):
        self.locations, self.batch_size = locations, batch_size
        self.used = np.zeros(len(locations), dtype=bool)
        self.batches: list[np.ndarray] = []
        self.current: list[int] = []
        self.in_batch: set[int] = set()

    def add(self, i: int) -> None:
        """Put sample ``i`` in the current batch."""
        self.used[i] = True
        self.current.append(i)
        self.in_batch.add(int(self.locations[i]))

    def flush_if_full(self) -> None:
        """Close the current batch once it holds ``batch_size`` samples."""
        if len(self.current) == self.batch_size:
            self.batches.append(np.asarray(self.current, dtype=np.int64))
            self.current = []
            self.in_batch.clear()


def _hard_neighbours(neighbours: NeighbourTable, loc: int, rng: np.random.Generator, half: int,
                     neighbour_range: int) -> np.ndarray:
    """The neighbour locations a seed pulls in: its ``half`` nearest, then ``half`` drawn from the rest of its range."""
    near = np.asarray(neighbours.get(loc, ()), dtype=np.int64)[:neighbour_range]
    near = near[near >= 0]
    if len(near) > half:
        rest = near[half:]
        extra = rng.choice(rest, size=min(half, len(rest)), replace=False)
        near = np.concatenate([near[:half], extra])
    return near


def _add_neighbours(batch: _BatchBuilder, near: np.ndarray, by_loc: dict[int, list[int]],
                    rng: np.random.Generator) -> None:
    """One random unused sample of each neighbour location not yet in the batch, until the batch is full."""
    for other in near:
        if len(batch.current) >= batch.batch_size:
            break
        other = int(other)
        if other in batch.in_batch:
            continue
        free = [j for j in by_loc.get(other, ()) if not batch.used[j]]
        if free:
            batch.add(free[int(rng.integers(len(free)))])


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
