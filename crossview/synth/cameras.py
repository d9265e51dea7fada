"""Camera models of the synthetic world: projections (3-D point -> pixel) and renderers.

Frames: world points are local metres (east, north, up) of the city's tangent plane; ``up`` is metres above the
ground. Pixels are continuous (x right, y down) with the origin at the image's top-left *corner*: pixel (col j,
row i) covers ``[j, j+1) x [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``. Headings are degrees clockwise
from north.

- aerial tile (north-up, orthographic, S px, ``mpp`` m/px, centred on (e0, n0)):
  ``x = S/2 + (e - e0)/mpp``, ``y = S/2 - (n - n0)/mpp``; the tile centre is the corner shared by the four
  middle pixels.
- equirectangular panorama (W x H, heading h of its centre column): azimuth ``az`` (clockwise from north) maps
  to ``x = W/2 + wrap(az - h)/360 * W`` (east of a north-up panorama at 3W/4); elevation ``el`` maps to
  ``y = (el_top - el)/(el_top - el_bottom) * H`` (full sphere: el_top = 90, el_bottom = -90).
- pinhole (upright, zero pitch and roll, heading h, horizontal field of view fov): focal ``f = W/2 /
  tan(fov/2)``, principal point (W/2, H/2); ``x = W/2 + f * X/Z``, ``y = H/2 - f * (up - eye)/Z`` with Z the
  distance along the heading and X the distance to its right.
- drone (look-at pinhole from a 3-D position at a target, square pixels, given horizontal fov).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossview.geometry.angles import wrap180
from crossview.synth.world import BUILDING, CAR, GRASS, TREE, World


# ---------------------------------------------------------------- projections
def tile_pixel(e, n, e0: float, n0: float, mpp: float, size: int):
    """World point (east, north) m -> continuous pixel (x, y) in a north-up tile centred at (e0, n0)."""
    return size / 2 + (np.asarray(e) - e0) / mpp, size / 2 - (np.asarray(n) - n0) / mpp


def tile_point(x, y, e0: float, n0: float, mpp: float, size: int):
    """Inverse of :func:`tile_pixel`: continuous pixel (x, y) -> (east, north) m."""
    return e0 + (np.asarray(x) - size / 2) * mpp, n0 - (np.asarray(y) - size / 2) * mpp




def panorama_pixel(e, n, up, cam_e: float, cam_n: float, eye: float, width: int, height: int,
                   heading_deg: float = 0.0, el_top: float = 90.0, el_bottom: float = -90.0):
    """World point -> continuous (x, y) in an equirectangular panorama (see module doc)."""
    de, dn = np.asarray(e) - cam_e, np.asarray(n) - cam_n
    az = np.degrees(np.arctan2(de, dn))
    el = np.degrees(np.arctan2(np.asarray(up) - eye, np.hypot(de, dn)))
    x = (width / 2 + wrap180(az - heading_deg) / 360.0 * width) % width
    y = (el_top - el) / (el_top - el_bottom) * height
    return x, y


def focal_px(width: int, fov_deg: float) -> float:
    return width / 2 / np.tan(np.radians(fov_deg) / 2)


def pinhole_pixel(e, n, up, cam_e: float, cam_n: float, eye: float, heading_deg: float, fov_deg: float,
                  width: int, height: int):
    """World point -> continuous (x, y, depth) in an upright pinhole image; depth <= 0 means behind."""
    h = np.radians(heading_deg)
    de, dn = np.asarray(e) - cam_e, np.asarray(n) - cam_n
    z = de * np.sin(h) + dn * np.cos(h)
    x_r = de * np.cos(h) - dn * np.sin(h)
    f = focal_px(width, fov_deg)
    with np.errstate(divide="ignore", invalid="ignore"):
        return width / 2 + f * x_r / z, height / 2 - f * (np.asarray(up) - eye) / z, z


@dataclass(frozen=True)
class DronePose:
    """A look-at camera: position (east, north, up) m, target point, horizontal fov, image size."""

    pos: tuple[float, float, float]
    target: tuple[float, float, float]
    fov_deg: float
    width: int
    height: int

    def axes(self):
        p, t = np.asarray(self.pos, float), np.asarray(self.target, float)
        fwd = (t - p) / np.linalg.norm(t - p)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        return fwd, right, down


def drone_pixel(e, n, up, pose: DronePose):
    """World point -> continuous (x, y, depth) in a drone image."""
    fwd, right, down = pose.axes()
    d = np.stack([np.asarray(e, float), np.asarray(n, float), np.asarray(up, float)], -1) - np.asarray(pose.pos)
    z = d @ fwd
    f = focal_px(pose.width, pose.fov_deg)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pose.width / 2 + f * (d @ right) / z, pose.height / 2 + f * (d @ down) / z, z


# ---------------------------------------------------------------- view appearance
@dataclass(frozen=True)
class Look:
    """Photometric state of one ground/drone view: sun, season of vegetation, colour balance, noise."""

    sun_az: float = 135.0
    sun_el: float = 40.0
    season: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise: float = 0.02
    zenith: tuple[float, float, float] = (0.32, 0.52, 0.88)
    horizon: tuple[float, float, float] = (0.82, 0.87, 0.94)
    haze_m: float = 400.0


SEASONS = ((1.0, 1.0, 1.0), (1.35, 0.95, 0.45), (0.9, 1.1, 0.8), (1.15, 1.05, 0.75), (0.85, 0.85, 0.9))


def random_look(rng: np.random.Generator) -> Look:
    return Look(
        sun_az=float(rng.uniform(0, 360)), sun_el=float(rng.uniform(20, 65)),
        season=SEASONS[int(rng.integers(len(SEASONS)))],
        gain=tuple(float(g) for g in rng.uniform(0.8, 1.15) * rng.uniform(0.92, 1.08, 3)),
        noise=float(rng.uniform(0.01, 0.035)),
        zenith=tuple(float(c) for c in np.clip(np.array([0.32, 0.52, 0.88]) + rng.normal(0, 0.05, 3), 0, 1)),
        horizon=tuple(float(c) for c in np.clip(np.array([0.82, 0.87, 0.94]) + rng.normal(0, 0.04, 3), 0, 1)),
        haze_m=float(rng.uniform(250, 600)),
    )


def sky(az_rad: np.ndarray, tan_el: np.ndarray, look: Look, phase: np.ndarray) -> np.ndarray:
    """Sky colour for view directions: horizon-to-zenith gradient and soft clouds (``phase``: 6 numbers)."""
    el = np.arctan(tan_el)
    g = np.clip(el / (np.pi / 2), 0, 1)[..., None] ** 0.6
    col = np.asarray(look.horizon, np.float32) * (1 - g) + np.asarray(look.zenith, np.float32) * g
    c = (np.sin(3 * az_rad + phase[0]) * np.sin(7 * el + phase[1]) + 0.6 * np.sin(5 * az_rad + 11 * el + phase[2])
         + 0.4 * np.sin(9 * az_rad - 5 * el + phase[3]))
    cloud = np.clip((c - 0.5) * 1.5, 0, 1)[..., None] * (el > 0.02)[..., None]
    return (col * (1 - 0.8 * cloud) + 0.95 * 0.8 * cloud).astype(np.float32)


def facade_colour(world: World, b: np.ndarray, s: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Facade texture of building(s) ``b`` at along-wall coordinate ``s`` (m) and height ``z`` (m): floors of
    windows with varying brightness, a shop-front ground floor and a cornice."""
    bl = world.buildings
    fac = bl.facade[b]
    glass = bl.glass[b]
    fh = bl.floor[b]
    ws = bl.wspace[b]
    fi = np.floor(z / fh)
    fz = z / fh - fi
    ci = np.floor(s / ws)
    fs = s / ws - ci
    h = ((fi.astype(np.int64) * 73856093) ^ (ci.astype(np.int64) * 19349663) ^ (b.astype(np.int64) * 83492791))
    lit = ((h & 1023) / 1023.0).astype(np.float32)
    win = (fz > 0.3) & (fz < 0.78) & (fs > 0.22) & (fs < 0.78) & (fi >= 1)
    shop = (fi < 1) & (fz > 0.1) & (fz < 0.85) & (np.mod(s, 2 * ws) < 1.5 * ws)
    out = fac.copy()
    out[win] = glass[win] * (0.6 + 0.9 * lit[win, None])
    out[shop] = glass[shop] * 0.7 + 0.08
    cornice = z > bl.height[b] - 0.5
    out[cornice] = np.clip(fac[cornice] * 1.25, 0, 1)
    return out


