"""FG² on the official fixtures (``reproduce_official``): our model run on a fixture's inputs, under the fixture's
output names, for the parity tests (docs/official_code_notes.md, "Official fixtures")."""

from __future__ import annotations

from typing import Any

import torch

from crossview.fine.fg2.config import DEFAULTS, RansacConfig
from crossview.fine.fg2.convert import convert_official
from crossview.fine.fg2.grids import metric_grid
from crossview.fine.fg2.model import FG2
from crossview.fine.fg2.solver import official_procrustes, official_ransac

__all__ = ["reproduce_official"]



def _fixture_config(fixture: dict[str, Any]) -> dict[str, Any]:
    """fg2_vigor overrides from a fixture's ``config``."""
    cfg = fixture.get("config", {})
    over: dict[str, Any] = {"query_grid": "learned" if "grd_grid_queries" in fixture.get("state_dict", {})
                            else "fixed"}
    for key in ("grd_bev_res", "grd_height_res", "sat_bev_res", "embed_dim", "desc_dim", "temperature"):
        if key in cfg:
            over[key] = type(DEFAULTS[key])(cfg[key])
    for key in ("grid_size_h", "grid_size_v"):
        if key in cfg:
            over[key] = float(cfg[key])
    if "num_samples_matches" in cfg:
        over["num_matches"] = int(cfg["num_samples_matches"])
    if "ground_image_size" in cfg:
        over["ground_size"] = [int(v) for v in cfg["ground_image_size"]]
    if "satellite_image_size" in cfg:
        over["aerial_size"] = int(cfg["satellite_image_size"][0])
    rc = cfg.get("ransac")
    if isinstance(rc, dict):
        over["ransac"] = _ransac_config(rc)
    return over


def _ransac_config(rc: dict[str, Any]) -> dict[str, Any]:
    names = {"it_matches": "it_matches", "num_samples_matches": "num_samples", "it_RANSAC": "it_ransac",
             "num_corr_2d_2d": "min_set", "num_refinements": "refinements", "th_inlier": "th_inlier",
             "th_soft_inlier": "th_soft_inlier"}
    out = dict(DEFAULTS["ransac"])
    for k, v in rc.items():
        if k in names:
            out[names[k]] = type(out[names[k]])(v)
    return out


def _ransac_fixture(fixture: dict[str, Any]) -> dict[str, Any]:
    rc = _ransac_config(fixture.get("ransac", {}))
    size = float(fixture.get("grid_size_h", 71.0))
    prob = fixture["matching_score"].float()
    sat_xy = metric_grid(size, int(fixture.get("sat_bev_res", 41)))
    grd_xy = metric_grid(size, int(fixture.get("grd_bev_res", 41)))
    gen = torch.Generator().manual_seed(int(fixture.get("seed", rc["seed"])))
    sol = official_ransac(prob, sat_xy, grd_xy, RansacConfig(**rc), generator=gen)
    return {"ransac_R": sol["R"], "ransac_t": sol["t"], "ransac_best_soft_inliers": sol["best_soft_inliers"],
            "valid_hypotheses": sol["valid_hypotheses"]}


