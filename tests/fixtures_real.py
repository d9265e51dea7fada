"""Tiny hand-written dataset trees in the real benchmarks' formats, built in code in a temporary folder.

Each ``make_*`` writes a complete, valid tree (tiny images, the real file and line formats) and returns
its root. Tests break copies of them on purpose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (16, 8), value: int = 0, fmt: str | None = None) -> Path:
    """A small RGB image (``size`` = (width, height)) with a gradient so it is not constant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[..., 0] = (np.arange(w)[None, :] * 7 + value) % 256
    arr[..., 1] = (np.arange(h)[:, None] * 11 + value) % 256
    arr[..., 2] = value % 256
    Image.fromarray(arr).save(path, format=fmt)
    return path


# ---------------------------------------------------------------- VIGOR
VIGOR_TILE = 32  # tiles stored at 32 px: offsets (given at 640 px) scale by 32/640 = 0.05
VIGOR_CITIES = {
    # city: (tiles [(lat, lon)], panoramas [(panoid, lat, lon)])
    "Chicago": ([(41.8800, -87.6300), (41.8801, -87.6300), (41.8800, -87.6301), (41.8801, -87.6301)],
                [("chiA", 41.88002, -87.63002), ("chiB", 41.88008, -87.63001)]),
    "NewYork": ([(40.7500, -73.9900), (40.7501, -73.9900), (40.7500, -73.9901), (40.7501, -73.9901)],
                [("nyA", 40.75003, -73.99004), ("nyB", 40.75007, -73.99002), ("nyC", 40.75009, -73.99008)]),
    "SanFrancisco": ([(37.7700, -122.4100), (37.7701, -122.4100), (37.7700, -122.4101), (37.7701, -122.4101)],
                     [("sfA", 37.77004, -122.41003)]),
    "Seattle": ([(47.6000, -122.3300), (47.6001, -122.3300), (47.6000, -122.3301), (47.6001, -122.3301)],
                [("seA", 47.60001, -122.33001), ("seB", 47.60006, -122.33009)]),
}


def vigor_sat_name(lat: float, lon: float) -> str:
    return f"satellite_{lat}_{lon}.png"


def vigor_pano_name(panoid: str, lat: float, lon: float) -> str:
    return f"{panoid},{lat},{lon},.jpg"


def vigor_offsets(city_i: int, pano_i: int, corrected: bool = False) -> list[tuple[float, float]]:
    """(dr, dc) at 640 px for the positive and three semi-positives of a panorama (hand-chosen numbers)."""
    base = [(20.0 * (pano_i + 1), -40.0 + city_i * 10), (-200.0, 100.0), (150.0, -260.0), (-300.0, -300.0)]
    if corrected:
        base = [(dr + 2.0, dc - 4.0) for dr, dc in base]
    return base


def vigor_label_line(city: str, city_i: int, pano_i: int, corrected: bool = False) -> str:
    tiles, panos = VIGOR_CITIES[city]
    pid, lat, lon = panos[pano_i]
    # positive = tile (pano_i % 4), semi-positives the other three in order
    order = [pano_i % 4] + [t for t in range(4) if t != pano_i % 4]
    cols = [vigor_pano_name(pid, lat, lon)]
    for t, (dr, dc) in zip(order, vigor_offsets(city_i, pano_i, corrected)):
        cols += [vigor_sat_name(*tiles[t]), f"{dr}", f"{dc}"]
    return "  ".join(cols)