def _wall_frame(world: World, b: np.ndarray, pe: np.ndarray, pn: np.ndarray):
    """Outward normal (east, north) and along-wall coordinate of hit points on the walls of buildings ``b``."""
    bl = world.buildings
    a = world.angle
    ca, sa = np.cos(a), np.sin(a)
    de, dn = pe - bl.ce[b], pn - bl.cn[b]
    lu = de * ca + dn * sa
    lv = -de * sa + dn * ca
    on_u = np.abs(lu) / np.maximum(bl.hu[b], 1e-3) >= np.abs(lv) / np.maximum(bl.hv[b], 1e-3)
    su = np.sign(lu)
    sv = np.sign(lv)
    ne = np.where(on_u, su * ca, -sv * sa)
    nn = np.where(on_u, su * sa, sv * ca)
    s = np.where(on_u, lv + bl.hv[b], lu + bl.hu[b])
    return ne, nn, s


def _shade_walls(ne, nn, look: Look) -> np.ndarray:
    az, el = np.radians(look.sun_az), np.radians(look.sun_el)
    lam = np.clip(ne * np.sin(az) + nn * np.cos(az), 0, 1) * np.cos(el)
    return (0.45 + 0.7 * lam).astype(np.float32)


def _surface_colour(world: World, look: Look, cls_top: np.ndarray, alb_top: np.ndarray) -> np.ndarray:
    """Ground/roof colour under the view's light: vegetation follows the season."""
    veg = (cls_top == TREE) | (cls_top == GRASS)
    out = alb_top * (0.55 + 0.5 * np.sin(np.radians(look.sun_el)))
    out[veg] *= np.asarray(look.season, np.float32)
    return out


