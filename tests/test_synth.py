"""The synthetic world: camera geometry against planted objects and the written labels, determinism, layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from crossview.synth import cameras as cam
from crossview.synth import generate
from crossview.synth.geo import enu_to_latlon, latlon_to_enu
from crossview.synth.styles import CITIES
from crossview.synth.world import MARKING, build_world, plant_tower

MAGENTA = (1.0, 0.0, 1.0)
CYAN = (0.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def vigor_tiny(tmp_path_factory) -> Path:
    return generate("vigor", tmp_path_factory.mktemp("synth") / "vigor", scale="tiny", seed=0)


@pytest.fixture(scope="module")
def planted():
    """A small Chicago with a magenta tower and a cyan ground disc at known places, and an open camera spot."""
    w = build_world(CITIES["Chicago"], 70.0, np.random.default_rng(5), cell=0.25)
    cam_e, cam_n = 0.3, -0.2
    # clear a plaza around the camera and the disc so nothing hides them
    r, c, _ = w.cell_of(np.array([-15.0, 35.0]), np.array([30.0, -30.0]))
    w.height[r[0]:r[1], c[0]:c[1]] = 0
    w.cls[r[0]:r[1], c[0]:c[1]] = MARKING
    w.bid[r[0]:r[1], c[0]:c[1]] = -1
    w.albedo[r[0]:r[1], c[0]:c[1]] = 0.5
    tower = (24.0, 17.0, 3.0, 40.0)  # east, north, half size, height
    plant_tower(w, *tower, colour=MAGENTA)
    disc = (-6.0, 5.0, 1.5)  # east, north, radius (ground marking)
    ce, cn = w.centre_of(np.arange(w.shape[0])[:, None], np.arange(w.shape[1])[None, :])
    w.albedo[np.hypot(ce - disc[0], cn - disc[1]) < disc[2]] = CYAN
    from crossview.synth.world import aerial_raster

    w.aerial = aerial_raster(w)
    return w, (cam_e, cam_n), tower, disc


def _mask(img: np.ndarray, colour) -> np.ndarray:
    """Pixels of the hue of a saturated colour (shading changes brightness, not the hue)."""
    x = img.astype(float)
    on = np.asarray(colour) > 0.5
    hi = x[..., on].min(axis=-1)
    lo = x[..., ~on].max(axis=-1)
    m = (hi > 60) & (lo < 0.35 * hi)
    lab, n = ndimage.label(m)  # keep the largest blob (a random car may share the hue)
    if n == 0:
        return m
    return lab == 1 + int(np.argmax(ndimage.sum(m, lab, range(1, n + 1))))


def test_geo_round_trip():
    lat, lon = enu_to_latlon(123.4, -56.7, 40.0, -74.0)
    e, n = latlon_to_enu(lat, lon, 40.0, -74.0)
    assert abs(e - 123.4) < 1e-6 and abs(n + 56.7) < 1e-6
    lat2, _ = enu_to_latlon(0.0, 1000.0, 40.0, -74.0)
    assert abs((lat2 - 40.0) * 111_034 - 1000) < 5  # ~111.03 km per degree of latitude at 40 N


def test_tile_pixel_convention():
    # the tile centre is the corner between the four middle pixels; one pixel east = +1 in x, north = -1 in y
    assert cam.tile_pixel(10.0, 20.0, 10.0, 20.0, 0.5, 64) == (32.0, 32.0)
    x, y = cam.tile_pixel(10.5, 20.5, 10.0, 20.0, 0.5, 64)
    assert (x, y) == (33.0, 31.0)
    assert np.allclose(cam.tile_point(x, y, 10.0, 20.0, 0.5, 64), (10.5, 20.5))


def test_planted_objects_in_tile_panorama_and_pinhole(planted):
    w, (ce, cn), (te, tn, half, th), (de, dn, rad) = planted
    rng = np.random.default_rng(0)
    look = cam.Look(noise=0.0)
    # aerial tile: the tower's roof centroid and the disc centre where tile_pixel says
    S, mpp = 128, 0.5
    tile = cam.render_tile(w, ce, cn, mpp, S, rng, noise=0.0)
    for (e, n), colour in (((te, tn), MAGENTA), ((de, dn), CYAN)):
        ys, xs = np.nonzero(_mask(tile, colour))
        assert len(xs) > 3
        px, py = cam.tile_pixel(e, n, ce, cn, mpp, S)
        assert abs(xs.mean() + 0.5 - px) < 1.0 and abs(ys.mean() + 0.5 - py) < 1.0
    # panorama: the tower's columns centred at its azimuth, its top edge at the projected roof height,
    # the disc where the ground point projects
    H, W = 128, 256
    pano = cam.render_panorama(w, ce, cn, 2.0, W, H, look, rng, cam.ray_distances(400), transients=False)
    m = _mask(pano, MAGENTA)
    cols = np.nonzero(m.any(axis=0))[0]
    px, _ = cam.panorama_pixel(te, tn, th, ce, cn, 2.0, W, H)
    assert abs((cols.min() + cols.max() + 1) / 2 - px) < 1.0
    # nearest face centre of the tower (it is axis-aligned in the street frame; take the roof point nearest to
    # the camera along the line of sight, whose projected row is the top edge at the centre column)
    col = int(px)
    top_row = np.nonzero(m[:, col])[0].min()
    d_face = np.hypot(te - ce, tn - cn) - half * 1.0
    az = np.arctan2(te - ce, tn - cn)
    lo = cam.panorama_pixel(ce + d_face * np.sin(az), cn + d_face * np.cos(az), th, ce, cn, 2.0, W, H)[1]
    far = np.hypot(te - ce, tn - cn) + half * 1.5
    hi = cam.panorama_pixel(ce + far * np.sin(az), cn + far * np.cos(az), th, ce, cn, 2.0, W, H)[1]
    assert lo - 1.0 <= top_row + 0.5 <= hi + 1.0
    dx, dy = cam.panorama_pixel(de, dn, 0.0, ce, cn, 2.0, W, H)
    ys, xs = np.nonzero(_mask(pano, CYAN))
    assert abs(xs.mean() + 0.5 - dx) < 1.0 and abs(ys.mean() + 0.5 - dy) < 1.0
    # pinhole looking at the tower
    heading = float(np.degrees(az)) + 10.0
    pin = cam.render_pinhole(w, ce, cn, 2.0, heading, 70.0, 160, 120, look, rng, cam.ray_distances(400),
                             transients=False)
    m = _mask(pin, MAGENTA)
    cols = np.nonzero(m.any(axis=0))[0]
    x_t, _, z = cam.pinhole_pixel(te, tn, th / 2, ce, cn, 2.0, heading, 70.0, 160, 120)
    assert z > 0 and abs((cols.min() + cols.max() + 1) / 2 - x_t) < 2.0  # face centre vs box centre: ~1 px
    h2 = float(np.degrees(np.arctan2(de - ce, dn - cn))) - 15.0
    x_d, y_d, _ = cam.pinhole_pixel(de, dn, 0.0, ce, cn, 2.0, h2, 70.0, 160, 120)
    pin2 = cam.render_pinhole(w, ce, cn, 2.0, h2, 70.0, 160, 120, look, rng, cam.ray_distances(400),
                              transients=False)
    ys, xs = np.nonzero(_mask(pin2, CYAN))
    # perspective moves the blob's centroid off the centre's projection: compare the outline's extent instead
    ang = np.linspace(0, 2 * np.pi, 720)
    bx, by, _ = cam.pinhole_pixel(de + rad * np.sin(ang), dn + rad * np.cos(ang), 0.0, ce, cn, 2.0, h2, 70.0, 160,
                                  120)
    assert 0 <= x_d < 160 and 0 <= y_d < 120
    assert abs(xs.min() - bx.min()) < 1.0 and abs(xs.max() + 1 - bx.max()) < 1.0
    assert abs(ys.min() - by.min()) < 1.0 and abs(ys.max() + 1 - by.max()) < 1.0


def test_panorama_convention_east_at_three_quarters(planted):
    w, (ce, cn), (te, tn, _, th), _ = planted
    W, H = 256, 64
    x_north, _ = cam.panorama_pixel(ce, cn + 10, 0.0, ce, cn, 2.0, W, H)
    x_east, _ = cam.panorama_pixel(ce + 10, cn, 0.0, ce, cn, 2.0, W, H)
    assert x_north == W / 2 and x_east == 3 * W / 4
    # rolling the panorama by a quarter width equals a heading change of 90 degrees
    look = cam.Look(noise=0.0)
    a = cam.render_panorama(w, ce, cn, 2.0, W, H, look, np.random.default_rng(1), cam.ray_distances(128),
                            transients=False)
    b = cam.render_panorama(w, ce, cn, 2.0, W, H, look, np.random.default_rng(1), cam.ray_distances(128),
                            heading_deg=90.0, transients=False)
    assert np.array_equal(np.roll(a, -W // 4, axis=1)[H // 2:], b[H // 2:])  # ground half (sky has clouds per az)


def _pose_lines(root: Path):
    return [json.loads(line) for line in (root / "crossview_poses.jsonl").read_text().splitlines()]


def test_vigor_tree_labels_and_metadata(vigor_tiny):
    root = vigor_tiny
    meta = json.loads((root / "crossview_meta.json").read_text())
    S = meta["tile_size"]
    assert meta["layout"] == "vigor" and set(meta["cities"]) == {"NewYork", "Seattle", "SanFrancisco", "Chicago"}
    poses = {p["image"]: p for p in _pose_lines(root)}
    for city, info in meta["cities"].items():
        lat0, lon0, mpp = info["origin_lat"], info["origin_lon"], info["metres_per_pixel"]
        tiles = (root / "splits" / city / "satellite_list.txt").read_text().split()
        assert len(tiles) == 16 and all((root / "satellite" / city / t).is_file() for t in tiles)
        with Image.open(root / "satellite" / city / tiles[0]) as im:
            assert im.size == (S, S)
        orig = (root / "splits" / city / "pano_label_balanced.txt").read_text().splitlines()
        corr = (root / "splits__corrected" / city / "pano_label_balanced__corrected.txt").read_text().splitlines()
        train = (root / "splits" / city / "same_area_balanced_train.txt").read_text().splitlines()
        test = (root / "splits" / city / "same_area_balanced_test.txt").read_text().splitlines()
        assert sorted(train + test) == sorted(orig) and not set(train) & set(test)
        assert len(orig) == 12
        for lo, lc in zip(orig, corr):
            co, cc = lo.split(), lc.split()
            assert len(co) == 13 and len(cc) == 13 and co[0] == cc[0]
            name = co[0]
            assert (root / "ground" / city / name).is_file()
            _, plat, plon, tail = name.split(",")
            assert tail == ".jpg"
            pe, pn = latlon_to_enu(float(plat), float(plon), lat0, lon0)
            pose = poses[f"ground/{city}/{name}"]
            assert abs(pose["east_m"] - pe) < 1e-6 and abs(pose["north_m"] - pn) < 1e-6
            for j in range(4):
                tname = co[1 + 3 * j]
                assert tname == cc[1 + 3 * j] and tname in tiles
                tlat, tlon = map(float, tname[len("satellite_"):-len(".png")].split("_"))
                te, tn = latlon_to_enu(tlat, tlon, lat0, lon0)
                x, y = cam.tile_pixel(pe, pn, te, tn, mpp, S)  # from the file names alone
                entry = pose["tiles"][j]
                assert entry["tile"] == f"satellite/{city}/{tname}"
                assert abs(entry["x"] - x) < 1e-6 and abs(entry["y"] - y) < 1e-6
                dr, dc = float(co[2 + 3 * j]), float(co[3 + 3 * j])
                assert abs(S / 2 + dr - y) <= 0.5 and abs(S / 2 - dc - x) <= 0.5
                dr, dc = float(cc[2 + 3 * j]), float(cc[3 + 3 * j])
                assert abs(S / 2 + dr - y) < 1e-3 and abs(S / 2 - dc - x) < 1e-3
                assert 0 <= x < S and 0 <= y < S
                inside_quarter = abs(x - S / 2) < S / 4 and abs(y - S / 2) < S / 4
                assert inside_quarter == (j == 0)  # positive first, then three semi-positives
    pins = [p for p in poses.values() if p["camera"] == "pinhole"]
    assert len(pins) == 16 and all((root / p["image"]).is_file() and 60 <= p["fov_deg"] <= 100 for p in pins)
    assert all(len(p["tiles"]) == 4 for p in poses.values())


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_determinism_and_cli(vigor_tiny, tmp_path):
    from crossview.cli import main

    again = generate("vigor", tmp_path / "again", scale="tiny", seed=0)
    a, b = _tree_bytes(vigor_tiny), _tree_bytes(again)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert main(["synth", "--layout", "vigor", "--out", str(tmp_path / "seed1"), "--scale", "tiny",
                 "--seed", "1"]) == 0
    c = _tree_bytes(tmp_path / "seed1")
    assert c["crossview_poses.jsonl"] != a["crossview_poses.jsonl"]
    assert sorted(c) != sorted(a)  # different positions -> different file names
    # an existing identical tree is kept; a different one is refused
    assert generate("vigor", again, scale="tiny", seed=0) == again
    assert main(["synth", "--layout", "vigor", "--out", str(again), "--scale", "tiny", "--seed", "2"]) == 2
    assert not list(tmp_path.glob(".*partial*"))


def test_vigor_read_back_by_the_readers(vigor_tiny):
    from crossview.data import read_dataset

    poses = {p["image"]: p for p in _pose_lines(vigor_tiny)}
    for area, n_train, n_test in (("same", 24, 24), ("cross", 24, 24)):
        for label_set, tol in (("original", 0.5), ("corrected", 1e-3)):
            for split, n in (("train", n_train), ("test", n_test)):
                s = read_dataset("vigor", vigor_tiny, split, area=area, label_set=label_set)
                assert len(s.records) == n
                for rec in s.records:
                    pose = poses[str(rec.query_path.relative_to(vigor_tiny))]
                    refs = [s.references[i] for i in rec.positives + rec.semi_positives]
                    assert [str(r.path.relative_to(vigor_tiny)) for r in refs] == [t["tile"] for t in pose["tiles"]]
                    for (x, y), t in zip(rec.pixel_xy, pose["tiles"]):
                        assert abs(x - t["x"]) <= tol and abs(y - t["y"]) <= tol
                    assert refs[0].metres_per_pixel == pytest.approx(
                        CITIES[rec.group].vigor_mpp_640 * 640 / 64)


@pytest.mark.parametrize("layout,splits", [
    ("cvusa", {"train": 20, "test": 4}),
    ("cvact", {"train": 20, "val": 4, "test": 8}),
    ("university1652", {"train": 18, "drone2sat": 12, "sat2drone": 4}),
])
def test_other_layouts_write_readable_trees(layout, splits, tmp_path):
    from crossview.data import read_dataset

    root = generate(layout, tmp_path / layout, scale="tiny", seed=0)
    meta = json.loads((root / "crossview_meta.json").read_text())
    assert meta["layout"] == layout and meta["seed"] == 0 and meta["metres_per_pixel"]
    for split, n in splits.items():
        s = read_dataset(layout, root, split)
        assert len(s.records) == n
        for rec in s.records[:3]:
            with Image.open(rec.query_path) as im:
                w, h = im.size
            if layout == "cvusa":
                assert (w, h) == (154, 28)  # 1232:224 scaled by 1/8
            elif layout == "cvact":
                assert w == 2 * h
    if layout == "university1652":
        gallery = {p.name for p in (root / "test" / "gallery_satellite").iterdir()}
        queries = {p.name for p in (root / "test" / "query_drone").iterdir()}
        train = {p.name for p in (root / "train" / "satellite").iterdir()}
        assert queries < gallery and len(gallery - queries) == 2 and not train & gallery
        assert all(len(name) == 4 and name.isdigit() for name in gallery | train)
    if layout == "cvact":
        import scipy.io

        mat = scipy.io.loadmat(root / "ACT_data.mat")
        ids = mat["panoIds"]
        train_ids = [str(i) for i in ids[mat["trainSet"][0][0][1] - 1].squeeze()]  # the official access
        assert len(train_ids) == 20 and all((root / "ANU_data_small" / "streetview" / f"{i}_grdView.jpg").is_file()
                                            for i in train_ids)
        test_ids = [str(i) for i in ids[mat["valSetAll"][0][0][1] - 1].squeeze()]
        assert all((root / "ANU_data_test" / "satview_polish" / f"{i}_satView_polish.jpg").is_file()
                   for i in test_ids)
    if layout == "cvusa":
        rows = (root / "split_locations" / "all.csv").read_text().splitlines()
        poses = _pose_lines(root)
        assert len(rows) == 24 and [float(v) for v in rows[6].split(",")[:2]] == [poses[6]["lat"], poses[6]["lon"]]


def test_workers_do_not_change_bytes(tmp_path):
    a = generate("cvact", tmp_path / "one", scale="tiny", seed=3, workers=1)
    b = generate("cvact", tmp_path / "two", scale="tiny", seed=3, workers=2)
    ta, tb = _tree_bytes(a), _tree_bytes(b)
    assert ta.keys() == tb.keys() and all(ta[k] == tb[k] for k in ta)


@pytest.mark.slow
def test_killed_run_leaves_no_tree(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "vigor"
    code = f"from crossview.synth import generate; generate('vigor', {str(out)!r}, scale='small', seed=0)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob(".vigor.partial-*/satellite/*/*.png")) and time.time() < deadline:
            time.sleep(0.05)
            assert proc.poll() is None, "generator exited before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not out.exists()  # nothing under the final name
    assert list(tmp_path.glob(".vigor.partial-*"))
    generate("vigor", out, scale="tiny", seed=0)  # a new run completes and sweeps the dead run's temp folder
    assert (out / "crossview_meta.json").is_file() and not list(tmp_path.glob(".vigor.partial-*"))


def test_written_images_are_renders_at_the_labelled_positions(vigor_tiny):
    """Re-render from the positions in the file names alone: tiles match bit for bit, panoramas up to JPEG."""
    from crossview.synth import vigor
    from crossview.synth.common import item_rng
    from crossview.synth.scales import VIGOR

    cfg, city = VIGOR["tiny"], "SanFrancisco"
    ci, st = vigor.CITY_ORDER.index(city), CITIES[city]
    world = vigor.city_world(0, city, cfg)
    mpp = vigor.tile_mpp(city, cfg["tile"])
    names = (vigor_tiny / "splits" / city / "satellite_list.txt").read_text().split()
    for k in (0, 5, 15):
        lat, lon = map(float, names[k][len("satellite_"):-len(".png")].split("_"))
        e0, n0 = latlon_to_enu(lat, lon, st.lat0, st.lon0)
        tile = cam.render_tile(world, float(e0), float(n0), mpp, cfg["tile"], item_rng(0, vigor.LAYOUT_KEY, ci, 1, k))
        assert np.array_equal(np.asarray(Image.open(vigor_tiny / "satellite" / city / names[k])), tile)
    panos = [p for p in _pose_lines(vigor_tiny) if p["city"] == city and p["camera"] == "panorama"]
    for k in (0, 7):
        _, plat, plon, _ = Path(panos[k]["image"]).name.split(",")
        e, n = latlon_to_enu(float(plat), float(plon), st.lat0, st.lon0)
        rng = item_rng(0, vigor.LAYOUT_KEY, ci, 3, k)
        H, W = cfg["pano_hw"]
        img = cam.render_panorama(world, float(e), float(n), 2.0, W, H, cam.random_look(rng), rng,
                                  cam.ray_distances(cfg["ray_samples"]))
        def pool(a, h=H, w=W):  # 4x4 means: sensor noise and JPEG blocks average out, geometry stays
            return np.asarray(a, float).reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3))

        disk = pool(Image.open(vigor_tiny / panos[k]["image"]))
        img = pool(img)
        assert np.abs(disk - img).mean() < 4.0
        shifted = cam.render_panorama(world, float(e) + 3.0, float(n), 2.0, W, H, cam.random_look(
            item_rng(0, vigor.LAYOUT_KEY, ci, 3, k)), item_rng(0, vigor.LAYOUT_KEY, ci, 3, k),
            cam.ray_distances(cfg["ray_samples"]))
        assert np.abs(disk - pool(shifted)).mean() > 2 * np.abs(disk - img).mean()  # the check can tell 3 m apart


def test_drone_view_of_planted_tower(planted):
    w, (ce, cn), (te, tn, half, th), _ = planted
    pose = cam.DronePose((ce - 5.0, cn - 20.0, 70.0), (te, tn, th / 2), 60.0, 160, 120)
    img = cam.render_drone(w, pose, cam.Look(noise=0.0), np.random.default_rng(0), n_steps=200)
    ys, xs = np.nonzero(_mask(img, MAGENTA))
    # the tower is a box in the street frame: project its 8 corners; the blob spans their image extent
    a = w.angle
    corners = []
    for su in (-1, 1):
        for sv in (-1, 1):
            for z in (0.0, th):
                u, v = su * half, sv * half
                corners.append((te + u * np.cos(a) - v * np.sin(a), tn + u * np.sin(a) + v * np.cos(a), z))
    cx, cy, cz = cam.drone_pixel(*np.array(corners).T, pose)
    assert (cz > 0).all()
    assert abs(xs.min() - cx.min()) < 1.0 and abs(xs.max() + 1 - cx.max()) < 1.0
    assert abs(ys.min() - cy.min()) < 1.0 and abs(min(ys.max() + 1, 120) - min(cy.max(), 120)) < 1.0
    x0, y0, _ = cam.drone_pixel(te, tn, th / 2, pose)
    assert (x0, y0) == pytest.approx((80.0, 60.0))  # look-at target at the principal point


def test_dense_scale_is_small_with_more_panoramas_and_vigor_only(tmp_path):
    from crossview.errors import ConfigError
    from crossview.synth import generate
    from crossview.synth.scales import VIGOR

    dense, small = VIGOR["dense"], VIGOR["small"]
    assert {k: v for k, v in dense.items() if k not in ("panos", "pinholes")} == \
        {k: v for k, v in small.items() if k not in ("panos", "pinholes")}
    assert dense["panos"] >= 6 * small["panos"]
    with pytest.raises(ConfigError, match="does not exist for the cvusa layout"):
        generate("cvusa", tmp_path / "x", scale="dense")
