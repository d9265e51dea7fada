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


def test_nearest_tile_and_coverage_come_from_the_cells_around_the_point(tmp_path):
    """``nearest``: the tile whose centre is nearest, as brute force over every centre finds it, for points inside
    the grid, between tiles and far outside it, reading only the cells around the point when it is inside; the
    page's coverage layer (from the sidecar alone) holds every tile centre."""
    from crossview.geometry.geo import latlon_to_offset
    from crossview.serve.maps import region_layer

    ids, ll, hm, x = _grid(ny=30, nx=30, step=40.0)
    idx = load_region_index(build_region_index([Part(ids, ll, hm * 0.5, x)], tmp_path / "idx", {"name": "m"},
                                               res=9))
    rng = np.random.default_rng(2)
    lat0, lon0 = ll.min(0)
    lat1, lon1 = ll.max(0)
    points = [(rng.uniform(lat0, lat1), rng.uniform(lon0, lon1)) for _ in range(30)]
    points += [(lat1 + 0.01, lon0 - 0.02), (lat0 - 0.3, lon1 + 0.5)]  # 1.5 km and about 50 km outside
    for k, (lat, lon) in enumerate(points):
        e, n = latlon_to_offset(lat, lon, ll[:, 0], ll[:, 1])
        d = np.hypot(e, n)
        got = idx.nearest(lat, lon)
        assert d[ids.index(got["id"])] == pytest.approx(d.min(), abs=1e-6), (lat, lon)
        if k < 30:
            assert idx.cells_opened < len(idx.cells)
    assert not idx.rows_loaded  # no row table was read
    layer = region_layer(idx)
    assert layer["mode"] == "coverage" and layer["count"] == len(ids)
    inside = [any(r[0][0] <= a <= r[1][0] and r[0][1] <= b <= r[1][1] for r in layer["rects"]) for a, b in ll]
    assert all(inside)
    assert len(region_layer(idx, max_cells=3)["rects"]) <= 3  # coarser cells when there are many


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