def _refine_wall(world: World, o, d, lo: np.ndarray, hi: np.ndarray, iters: int = 6) -> np.ndarray:
    """Bisection between the last sample above the surface (``lo``) and the first under it (``hi``) along rays
    ``o + s * d`` (per-ray arrays); returns a parameter just inside the object, 2**-iters of the step away."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        r, c, ins = world.cell_of(o[0] + mid * d[0], o[1] + mid * d[1])
        under = o[2] + mid * d[2] <= np.where(ins, world.height[r, c], 0.0)
        hi = np.where(under, mid, hi)
        lo = np.where(under, lo, mid)
    return hi


def ray_distances(n: int, d_min: float = 0.3, d_max: float = 120.0) -> np.ndarray:
    """Sample distances along each ray: geometric spacing, fine near the camera."""
    return np.geomspace(d_min, d_max, n)


def render_upright(world: World, cam_e: float, cam_n: float, eye: float, az_deg: np.ndarray,
                   tan_el: np.ndarray, look: Look, rng: np.random.Generator, dists: np.ndarray,
                   el_band_tan: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render an upright camera whose column ``j`` looks along azimuth ``az_deg[j]`` (clockwise from north) and
    whose pixel (i, j) has elevation tangent ``tan_el[i, j]`` (or a column vector broadcast over columns).

    Returns (image float32 H x W x 3 in [0, 1] before noise, hit distance H x W (inf = sky)). For each column the
    height map is sampled at ``dists``; the running maximum of (h - eye)/d is monotone, so the first sample a ray
    of tangent t passes under is found with one ``searchsorted`` over all columns at once.
    """
    W = len(az_deg)
    tan_el = np.broadcast_to(np.asarray(tan_el, np.float64), (np.shape(tan_el)[0], W))
    H = tan_el.shape[0]
    K = len(dists)
    az = np.radians(np.asarray(az_deg, np.float64))
    se, cn = np.sin(az), np.cos(az)
    PE = cam_e + dists[:, None] * se[None, :]  # (K, W)
    PN = cam_n + dists[:, None] * cn[None, :]
    r, c, inside = world.cell_of(PE, PN)
    h = np.where(inside, world.height[r, c], 0.0)
    A = (h - eye) / dists[:, None]
    lim = 1e3
    M = np.clip(np.maximum.accumulate(A, axis=0), -lim, lim)
    big = 4 * lim
    off = np.arange(W) * big
    flat = (M.T + off[:, None]).ravel()
    t = np.clip(tan_el, -lim + 1e-6, lim - 1e-6)
    idx = np.searchsorted(flat, (t + off[None, :]).ravel(), side="left").reshape(H, W) - (np.arange(W) * K)[None, :]
    hit = idx < K
    out = np.empty((H, W, 3), np.float32)
    depth = np.full((H, W), np.inf)
    # sky
    ii, jj = np.nonzero(~hit)
    phase = rng.uniform(0, 2 * np.pi, 6)
    out[ii, jj] = sky(az[jj], t[ii, jj], look, phase)
    ii, jj = np.nonzero(hit)
    k = idx[ii, jj]
    tt = t[ii, jj]
    d_k = dists[k]
    d_prev = np.where(k > 0, dists[np.maximum(k - 1, 0)], 0.0)
    h_k = h[k, jj]
    top = eye + tt * d_prev >= h_k - 1e-6
    d_top = np.where(tt != 0, (h_k - eye) / np.where(tt != 0, tt, 1.0), d_k)  # where the ray meets z = h_k
    d_hit = np.where(top, np.clip(d_top, d_prev, d_k), d_k)
    wall = ~top
    if wall.any():  # walls: find the face to a fraction of the sample step
        jw = jj[wall]
        d_hit[wall] = _refine_wall(world, (cam_e, cam_n, eye), (se[jw], cn[jw], tt[wall]), d_prev[wall], d_k[wall])
    pe = cam_e + d_hit * se[jj]
    pn = cam_n + d_hit * cn[jj]
    depth[ii, jj] = d_hit
    col = np.empty((len(ii), 3), np.float32)
    # tops: ground and roofs at the exact hit point
    rt, ct, ins = world.cell_of(pe[top], pn[top])
    cls_t = np.where(ins, world.cls[rt, ct], 0)
    alb = world.bilinear(world.albedo, pe[top], pn[top])
    col[top] = _surface_colour(world, look, cls_t, alb)
    # walls: the object the refined hit point is in
    kr, kc, _ = world.cell_of(pe[wall], pn[wall])
    wcls = world.cls[kr, kc]
    wb = world.bid[kr, kc]
    z = np.clip(eye + tt[wall] * d_hit[wall], 0, None)
    wcol = world.albedo[kr, kc] * 0.7
    isb = (wcls == BUILDING) & (wb >= 0)
    if isb.any():
        pw_e, pw_n = pe[wall][isb], pn[wall][isb]
        ne, nn, s = _wall_frame(world, wb[isb], pw_e, pw_n)
        wcol[isb] = facade_colour(world, wb[isb], s, z[isb]) * _shade_walls(ne, nn, look)[:, None]
    tr = wcls == TREE
    wcol[tr] *= np.asarray(look.season, np.float32) * 0.9
    car = wcls == CAR
    wcol[car] = np.where((z[car] > 0.9)[:, None], np.float32(0.15), world.albedo[kr[car], kc[car]] * 0.9)
    col[wall] = wcol
    # aerial perspective
    fog = (1 - np.exp(-d_hit / look.haze_m)).astype(np.float32)[:, None]
    col = col * (1 - fog) + np.asarray(look.horizon, np.float32) * fog
    out[ii, jj] = col
    return out, depth


