"""VIGOR: north-aligned panoramas anywhere inside overlapping satellite tiles of four US cities.

Layout (as Sample4Geo/MFRGN read it; the public release's ``<City>/panorama`` + ``<City>/satellite`` is accepted too)::

    ROOT/satellite/<City>/satellite_<lat>_<lon>.png
    ROOT/ground/<City>/<panoid>,<lat>,<lon>,.jpg
    ROOT/splits/<City>/satellite_list.txt
    ROOT/splits/<City>/same_area_balanced_{train,test}.txt       (same-area setting)
    ROOT/splits/<City>/pano_label_balanced.txt                     (cross-area setting)
    ROOT/splits__corrected/<City>/*__corrected.txt                 (SliceMatch's corrected labels, optional)

A label line has 13 whitespace-separated columns: the panorama file name, then four ``satellite dr dc``
triples (the positive, then three semi-positives). ``(dr, dc)`` is the camera's offset from the tile centre
in pixels of the 640-px tile; every repository agrees on ``row = 320 + dr``, ``col = 320 - dc``
(docs/official_code_notes.md, "VIGOR for metric localization"). Tiles stored at another size S are scaled by
S/640. A synthetic world (``crossview_meta.json`` present) declares the tile size its offsets are given at
(``label_tile_px``, its native size) and its metres per pixel per city; both are taken from that file.

City order: the satellite index is the row in the concatenation of the setting's ``satellite_list.txt``
files, in Sample4Geo/MFRGN's order — same-area Chicago, NewYork, SanFrancisco, Seattle; cross-area train
NewYork, Seattle; cross-area test Chicago, SanFrancisco — so indices match the official GPS dictionaries.
A missing city folder is an error: pass ``cities=[...]`` to read a subset on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from crossview.data.readers.common import Scan, read_crossview_meta, read_lines
from crossview.data.records import Record, Reference, Split
from crossview.errors import ConfigError, DatasetError

SAME_AREA_CITIES = ("Chicago", "NewYork", "SanFrancisco", "Seattle")
CROSS_AREA_CITIES = {"train": ("NewYork", "Seattle"), "test": ("Chicago", "SanFrancisco")}
# Metres per pixel of a 640-px zoom-20 tile (hard-coded in the official CCVPE/FG2/G2SWeakly/GeoDistill code).
METRES_PER_PIXEL_640 = {"NewYork": 0.113248, "Seattle": 0.100817, "SanFrancisco": 0.118141, "Chicago": 0.111262}
LABEL_TILE_PX = 640  # the tile size the label offsets are given at
SPLITS = ("train", "test")
LABEL_SETS = {"original": ("splits", ""), "corrected": ("splits__corrected", "__corrected")}
COLUMNS = 13


def label_file_name(area: str, split: str, label_set: str = "original") -> str:
    stem = "pano_label_balanced" if area == "cross" else f"same_area_balanced_{split}"
    return stem + LABEL_SETS[label_set][1] + ".txt"


def default_cities(area: str, split: str) -> tuple[str, ...]:
    """The cities of a setting, in the official concatenation order."""
    return SAME_AREA_CITIES if area == "same" else CROSS_AREA_CITIES[split]


def metres_per_pixel(city: str, tile_px: int | None, meta: dict | None) -> float | None:
    """m/px at the native tile size: the synthetic world's ``crossview_meta.json`` value, else the official
    640-px value scaled by 640/S."""
    meta = meta or {}
    declared = (meta.get("cities") or {}).get(city)
    if isinstance(declared, dict) and "metres_per_pixel" in declared:
        return float(declared["metres_per_pixel"])
    if city in (meta.get("metres_per_pixel") or {}):
        return float(meta["metres_per_pixel"][city])
    if city in METRES_PER_PIXEL_640 and tile_px:
        return METRES_PER_PIXEL_640[city] * LABEL_TILE_PX / tile_px
    return None


def parse_satellite_name(name: str) -> tuple[float, float] | None:
    """``satellite_<lat>_<lon>.png`` → (lat, lon), or None if the name does not follow the pattern."""
    parts = name.rsplit(".", 1)[0].split("_")
    if len(parts) != 3 or parts[0] != "satellite":
        return None
    try:
        return float(parts[1]), float(parts[2])
    except ValueError:
        return None


def parse_panorama_name(name: str) -> tuple[str, float, float] | None:
    """``<panoid>,<lat>,<lon>,.jpg`` → (panoid, lat, lon), or None if malformed."""
    parts = name.split(",")
    if len(parts) != 4 or not parts[0]:
        return None
    try:
        return parts[0], float(parts[1]), float(parts[2])
    except ValueError:
        return None


def _city_dirs(root: Path, city: str) -> tuple[Path, Path]:
    """(satellite folder, panorama folder) of a city in the re-arranged or the official layout."""
    if (root / "satellite" / city).is_dir() or not (root / city).is_dir():
        return root / "satellite" / city, root / "ground" / city
    return root / city / "satellite", root / city / "panorama"


def _tile_size(paths: list[Path], scan: Scan) -> int | None:
    for p in paths:
        if scan.files.exists(p):
            try:
                with Image.open(p) as im:
                    return int(im.size[0])
            except OSError:
                continue
    return None


def read(
    root: Path,
    split: str,
    scan: Scan,
    *,
    area: str = "same",
    label_set: str = "original",
    cities: Sequence[str] | None = None,
) -> Split:
    """One VIGOR split (``train``/``test``) of the ``same`` or ``cross`` area protocol, with the official city
    sets unless ``cities`` is given; ``label_set`` picks the original or the corrected offsets. Every problem found
    is reported through ``scan`` (file:line) rather than raised one at a time."""
    if split not in SPLITS:
        raise ConfigError(f"VIGOR has splits {SPLITS}, not {split!r}")
    if area not in ("same", "cross"):
        raise ConfigError(f"VIGOR area must be 'same' or 'cross', not {area!r}")
    if label_set not in LABEL_SETS:
        raise ConfigError(f"VIGOR label_set must be one of {tuple(LABEL_SETS)}, not {label_set!r}")
    meta = read_crossview_meta(root)
    explicit = cities is not None
    cities = tuple(cities) if explicit else default_cities(area, split)
    label_dir = root / LABEL_SETS[label_set][0]
    absent = [c for c in cities if not (label_dir / c).is_dir()]
    if absent:
        hint = "" if explicit else " (or pass cities=[...] to read_dataset to use a subset on purpose)"
        raise DatasetError(
            f"VIGOR {area}-area {split} needs cities {', '.join(cities)} under {label_dir}",
            [f"missing folder {label_dir / c}: copy this city's split files there{hint}" for c in absent],
        )
    # Real labels give offsets at 640 px; the synthetic world declares its own (its native tile size).
    offset_px = (meta or {}).get("label_tile_px") or (meta or {}).get("tile_size") or LABEL_TILE_PX

    references, sat_index, tile_px = _read_tiles(root, cities, label_dir, label_set, meta, scan)
    records = _read_panoramas(root, cities, label_dir, area, split, label_set, offset_px, sat_index, tile_px, scan)
    return Split(
        dataset="vigor", name=f"{area}-{split}", records=records, references=references,
        meta={"area": area, "label_set": label_set, "cities": list(cities), "tile_px": tile_px},
    )


def _read_tiles(root: Path, cities: Sequence[str], label_dir: Path, label_set: str, meta: dict | None,
                scan: Scan) -> tuple[list[Reference], dict[str, int], dict[str, int | None]]:
    """The satellite tiles of ``cities`` from their ``satellite_list.txt``: (references, tile name -> reference
    index, tile size in pixels per city). Problems go to ``scan``."""
    references: list[Reference] = []
    sat_index: dict[str, int] = {}
    tile_px: dict[str, int | None] = {}
    for city in cities:
        sat_dir, _ = _city_dirs(root, city)
        list_file = label_dir / city / "satellite_list.txt"
        if not list_file.exists() and label_set != "original":
            list_file = root / "splits" / city / "satellite_list.txt"
        lines = read_lines(list_file, scan, f"satellite tiles of {city}")
        if lines is None:
            continue
        tiles = []
        for lineno, line in lines:
            where = f"{list_file}:{lineno}"
            name = line.split()[0]
            gps = parse_satellite_name(name)
            if gps is None:
                scan.problem(f"{where}: malformed satellite name {name!r}; expected satellite_<lat>_<lon>.png")
                continue
            if name in sat_index:
                scan.problem(f"{where}: satellite {name} listed twice")
                continue
            sat_index[name] = -1
            path = sat_dir / name
            scan.image(path, where)
            tiles.append((name, path, gps))
        size = tile_px[city] = _tile_size([t[1] for t in tiles], scan)
        if size is None and tiles:
            scan.problem(f"no readable satellite tile for {city} under {sat_dir}")
        mpp = metres_per_pixel(city, size, meta)
        for name, path, gps in tiles:
            sat_index[name] = len(references)
            references.append(Reference(index=len(references), path=path, view="aerial", gps=gps,
                                        metres_per_pixel=mpp, group=city))

    return references, sat_index, tile_px


def _read_panoramas(root: Path, cities: Sequence[str], label_dir: Path, area: str, split: str, label_set: str,
                    offset_px: float, sat_index: dict[str, int], tile_px: dict[str, int | None],
                    scan: Scan) -> list[Record]:
    """The labelled panoramas of ``cities`` (13 columns: panorama, then the positive and three semi-positive
    tiles each as ``satellite dr dc``); offsets are given at ``offset_px`` and converted to the tiles' pixels."""
    records: list[Record] = []
    fname = label_file_name(area, split, label_set)
    for city in cities:
        _, pano_dir = _city_dirs(root, city)
        label_file = label_dir / city / fname
        lines = read_lines(label_file, scan, f"{area}-area {split} labels of {city}")
        if lines is None:
            continue
        size = tile_px.get(city)
        for lineno, line in lines:
            where = f"{label_file}:{lineno}"
            parts = line.split()
            if len(parts) != COLUMNS:
                scan.problem(
                    f"{where}: expected {COLUMNS} columns (panorama, then positive and 3 semi-positives each as "
                    f"'satellite dr dc'), found {len(parts)}"
                )
                continue
            pano = parse_panorama_name(parts[0])
            if pano is None:
                scan.problem(f"{where}: malformed panorama name {parts[0]!r}; expected <panoid>,<lat>,<lon>,.jpg")
                continue
            try:
                offsets = [(float(parts[2 + 3 * k]), float(parts[3 + 3 * k])) for k in range(4)]
            except ValueError:
                scan.problem(f"{where}: pixel offsets must be numbers, got {parts[2:4] + parts[5:7]}...")
                continue
            idx = []
            for k in range(4):
                name = parts[1 + 3 * k]
                if name not in sat_index:
                    scan.problem(f"{where}: satellite {name} is not in satellite_list.txt of {', '.join(cities)}")
                idx.append(sat_index.get(name))
            path = pano_dir / parts[0]
            exists = scan.image(path, where)
            if None in idx or not exists:
                continue
            pixel_xy = None
            if size:
                s = size / offset_px
                pixel_xy = tuple((size / 2 - dc * s, size / 2 + dr * s) for dr, dc in offsets)
            records.append(Record(
                query_id=pano[0], query_path=path, query_view="ground", positives=(idx[0],),
                semi_positives=tuple(idx[1:]), gps=(pano[1], pano[2]), heading_deg=0.0, pixel_xy=pixel_xy,
                group=city,
            ))
    return records
