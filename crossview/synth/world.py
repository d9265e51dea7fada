"""The procedural 2.5D world of one city: height (m), albedo (RGB in [0, 1]) and class maps on a metre grid.

Frame: local metres of the city's tangent plane (``geo.py``), east = x, north = y. Grid cell (row r, col c) covers
east in ``[e_min + c*cell, e_min + (c+1)*cell)`` and north in ``(n_max - (r+1)*cell, n_max - r*cell]`` (row 0 is the
northern edge). Everything is drawn from one ``numpy.random.Generator`` so a seed fixes the world bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from crossview.synth.styles import CityStyle

# material / class ids of ``World.cls``
GRASS, ROAD, SIDEWALK, PARKING, MARKING, BUILDING, TREE, CAR, PLAZA = range(9)
CLASS_NAMES = ("grass", "road", "sidewalk", "parking", "marking", "building", "tree", "car", "plaza")


@dataclass
class Buildings:
    """Rotated rectangles: centre (east, north) m, half sizes along the street axes u/v, heights, colours."""

    ce: np.ndarray
    cn: np.ndarray
    hu: np.ndarray
    hv: np.ndarray
    height: np.ndarray
    facade: np.ndarray  # (B, 3)
    glass: np.ndarray  # (B, 3) window colour
    floor: np.ndarray  # floor height (m)
    wspace: np.ndarray  # window spacing (m)


@dataclass
class World:
    style: CityStyle
    cell: float
    e_min: float
    n_max: float
    height: np.ndarray  # (R, C) float32 metres above ground
    albedo: np.ndarray  # (R, C, 3) float32
    cls: np.ndarray  # (R, C) uint8
    bid: np.ndarray  # (R, C) int32 building index or -1
    buildings: Buildings
    angle: float  # street grid angle (rad)
    aerial: np.ndarray = field(repr=False, default=None)  # (R, C, 3) albedo lit for the aerial view

    @property
    def shape(self) -> tuple[int, int]:
        return self.height.shape

    def cell_of(self, e, n):
        """(row, col, inside) of the cells holding points (east, north); indices clipped into the grid."""
        c = np.floor((np.asarray(e) - self.e_min) / self.cell).astype(np.int64)
        r = np.floor((self.n_max - np.asarray(n)) / self.cell).astype(np.int64)
        R, C = self.shape
        inside = (r >= 0) & (r < R) & (c >= 0) & (c < C)
        return np.clip(r, 0, R - 1), np.clip(c, 0, C - 1), inside

    def centre_of(self, r, c):
        """(east, north) of the centre of cell (r, c)."""
        return self.e_min + (np.asarray(c) + 0.5) * self.cell, self.n_max - (np.asarray(r) + 0.5) * self.cell

    def bilinear(self, arr: np.ndarray, e, n) -> np.ndarray:
        """Bilinear sample of a per-cell array (R, C[, k]) at points (east, north), edge-clamped."""
        R, C = self.shape
        x = (np.asarray(e) - self.e_min) / self.cell - 0.5
        y = (self.n_max - np.asarray(n)) / self.cell - 0.5
        x0 = np.floor(x)
        y0 = np.floor(y)
        fx = (x - x0).astype(np.float32)
        fy = (y - y0).astype(np.float32)
        x0 = np.clip(x0.astype(np.int64), 0, C - 1)
        y0 = np.clip(y0.astype(np.int64), 0, R - 1)
        x1 = np.minimum(x0 + 1, C - 1)
        y1 = np.minimum(y0 + 1, R - 1)
        if arr.ndim == 3:
            fx = fx[..., None]
            fy = fy[..., None]
        top = arr[y0, x0] * (1 - fx) + arr[y0, x1] * fx
        bot = arr[y1, x0] * (1 - fx) + arr[y1, x1] * fx
        return top * (1 - fy) + bot * fy


def value_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Smooth noise in [0, 1] with features about ``scale`` cells across (bilinear-upsampled random grid)."""
    R, C = shape
    gr, gc = max(2, int(R / scale) + 2), max(2, int(C / scale) + 2)
    g = rng.random((gr, gc), dtype=np.float32)
    out = ndimage.zoom(g, ((R + scale) / gr, (C + scale) / gc), order=1, mode="nearest", grid_mode=False)
    return np.ascontiguousarray(out[:R, :C])