def add_transients(img: np.ndarray, depth: np.ndarray, az_deg: np.ndarray, tan_el: np.ndarray, eye: float,
                   rng: np.random.Generator, n_max: int = 3) -> None:
    """Paint passing vehicles / pedestrians (present in this ground view only) in front of the scene, in place."""
    tan_el = np.broadcast_to(tan_el, depth.shape)
    for _ in range(int(rng.integers(0, n_max + 1))):
        d = rng.uniform(3.0, 9.0)
        a0 = rng.uniform(-180, 180)
        car = rng.random() < 0.6
        half_w = (2.2 if car else 0.3) / d
        top_h = 1.5 if car else 1.75
        cols = np.abs(np.radians(wrap180(np.asarray(az_deg) - a0))) < half_w
        colour = rng.random(3).astype(np.float32) * (0.8 if car else 0.6) + 0.1
        if not cols.any():
            continue
        lo, hi = -eye / d, (top_h - eye) / d
        m = cols[None, :] & (tan_el >= lo) & (tan_el <= hi) & (depth > d)
        img[m] = colour
        if car:  # dark window band
            img[m & (tan_el >= (1.0 - eye) / d) & (tan_el <= hi - 0.1 / d)] = (0.1, 0.12, 0.15)
        depth[m] = d


def finish(img: np.ndarray, look: Look, rng: np.random.Generator) -> np.ndarray:
    """Colour balance, sensor noise, 8-bit quantisation."""
    out = img * np.asarray(look.gain, np.float32)
    out = out + rng.normal(0, look.noise, out.shape).astype(np.float32)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------- renderers