# --- rasters streamed into the index -------------------------------------------------------------------------
def _texture_tif(path, size=(300, 260)):
    """A UTM GeoTIFF of random texture (0.5 m pixels) with a nodata corner, near Boston."""
    rasterio = pytest.importorskip("rasterio")
    from affine import Affine

    w, h = size
    rng = np.random.default_rng(3)
    small = rng.integers(0, 255, (3, h // 8 + 1, w // 8 + 1)).astype(np.uint8)
    arr = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)[:, :h, :w].copy()
    arr[:, : h // 3, : w // 3] = 0  # nodata: tiles there are skipped
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:32619",
                       transform=Affine.translation(330000.0, 4690000.0) @ Affine.scale(0.5, -0.5), nodata=0,
                       tiled=True, blockxsize=128, blockysize=128) as ds:
        ds.write(arr)
    return path


@pytest.fixture(scope="module")
def raster_world(tmp_path_factory):
    from crossview.models import create_model, save_model

    root = tmp_path_factory.mktemp("rasterworld")
    torch.manual_seed(0)
    ckpt = save_model(create_model("mfrgn_tiny"), root / "model.pt")
    return root, _texture_tif(root / "ortho.tif"), ckpt


def test_rasters_stream_into_the_index_like_tile_files_and_resume_after_a_kill(raster_world, tmp_path, monkeypatch):
    from PIL import Image

    import crossview.locate.rasters as rasters
    from crossview.models import load_model
    from crossview.search import stfile
    from crossview.search.embed import embed_images
    from crossview.tiles import build_tiles, read_manifest

    root, tif, ckpt = raster_world
    tiles = read_manifest(build_tiles(tif, tmp_path / "tiles", tile_px=64, overlap=0.5))
    want = embed_images(load_model(str(ckpt)), [t.path for t in tiles], "aerial", batch=8).numpy()
    out = rasters.index_rasters([tif], ckpt, tmp_path / "idx", tile_px=64, overlap=0.5, shard_size=16, batch=8,
                                keep_shards=True, write_tiles=tmp_path / "png")
    shards = sorted((out / "shards").glob("shard-*.safetensors"))
    assert len(shards) > 3
    got = {}
    for p in shards:
        f = stfile.STFile(p)
        got.update(zip(f.metadata["ids"], np.asarray(f["descriptors"])))
    assert sorted(got) == sorted(t.id for t in tiles)  # the same tiles, the nodata ones skipped alike
    np.testing.assert_allclose(np.stack([got[t.id] for t in tiles]), want, rtol=0, atol=1e-6)
    for t in tiles[:5]:  # --write-tiles: the very tiles `crossview tiles` writes
        assert np.array_equal(np.asarray(Image.open(tmp_path / "png" / f"{t.id}.png")), np.asarray(Image.open(t.path)))
    idx = load_region_index(out)
    assert len(idx) == len(tiles) and idx.info["extra"]["skipped"] > 0
    # killed after two shards: the same command finishes the rest and builds the same index
    real, calls = rasters.save_shard, []

    def dying(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(rasters, "save_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        rasters.index_rasters([tif], ckpt, tmp_path / "idx2", tile_px=64, overlap=0.5, shard_size=16, batch=8)
    first = {p: p.stat().st_mtime_ns for p in calls}
    assert not (tmp_path / "idx2" / "index.json").exists()
    monkeypatch.setattr(rasters, "save_shard", real)
    out2 = rasters.index_rasters([tif], ckpt, tmp_path / "idx2", tile_px=64, overlap=0.5, shard_size=16, batch=8,
                                 keep_shards=True)
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())  # finished shards were not redone
    idx2 = load_region_index(out2)
    assert idx2.ids == idx.ids and idx2.info["cells"] == idx.info["cells"]
    np.testing.assert_array_equal(idx2.descriptors(), idx.descriptors())


@pytest.mark.slow
def test_locate_index_under_torchrun_two_ranks_equals_one_process(raster_world, tmp_path, free_port):
    import os
    import subprocess
    import sys

    from crossview.cli import main

    root, tif, ckpt = raster_world
    common = [str(tif), "--model", str(ckpt), "--tile-px", "64", "--shard-size", "10", "--batch", "8",
              "--precision", "fp32"]
    assert main(["locate-index", *common, "--out", str(tmp_path / "one")]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port),
           "-m", "crossview.cli", "locate-index", *common, "--out", str(tmp_path / "two"), "--keep-shards"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = load_region_index(tmp_path / "one"), load_region_index(tmp_path / "two")
    assert two.ids == one.ids and two.info["cells"] == one.info["cells"]
    np.testing.assert_allclose(two.descriptors(), one.descriptors(), rtol=0, atol=1e-3)  # float16 storage
    assert len(list((tmp_path / "two" / "shards").glob("shard-*.safetensors"))) > 2


def test_locate_cli_and_page_on_a_raster_index(raster_world, tmp_path, upload_photo):
    """`crossview locate` on an index built from a raster (no tile files anywhere): retrieval near a fix answers a
    tile of the area and draws it on that tile, cut from the raster; `crossview index info` reads the sidecar. The
    page gives the same answer, shows the index's H3 cells as its coverage and the candidates' footprints."""
    import http.client
    import threading

    from PIL import Image

    from crossview.cli import main
    from crossview.geometry.geo import distance_m
    from crossview.locate import Locator
    from crossview.serve import locator_pipeline, make_server

    root, tif, ckpt = raster_world
    assert main(["locate-index", str(tif), "--model", str(ckpt), "--tile-px", "64", "--out", str(tmp_path / "idx"),
                 "--precision", "fp32"]) == 0
    idx = load_region_index(tmp_path / "idx")
    b = idx.info["bounds"]
    lat, lon = (float(v) for v in idx.nearest(b["south"], b["west"])["lat_lon"])  # the tile nearest a corner
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    assert main(["locate", str(tmp_path / "p.png"), "--index", str(tmp_path / "idx"), "--near", f"{lat},{lon}±40",
                 "--camera", "panorama", "--out", str(tmp_path / "out"), "--precision", "fp32",
                 "--tile-cache", str(tmp_path / "cache")]) == 0
    r = json.loads((tmp_path / "out" / "locate.json").read_text())
    assert [p.stem for p in (tmp_path / "cache").glob("*.png")] == [r["tile"]]  # the answer's tile, kept
    assert r["method"] == "retrieval" and distance_m((r["lat"], r["lon"]), (lat, lon)) < 40 + 64 * 0.75
    assert Image.open(tmp_path / "out" / "locate.png").size[0] >= 64
    assert main(["index", "info", str(tmp_path / "idx")]) == 0
    loc = Locator(tmp_path / "idx", precision="fp32")
    srv = make_server(locator_pipeline(loc), tmp_path / "data", port=0, tiles=loc.tiles, info=loc.describe())
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        page = upload_photo(srv.server_address, tmp_path / "p.png", {"camera": "panorama", "near": f"{lat},{lon}±40"})
        conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=60)
        conn.request("GET", "/api/config")
        config = json.loads(conn.getresponse().read())
    finally:
        srv.shutdown()
        srv.server_close()
    assert (page["lat"], page["lon"], page["tile"]) == (r["lat"], r["lon"], r["tile"])
    assert all(c["footprint"] is not None for c in page["candidates"])
    assert config["map"]["mode"] == "coverage" and config["map"]["count"] == len(idx)