def _lines(rng: np.random.Generator, lo: float, hi: float, spacing: tuple[float, float]) -> np.ndarray:
    x = lo - rng.uniform(*spacing)
    out = []
    while x < hi + spacing[1]:
        out.append(x)
        x += rng.uniform(*spacing)
    return np.asarray(out)


def _nearest_line(x: np.ndarray, lines: np.ndarray):
    """Index of the block (between lines k-1 and k) and signed offset from the nearest line."""
    k = np.searchsorted(lines, x)
    lo = lines[np.clip(k - 1, 0, len(lines) - 1)]
    hi = lines[np.clip(k, 0, len(lines) - 1)]
    off = np.where(x - lo < hi - x, x - lo, x - hi)
    return k, off


def build_world(style: CityStyle, half_extent: float, rng: np.random.Generator, cell: float = 0.25) -> World:
    """A square city centred on the origin covering ``[-half_extent, half_extent]`` m east and north."""
    n_cells = int(np.ceil(2 * half_extent / cell))
    e_min, n_max = -n_cells * cell / 2, n_cells * cell / 2
    cc = (e_min + (np.arange(n_cells) + 0.5) * cell).astype(np.float32)
    rr = (n_max - (np.arange(n_cells) + 0.5) * cell).astype(np.float32)
    E, N = np.meshgrid(cc, rr)
    a = np.radians(style.grid_angle_deg)
    ca, sa = np.float32(np.cos(a)), np.float32(np.sin(a))
    U = E * ca + N * sa
    V = -E * sa + N * ca
    ext = half_extent * 1.5
    ulines = _lines(rng, -ext, ext, style.block_u)
    vlines = _lines(rng, -ext, ext, style.block_v)
    albedo, cls, btype = _ground_cover(style, rng, cell, U, V, ulines, vlines)

    def uv_to_en(u, v):
        return u * ca - v * sa, u * sa + v * ca

    b = {k: [] for k in ("ce", "cn", "hu", "hv", "height", "facade", "glass", "floor", "wspace")}
    cars: list[tuple[float, float, float, float, np.ndarray]] = []  # (u, v, half u, half v, colour)
    trees: list[tuple[float, float, float, float]] = []  # (east, north, radius, height)
    _block_objects(style, rng, half_extent, ulines, vlines, btype, uv_to_en, b, cars, trees)
    if style.street_tree_spacing > 0:
        _street_objects(style, rng, half_extent, ulines, vlines, uv_to_en, cars, trees)

    bld = Buildings(**{k: np.asarray(v, np.float32) for k, v in b.items()})
    if len(bld.ce) == 0:
        bld = Buildings(*(np.zeros(0, np.float32) for _ in range(4)), np.zeros(0, np.float32),
                        np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), np.zeros(0, np.float32),
                        np.zeros(0, np.float32))
    height = np.zeros((n_cells, n_cells), np.float32)
    bid = np.full((n_cells, n_cells), -1, np.int32)
    world = World(style, cell, e_min, n_max, height, albedo, cls, bid, bld, a)
    _raster_buildings(world, U, V, rng)
    _raster_cars(world, U, V, cars)
    _raster_trees(world, trees, rng)
    world.aerial = aerial_raster(world)
    return world


