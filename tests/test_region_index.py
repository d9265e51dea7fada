"""The region index (crossview.search.region) and descriptor shards as safetensors (old .pt shards still read)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crossview.search.region import Part, build_region_index, footprints_near, load_region_index


def _grid(ny=60, nx=50, step=50.0, d=16, seed=0):
    from crossview.geometry.geodesy import enu_to_latlon

    i = np.arange(ny * nx)
    lat, lon = enu_to_latlon((i % nx) * step, -(i // nx) * step, 42.3, -71.1)
    ll = np.stack([lat, lon], 1)
    hm = np.full((len(i), 2), step, np.float32)
    x = np.random.default_rng(seed).standard_normal((len(i), d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return [f"t{j}" for j in i], ll, hm, x


def test_region_index_round_trip_and_exact_near_search(tmp_path):
    ids, ll, hm, x = _grid()
    parts = [Part(ids[:1000], ll[:1000], hm[:1000], x[:1000]), Part(ids[1000:], ll[1000:], hm[1000:], x[1000:])]
    out = build_region_index(parts, tmp_path / "idx", {"name": "m", "dim": 16}, res=8)
    idx = load_region_index(out)
    assert len(idx) == len(ids) and len(idx.cells) > 4 and idx.info["ivf"] is None
    # reloads identically: every tile once, its float16 descriptor, centre and footprint
    row = {t: k for k, t in enumerate(idx.ids)}
    order = np.array([row[t] for t in ids])
    np.testing.assert_array_equal(idx.descriptors()[order], x.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(idx.gps[order], ll)
    assert json.loads((out / "index.json").read_text())["format"] == "crossview-region-index/1"
    # near a fix: exactly brute force restricted to the tiles whose footprint meets the area
    x16 = x.astype(np.float16).astype(np.float32)
    rng = np.random.default_rng(1)
    for _ in range(25):
        j = int(rng.integers(len(ids)))
        area = (ll[j, 0] + rng.normal() * 3e-4, ll[j, 1] + rng.normal() * 3e-4, float(rng.uniform(20, 400)))
        q = rng.standard_normal(16).astype(np.float32)
        mask = footprints_near(ll, hm, *area)
        want = np.array(ids)[mask][np.argsort(-(x16[mask] @ q), kind="stable")[:5]].tolist()
        scores, got = idx.search_near(q, 5, area)
        assert [g for g in got[0] if g is not None] == want
        assert idx.cells_opened < len(idx.cells)
    # without a fix (no IVF below IVF_MIN tiles): an exact scan of every cell
    scores, got = idx.search(x[:3], 1)
    assert got[:, 0].tolist() == ids[:3]
    # the generic loader opens the folder too
    from crossview.search.index import load_index

    assert load_index(out).info == idx.info


@pytest.mark.parametrize("ondisk", [False, True])
def test_region_index_ivfpq_recall(tmp_path, ondisk):
    ids, ll, hm, x = _grid(ny=80, nx=60, d=16)
    out = build_region_index([Part(ids, ll, hm, x)], tmp_path / "idx", {"name": "m"}, ivf=True, nlist=16,
                             ondisk=ondisk)
    idx = load_region_index(out)
    assert idx.info["ivf"]["ondisk"] == ondisk and (out / "global.ivfdata").exists() == ondisk
    q = x[:50] + 0.05 * np.random.default_rng(2).standard_normal((50, 16)).astype(np.float32)
    _, got = idx.search(q, 10)
    exact = np.argsort(-(q @ x.astype(np.float16).astype(np.float32).T), axis=1)[:, :10]
    recall = np.mean([len(set(got[i]) & {ids[j] for j in exact[i]}) / 10 for i in range(50)])
    assert recall > 0.9


def test_shards_round_trip_as_safetensors_and_old_pt_shards_still_read(tmp_path):
    from crossview.io import save_torch_atomic, write_json_atomic
    from crossview.search.shards import ShardPlan, load_shards

    ids = [f"i{k}" for k in range(10)]
    desc = torch.nn.functional.normalize(torch.randn(10, 8), dim=1)
    gps = np.random.default_rng(0).random((10, 2))
    gps[3] = np.nan
    plan = ShardPlan(tmp_path / "new", ids, 3, {"name": "m", "config_hash": "c", "dim": 8}, {"view": "aerial"})
    plan.folder.mkdir()
    plan.write_manifest()
    for i, (s, e) in enumerate(plan.ranges):
        assert plan.save(i, desc[s:e], gps[s:e]).suffix == ".safetensors"
        assert plan.is_done(i)
    got_ids, got, got_gps, man = load_shards(plan.folder)
    assert got_ids == ids and torch.equal(got, desc) and man["format"] == "crossview-descriptor-shards/2"
    np.testing.assert_array_equal(got_gps, gps)
    # a folder written by the previous version: manifest /1 and pickled .pt shards
    old = tmp_path / "old"
    entries = []
    for i, (s, e) in enumerate(plan.ranges):
        name = f"shard-{i:05d}-of-00003.pt"
        save_torch_atomic(old / name, {"ids": ids[s:e], "descriptors": desc[s:e], "gps": torch.from_numpy(gps[s:e]),
                                       "start": s, "end": e, "model": plan.model, "precision": "fp32"})
        entries.append({"file": name, "start": s, "end": e})
    write_json_atomic(old / "manifest.json", {**plan.manifest(), "format": "crossview-descriptor-shards/1",
                                              "shards": entries})
    got_ids, got, got_gps, _ = load_shards(old)
    assert got_ids == ids and torch.equal(got, desc)
    np.testing.assert_array_equal(got_gps, gps)
    # and a re-run over the old folder counts its .pt shards as done
    again = ShardPlan(old, ids, 3, plan.model, {"view": "aerial"})
    assert all(again.is_done(i) for i in range(3))
