"""HC-Net on the official fixtures (``reproduce_official``): our model run on a fixture's inputs, under the
fixture's output names, for the parity tests."""

from __future__ import annotations

from typing import Any

import torch

from crossview.fine.hcnet.config import DEFAULTS
from crossview.fine.hcnet.convert import convert_official
from crossview.fine.hcnet.model import HCNet, official_loss, yaw_from_points
from crossview.geometry.homography import transform_points

__all__ = ["reproduce_official"]


def reproduce_official(fixture: dict[str, Any]) -> dict[str, Any]:
    """Our outputs for an official HC-Net fixture (``official_hcnet_vigor.pt`` layout), under its output names.

    The fixture's float16 weights are cast to float32 and converted strictly; its uint8 view and tile are scaled
    to [0, 1] (our model maps them to [−1, 1] as the official forward does); the losses use the fixture's
    ``loss_gt`` (``sat_delta_px512`` = the true pixel at 512, ``ori_angle_deg``, ``transformed_center``)."""
    from crossview.fine.preprocess import to_unit

    cfg = fixture.get("config", {})
    overrides = {"iterations": int(cfg.get("iters_lev0", 6)), "image_size": int(cfg.get("image_size", 512)),
                 "sat_size": int(cfg.get("sat_size", 640)), "keep_unused": True}
    loss_w = cfg.get("loss_w")
    if loss_w:
        overrides["loss"] = {**DEFAULTS["loss"], "homography": float(loss_w[0]), "correlation": float(loss_w[1]),
                             "yaw": float(loss_w[2]), "gamma": float(cfg.get("gamma", 0.85)),
                             "temperature": float(cfg.get("temperature", 4.0))}
    from crossview.fine.registry import fine_config, load_official_state

    model = HCNet(fine_config("hcnet_vigor", **overrides))
    load_official_state(model, fixture["state_dict"], convert_official)
    inputs = fixture["inputs"]
    bev = to_unit(inputs["image1_bev_uint8"])
    sat = to_unit(inputs["image2_sat_uint8"])
    s = model.cfg.image_size
    with torch.no_grad():
        out = model(bev, sat)
        flows = torch.stack(out["flow_predictions"])
        h = out["homographies"][-1]
        c = model.centre_px
        pts = torch.tensor([[c, c], [c, c - model.probe_px("train")], [c, c - 10.0 * s / 512]],
                           dtype=h.dtype).expand(h.shape[0], 3, 2)
        mapped = transform_points(h, pts)
        result: dict[str, Any] = {
            "flow_predictions": flows,
            "four_point_disp": flows[-1],
            "corr_map": out["corr"].unsqueeze(3),
            "homography_full_res": h,
            "mapped_points_512": mapped.transpose(1, 2),
            "pred_pixel_640": mapped[:, 0] / s * model.cfg.sat_size,
            "yaw_deg_probe64": yaw_from_points(mapped[:, 0], mapped[:, 1]),
            "yaw_deg_probe10": yaw_from_points(mapped[:, 0], mapped[:, 2]),
        }
        gt = fixture["outputs"].get("loss_gt") if "outputs" in fixture else None
        if gt is not None:
            total, parts = official_loss(model, out, gt["sat_delta_px512"].float(), gt["ori_angle_deg"].float(),
                                         gt["transformed_center"].float())
            result.update({"loss_homography": parts["_hom"], "loss_correlation": parts["_corr"],
                           "loss_total": total, "loss_gt": {k: v.clone() for k, v in gt.items()}})
    return result