def _ground_cover(style: CityStyle, rng: np.random.Generator, cell: float, U: np.ndarray, V: np.ndarray,
                  ulines: np.ndarray, vlines: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Albedo and class maps of the flat ground (grass, roads, sidewalks, parking, plazas, road markings) on the
    grid-aligned coordinates ``U``, ``V``, and the block type of every block (0 buildings, 1 park, 2 parking,
    3 plaza)."""
    R, C = U.shape
    ku, du = _nearest_line(U, ulines)
    kv, dv = _nearest_line(V, vlines)
    hw = style.road_width / 2
    road = (np.abs(du) < hw) | (np.abs(dv) < hw)
    walk = ~road & ((np.abs(du) < hw + style.sidewalk) | (np.abs(dv) < hw + style.sidewalk))
    cls = np.full((R, C), GRASS, np.uint8)
    albedo = np.empty((R, C, 3), np.float32)
    albedo[:] = style.grass
    grass_tex = value_noise(rng, (R, C), 6.0 / cell)
    albedo *= (0.75 + 0.5 * grass_tex)[..., None]

    btype = rng.choice(4, size=(len(ulines) + 1, len(vlines) + 1),
                       p=[1 - style.p_park - style.p_parking - 0.03, style.p_park, style.p_parking, 0.03])
    blk = btype[ku, kv]
    interior = ~road & ~walk
    fine = rng.random((R, C), dtype=np.float32)
    asphalt_tex = value_noise(rng, (R, C), 3.0 / cell)

    def paint(mask, colour, cid, tex=None, amp=0.12):
        col = np.asarray(colour, np.float32)
        t = fine[mask] if tex is None else tex[mask]
        albedo[mask] = col * (1 - amp + 2 * amp * t)[:, None]
        cls[mask] = cid

    paint(road, style.road, ROAD, asphalt_tex, 0.1)
    paint(walk, style.sidewalk_colour, SIDEWALK, None, 0.06)
    m = interior & (blk == 2)
    paint(m, np.asarray(style.road) * 1.25, PARKING, asphalt_tex, 0.08)
    m = interior & (blk == 3)
    paint(m, (0.7, 0.64, 0.55), PLAZA, None, 0.1)
    # plaza tiling pattern
    tile_lines = m & ((np.mod(U, 3.0) < 0.15) | (np.mod(V, 3.0) < 0.15))
    albedo[tile_lines] *= 0.8

    # road markings: dashed centre lines outside intersections, zebra crossings beside them
    in_x = (np.abs(du) < hw + style.sidewalk) & (np.abs(dv) < hw + style.sidewalk)
    centre = road & ~in_x & (
        ((np.abs(du) < 0.12) & (np.mod(V, 6.0) < 3.0) & (np.abs(dv) > hw)) |
        ((np.abs(dv) < 0.12) & (np.mod(U, 6.0) < 3.0) & (np.abs(du) > hw)))
    paint(centre, style.centre_line, MARKING, None, 0.04)
    zebra = road & (
        ((np.abs(du) < hw - 0.3) & (np.abs(np.abs(dv) - hw - style.sidewalk - 1.5) < 1.5) &
         (np.mod(U, 1.2) < 0.6)) |
        ((np.abs(dv) < hw - 0.3) & (np.abs(np.abs(du) - hw - style.sidewalk - 1.5) < 1.5) &
         (np.mod(V, 1.2) < 0.6)))
    paint(zebra, (0.9, 0.9, 0.88), MARKING, None, 0.04)
    # parking stalls: two rows of stalls per 14 m, stall width 2.7 m
    pm = interior & (blk == 2)
    pu = np.mod(U, 14.0)
    stall = pm & (((pu > 0.5) & (pu < 5.5)) | ((pu > 8.5) & (pu < 13.5))) & (np.mod(V, 2.7) < 0.14)
    paint(stall, (0.92, 0.92, 0.9), MARKING, None, 0.03)
    return albedo, cls, btype


def _block_objects(style: CityStyle, rng: np.random.Generator, half_extent: float, ulines: np.ndarray,
                   vlines: np.ndarray, btype: np.ndarray, uv_to_en, b: dict, cars: list, trees: list) -> None:
    """Buildings on building blocks, trees in parks and cars in parking lots (appended to ``b``, ``cars``,
    ``trees``)."""
    inner = style.road_width / 2 + style.sidewalk
    lim = half_extent * 1.45
    for iu in range(1, len(ulines)):
        for iv in range(1, len(vlines)):
            u0, u1 = ulines[iu - 1] + inner, ulines[iu] - inner
            v0, v1 = vlines[iv - 1] + inner, vlines[iv] - inner
            ce, cn = uv_to_en((u0 + u1) / 2, (v0 + v1) / 2)
            if abs(ce) > lim or abs(cn) > lim or u1 - u0 < 4 or v1 - v0 < 4:
                continue
            t = btype[iu, iv]
            if t == 0:
                _lots(style, rng, u0, u1, v0, v1, b, cars)
            elif t == 1:
                area = (u1 - u0) * (v1 - v0)
                for _ in range(rng.poisson(style.park_tree_density * area / 100)):
                    e, n = uv_to_en(rng.uniform(u0 + 2, u1 - 2), rng.uniform(v0 + 2, v1 - 2))
                    trees.append((e, n, rng.uniform(2.0, 4.5), rng.uniform(5, 13)))
            elif t == 2:
                for row0 in np.arange(np.floor(u0 / 14) * 14, u1, 14.0):
                    for ru in (row0 + 3.0, row0 + 11.0):
                        for vs in np.arange(np.floor(v0 / 2.7) * 2.7 + 1.35, v1, 2.7):
                            if u0 + 2.5 < ru < u1 - 2.5 and v0 + 1 < vs < v1 - 1 and rng.random() < 0.55:
                                cars.append((ru, vs, 2.2, 0.9, rng.random(3)))


def _street_objects(style: CityStyle, rng: np.random.Generator, half_extent: float, ulines: np.ndarray,
                    vlines: np.ndarray, uv_to_en, cars: list, trees: list) -> None:
    """Street trees along the sidewalks and cars parked in the curb lane of every street (appended)."""
    hw = style.road_width / 2
    inner = hw + style.sidewalk
    ext, lim = half_extent * 1.5, half_extent * 1.45
    for lines, other, along_u in ((ulines, vlines, False), (vlines, ulines, True)):
        for x in lines:
            for side in (-1, 1):
                off = x + side * (hw + style.sidewalk * 0.5)
                s = -ext + rng.uniform(0, style.street_tree_spacing)
                while s < ext:
                    _, dd = _nearest_line(np.asarray([s]), other)
                    if abs(dd[0]) > inner + 3 and rng.random() < 0.8:
                        u, v = (s, off) if along_u else (off, s)
                        e, n = uv_to_en(u, v)
                        if abs(e) < lim and abs(n) < lim:
                            trees.append((e, n, rng.uniform(1.5, 3.0), rng.uniform(5, 10)))
                    s += style.street_tree_spacing * rng.uniform(0.8, 1.2)
                s = -ext + rng.uniform(0, 8)
                while s < ext:
                    _, dd = _nearest_line(np.asarray([s]), other)
                    if abs(dd[0]) > inner + 4 and rng.random() < 0.35:
                        cu = x + side * (hw - 1.3)
                        if along_u:
                            cars.append((s, cu, 2.2, 0.9, rng.random(3)))
                        else:
                            cars.append((cu, s, 0.9, 2.2, rng.random(3)))
                    s += rng.uniform(6, 12)


def _lots(style, rng, u0, u1, v0, v1, b, cars):
    """Split one block into lots (one or two rows) and put a building on each."""
    du, dv = u1 - u0, v1 - v0
    long_u = du >= dv
    short0, short1 = (v0, v1) if long_u else (u0, u1)
    long0, long1 = (u0, u1) if long_u else (v0, v1)
    span = short1 - short0
    rows = [(short0, short1)]
    if span > 26:
        gap = 4.0 if style.alley else 0.0
        mid = (short0 + short1) / 2
        rows = [(short0, mid - gap / 2), (mid + gap / 2, short1)]
    for s0, s1 in rows:
        x = long0
        while x < long1 - 3:
            w = min(rng.uniform(*style.lot_width), long1 - x)
            if long1 - x - w < 4:
                w = long1 - x
            if rng.random() < style.p_empty_lot:
                x += w
                continue
            sb = rng.uniform(0, style.setback, size=4) * np.array([0.3, 0.3, 1, 1])
            l0, l1 = x + sb[0], x + w - sb[1]
            d0, d1 = s0 + sb[2], s1 - sb[3] * rng.uniform(0, 1.5)
            if l1 - l0 > 2.5 and d1 - d0 > 2.5:
                cu, cv = ((l0 + l1) / 2, (d0 + d1) / 2) if long_u else ((d0 + d1) / 2, (l0 + l1) / 2)
                hu, hv = ((l1 - l0) / 2, (d1 - d0) / 2) if long_u else ((d1 - d0) / 2, (l1 - l0) / 2)
                h = float(np.clip(style.height_median * np.exp(rng.normal(0, style.height_sigma)), 3.5,
                                  style.height_max))
                a = np.radians(style.grid_angle_deg)
                b["ce"].append(cu * np.cos(a) - cv * np.sin(a))
                b["cn"].append(cu * np.sin(a) + cv * np.cos(a))
                b["hu"].append(hu)
                b["hv"].append(hv)
                b["height"].append(h)
                pal = style.facade_palette
                b["facade"].append(np.clip(np.asarray(pal[rng.integers(len(pal))]) * rng.uniform(0.85, 1.15, 3),
                                           0, 1))
                b["glass"].append(np.clip(np.array([0.18, 0.24, 0.32]) * rng.uniform(0.6, 1.6)
                                          + rng.uniform(-0.05, 0.05, 3), 0, 1))
                b["floor"].append(style.floor_height * rng.uniform(0.9, 1.15))
                b["wspace"].append(style.window_spacing * rng.uniform(0.8, 1.3))
            x += w


def _window(world: World, ce, cn, hu, hv, pad=0.0):
    r0, c0, _ = world.cell_of(ce - (hu + hv + pad), cn + (hu + hv + pad))
    r1, c1, _ = world.cell_of(ce + (hu + hv + pad), cn - (hu + hv + pad))
    return slice(int(r0), int(r1) + 1), slice(int(c0), int(c1) + 1)


def _raster_buildings(world: World, U, V, rng):
    st = world.style
    a = world.angle
    bl = world.buildings
    for i in range(len(bl.ce)):
        rs, cs = _window(world, bl.ce[i], bl.cn[i], bl.hu[i], bl.hv[i])
        cu = bl.ce[i] * np.cos(a) + bl.cn[i] * np.sin(a)
        cv = -bl.ce[i] * np.sin(a) + bl.cn[i] * np.cos(a)
        lu = U[rs, cs] - cu
        lv = V[rs, cs] - cv
        m = (np.abs(lu) <= bl.hu[i]) & (np.abs(lv) <= bl.hv[i])
        if not m.any():
            continue
        h = np.full(lu.shape, bl.height[i], np.float32)
        pal = st.roof_palette
        roof = np.clip(np.asarray(pal[rng.integers(len(pal))]) * rng.uniform(0.85, 1.15, 3), 0, 1)
        col = np.empty(lu.shape + (3,), np.float32)
        col[:] = roof
        if rng.random() < st.p_gable:  # pitched roof: ridge along the longer side
            if bl.hu[i] >= bl.hv[i]:
                h = h + 0.5 * bl.hv[i] * (1 - np.abs(lv) / bl.hv[i])
                col *= np.where(lv > 0, 1.0, 0.85)[..., None]
            else:
                h = h + 0.5 * bl.hu[i] * (1 - np.abs(lu) / bl.hu[i])
                col *= np.where(lu > 0, 1.0, 0.85)[..., None]
        else:
            edge = (bl.hu[i] - np.abs(lu) < 0.5) | (bl.hv[i] - np.abs(lv) < 0.5)
            col[edge] *= 0.75
            h = h + np.where(edge, 0.6, 0.0)
            for _ in range(rng.integers(0, 4)):  # rooftop boxes (HVAC, stair houses)
                bu, bv = rng.uniform(0.7, 2.5, 2)
                ou = rng.uniform(-1, 1) * max(bl.hu[i] - bu - 0.8, 0)
                ov = rng.uniform(-1, 1) * max(bl.hv[i] - bv - 0.8, 0)
                box = (np.abs(lu - ou) < bu) & (np.abs(lv - ov) < bv)
                h = np.where(box, bl.height[i] + rng.uniform(1.2, 3.0), h)
                col[box] = np.clip(roof * 1.35 + 0.05, 0, 1)
        col *= (0.92 + 0.16 * rng.random(lu.shape, dtype=np.float32))[..., None]
        sub_h = world.height[rs, cs]
        take = m & (h > sub_h)
        sub_h[take] = h[take]
        world.albedo[rs, cs][take] = col[take]
        world.cls[rs, cs][take] = BUILDING
        world.bid[rs, cs][take] = i


def _raster_cars(world: World, U, V, cars):
    a = world.angle
    for cu, cv, hu, hv, colour in cars:
        ce, cn = cu * np.cos(a) - cv * np.sin(a), cu * np.sin(a) + cv * np.cos(a)
        rs, cs = _window(world, ce, cn, hu, hv)
        lu = U[rs, cs] - cu
        lv = V[rs, cs] - cv
        m = (np.abs(lu) <= hu) & (np.abs(lv) <= hv) & (world.height[rs, cs] < 0.5)
        if not m.any():
            continue
        col = np.empty(lu.shape + (3,), np.float32)
        base = 0.15 + 0.75 * np.asarray(colour, np.float32)
        col[:] = base
        long_half = max(hu, hv)
        along = np.abs(lu) if hu >= hv else np.abs(lv)
        col[(along > long_half * 0.25) & (along < long_half * 0.55)] = (0.12, 0.14, 0.17)  # windscreen
        world.height[rs, cs][m] = 1.5
        world.albedo[rs, cs][m] = col[m]
        world.cls[rs, cs][m] = CAR


def _raster_trees(world: World, trees, rng):
    st = world.style
    for e, n, rad, ht in trees:
        r0, c0, inside = world.cell_of(e, n)
        if not inside or world.cls[r0, c0] in (BUILDING, CAR):
            continue
        rs, cs = _window(world, e, n, rad, 0.0)
        ce, cn = world.centre_of(np.arange(rs.start, rs.stop)[:, None], np.arange(cs.start, cs.stop)[None, :])
        rr = np.hypot(ce - e, cn - n) / rad
        m = rr < 1
        h = (ht * (0.45 + 0.55 * np.sqrt(np.clip(1 - rr**2, 0, 1)))).astype(np.float32)
        sub = world.height[rs, cs]
        take = m & (h > sub)
        leaf = np.asarray(st.tree, np.float32) * rng.uniform(0.8, 1.2, 3).astype(np.float32)
        tex = (0.6 + 0.8 * rng.random(h.shape, dtype=np.float32))[..., None]
        col = np.clip(leaf * tex, 0, 1)
        sub[take] = h[take]
        world.albedo[rs, cs][take] = col[take]
        world.cls[rs, cs][take] = TREE
        world.bid[rs, cs][take] = -1


def sun_vector(az_deg: float, el_deg: float) -> np.ndarray:
    """Unit vector (east, north, up) towards the sun."""
    az, el = np.radians(az_deg), np.radians(el_deg)
    return np.array([np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)], np.float32)


def cast_shadows(height: np.ndarray, cell: float, az_deg: float, el_deg: float, step_m: float = 1.0) -> np.ndarray:
    """Boolean map of cells shadowed by taller cells towards the sun (computed on a ``step_m`` grid)."""
    f = max(1, int(round(step_m / cell)))
    R, C = height.shape
    Rp, Cp = -(-R // f) * f, -(-C // f) * f
    hp = np.zeros((Rp, Cp), np.float32)
    hp[:R, :C] = height
    hd = hp.reshape(Rp // f, f, Cp // f, f).max(axis=(1, 3))
    az, el = np.radians(az_deg), np.radians(el_deg)
    dc, dr = np.sin(az), -np.cos(az)  # towards the sun in (col, row)
    rise = np.tan(el) * f * cell
    # height of the shadow surface over each coarse block: the highest occluder ray towards the sun
    roof = np.zeros_like(hd)
    kmax = int(np.ceil(float(hd.max()) / max(rise, 1e-6))) + 1
    H, W = hd.shape
    for k in range(1, kmax + 1):
        oc, orow = int(round(k * dc)), int(round(k * dr))
        src = hd[max(orow, 0):H + min(orow, 0), max(oc, 0):W + min(oc, 0)]
        dst = (slice(max(-orow, 0), H + min(-orow, 0)), slice(max(-oc, 0), W + min(-oc, 0)))
        np.maximum(roof[dst], src - k * rise, out=roof[dst])
    roof = np.repeat(np.repeat(roof, f, 0), f, 1)[:R, :C]
    return height + 0.3 < roof


def aerial_raster(world: World) -> np.ndarray:
    """The albedo as a satellite sees it: sun shading of slopes (trees, pitched roofs) and cast shadows."""
    st = world.style
    s = sun_vector(st.sun_az_deg, st.sun_el_deg)
    gy, gx = np.gradient(world.height, world.cell)  # gy along rows = towards south
    dh_de, dh_dn = gx, -gy
    slope = (world.cls == TREE) | ((world.cls == BUILDING) & (np.hypot(gx, gy) < 1.5))
    nz = 1.0 / np.sqrt(dh_de**2 + dh_dn**2 + 1)
    lam = (-dh_de * s[0] - dh_dn * s[1] + s[2]) * nz / s[2]
    shade = np.where(slope, np.clip(lam, 0.35, 1.3), 1.0).astype(np.float32)
    shadow = cast_shadows(world.height, world.cell, st.sun_az_deg, st.sun_el_deg)
    light = shade * np.where(shadow, 0.45, 1.0).astype(np.float32)
    return np.clip(world.albedo * light[..., None], 0, 1).astype(np.float32)


def plant_tower(world: World, e: float, n: float, half: float, height: float,
                colour=(1.0, 0.0, 1.0)) -> int:
    """Add a square tower of a unique colour (roof and facade) centred at (e, n); returns its building index.

    Used by the geometry tests to check that a known 3-D object lands where the camera models say.
    """
    bl = world.buildings
    i = len(bl.ce)
    col = np.asarray(colour, np.float32)
    for name, val in (("ce", e), ("cn", n), ("hu", half), ("hv", half), ("height", height), ("floor", 1e6),
                      ("wspace", 1e6)):
        setattr(bl, name, np.append(getattr(bl, name), np.float32(val)))
    bl.facade = np.vstack([bl.facade.reshape(-1, 3), col])
    bl.glass = np.vstack([bl.glass.reshape(-1, 3), col])
    a = world.angle
    r0, c0, _ = world.cell_of(e - 2 * half, n + 2 * half)
    r1, c1, _ = world.cell_of(e + 2 * half, n - 2 * half)
    rs, cs = slice(int(r0), int(r1) + 1), slice(int(c0), int(c1) + 1)
    ce, cn = world.centre_of(np.arange(rs.start, rs.stop)[:, None], np.arange(cs.start, cs.stop)[None, :])
    lu = (ce - e) * np.cos(a) + (cn - n) * np.sin(a)
    lv = -(ce - e) * np.sin(a) + (cn - n) * np.cos(a)
    m = (np.abs(lu) <= half) & (np.abs(lv) <= half)
    world.height[rs, cs][m] = height
    world.albedo[rs, cs][m] = col
    world.cls[rs, cs][m] = BUILDING
    world.bid[rs, cs][m] = i
    world.aerial = aerial_raster(world)
    return i