def render_tile(world: World, e0: float, n0: float, mpp: float, size: int, rng: np.random.Generator,
                supersample: int | None = None, noise: float = 0.012) -> np.ndarray:
    """North-up orthographic tile (uint8 size x size x 3) of the world's aerial raster, box-filtered."""
    ss = supersample or max(1, int(np.ceil(mpp / world.cell)))
    sub = (np.arange(ss) + 0.5) / ss
    x = (np.arange(size)[:, None] + sub[None, :]).ravel()
    e, n = tile_point(x, x, e0, n0, mpp, size)
    E, N = np.meshgrid(e, n)
    img = world.bilinear(world.aerial, E, N).reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    gain = rng.uniform(0.95, 1.05, 3).astype(np.float32)
    img = img * gain + rng.normal(0, noise, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def panorama_angles(width: int, height: int, heading_deg: float = 0.0, el_top: float = 90.0,
                    el_bottom: float = -90.0):
    """(azimuth per column in degrees, elevation tangent per row as a column vector) at pixel centres."""
    az = heading_deg + ((np.arange(width) + 0.5) / width - 0.5) * 360.0
    el = el_top - (np.arange(height) + 0.5) / height * (el_top - el_bottom)
    return az, np.tan(np.radians(np.clip(el, -89.9, 89.9)))[:, None]


def render_panorama(world: World, cam_e: float, cam_n: float, eye: float, width: int, height: int, look: Look,
                    rng: np.random.Generator, dists: np.ndarray, heading_deg: float = 0.0, el_top: float = 90.0,
                    el_bottom: float = -90.0, transients: bool = True) -> np.ndarray:
    az, t = panorama_angles(width, height, heading_deg, el_top, el_bottom)
    img, depth = render_upright(world, cam_e, cam_n, eye, az, t, look, rng, dists)
    if transients:
        add_transients(img, depth, az, t, eye, rng)
    return finish(img, look, rng)


def pinhole_angles(width: int, height: int, heading_deg: float, fov_deg: float):
    f = focal_px(width, fov_deg)
    du = np.arange(width) + 0.5 - width / 2
    dv = np.arange(height) + 0.5 - height / 2
    az = heading_deg + np.degrees(np.arctan2(du, f))
    t = -dv[:, None] / np.sqrt(du[None, :] ** 2 + f**2)
    return az, t


def render_pinhole(world: World, cam_e: float, cam_n: float, eye: float, heading_deg: float, fov_deg: float,
                   width: int, height: int, look: Look, rng: np.random.Generator, dists: np.ndarray,
                   transients: bool = True) -> np.ndarray:
    az, t = pinhole_angles(width, height, heading_deg, fov_deg)
    img, depth = render_upright(world, cam_e, cam_n, eye, az, t, look, rng, dists)
    if transients:
        add_transients(img, depth, az, t, eye, rng)
    return finish(img, look, rng)


def render_drone(world: World, pose: DronePose, look: Look, rng: np.random.Generator, n_steps: int = 160,
                 h_max: float | None = None) -> np.ndarray:
    """Per-pixel ray marching of an oblique drone view (small images)."""
    W, H = pose.width, pose.height
    fwd, right, down = pose.axes()
    f = focal_px(W, pose.fov_deg)
    u = np.arange(W) + 0.5 - W / 2
    v = np.arange(H) + 0.5 - H / 2
    d = fwd[None, None, :] * f + right[None, None, :] * u[None, :, None] + down[None, None, :] * v[:, None, None]
    d = (d / np.linalg.norm(d, axis=-1, keepdims=True)).reshape(-1, 3)
    p = np.asarray(pose.pos, float)
    hm = float(world.height.max()) if h_max is None else h_max
    out = np.empty((len(d), 3), np.float32)
    down_rays = d[:, 2] < -1e-3
    az = np.arctan2(d[:, 0], d[:, 1])
    out[~down_rays] = sky(az[~down_rays], d[~down_rays, 2] / np.hypot(d[~down_rays, 0], d[~down_rays, 1]), look,
                          rng.uniform(0, 2 * np.pi, 6))
    dd = d[down_rays]
    s0 = np.maximum((p[2] - hm) / -dd[:, 2], 0)
    s1 = p[2] / -dd[:, 2]
    frac = np.linspace(0, 1, n_steps)
    S = s0[:, None] + (s1 - s0)[:, None] * frac[None, :]
    PE = p[0] + S * dd[:, 0:1]
    PN = p[1] + S * dd[:, 1:2]
    PZ = p[2] + S * dd[:, 2:3]
    r, c, ins = world.cell_of(PE, PN)
    h = np.where(ins, world.height[r, c], 0.0)
    under = PZ <= h
    under[:, -1] = True
    k = np.argmax(under, axis=1)
    rows = np.arange(len(dd))
    hk = h[rows, k]
    zprev = np.where(k > 0, PZ[rows, np.maximum(k - 1, 0)], np.inf)
    top = zprev >= hk
    s_top = np.clip((p[2] - hk) / -dd[:, 2], S[rows, np.maximum(k - 1, 0)], S[rows, k])
    s_hit = np.where(top, s_top, S[rows, k])
    wall = ~top
    if wall.any():
        dw = dd[wall]
        s_hit[wall] = _refine_wall(world, p, (dw[:, 0], dw[:, 1], dw[:, 2]), S[rows[wall], np.maximum(k[wall] - 1, 0)],
                                   S[rows[wall], k[wall]])
    pe, pn, pz = p[0] + s_hit * dd[:, 0], p[1] + s_hit * dd[:, 1], p[2] + s_hit * dd[:, 2]
    col = np.empty((len(dd), 3), np.float32)
    ct = world.bilinear(world.aerial, pe[top], pn[top])
    rt, cc, it = world.cell_of(pe[top], pn[top])
    veg = np.where(it, (world.cls[rt, cc] == TREE) | (world.cls[rt, cc] == GRASS), False)
    ct[veg] *= np.asarray(look.season, np.float32)
    col[top] = ct
    kr, kc, _ = world.cell_of(pe[wall], pn[wall])
    wb = world.bid[kr, kc]
    wcol = world.albedo[kr, kc] * 0.7
    isb = (world.cls[kr, kc] == BUILDING) & (wb >= 0)
    if isb.any():
        ne, nn, s = _wall_frame(world, wb[isb], pe[wall][isb], pn[wall][isb])
        wcol[isb] = facade_colour(world, wb[isb], s, np.clip(pz[wall][isb], 0, None)) * \
            _shade_walls(ne, nn, look)[:, None]
    col[wall] = wcol
    fog = (1 - np.exp(-s_hit / look.haze_m)).astype(np.float32)[:, None]
    out[down_rays] = col * (1 - fog) + np.asarray(look.horizon, np.float32) * fog
    return finish(out.reshape(H, W, 3), look, rng)
