"""Training and evaluation data from a :class:`~crossview.data.records.Split`, served from image caches."""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch.utils.data import Dataset

from crossview.data.images import ImageSource  # noqa: F401 (re-exported: its home is crossview.data)
from crossview.data.records import Split
from crossview.data.transforms import PhotometricAug, limited_fov, sync_flip, sync_rotate


def sample_seed(*parts: int) -> int:
    """A stable 31-bit seed from integers (seed, epoch, step, slot): augmentation does not depend on
    worker count, process count or where a run was resumed."""
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes()) & 0x7FFFFFFF


class PairDataset(Dataset):
    """Item ``(seed_key, sample_index)`` → (query uint8 C×H×W, reference uint8 C×H×W, sample index).

    Sample i pairs record i's query with its primary positive reference. Synchronised flip and
    rotate/roll apply when the query is a panorama (ground) and the reference an aerial tile; University-1652
    flips both together and rotates only the satellite image, as the official code does. ``fov`` = (min, max)
    degrees trains on limited-FoV queries: a sector of random width in that range at a random heading is kept
    (:func:`~crossview.data.transforms.limited_fov`), in place (``fov_orientation="known"``) or rolled to the middle
    (``"unknown"``).
    """

    def __init__(
        self,
        split: Split,
        queries: ImageSource,
        references: ImageSource,
        train: bool,
        prob_flip: float = 0.5,
        prob_rotate: float = 0.75,
        photometric: bool = True,
        fov: tuple[float, float] | None = None,
        fov_orientation: str = "known",
    ):
        self.split, self.queries, self.references = split, queries, references
        self.train, self.prob_flip, self.prob_rotate = train, prob_flip, prob_rotate
        self.aug_q = PhotometricAug(grid_ratio=0.5) if (train and photometric) else None
        self.aug_r = PhotometricAug(grid_ratio=0.4) if (train and photometric) else None
        self.positive = np.asarray([r.positives[0] for r in split.records], dtype=np.int64)
        self.panoramic = bool(split.records) and split.records[0].query_view == "ground"
        if fov is not None and not (0 < float(fov[0]) <= float(fov[1]) <= 360):
            raise ValueError(f"fov {fov}: give [min, max] degrees with 0 < min <= max <= 360")
        if fov_orientation not in ("known", "unknown"):
            raise ValueError(f"fov_orientation {fov_orientation!r}: known or unknown")
        self.fov = None if fov is None or not self.panoramic else (float(fov[0]), float(fov[1]))
        self.fov_centre = fov_orientation == "unknown"

    def __len__(self) -> int:
        return len(self.split.records)

    def __getitem__(self, item: tuple[int, int]):
        key, i = item
        q = self.queries.get(i)
        r = self.references.get(int(self.positive[i]))
        if not self.train:
            return q, r, i
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key)
            if torch.rand(()) < self.prob_flip:
                q, r = sync_flip(q, r)
            if torch.rand(()) < self.prob_rotate:
                k = int(torch.randint(1, 4, ()))
                if self.panoramic:
                    q, r = sync_rotate(q, r, k)
                else:
                    r = torch.rot90(r, k, dims=(-2, -1))
            if self.aug_q is not None:
                q, r = self.aug_q(q), self.aug_r(r)
            if self.fov is not None:
                fov = self.fov[0] + float(torch.rand(())) * (self.fov[1] - self.fov[0])
                q = limited_fov(q, fov, float(torch.rand(())) * 360.0, centre=self.fov_centre)
        return q, r, i


class BatchList(torch.utils.data.Sampler):
    """Yields the given batches of ``(seed_key, index)`` items (this process's share of each)."""

    def __init__(self, batches: list[np.ndarray], seed: int, epoch: int, first_step: int, rank: int, world: int):
        self.batches, self.seed, self.epoch = batches, seed, epoch
        self.first_step, self.rank, self.world = first_step, rank, world

    def __len__(self) -> int:
        return max(0, len(self.batches) - self.first_step)

    def __iter__(self):
        for step in range(self.first_step, len(self.batches)):
            batch = self.batches[step]
            per = len(batch) // self.world
            mine = range(self.rank * per, (self.rank + 1) * per)
            yield [(sample_seed(self.seed, self.epoch, step, j), int(batch[j])) for j in mine]