def _dino_features(fixture: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``dino_feat_ground`` / ``dino_feat_sat``: the fixture's ViT-L (float16 weights) on its two small images."""
    from crossview.fine.dinov2 import DINOv2
    from crossview.fine.preprocess import to_unit

    state = fixture["backbone_state_dict"]
    dim = int(state["cls_token"].shape[-1])
    name = {384: "vit_small_patch14_dinov2", 768: "vit_base_patch14_dinov2",
            1024: "vit_large_patch14_dinov2", 1536: "vit_giant_patch14_dinov2"}[dim]
    dtype = getattr(torch, fixture.get("config", {}).get("dinov2", {}).get("dtype", "float16"))
    with torch.device("meta"):
        dino = DINOv2(name)
    dino = dino.to(dtype).to_empty(device="cpu")
    dino.load_official({k: v.to(dtype) for k, v in state.items()})
    dino.eval()
    out = {}
    for key, name_out in (("dino_image_ground", "dino_feat_ground"), ("dino_image_sat", "dino_feat_sat")):
        img = fixture["inputs"].get(key)
        if img is None:
            continue
        x = to_unit(img) if img.dtype == torch.uint8 else img
        h, w = x.shape[-2:]
        x = x[:, :, : 14 * (h // 14), : 14 * (w // 14)].to(dtype)
        with torch.no_grad():
            out[name_out] = dino(x)["patch"].float()
    return out


def _accepts(fixture: dict[str, Any]) -> bool:
    return "matching_score" in fixture and "state_dict" not in fixture


def reproduce_official(fixture: dict[str, Any]) -> dict[str, Any]:
    """Our outputs for an official FG² fixture, under its output names (``official_fg2_vigor.pt`` layout).

    The CVM weights (float16 -> float32) are converted strictly into ``fg2_vigor`` with the fixture's config;
    the DINO-shaped input features are matched; P and the raw similarity are returned subsampled (every 8th row)
    with full row / column sums; R, t, ``t_sat_px_630`` and ``yaw_deg`` come from the weighted Procrustes on the
    fixture's stored ``sampled_idx`` (the official seed-100 draw; our own seed-100 draw on our P is under
    ``own_draw``); ``ransac_*`` is our RANSAC (seed 101) on our P. The fixture's ViT-L computes ``dino_feat_*``
    in float16. Given a RANSAC fixture (``official_fg2_ransac.pt``: ``matching_score``, no weights), returns
    ``ransac_R``, ``ransac_t`` and ``ransac_best_soft_inliers`` from our RANSAC on the stored score."""
    if _accepts(fixture):
        return _ransac_fixture(fixture)
    from crossview.fine.registry import fine_config, load_official_state

    over = _fixture_config(fixture)
    model = FG2(fine_config("fg2_vigor", backbone=None, **over))  # the fixture feeds DINO-shaped features
    load_official_state(model, fixture["state_dict"], convert_official)
    inp = fixture["inputs"]
    cfg = model.cfg
    with torch.no_grad():
        out = model.forward(inp["grd_feature"].float(), inp["sat_feature"].float())
        prob, sim = out["prob"], out["sim"]
        res: dict[str, Any] = {
            "grd_desc": out["grd_desc"], "sat_desc": out["sat_desc"], "height_index": out["height_index"],
            "matching_score_rows_every_8": prob[:, ::8], "matching_score_original_rows_every_8": sim[:, ::8],
            "matching_score_row_sum": prob.sum(2), "matching_score_col_sum": prob.sum(1),
            "matching_score_total": prob.sum((1, 2)), "matching_score_original_row_max": sim.max(2).values,
        }
        gen = torch.Generator().manual_seed(int(cfg.sample_seed))
        k = int(cfg.num_matches)
        own = model.sample_matches(prob, k, gen)[3]
        stored = fixture.get("outputs", {}).get("sampled_idx")
        idx = stored.long() if stored is not None else own
        n_grd = prob.shape[2]
        x = model.sat_xy[torch.div(idx, n_grd, rounding_mode="trunc")]
        y = model.grd_xy[idx % n_grd]
        w = prob.flatten(1).gather(1, idx)
        r, t, rank_ok = official_procrustes(x, y, w)
        sat_px = float(fixture.get("config", {}).get("released_satellite_image_size", [630])[0])
        res.update({"sampled_idx": idx, "sampled_weights": w, "R": r, "t": t, "ok_rank": rank_ok.all(),
                    "t_sat_px_630": t / cfg.grid_size_h * sat_px,
                    "yaw_deg": torch.rad2deg(torch.atan2(r[:, 1, 0], r[:, 0, 0]))})
        rc = cfg.ransac
        sol = official_ransac(prob, model.sat_xy, model.grd_xy, rc, generator=torch.Generator().manual_seed(rc.seed))
        res.update({"ransac_R": sol["R"], "ransac_t": sol["t"], "ransac_best_soft_inliers": sol["best_soft_inliers"]})
        res["own_draw"] = {"sampled_idx": own, "agreement": (own == idx).float().mean()}
    if "backbone_state_dict" in fixture:
        res.update(_dino_features(fixture))
    return res


reproduce_official.accepts = _accepts  # RANSAC fixtures carry no weights: fixture_arch asks this
