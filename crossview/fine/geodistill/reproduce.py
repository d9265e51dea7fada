"""GeoDistill on the official fixtures (``reproduce_official``): our model run on a fixture's inputs, under the
fixture's output names, for the parity tests."""

from __future__ import annotations

from typing import Any

import torch

from crossview.fine.geodistill.config import DEFAULTS
from crossview.fine.geodistill.convert import convert_official, merge_official
from crossview.fine.geodistill.correlation import centre_crop, g2s_weakly_loss
from crossview.fine.geodistill.model import GeoDistill

__all__ = ["reproduce_official"]


def reproduce_official(fixture: dict[str, Any]) -> dict[str, Any]:
    """Our outputs for an official GeoDistill fixture (``official_geodistill_vigor.pt`` layout), under its names.

    The fixture's float16 weights are cast to float32, merged and converted strictly; its uint8 images are scaled
    to [0, 1] (our model maps them to 2·x − 1 as the official forward does); the teacher sees the full panorama
    (no mask), the student the masked panorama with its uint8 mask, both with the same weights; the orientation
    estimator takes the raw [0, 255] tile and view. Settings come from the fixture's ``config`` (levels, camera
    height, temperatures, ±ori_noise)."""
    from crossview.fine.preprocess import to_unit
    from crossview.fine.registry import fine_config, load_official_state

    over = _fixture_overrides(fixture)
    levels, ori = over["levels"], over["ori_classes"] // 2  # ±ori_noise degrees, one class per degree
    inputs = fixture["inputs"]
    sat_u8 = inputs["sat_uint8"]
    pano_u8 = inputs["resized_pano_uint8"]
    model = GeoDistill(fine_config("geodistill_vigor", **over))
    state = merge_official(fixture["state_dict"], fixture["backbone_state_dict"],
                           fixture.get("orientation_state_dict"))
    load_official_state(model, state, convert_official)
    sat, pano, masked = to_unit(sat_u8), to_unit(pano_u8), to_unit(inputs["masked_pano_uint8"])
    mask = inputs["mask_uint8"]
    mpp = inputs["meter_per_pixel"].float()
    every = lambda x, k: x[:, :, ::k, ::k]  # noqa: E731
    with torch.no_grad():
        sat_tok, pano_tok = model.tokens(sat), model.tokens(pano)
        sat_maps = model.aerial_head(sat_tok, (0, 1, 2))
        teacher = model.encode(None, None, mpp, aerial_maps=sat_maps, ground_tokens=pano_tok, levels=tuple(levels))
        student = model.encode(None, masked, mpp, mask, aerial_maps=sat_maps, levels=tuple(levels))
        d_t, d_s = model.distances(teacher), model.distances(student)
        bd = model.batch_distances(teacher)
        g2s = torch.stack([g2s_weakly_loss(bd[lv].flatten(2).amin(2), model.cfg.contrastive_scale)
                           for lv in levels]).mean()
        distill = model.distill_loss(teacher, student)
        cos = model.cosine(teacher)
        r_eval = model.readout(cos, mpp, "eval3dof")
        r_train = model.readout(cos, mpp, "trainval")
        lv0 = levels[0]
        mask_l0 = _projected_mask(model, mask, student, sat_maps[lv0].shape[-1], mpp, lv0)
        last = levels[-1]
        out: dict[str, Any] = {
            "teacher_corr_train": d_t,
            "student_corr_train": d_s,
            "loss_distill": distill,
            f"sat_feat_level{lv0}_every2": every(sat_maps[lv0], 2),
            f"g2s_feat_level{lv0}": teacher["template"][lv0],
            f"g2s_feat_level{last}_every4": every(teacher["template"][last], 4),
            f"student_mask_level{lv0}": mask_l0,
            f"student_g2s_feat_level{lv0}": student["projected"][lv0],
            "shapes": {"sat_feat": {lv: list(m.shape) for lv, m in sat_maps.items()},
                       "g2s_feat": {lv: list(t.shape) for lv, t in teacher["template"].items()},
                       "corr_train": {lv: list(d.shape) for lv, d in d_t.items()}},
            "dino": {"sat_block11_every4": every(sat_tok[-1], 4), "pano_block11_every4": every(pano_tok[-1], 4),
                     "shapes": [list(t.shape) for t in sat_tok + pano_tok]},
            "corr_val": cos,
            "argmax_index": r_eval["index"],
            "pred_u_px": r_eval["u_px"], "pred_v_px": r_eval["v_px"],
            "pred_u_m_eval3dof": r_eval["u_m"], "pred_v_m_eval3dof": r_eval["v_m"],
            "pred_u_m_trainval": r_train["u_m"], "pred_v_m_trainval": r_train["v_m"],
            f"batchwise_corr_train_level{lv0}": bd[lv0],
            f"batchwise_corr_train_level{last}_min": bd[last].flatten(2).amin(2),
            "loss_g2sweakly": g2s,
        }
        if model.orienter is not None and "bev_uint8" in inputs:
            logits = model.orientation_logits(sat_u8.float(), inputs["bev_uint8"].float(), raw=True)
            out["orientation_logits"] = logits
            out["orientation_pred_deg"] = logits.argmax(1) - ori
    return out


def _fixture_overrides(fixture: dict[str, Any]) -> dict[str, Any]:
    """Our config overrides for an official fixture: its ``config`` settings and its input sizes."""
    cfg = fixture.get("config", {})
    levels = [int(v) for v in cfg.get("levels", DEFAULTS["levels"])]
    ori = int(cfg.get("ori_noise", 45))
    temps = [float(cfg.get("teacher_temp", 0.06)), float(cfg.get("student_temp", 0.06))]
    over = {"levels": levels, "camera_height": abs(float(cfg.get("grd_height", -2))), "temperature": temps,
            "ori_range_deg": float(ori), "ori_classes": 2 * ori, "keep_unused": True}
    if "ema" in cfg:
        over["ema"] = float(cfg["ema"])
    if "dynamic_fov" in cfg:
        over["fov_range_deg"] = [int(v) for v in cfg["dynamic_fov"]]
    sat_u8, pano_u8 = fixture["inputs"]["sat_uint8"], fixture["inputs"]["resized_pano_uint8"]
    over["sat_size"] = int(sat_u8.shape[-1])
    over["pano_size"] = [int(pano_u8.shape[1]), int(pano_u8.shape[2])]
    return over


def _projected_mask(model: GeoDistill, mask: torch.Tensor, student: dict[str, Any], a0: int, mpp: torch.Tensor,
                    lv0: int) -> torch.Tensor:
    """The student's uint8 FoV mask at level ``lv0``, projected to the BEV and centre-cropped (aerial side ``a0``)."""
    side, cell_px = model.bev_geometry(lv0, a0)
    m3 = model.resized_masks(mask, {lv0: tuple(student["ground"][lv0].shape[-2:])}, channels=3)[lv0]
    return centre_crop(model.project(m3, side, mpp * cell_px), int(model.cfg.crop_frac * a0))

