"""Retrieval under the limited-FoV protocol (CVUSA/VIGOR): each ground query keeps only a ``fov_deg``-wide sector
of its panorama at a seeded random heading, black elsewhere (:func:`crossview.data.transforms.limited_fov`) -
in place when the orientation is known, rolled to the middle when it is not. References are embedded as usual.

Frames: panoramas are north-centred; headings are degrees clockwise from north.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossview.data.records import Split
from crossview.errors import ConfigError

ORIENTATIONS = ("known", "unknown")


def query_headings(n: int, seed: int = 0) -> np.ndarray:
    """The protocol's per-query headings (degrees clockwise from north), fixed by ``seed``."""
    return np.random.default_rng(seed).uniform(0.0, 360.0, n)


def embed_limited_fov(model: torch.nn.Module, split: Split, fov_deg: float, orientation: str = "unknown", *,
                      seed: int = 0, batch: int = 32, device: str | torch.device = "cpu") -> torch.Tensor:
    """L2-normalised float32 descriptors (N, D) of the split's ground queries cut to ``fov_deg`` at the headings
    of :func:`query_headings`."""
    from crossview.data.images import ImageSource
    from crossview.data.transforms import limited_fov, normalize
    from crossview.search.embed import model_input_spec

    if orientation not in ORIENTATIONS:
        raise ConfigError(f"--orientation {orientation!r}: choose known or unknown")
    if not 0 < fov_deg <= 360:
        raise ConfigError(f"--fov {fov_deg}: give the kept field of view in degrees, 0 < FOV <= 360")
    if split.records and split.records[0].query_view != "ground":
        raise ConfigError(f"--fov applies to panorama (ground) queries; {split.dataset} {split.name} has "
                          f"{split.records[0].query_view} queries")
    size, mean, std = model_input_spec(model, "ground")
    source = ImageSource([str(r.query_path) for r in split.records], tuple(size), None)
    headings = query_headings(len(source), seed)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(source), batch):
            idx = range(start, min(start + batch, len(source)))
            x = torch.stack([limited_fov(source.get(i), fov_deg, float(headings[i]), centre=orientation == "unknown")
                             for i in idx]).to(device)
            d = model.embed(normalize(x, mean, std), view="ground")
            out.append(torch.nn.functional.normalize(d.float(), dim=1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def evaluate_limited_fov(model: torch.nn.Module, split: Split, fov_deg: float, orientation: str = "unknown", *,
                         seed: int = 0, batch: int = 32, device: str | torch.device = "cpu",
                         out: str | os.PathLike | None = None, log=print) -> dict[str, Any]:
    """Recall of ``split`` with limited-FoV queries beside the full panoramas (the same model, tiles and
    metrics); prints one table and, with ``out``, writes ``metrics.json``. Returns ``{"limited_fov": ...,
    "full": ..., "fov_deg", "orientation", "seed"}``."""
    from crossview.evaluate.report import evaluate_descriptors, format_table
    from crossview.io import write_json_atomic
    from crossview.search.embed import embed_images

    refs = embed_images(model, [r.path for r in split.references], "aerial", batch=batch, device=device)
    limited = embed_limited_fov(model, split, fov_deg, orientation, seed=seed, batch=batch, device=device)
    full = embed_limited_fov(model, split, 360.0, "known", seed=seed, batch=batch, device=device)
    m_lim, _, _ = evaluate_descriptors(split, limited, refs, device=device)
    m_full, _, _ = evaluate_descriptors(split, full, refs, device=device)
    log(format_table([(f"{split.dataset} {split.name} FoV {fov_deg:g}° ({orientation} orientation)", m_lim),
                      (f"{split.dataset} {split.name} full panorama", m_full)]))
    record = {"limited_fov": m_lim, "full": m_full, "fov_deg": fov_deg, "orientation": orientation, "seed": seed,
              "queries": len(split.records), "references": len(split.references)}
    if out is not None:
        write_json_atomic(Path(out) / "metrics.json", record)
    return record