def make_vigor(root: Path, corrected: bool = True, cities: tuple[str, ...] = tuple(VIGOR_CITIES)) -> Path:
    """Four cities; in each, the last panorama is the same-area test one, the others train."""
    for city_i, city in enumerate(VIGOR_CITIES):
        if city not in cities:
            continue
        tiles, panos = VIGOR_CITIES[city]
        for t, (lat, lon) in enumerate(tiles):
            write_image(root / "satellite" / city / vigor_sat_name(lat, lon), (VIGOR_TILE, VIGOR_TILE), 10 * t)
        for i, (pid, lat, lon) in enumerate(panos):
            write_image(root / "ground" / city / vigor_pano_name(pid, lat, lon), (32, 16), 5 * i, fmt="JPEG")
        for label_dir, suffix, corr in (("splits", "", False), ("splits__corrected", "__corrected", True)):
            if corr and not corrected:
                continue
            d = root / label_dir / city
            d.mkdir(parents=True, exist_ok=True)
            (d / "satellite_list.txt").write_text("".join(vigor_sat_name(*t) + "\n" for t in tiles))
            lines = [vigor_label_line(city, city_i, i, corr) for i in range(len(panos))]
            (d / f"same_area_balanced_train{suffix}.txt").write_text("\n".join(lines[:-1]) + "\n")
            (d / f"same_area_balanced_test{suffix}.txt").write_text(lines[-1] + "\n")
            (d / f"pano_label_balanced{suffix}.txt").write_text("\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------- CVUSA
CVUSA_IDS = {"train": [1, 2, 4, 5], "test": [3, 6]}
# all.csv row id-1: sat lat, sat lon, ground lat, ground lon, (unused)
CVUSA_LOCATIONS = {
    1: (40.0, -100.0), 2: (40.001, -100.0), 3: (41.0, -100.0), 4: (40.0, -100.003), 5: (42.0, -101.0),
    6: (35.0, -90.0),
}


def make_cvusa(root: Path, locations_at_root: bool = False) -> Path:
    rows = {}
    for split, ids in CVUSA_IDS.items():
        lines = []
        for i in ids:
            sat, pano = f"bingmap/19/{i:07d}.jpg", f"streetview/panos/{i:07d}.jpg"
            write_image(root / sat, (24, 24), i, fmt="JPEG")
            write_image(root / pano, (44, 8), i, fmt="JPEG")
            lines.append(f"{sat},{pano},annotations/{i:07d}.png")
        rows[split] = lines
    (root / "splits").mkdir(parents=True, exist_ok=True)
    (root / "splits" / "train-19zl.csv").write_text("\n".join(rows["train"]) + "\n")
    (root / "splits" / "val-19zl.csv").write_text("\n".join(rows["test"]) + "\n")
    loc = root / ("all.csv" if locations_at_root else "split_locations/all.csv")
    loc.parent.mkdir(parents=True, exist_ok=True)
    loc.write_text("".join(
        f"{lat + 1e-5},{lon + 1e-5},{lat},{lon},0\n" for _, (lat, lon) in sorted(CVUSA_LOCATIONS.items())))
    return root


# ---------------------------------------------------------------- CVACT
CVACT_IDS = ["idA", "idBB", "idC", "idD", "idE", "idF", "idG"]
CVACT_UTM = np.array([[0.0, 0.0], [10.0, 0.0], [500.0, 0.0], [0.0, 20.0], [1000.0, 1000.0], [3.0, 4.0],
                      [7.0, 7.0]])
CVACT_SETS = {"train": [1, 2, 4, 6], "val": [3, 5], "test": [5, 7, 3]}  # 1-based, as in the .mat
CVACT_PANO = (64, 32)  # (width, height) of the tiny panoramas


def make_cvact(root: Path, missing_train_sat: str | None = None, field_names: bool = True) -> Path:
    import scipy.io

    def struct(kind: str, num_field: str, ind_field: str) -> np.ndarray:
        inds = np.asarray(CVACT_SETS[kind], dtype=np.float64).reshape(-1, 1)
        names = (num_field, ind_field) if field_names else ("a_num", "b_ind")
        rec = np.zeros((1, 1), dtype=[(names[0], object), (names[1], object)])
        rec[0, 0] = (np.array([[len(inds)]], dtype=np.float64), inds)
        return rec

    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "ACT_data.mat", {
        "panoIds": np.array(CVACT_IDS, dtype=object).reshape(-1, 1),
        "utm": CVACT_UTM,
        "trainSet": struct("train", "trainNum", "trainInd"),
        "valSet": struct("val", "valNum", "valInd"),
        "valSetAll": struct("test", "valNumAll", "valIndAll"),
    })
    for folder, kinds in (("ANU_data_small", ("train", "val")), ("ANU_data_test", ("test",))):
        for kind in kinds:
            for k in CVACT_SETS[kind]:
                pid = CVACT_IDS[k - 1]
                write_image(root / folder / "streetview" / f"{pid}_grdView.jpg", CVACT_PANO, k, fmt="JPEG")
                if pid != missing_train_sat:
                    write_image(root / folder / "satview_polish" / f"{pid}_satView_polish.jpg", (20, 20), k,
                                fmt="JPEG")
    return root


# ---------------------------------------------------------------- University-1652
U1652 = {
    "train": {"0001": 3, "0002": 2, "0005": 4},  # class -> drone images
    "query_drone": {"0010": 2, "0011": 3},
    "gallery_satellite": ["0010", "0011", "0900", "0901"],  # 0900/0901 are distractor classes
    "query_satellite": ["0010", "0011"],
    "gallery_drone": {"0010": 3, "0011": 2, "0902": 2},
}


def make_u1652(root: Path) -> Path:
    for cls, n in U1652["train"].items():
        write_image(root / "train" / "satellite" / cls / f"{cls}.jpg", (16, 16), int(cls), fmt="JPEG")
        for j in range(n):
            write_image(root / "train" / "drone" / cls / f"image-{j + 1:02d}.jpeg", (16, 16), j, fmt="JPEG")
    for cls, n in U1652["query_drone"].items():
        for j in range(n):
            write_image(root / "test" / "query_drone" / cls / f"image-{j + 1:02d}.jpeg", (16, 16), j, fmt="JPEG")
    for cls in U1652["gallery_satellite"]:
        write_image(root / "test" / "gallery_satellite" / cls / f"{cls}.jpg", (16, 16), int(cls), fmt="JPEG")
    for cls in U1652["query_satellite"]:
        write_image(root / "test" / "query_satellite" / cls / f"{cls}.jpg", (16, 16), int(cls), fmt="JPEG")
    for cls, n in U1652["gallery_drone"].items():
        for j in range(n):
            write_image(root / "test" / "gallery_drone" / cls / f"image-{j + 1:02d}.jpeg", (16, 16), j, fmt="JPEG")
    return root
