"""The photo -> pose pipeline: :class:`Locator` (loaded once, locates many photos) and :func:`locate`."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from crossview.errors import ConfigError, CrossviewError
from crossview.fine.pose import Pose
from crossview.geometry.geo import distance_m, latlon_to_offset, offset_to_latlon
from crossview.io import write_json_atomic
from crossview.locate.area import tiles_near
from crossview.locate.draw import draw_result, draw_thumbnail
from crossview.locate.models import (
    fine_cameras,
    fine_localize,
    has_view,
    is_path,
    load_fine_localizer,
    load_retrieval,
    resolve_checkpoint,
    retrieval_identity,
    run_median_error,
)
from crossview.locate.options import LocateOptions
from crossview.locate.photo import Photo, pinhole_to_panorama, read_photo
from crossview.locate.priors import Priors, contradictions, resolve_priors
from crossview.locate.result import Candidate, FinePose, Result
from crossview.locate.scan import ScanConfig, Walk, best_walk, walk_area
from crossview.locate.tilesource import tile_source
from crossview.locate.uncertainty import calibration_key, calibration_path, load_calibration, radii, raw_uncertainty
from crossview.tiles import Tile


def _gps_sigma(priors: Priors) -> float | None:
    """The GPS fix's stated accuracy (m, one standard deviation) when the search area came from an EXIF fix that
    states it; None otherwise (the area is then a uniform disc)."""
    if priors.sources.get("near") != "exif":
        return None
    acc = (priors.exif or {}).get("accuracy_m")
    return float(acc) if isinstance(acc, int | float) and acc > 0 else None


class Locator:
    """Loaded once, locates many photos: the index, its retrieval model, the tiles, and optionally a fine model.

    ``index``: a path saved by :func:`index_tiles` (or any crossview index whose ids are tile ids of ``tiles``);
    ``model``: the retrieval checkpoint when the index does not record it; ``tiles``: a manifest when the index
    does not record it; ``fine_model``: a fine-localization run or checkpoint (an official checkpoint with
    ``fine_arch``, e.g. ``hcnet_vigor``, and the release's other files joined by commas or, for its backbone, as
    ``fine_backbone``: FG²'s ``dinov2_vitl14_pretrain.pth``); ``refine``: tiles refined per photo (when the
    request's :class:`LocateOptions` does not say); ``scan``: the ``--fine-search scan`` grid and walks;
    ``precision``: ``auto`` (bf16 on a CPU with native bf16, else fp32; the default of ``crossview locate`` and
    ``crossview serve`` too, so the three give one answer), ``fp32`` or ``bf16``; ``tile_cache``: where tiles cut
    from the rasters of a region index are kept (default: a temporary folder; :mod:`crossview.locate.tilesource`);
    ``trust_checkpoint``: the fine checkpoint is unpickled without restriction (``--trust-checkpoint``; by default
    no code in it runs).
    """

    def __init__(self, index: str | os.PathLike, *, model: str | os.PathLike | None = None,
                 tiles: str | os.PathLike | None = None, fine_model: str | os.PathLike | None = None,
                 fine_arch: str | None = None, refine: int = 3, device: str = "cpu", precision: str = "auto",
                 trust_checkpoint: bool = False, arch: str | None = None,
                 fine_backbone: str | os.PathLike | None = None, scan: ScanConfig | None = None,
                 tile_cache: str | os.PathLike | None = None):
        from crossview.device import cpu_precision
        from crossview.search.index import load_index

        self.index_path, self.device, self.refine = Path(index), device, int(refine)
        self.precision = cpu_precision(precision, device)  # fp32 | bf16: see crossview.device
        self.index = load_index(self.index_path)
        meta = self.index.meta
        ckpt = model if model is not None else meta.get("checkpoint")
        if ckpt is None:
            raise ConfigError(f"index {index} does not record its retrieval model: pass --model RUN (the run that "
                              "embedded its tiles), or build it with `crossview locate-index`")
        self.checkpoint = resolve_checkpoint(ckpt) if is_path(ckpt) else None
        arch = arch if model is not None else meta.get("arch")  # the released variant the index was built as
        self.model = load_retrieval(self.checkpoint or ckpt, device, self.precision, arch, trust_checkpoint)
        self.index.check_query_model(retrieval_identity(self.model),
                                     what=f"the retrieval model {self.checkpoint or ckpt}")
        # index id -> Tile: a flat index's manifest in memory, a region index's tiles read around each photo
        self.tiles = tile_source(self.index, tiles or meta.get("tiles_manifest"), f"index {index}", tile_cache)
        # a release of several files (comma-joined) is recorded by its first file
        self.fine_path = Path(str(fine_model).split(",")[0]) if fine_model is not None and is_path(fine_model) \
            else None
        self.fine, self.fine_method = load_fine_localizer(fine_model, device, fine_arch, self.precision,
                                                          trust_checkpoint, fine_backbone) \
            if fine_model is not None else (None, None)
        self.fine_median_m = run_median_error(fine_model) if fine_model is not None else None
        self.calibration_path = calibration_path(self.fine_path, self.index_path)
        self.calibration = load_calibration(self.calibration_path)
        self.scan = scan or ScanConfig()

    @property
    def scan_spacing_m(self) -> float:
        """The scan's start-grid spacing (m)."""
        return self.scan.spacing_m

    def describe(self) -> dict[str, Any]:
        """What is loaded: the index (name, tile count), its retrieval model and the fine model."""
        return {"index": self.index_path.name, "tiles": len(self.index), "model": self.index.meta.get("name"),
                "fine_model": self.fine_path.name if self.fine_path else self.fine_method,
                "precision": self.precision}

    # -- stages --
    def embed(self, photo: Photo, heading_prior: tuple[float, float] | None) -> np.ndarray:
        """The photo's L2-normalised descriptor (1, D) with the index's retrieval model: a panorama is first turned so
        that its believed north (the prior's centre) is in the middle; a pinhole photo is painted into a panorama
        canvas at that heading."""
        import torch
        from PIL import Image

        from crossview.models import input_spec

        view = "drone" if photo.camera == "drone" else "ground"
        if not has_view(self.model, view):
            raise CrossviewError(f"the index's retrieval model ({self.index.meta.get('name')}) does not embed "
                                 f"{photo.camera} images; use an index built with a model for that view")
        (h, w), mean, std = input_spec(self.model, view)
        if photo.camera == "pinhole":
            pano = pinhole_to_panorama(np.asarray(photo.image), photo.fov_deg, (h, w),
                                       heading_prior[0] if heading_prior else 0.0)
            x = torch.from_numpy(pano).permute(2, 0, 1)
        else:
            x = torch.from_numpy(np.array(photo.image.resize((w, h), Image.BILINEAR), dtype=np.uint8))
            x = x.permute(2, 0, 1)
            if photo.camera == "panorama" and heading_prior:
                # the models are trained on north-aligned panoramas: turn the centre column to face north
                from crossview.geometry.cameras import roll_panorama

                x, _ = roll_panorama(x, -heading_prior[0])
        from crossview.data.transforms import normalize
        from crossview.device import as_input, inference_autocast

        with torch.no_grad(), inference_autocast(self.precision, self.device):
            d = self.model.embed(as_input(normalize(x[None].to(self.device), mean, std), self.precision), view=view)
        return torch.nn.functional.normalize(d.float(), dim=1).cpu().numpy()

    def search(self, desc: np.ndarray, top_k: int,
               area: tuple[float, float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``top_k`` best tiles for one descriptor, optionally only those within the search ``area``."""
        n = len(self.index)
        if area is None:
            return self.index.search(desc, min(top_k, n))
        if hasattr(self.index, "search_near"):  # a region index: only the cells that meet the area are read
            scores, ids = self.index.search_near(desc, top_k, area)
            if ids[0][0] is None:
                raise CrossviewError(f"no tile of the index {self.index_path} comes within {area[2]:g} m of "
                                     f"{area[0]:.6f},{area[1]:.6f}: widen the radius of --near or check the "
                                     "coordinates (latitude first)")
            keep = [j for j, t in enumerate(ids[0]) if t is not None]
            return scores[:, keep], ids[:, keep]
        allowed = tiles_near(self.tiles.geometry, *area)
        if not allowed.any():
            raise CrossviewError(f"no tile of the index {self.index_path} comes within {area[2]:g} m of "
                                 f"{area[0]:.6f},{area[1]:.6f}: widen the radius of --near or check the coordinates "
                                 "(latitude first)")
        k = min(n, max(256, 16 * top_k))
        while True:  # grow the candidate list until enough allowed tiles are in it (or it holds them all)
            scores, rows = self.index.search_rows(desc, k)
            keep = [j for j, r in enumerate(rows[0]) if r >= 0 and allowed[r]][:top_k]
            if len(keep) >= min(top_k, int(allowed.sum())) or k >= n:
                break
            k = min(n, 4 * k)
        ids = np.asarray([self.index.ids[rows[0][j]] for j in keep], dtype=object)[None]
        return scores[:, keep], ids

    def _refine_candidate(self, photo: Photo, c: Candidate, prior, area) -> Candidate:
        """Fine pose of ``photo`` in candidate ``c``'s tile, stored in ``c.pose`` (lat/lon, confidence, in_area)."""
        pose = self.refine_in(photo, self.tiles[c.tile], prior)
        lat, lon = (float(v) for v in offset_to_latlon(c.lat, c.lon, pose.x_m, pose.y_m))
        in_area = None if area is None else bool(distance_m((lat, lon), area[:2]) <= area[2])
        c.pose = FinePose(float(pose.x_m), float(pose.y_m), lat, lon,
                          None if pose.heading_deg is None else float(pose.heading_deg), float(pose.confidence),
                          in_area)
        return c

    def _recentre(self, photo: Photo, best: Candidate, cands: list[Candidate], prior, area) -> Candidate:
        """The answer refined again in the tile whose centre is nearest to it, when the two agree within a quarter
        tile; else ``best`` unchanged. The extra tile joins ``cands`` (``source="recentre"``)."""
        here = (best.pose.lat, best.pose.lon)
        tid = self._nearest_id(*here)
        if tid == best.tile:
            return best
        c = next((c for c in cands if c.tile == tid), None)
        if c is None:
            t = self.tiles.geometry_of(tid)
            c = Candidate(len(cands) + 1, tid, None, t.lat, t.lon, t.mpp, str(t.path), source="recentre")
            cands.append(c)
        if c.pose is None:
            self._refine_candidate(photo, c, prior, area)
        t = self.tiles.geometry_of(tid)
        agree = distance_m(here, (c.pose.lat, c.pose.lon)) <= 0.25 * max(t.width, t.height) * t.mpp
        return c if agree and c.in_area else best

    def _calibrate(self, result: Result, area: bool) -> None:
        """The raw uncertainty becomes the calibrated 68 % radius (``uncertainty_m``) and 95 % radius when the
        locator has a calibration for this kind of answer (:mod:`crossview.locate.calibrate`). A posterior's own
        credible radii stand when there is no calibration for it."""
        key = calibration_key(result.method + (f"-{result.search}" if result.search else ""), area,
                              bool(result.flags))
        r = radii(self.calibration, key, result.uncertainty_m)
        if r is None and result.posterior is not None:
            own = result.posterior["radii_m"]
            result.uncertainty = {"68": own["68"], "95": own["95"], "calibrated": False, "from": "posterior",
                                  "raw_m": own["68"], "kind": key}
            return
        result.uncertainty = {"68": r["68"] if r else None, "95": r["95"] if r else None, "calibrated": r is not None,
                              "raw_m": result.uncertainty_m, "kind": key}
        if r is not None:
            result.uncertainty["calibration"] = str(self.calibration_path)
            result.uncertainty_m = r["68"]

    def refine_in(self, photo: Photo, tile: Tile, heading_prior: tuple[float, float] | None) -> Pose:
        """The fine model's Pose of ``photo`` inside ``tile`` (metres east/north of its centre)."""
        return fine_localize(self.fine, photo, tile, heading_prior, self.device, self.precision)

    def locate(self, photo: str | os.PathLike | Photo, options: LocateOptions | None = None, *,
               out: str | os.PathLike | None = None, **overrides: Any) -> dict[str, Any]:
        """Locate one photo; returns (and with ``out`` writes ``locate.json`` + ``locate.png``) the answer as a
        JSON-ready dict (``locate_result`` gives the typed :class:`Result`). Options as :meth:`locate_result`."""
        return self.locate_result(photo, options, out=out, **overrides).to_dict()

    def locate_result(self, photo: str | os.PathLike | Photo, options: LocateOptions | None = None, *,
                      out: str | os.PathLike | None = None, **overrides: Any) -> Result:
        """Locate one photo with ``options`` (:class:`LocateOptions`; ``overrides``: its fields by name).

        ``near``: a search area (a rough GPS fix): only tiles whose footprint comes within its radius of the point
        are ranked, and refined answers outside it are dropped. ``recentre``: after fine localization, refine once
        more in the index's tile centred nearest the answer (fine models are trained with the camera near the tile
        centre) and keep that answer when it agrees.
        Without ``near`` / ``heading_prior`` the photo's EXIF GPS fix and compass direction are used (``"none"``
        turns a prior off, ``use_exif=False`` ignores the EXIF); ``Result.priors`` records where each came from, and
        ``Result.flags`` lists how the answer contradicts them (such an answer is not ``confident``).
        ``fine_search``: ``tiles`` refines the ``refine`` best retrieved tiles; ``scan`` (needs a search area)
        walks the fine model to the camera in windows centred anywhere in the area (:mod:`crossview.locate.scan`);
        ``posterior`` (a BEVPost fine model) scores every position × heading of the search area at once
        (:mod:`crossview.locate.posterior`; without a search area, around the best retrieved tile); ``auto``:
        posterior for a BEVPost model, else tiles.
        """
        o = LocateOptions.of(options, **overrides)
        fine_search = self._fine_search(o.fine_search)
        if not isinstance(photo, Photo):
            photo = read_photo(photo, o.camera, o.fov_deg, use_exif=o.use_exif)
        priors = resolve_priors(photo, o.near, o.heading_prior, o.use_exif)
        self._drop_fix_outside_index(priors)
        prior, area = priors.heading, priors.near
        top_k = o.top_k
        refine = self.refine if o.refine is None else o.refine
        cands = self._candidates(*self.search(self.embed(photo, prior), top_k, area))
        cameras = fine_cameras(self.fine) if self.fine is not None else ()
        use_fine = refine > 0 and photo.camera in cameras
        common = {"photo": str(photo.path), "camera": photo.camera, "fov_deg": photo.fov_deg,
                  "heading_prior": list(prior) if prior else None, "near": list(area) if area else None,
                  "priors": priors.to_dict(), "candidates": cands, "index": str(self.index_path),
                  "model": self.index.meta.get("name"), "precision": self.precision}
        post = None
        if use_fine and fine_search == "posterior":
            best, result, post = self._posterior_answer(photo, cands, prior, area, priors, common)
        elif use_fine and fine_search == "scan":
            if area is None:
                raise ConfigError("--fine-search scan searches a search area: give --near LAT,LON±R_M (or a photo "
                                  "with an EXIF GPS fix)")
            best, result = self._scan_answer(photo, cands, prior, area, common)
        elif use_fine:
            best, result = self._fine_answer(photo, cands, refine, prior, area, o.recentre, common)
        else:
            best = cands[0]
            t = self.tiles.geometry_of(best.tile)
            result = Result("retrieval", best.lat, best.lon, 0.0, 0.0, None, best.score,
                            0.5 * max(t.width, t.height) * t.mpp, best.tile, **common)
            if self.fine is not None and refine > 0:
                result.note = (f"the fine model ({self.fine_method}) places {' and '.join(cameras)} images, not "
                               f"{photo.camera} ones: the tile centre is reported")
        if result.heading_deg is None and prior is not None:
            result.heading_deg, result.heading_from = prior[0], "prior"
        result.flags = contradictions(result.lat, result.lon, result.heading_deg, priors,
                                      heading_estimated=result.heading_from is None)
        self._calibrate(result, area is not None)
        for c in cands:
            c.chosen = c is best
        if out is not None:
            self._write_result(Path(out), result, best, cands, o.thumbnails, post)
        return result

    def _fine_search(self, fine_search: str) -> str:
        """The fine search a request gets: ``auto`` is ``posterior`` for a posterior model, else ``tiles``; a
        posterior model does nothing else, and nothing else does a posterior."""
        is_post = self.fine is not None and hasattr(self.fine, "map_embedding")
        if fine_search == "auto":
            return "posterior" if is_post else "tiles"
        if is_post and fine_search != "posterior":
            raise ConfigError(f"the fine model ({self.fine_method}) is a search-area posterior: use --fine-search "
                              "posterior (or auto)")
        if fine_search == "posterior" and not is_post:
            raise ConfigError(f"--fine-search posterior needs a posterior fine model (e.g. a bevpost run), not "
                              f"{self.fine_method}")
        return fine_search

    def mosaic(self):
        """The index's tiles as one mosaic (:class:`crossview.tiles.mosaic.Mosaic`; for a region index windows cut
        from the tiles around them)."""
        return self.tiles.mosaic()

    def _posterior_answer(self, photo: Photo, cands: list[Candidate], prior, area, priors: Priors,
                          common: dict[str, Any]):
        """The search-area posterior's mode (:mod:`crossview.locate.posterior`) as a Candidate (``source=
        "posterior"``, the index tile nearest the answer), its fine Result, and the PosteriorAnswer. Without a
        search area the area is the best retrieved tile's footprint."""
        from crossview.locate.posterior import search_area_posterior

        if area is None:
            t = self.tiles.geometry_of(cands[0].tile)
            area = (cands[0].lat, cands[0].lon, 0.5 * math.hypot(t.width, t.height) * t.mpp)
        ans = search_area_posterior(self.fine, np.asarray(photo.image), photo.camera, photo.fov_deg, self.mosaic(),
                                    area, prior, gps_sigma_m=_gps_sigma(priors))
        tid = self._nearest_id(ans.lat, ans.lon)
        tile = self.tiles.geometry_of(tid)
        x_m, y_m = (float(v) for v in latlon_to_offset(tile.lat, tile.lon, ans.lat, ans.lon))
        best = Candidate(len(cands) + 1, tid, None, tile.lat, tile.lon, tile.mpp, str(tile.path), source="posterior")
        best.pose = FinePose(x_m, y_m, ans.lat, ans.lon, ans.heading_deg, ans.confidence, True)
        cands.append(best)
        result = Result("fine", ans.lat, ans.lon, x_m, y_m, ans.heading_deg, ans.confidence, ans.radii_m["68"], tid,
                        **common, fine_model=str(self.fine_path) if self.fine_path else self.fine_method,
                        fine_method=self.fine_method, search="posterior")
        result.posterior = ans.summary()
        result.posterior["area"] = list(area)
        return best, result, ans

    def _drop_fix_outside_index(self, priors: Priors) -> None:
        """An EXIF GPS fix whose area holds no tile of the index is noted and ignored (every tile is searched)."""
        area = priors.near
        if area is not None and priors.sources["near"] == "exif" and not self.tiles.any_near(*area):
            priors.notes.append(f"the photo's GPS fix {area[0]:.6f},{area[1]:.6f} (±{area[2]:g} m) is outside the "
                                f"index {self.index_path.name}: all its tiles were searched (pass --near to choose "
                                "the area yourself)")
            priors.sources["near"] = "exif (outside the index, ignored)"
            priors.near = None

    def _candidates(self, scores: np.ndarray, ids: np.ndarray) -> list[Candidate]:
        """The search's tiles as ranked candidates (empty slots skipped); an empty index is an error."""
        cands: list[Candidate] = []
        for rank, (score, tid) in enumerate(zip(scores[0], ids[0]), 1):
            if tid is None:
                continue
            t = self.tiles.geometry_of(tid)
            cands.append(Candidate(rank, tid, float(score), t.lat, t.lon, t.mpp, str(t.path)))
        if not cands:
            raise CrossviewError(f"index {self.index_path} is empty")
        return cands

    def _fine_answer(self, photo: Photo, cands: list[Candidate], refine: int, prior, area, recentre: bool,
                     common: dict[str, Any]) -> tuple[Candidate, Result]:
        """The first ``refine`` candidates refined; (the most confident answer, re-centred, its fine Result)."""
        for c in cands[:refine]:
            self._refine_candidate(photo, c, prior, area)
        refined = cands[:refine]
        # answers outside the search area are not answers (when every one is, the most confident stays)
        best = max([c for c in refined if c.in_area] or refined, key=lambda c: c.confidence)
        if recentre:
            best = self._recentre(photo, best, cands, prior, area)
            refined = [c for c in cands if c.pose is not None]
        p = best.pose
        return best, Result("fine", p.lat, p.lon, p.x_m, p.y_m, p.heading_deg, p.confidence,
                            raw_uncertainty(best, refined, self.tiles.geometry_of(best.tile), self.fine_median_m),
                            best.tile,
                            **common, fine_model=str(self.fine_path) if self.fine_path else self.fine_method,
                            fine_method=self.fine_method)

    def _scan_answer(self, photo: Photo, cands: list[Candidate], prior, area,
                     common: dict[str, Any]) -> tuple[Candidate, Result]:
        """The fine model walked to the camera in windows over the search area (:mod:`crossview.locate.scan`), the
        best walk's end refined once more with the model's full options; its Candidate (``source="scan"``, the
        index tile nearest the answer, added to ``cands``) and fine Result."""
        walks = self.scan_walks(photo, prior, area)
        walk = best_walk(walks, area)
        end = walk.end
        final = self.window_pose(photo, end[0], end[1], prior)
        base, pose = (end, final) if final is not None else (walk.centres[-1], walk.poses[-1])
        lat, lon = (float(v) for v in offset_to_latlon(base[0], base[1], pose.x_m, pose.y_m))
        tid = self._nearest_id(lat, lon)
        tile = self.tiles.geometry_of(tid)
        x_m, y_m = (float(v) for v in latlon_to_offset(tile.lat, tile.lon, lat, lon))
        heading = None if pose.heading_deg is None else float(pose.heading_deg)
        best = Candidate(len(cands) + 1, tid, None, tile.lat, tile.lon, tile.mpp, str(tile.path), source="scan")
        best.pose = FinePose(x_m, y_m, lat, lon, heading, float(pose.confidence),
                             bool(distance_m((lat, lon), area[:2]) <= area[2]))
        cands.append(best)
        ends = [Candidate(0, tid, None, tile.lat, tile.lon, tile.mpp, "", source="walk",
                          pose=FinePose(0.0, 0.0, *w.end, None, w.confidence)) for w in walks]
        result = Result("fine", lat, lon, x_m, y_m, heading, float(pose.confidence),
                        raw_uncertainty(best, ends, tile, self.fine_median_m), tid, **common,
                        fine_model=str(self.fine_path) if self.fine_path else self.fine_method,
                        fine_method=self.fine_method, search="scan")
        result.scan = {"walks": len(walks), "windows": sum(len(w.poses) for w in walks) + 1,
                       "spacing_m": self.scan.spacing_m, "steps": self.scan.steps,
                       "start": list(walk.start), "confidence": walk.confidence}
        return best, result

    def scan_walks(self, photo: Photo, prior: tuple[float, float] | None,
                   area: tuple[float, float, float]) -> list[Walk]:
        """The scan's walks over ``area`` (lat, lon, radius_m) with the fast fine pose (no RANSAC) in each window
        (:func:`crossview.locate.scan.walk_area` with this locator's :class:`ScanConfig`)."""
        return walk_area(area, lambda lat, lon: self.window_pose(photo, lat, lon, prior, ransac=False),
                         self.scan.spacing_m, self.scan.steps, self.scan.settle_m)

    def window_pose(self, photo: Photo, lat: float, lon: float, prior: tuple[float, float] | None,
                    **options: Any) -> Pose | None:
        """The fine pose of ``photo`` in the window centred on (lat, lon) (the size and scale of the nearest
        index tile), metres from that centre; None where no window can be cut (outside the tiles). ``options`` go
        to the fine model's ``predict`` (e.g. ``ransac=False``)."""
        tile = self.tiles.geometry_of(self._nearest_id(lat, lon))
        try:
            window = self.mosaic().window(lat, lon, max(tile.width, tile.height), tile.mpp)
        except CrossviewError:
            return None
        return fine_localize(self.fine, photo, tile, prior, self.device, self.precision, window=window, **options)

    def _nearest_id(self, lat: float, lon: float) -> str:
        """The index id of the tile whose centre is nearest to (lat, lon) (ids key ``self.tiles``; they are not
        always the tiles' own ids, e.g. for an index built from a dataset split)."""
        return self.tiles.nearest(lat, lon)

    def _write_result(self, out: Path, result: Result, best: Candidate, cands: list[Candidate],
                      thumbnails: bool, post: Any = None) -> None:
        """``locate.png`` (the answer drawn on its tile, or on the search area with the posterior's heat map),
        optionally a thumbnail per candidate, and ``locate.json``."""
        out.mkdir(parents=True, exist_ok=True)
        if post is not None:
            _draw_posterior(out, result, post)
        else:
            tile = self.tiles[best.tile]
            x, y = tile.pixel_of(result.x_m, result.y_m)
            draw_result(tile.path, (x, y), result.heading_deg, result.uncertainty_m / tile.mpp,
                        out / "locate.png", caption=_caption(result), flags=result.flags)
        result.picture = "locate.png"
        if thumbnails:
            for c in cands:
                t = self.tiles[c.tile]
                pos = t.pixel_of(c.pose.x_m, c.pose.y_m) if c.pose is not None else None
                c.thumbnail = f"candidate_{c.rank}.jpg"
                draw_thumbnail(t.path, pos, out / c.thumbnail)
        write_json_atomic(out / "locate.json", result.to_dict())


def _draw_posterior(out: Path, result: Result, post: Any) -> None:
    """``locate.png``: the search area's imagery with the posterior as a heat map, the answer (68 % circle, 95 %
    dotted ring, heading), the other modes and the GPS fix; ``posterior.png``: the heat map alone (RGBA, one pixel
    per cell) with its WGS84 bounds in ``result.posterior["bounds"]``, for a map overlay."""
    from PIL import Image

    from crossview.io import atomic_write
    from crossview.locate.draw import heat_overlay

    lat0, lon0, cell = post.window
    p = post.heat.shape[0]
    margin = 4 * (int(post.extras.get("template_cells", 1)) // 2)  # the aerial window's pixels around the positions
    aerial = Image.fromarray(post.aerial[margin: margin + 4 * p, margin: margin + 4 * p]) \
        if post.aerial is not None else Image.new("RGB", (4 * p, 4 * p), (90, 90, 90))
    overlay = heat_overlay(post.heat, 4)

    def px(east: float, north: float) -> tuple[float, float]:
        return 4 * (p / 2 + east / cell), 4 * (p / 2 - north / cell)

    u = result.uncertainty or {}
    r68, r95 = (u.get(k) or post.radii_m[k] for k in ("68", "95"))
    fix = px(0.0, 0.0) if result.near else None
    marks = [px(m["east_m"], m["north_m"]) for m in post.modes[1:]]
    draw_result(aerial, px(post.east_m, post.north_m), result.heading_deg, 4 * r68 / cell, out / "locate.png",
                caption=_caption(result), flags=result.flags, overlay=overlay, marks=marks,
                ring_px=4 * r95 / cell, fix_xy=fix)
    atomic_write(out / "posterior.png", lambda f: heat_overlay(post.heat).save(f, format="PNG"))
    half = 0.5 * p * cell
    (s_lat, w_lon), (n_lat, e_lon) = (offset_to_latlon(lat0, lon0, -half, -half), offset_to_latlon(lat0, lon0, half,
                                                                                                    half))
    result.posterior.update(heat_map="posterior.png", bounds=[[float(s_lat), float(w_lon)],
                                                               [float(n_lat), float(e_lon)]])


def _caption(r: Result) -> str:
    head = "heading ?" if r.heading_deg is None else f"heading {r.heading_deg:.0f}°"
    u = r.uncertainty or {}
    radius = (f"±{u['68']:.1f} m (68 %), ±{u['95']:.1f} m (95 %)" if u.get("calibrated")
              else f"±{u['68']:.1f} m (68 %), ±{u['95']:.1f} m (95 %), from the posterior" if u.get("from")
              else f"±{r.uncertainty_m:.1f} m (uncalibrated)")
    return f"{r.lat:.6f}, {r.lon:.6f}  {head}  {radius}  ({r.method})"


def locate(photo: str | os.PathLike | Photo, index: str | os.PathLike | Locator,
           options: LocateOptions | None = None, *, out: str | os.PathLike | None = None,
           **kwargs: Any) -> dict[str, Any]:
    """One-call form: ``locate(photo, index, LocateOptions(...), out=None, model=None, arch=None, tiles=None,
    fine_model=None, fine_arch=None, fine_backbone=None, device="cpu", precision="fp32", trust_checkpoint=False)``
    -> the answer dict (see :meth:`Locator.locate`). The options may also be given by name; they are checked
    before any model is loaded."""
    load = {k: kwargs.pop(k) for k in LOAD_OPTIONS if k in kwargs}
    options = LocateOptions.of(options, **kwargs)
    if not isinstance(photo, Photo):
        photo = read_photo(photo, options.camera, options.fov_deg, use_exif=options.use_exif)
    if not isinstance(index, Locator):
        index = Locator(index, refine=options.refine or 3, **load)
    return index.locate(photo, options, out=out)


LOAD_OPTIONS = ("model", "arch", "tiles", "fine_model", "fine_arch", "fine_backbone", "device", "precision",
                "trust_checkpoint", "tile_cache")
