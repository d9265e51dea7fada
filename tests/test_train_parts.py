"""Loss, samplers, hard-negative mining, transforms and the image cache, on hand-made inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from crossview.data.cache import ImageCache, build_cache, load_resized
from crossview.data.transforms import sync_flip, sync_rotate
from crossview.train.losses import symmetric_infonce
from crossview.train.presets import resolve_config
from crossview.train.sampling import location_batches, mine_similar_neighbours


def test_infonce_matches_hand_computation():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale, eps = torch.tensor(2.0), 0.1
    # logits a→b: [[2, 1.2], [0, 1.6]]; b→a is the transpose.
    logits = np.array([[2.0, 1.2], [0.0, 1.6]])

    def ce(rows):
        total = 0.0
        for i, row in enumerate(rows):
            logp = row - math.log(np.exp(row).sum())
            target = np.full(2, eps / 2)
            target[i] += 1 - eps
            total -= (target * logp).sum()
        return total / len(rows)

    expected = 0.5 * (ce(logits) + ce(logits.T))
    got = symmetric_infonce(a, b, scale, label_smoothing=eps).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_infonce_renormalises_and_prefers_matches():
    torch.manual_seed(0)
    x = torch.randn(8, 16)
    matched = symmetric_infonce(3 * x, x, torch.tensor(10.0))
    shuffled = symmetric_infonce(x, x[torch.randperm(8)], torch.tensor(10.0))
    assert matched < shuffled


def test_batches_never_repeat_a_location_and_use_each_sample_once():
    rng = np.random.default_rng(0)
    locations = np.repeat(np.arange(50), 3)  # 3 samples per location
    batches = location_batches(locations, 10, rng)
    used = np.concatenate(batches)
    assert len(used) == len(set(used.tolist()))
    for b in batches:
        assert len(b) == 10 and len(set(locations[b].tolist())) == 10
    assert len(batches) >= 12  # most of the 150 samples fit in 15 batches


def test_gps_neighbours_are_packed_with_their_seed():
    # Locations on a line; neighbours of l are l±1, l±2, ... nearest first.
    n = 40
    table = {l: np.array(sorted((m for m in range(n) if m != l), key=lambda m: abs(m - l))) for l in range(n)}
    batches = location_batches(np.arange(n), 8, np.random.default_rng(1), neighbours=table,
                               neighbour_select=6, neighbour_range=6)
    first = batches[0]
    assert first[1:4].tolist() == table[int(first[0])][:3].tolist()  # the 3 nearest follow the seed
    # Neighbour packing makes batches spatially tight: mean spread far below that of random batches.
    spread = np.mean([np.ptp(b) for b in batches])
    plain = location_batches(np.arange(n), 8, np.random.default_rng(1))
    assert spread < 0.7 * np.mean([np.ptp(b) for b in plain])


def test_mining_returns_the_planted_hardest_negatives():
    torch.manual_seed(0)
    refs = torch.nn.functional.normalize(torch.randn(20, 32), dim=1)
    queries = refs[:5].clone()
    # Query i's hardest wrong references: plant refs 10+i (very close) and 15+i (close).
    refs[10:15] = torch.nn.functional.normalize(queries + 0.05 * torch.randn(5, 32), dim=1)
    refs[15:20] = torch.nn.functional.normalize(queries + 0.3 * torch.randn(5, 32), dim=1)
    table = mine_similar_neighbours(queries, refs, np.arange(5), k=2, block=2)
    for i in range(5):
        assert table[i].tolist() == [10 + i, 15 + i]


def test_sync_rotate_is_consistent_with_flip_and_full_turn():
    g = torch.arange(2 * 8).view(1, 2, 8)
    a = torch.arange(16).view(1, 4, 4)
    g4, a4 = g, a
    for _ in range(4):
        g4, a4 = sync_rotate(g4, a4, 1)
    assert torch.equal(g4, g) and torch.equal(a4, a)
    g1, a1 = sync_rotate(g, a, 1)
    assert torch.equal(g1[..., 0], g[..., 2])  # column 0 now shows what was a quarter-width to the right
    gf, af = sync_flip(g, a)
    assert torch.equal(gf.flip(-1), g) and torch.equal(af.flip(-1), a)
    with pytest.raises(ValueError, match="divisible by 4"):
        sync_rotate(torch.zeros(1, 2, 6), a, 1)


def test_cache_round_trip_and_skip(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        p = tmp_path / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(p, quality=95)
        paths.append(p)
    out = build_cache(paths, (20, 30), tmp_path / "cache")
    cache = ImageCache(out)
    for i, p in enumerate(paths):
        assert np.array_equal(cache[i], load_resized(p, (20, 30)))
    mtime = out.stat().st_mtime_ns
    assert build_cache(paths, (20, 30), tmp_path / "cache") == out and out.stat().st_mtime_ns == mtime
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_config_overrides_and_errors():
    cfg = resolve_config("synthetic-cpu", {"lr": 3e-4, "model_kwargs.ground_size": [64, 256]})
    assert cfg["lr"] == 3e-4 and cfg["model_kwargs"]["ground_size"] == [64, 256]
    from crossview.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown config key 'lrr'"):
        resolve_config("synthetic-cpu", {"lrr": 1})
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config("nope")


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("flip", [False, True])
def test_sync_augmentation_matches_the_synthetic_cameras(k, flip):
    """Mark a world point in a north-up tile and a north-aligned panorama with the synthetic world's own camera
    models; after the synchronised flip/rotate, the marks must still be one world point seen by both cameras."""
    from crossview.synth.cameras import panorama_pixel, tile_point

    size, mpp, width, height = 64, 0.5, 128, 64
    for east, north in [(9.0, 2.0), (-4.0, 11.0), (6.0, -7.5)]:
        tile = torch.zeros(1, size, size)
        pano = torch.zeros(1, height, width)
        tx, ty = size / 2 + east / mpp, size / 2 - north / mpp
        px, _ = panorama_pixel(east, north, 0.0, 0.0, 0.0, 2.0, width, height)
        tile[0, int(ty), int(tx)] = 1
        pano[0, height - 1, int(px) % width] = 1
        g, a = (sync_flip(pano, tile) if flip else (pano, tile))
        g, a = sync_rotate(g, a, k)
        ty2, tx2 = [int(v) for v in torch.nonzero(a[0])[0]]
        gx2 = int(torch.nonzero(g[0, height - 1])[0])
        e2, n2 = tile_point(tx2 + 0.5, ty2 + 0.5, 0.0, 0.0, mpp, size)
        expect, _ = panorama_pixel(e2, n2, 0.0, 0.0, 0.0, 2.0, width, height)
        d = abs((gx2 + 0.5 - float(expect) + width / 2) % width - width / 2)
        assert d <= 1.5, (east, north, k, flip, gx2, float(expect))
