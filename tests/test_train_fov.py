"""Limited-FoV training: the kept sector is where ``locate`` paints a pinhole photo; the dataset option and presets."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from crossview.data.transforms import limited_fov
from crossview.locate import pinhole_to_panorama
from crossview.train.data import PairDataset
from crossview.train.presets import PRESETS, resolve_config


def _kept_columns(x: torch.Tensor) -> np.ndarray:
    return np.flatnonzero(x.reshape(-1, x.shape[-1]).abs().sum(0).numpy() > 0)


def test_limited_fov_matches_the_pinhole_canvas():
    pano = torch.full((3, 64, 256), 200, dtype=torch.uint8)
    kept = _kept_columns(limited_fov(pano, 90.0, 90.0))
    photo = np.full((60, 80, 3), 200, np.uint8)
    painted = _kept_columns(torch.from_numpy(pinhole_to_panorama(photo, 90.0, (64, 256), 90.0)).permute(2, 0, 1))
    assert kept.min() == painted.min() == 160 and kept.max() == painted.max() == 223
    # unknown orientation: the same sector, rolled to the middle (where locate paints a photo without a heading)
    assert (_kept_columns(limited_fov(pano, 90.0, 90.0, centre=True)) == np.arange(96, 160)).all()
    # across north (the seam at the panorama's edges is at south: heading 180)
    wrap = _kept_columns(limited_fov(pano, 90.0, 180.0))
    assert set(wrap) == set(range(0, 32)) | set(range(224, 256))
    assert limited_fov(pano, 360.0, 37.0).equal(pano)


def test_pair_dataset_keeps_a_random_sector_per_sample():
    pano = torch.arange(256, dtype=torch.uint8).repeat(3, 32, 1) | 1  # every column non-zero, distinguishable
    tile = torch.ones(3, 32, 32, dtype=torch.uint8)
    split = SimpleNamespace(records=[SimpleNamespace(positives=[0], query_view="ground")])
    queries, refs = SimpleNamespace(get=lambda i: pano.clone()), SimpleNamespace(get=lambda i: tile.clone())
    for orientation in ("known", "unknown"):
        ds = PairDataset(split, queries, refs, train=True, prob_flip=0.0, prob_rotate=0.0, photometric=False,
                         fov=(70.0, 180.0), fov_orientation=orientation)
        widths = []
        for key in range(40):
            q, r, _ = ds[(key, 0)]
            assert q.equal(ds[(key, 0)][0])  # the same key, the same sector
            cols = _kept_columns(q)
            widths.append(len(cols) * 360 / 256)
            if orientation == "unknown":
                assert 127 in cols and 128 in cols
        assert 68 <= min(widths) and max(widths) <= 182 and np.std(widths) > 10
    with pytest.raises(ValueError, match="fov"):
        PairDataset(split, queries, refs, train=True, fov=(0.0, 90.0))


def test_limited_fov_presets():
    cfg = resolve_config("synthetic-cpu-dense-fov-unknown")
    assert cfg["fov"] == [70.0, 180.0] and cfg["fov_orientation"] == "unknown" and cfg["model"] == "mfrgn_tiny"
    for name in ("mfrgn-cvusa", "mfrgn-vigor-same", "sample4geo-vigor-cross"):
        for orientation in ("known", "unknown"):
            p = PRESETS[f"{name}-fov-{orientation}"]
            assert {k: v for k, v in p.items() if k not in ("fov", "fov_orientation")} == PRESETS[name]
    assert resolve_config("synthetic-cpu")["fov"] is None
