"""The paper's figures from a model and image tensors: t-SNE of descriptors (Fig. 8) and response maps (Fig. 9).

- :func:`tsne` embeds descriptors in 2-D: scikit-learn's ``TSNE`` when installed, else an exact O(N²) t-SNE in
  numpy (:func:`tsne_exact`; fine for a few thousand points);
- :func:`tsne_figure` plots same-area against cross-area descriptors;
- :func:`response_maps` says which image regions drive the cosine similarity of a matched pair: Grad-CAM on a
  feature map (the gradient of the similarity with respect to the map, averaged per channel, weights the
  channels; positive evidence only) or occlusion (the drop in similarity when a cell is blanked out);
- :func:`response_figure` overlays the maps on the images.

Images given to :func:`response_maps` are normalised float tensors (1, 3, H, W) at the model's input size;
pictures given to the figure functions are uint8 (H, W, 3) arrays. Maps are (H, W) float arrays in [0, 1] in
image pixels (x right, y down, origin top-left).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crossview.io import atomic_write

# --- t-SNE -------------------------------------------------------------------------------------------------------


def _conditional_p(d2: np.ndarray, perplexity: float, tol: float = 1e-5, steps: int = 64) -> np.ndarray:
    """Row-wise Gaussian affinities whose entropy is log(perplexity); bisection on the precision, all rows at once."""
    n = len(d2)
    target = np.log(perplexity)
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    beta = np.ones(n)
    mask = ~np.eye(n, dtype=bool)
    d2 = d2 - np.where(mask, d2, np.inf).min(axis=1, keepdims=True)  # shift per row: stable exp, same P
    for _ in range(steps):
        p = np.exp(-d2 * beta[:, None]) * mask
        s = p.sum(axis=1, keepdims=True)
        p = p / s
        entropy = -(p * np.log(np.maximum(p, 1e-300))).sum(axis=1)
        diff = entropy - target
        if np.all(np.abs(diff) < tol):
            break
        up = diff > 0  # too flat: raise the precision
        lo = np.where(up, beta, lo)
        hi = np.where(up, hi, beta)
        beta = np.where(up, np.where(np.isinf(hi), beta * 2, (beta + hi) / 2),
                        np.where(np.isinf(lo), beta / 2, (beta + lo) / 2))
    return p


def tsne_exact(x: np.ndarray, dim: int = 2, perplexity: float = 30.0, iters: int = 750, seed: int = 0) -> np.ndarray:
    """Exact t-SNE (van der Maaten & Hinton, 2008) of ``x`` (N, D) → (N, ``dim``).

    Standard schedule: early exaggeration 12 for 250 iterations with momentum 0.5, then 0.8; adaptive gains;
    learning rate max(N / 48, 50); PCA initialisation scaled to standard deviation 1e-4.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {n}")
    perplexity = min(perplexity, (n - 1) / 3)
    x = x - x.mean(axis=0)
    sq = (x * x).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
    p = _conditional_p(d2, perplexity)
    p = np.maximum((p + p.T) / (2 * n), 1e-12)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    y = u[:, :dim] * s[:dim]
    if y.shape[1] < dim:  # fewer informative directions than output dimensions
        y = np.concatenate([y, np.random.default_rng(seed).normal(size=(n, dim - y.shape[1]))], axis=1)
    y = y / max(y[:, 0].std(), 1e-12) * 1e-4
    lr = max(n / 48.0, 50.0)
    update, gains = np.zeros_like(y), np.ones_like(y)
    for it in range(iters):
        exaggeration, momentum = (12.0, 0.5) if it < 250 else (1.0, 0.8)
        ys = (y * y).sum(axis=1)
        num = 1.0 / (1.0 + np.maximum(ys[:, None] + ys[None, :] - 2 * y @ y.T, 0))
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        pq = (exaggeration * p - q) * num
        grad = 4.0 * (pq.sum(axis=1)[:, None] * y - pq @ y)
        same_sign = (grad > 0) == (update > 0)
        gains = np.maximum(np.where(same_sign, gains * 0.8, gains + 0.2), 0.01)
        update = momentum * update - lr * gains * grad
        y = y + update
        y = y - y.mean(axis=0)
    return y


def tsne(x: np.ndarray, dim: int = 2, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """2-D embedding of ``x`` (N, D): scikit-learn's (Barnes-Hut) t-SNE if installed, else
    :func:`tsne_exact`."""
    x = np.asarray(x, dtype=np.float64)
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        return tsne_exact(x, dim=dim, perplexity=perplexity, seed=seed)
    perplexity = min(perplexity, (len(x) - 1) / 3)
    return TSNE(n_components=dim, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def _save(fig, out: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=dpi)

    try:
        return atomic_write(out, write)
    finally:
        plt.close(fig)


def tsne_figure(groups: dict[str, np.ndarray], out: str | Path, size_px: tuple[int, int] = (800, 800),
                title: str | None = None, seed: int = 0, perplexity: float = 30.0) -> tuple[Path, np.ndarray]:
    """Embed the descriptors of every group together and scatter them, one colour per group.

    ``groups`` maps a label ("same-area", "cross-area") to (N_i, D) descriptors. Returns the PNG path (exactly
    ``size_px`` = (width, height) pixels) and the 2-D coordinates in group order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(groups)
    arrays = [np.asarray(groups[k], dtype=np.float64) for k in labels]
    xy = tsne(np.concatenate(arrays), perplexity=perplexity, seed=seed)
    dpi = 100
    fig = plt.figure(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi)
    ax = fig.add_axes((0.08, 0.08, 0.88, 0.84))
    start = 0
    for label, a in zip(labels, arrays):
        pts = xy[start:start + len(a)]
        ax.scatter(pts[:, 0], pts[:, 1], s=10, alpha=0.6, label=f"{label} ({len(a)})")
        start += len(a)
    ax.legend(loc="upper right", markerscale=3)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "t-SNE of test descriptors")
    return _save(fig, Path(out), dpi), xy


# --- response maps -------------------------------------------------------------------------------------------


def _feature_layer(model, x: Any, view: str, min_cells: int):
    """The deepest backbone module (else any module) whose 4-D output has at least ``min_cells`` cells."""
    import torch

    root = getattr(model, "backbone", model)
    seen: list[tuple[Any, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, tuple(o.shape)))
                                     if isinstance(o, torch.Tensor) and o.dim() == 4 else None)
             for m in root.modules() if m is not root]
    try:
        with torch.no_grad():
            model.embed(x, view=view)
    finally:
        for h in hooks:
            h.remove()
    good = [m for m, shape in seen if shape[-1] * shape[-2] >= min_cells]
    if not good:
        raise ValueError(f"no 4-D feature map with at least {min_cells} cells in {type(root).__name__}; pass "
                         "layer=... or use method='occlusion'")
    return good[-1]


def _normalise_map(m: np.ndarray) -> np.ndarray:
    m = np.maximum(m, 0)
    top = m.max()
    return m / top if top > 0 else m


def _gradcam(model, query, reference, query_view, reference_view, layers, size_q, size_r):
    import torch
    import torch.nn.functional as F

    acts: dict[str, Any] = {}

    def grab(name, layer):
        return layer.register_forward_hook(lambda m, i, o: acts.__setitem__(name, o))

    maps = []
    # inputs that need gradients: the graph reaches the hooked maps even if every parameter before them is frozen
    query, reference = query.detach().requires_grad_(True), reference.detach().requires_grad_(True)
    with torch.enable_grad():
        h = grab("q", layers[0])
        try:
            dq = model.embed(query, view=query_view)
        finally:
            h.remove()
        h = grab("r", layers[1])
        try:
            dr = model.embed(reference, view=reference_view)
        finally:
            h.remove()
        sim = F.cosine_similarity(dq.float(), dr.float(), dim=-1).sum()
        grads = torch.autograd.grad(sim, [acts["q"], acts["r"]])
    for a, g, size in ((acts["q"], grads[0], size_q), (acts["r"], grads[1], size_r)):
        weights = g.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * a).sum(dim=1, keepdim=True)).float()
        cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[0, 0]
        maps.append(_normalise_map(cam.detach().cpu().numpy()))
    return maps, float(sim.detach())


def _occlusion(model, query, reference, query_view, reference_view, grid: int, batch: int):
    import torch
    import torch.nn.functional as F

    maps = []
    with torch.no_grad():
        dq = model.embed(query, view=query_view)
        dr = model.embed(reference, view=reference_view)
        base = float(F.cosine_similarity(dq, dr, dim=-1)[0])
        for x, view, other in ((query, query_view, dr), (reference, reference_view, dq)):
            _, _, h, w = x.shape
            gy, gx = (grid, max(1, round(grid * w / h))) if w >= h else (max(1, round(grid * h / w)), grid)
            ys = np.linspace(0, h, gy + 1).round().astype(int)
            xs = np.linspace(0, w, gx + 1).round().astype(int)
            fill = x.mean(dim=(2, 3), keepdim=True)
            cells = [(i, j) for i in range(gy) for j in range(gx)]
            drops = np.zeros((gy, gx))
            for start in range(0, len(cells), batch):
                chunk = cells[start:start + batch]
                xb = x.repeat(len(chunk), 1, 1, 1)
                for k, (i, j) in enumerate(chunk):
                    xb[k, :, ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = fill[0]
                sims = F.cosine_similarity(model.embed(xb, view=view), other.expand(len(chunk), -1), dim=-1)
                for k, (i, j) in enumerate(chunk):
                    drops[i, j] = base - float(sims[k])
            full = np.zeros((h, w))
            for i in range(gy):
                for j in range(gx):
                    full[ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = drops[i, j]
            maps.append(_normalise_map(full))
    return maps, base


def response_maps(model, query, reference, query_view: str = "ground", reference_view: str = "aerial",
                  method: str = "gradcam", layer=None, min_cells: int = 16, grid: int = 4,
                  batch: int = 16) -> tuple[np.ndarray, np.ndarray, float]:
    """Where the similarity of a matched pair comes from, in each image.

    ``query``/``reference``: (1, 3, H, W) normalised tensors at the model's input sizes; ``model.embed(x, view)``
    returns L2-normalised descriptors. ``method="gradcam"``: Grad-CAM of the cosine similarity on ``layer``
    (default: the deepest backbone feature map with at least ``min_cells`` cells, chosen per view);
    ``method="occlusion"``: the similarity drop when each cell of a ``grid`` (cells along the short side) is set
    to the image mean. Returns (query map, reference map, similarity), maps (H, W) in [0, 1].
    """
    if query.dim() != 4 or reference.dim() != 4 or len(query) != 1 or len(reference) != 1:
        raise ValueError(f"query and reference must be (1, 3, H, W); got {tuple(query.shape)} and "
                         f"{tuple(reference.shape)}")
    was_training = model.training
    model.eval()
    try:
        if method == "gradcam":
            layers = (layer, layer) if layer is not None else (
                _feature_layer(model, query, query_view, min_cells),
                _feature_layer(model, reference, reference_view, min_cells))
            (mq, mr), sim = _gradcam(model, query, reference, query_view, reference_view, layers,
                                     tuple(query.shape[-2:]), tuple(reference.shape[-2:]))
        elif method == "occlusion":
            (mq, mr), sim = _occlusion(model, query, reference, query_view, reference_view, grid, batch)
        else:
            raise ValueError(f"method must be 'gradcam' or 'occlusion', got {method!r}")
    finally:
        model.train(was_training)
    return mq, mr, sim


def figure_size(pictures: list[tuple[np.ndarray, np.ndarray]], width_px: int) -> tuple[int, int]:
    """(width, height) in pixels of :func:`response_figure` for these (query, reference) pictures."""
    q, r = pictures[0]
    aspect = q.shape[1] / q.shape[0] + r.shape[1] / r.shape[0]
    return width_px, len(pictures) * round(width_px / aspect)


def response_figure(pairs: list[dict[str, Any]], out: str | Path, width_px: int = 1200,
                    alpha: float = 0.5) -> Path:
    """One row per pair: the query with its response map, then the reference with its map.

    Each pair is ``{"query": uint8 (H, W, 3), "reference": uint8 (h, w, 3), "query_map": (H, W),
    "reference_map": (h, w), "label": str (optional)}``; every row uses the first pair's aspect ratios. The PNG
    is exactly :func:`figure_size` pixels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not pairs:
        raise ValueError("response_figure needs at least one pair")
    pics = [(p["query"], p["reference"]) for p in pairs]
    width, height = figure_size(pics, width_px)
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    q0, r0 = pics[0]
    aq, ar = q0.shape[1] / q0.shape[0], r0.shape[1] / r0.shape[0]
    split = aq / (aq + ar)
    row_h = 1.0 / len(pairs)
    for k, p in enumerate(pairs):
        bottom = 1.0 - (k + 1) * row_h
        for left, w, img, m in ((0.0, split, p["query"], p["query_map"]),
                                (split, 1 - split, p["reference"], p["reference_map"])):
            ax = fig.add_axes((left, bottom, w, row_h))
            ax.imshow(img, aspect="auto", interpolation="bilinear")
            ax.imshow(m, cmap="jet", alpha=alpha, aspect="auto", vmin=0, vmax=1, interpolation="bilinear")
            ax.set_axis_off()
        if p.get("label"):
            fig.text(0.005, bottom + row_h - 0.005, p["label"], va="top", ha="left", fontsize=9, color="white",
                     bbox={"facecolor": "black", "alpha": 0.6, "pad": 2})
    return _save(fig, Path(out), dpi)


# --- stages: a run folder and a dataset in, PNGs out -----------------------------------------------------------


def load_run(run: str | Path):
    """(model in eval mode, training config, training data folder) of a run folder (its trained model +
    ``config.json``) or a checkpoint file (:func:`crossview.models.resolve_model`)."""
    from crossview.models import resolve_model

    model, _, info = resolve_model(run)
    return model.eval(), info.get("config", {}), info.get("data")


def _read_split(cfg: dict[str, Any], data, dataset, split, area, crop: bool | None):
    from crossview.data import read_dataset
    from crossview.errors import ConfigError

    dataset = dataset or cfg.get("dataset")
    if not data or not dataset:
        raise ConfigError("give --data DIR and --dataset NAME (they default only for a run folder)")
    kwargs: dict[str, Any] = {"area": area or cfg.get("area") or "same"}
    if cfg.get("label_set"):
        kwargs["label_set"] = cfg["label_set"]
    if dataset == "cvact" and (crop if crop is not None else cfg.get("crop")):
        kwargs["crop"] = True
    return read_dataset(dataset, data, split or cfg.get("eval_split") or "test", **kwargs)


def _pictures(model, paths: list, view: str):
    """uint8 pictures (N, H, W, 3) at the model's input size and the normalised tensor (N, 3, H, W)."""
    import torch

    from crossview.data.cache import load_resized
    from crossview.models import input_spec

    size, mean, std = input_spec(model, view)
    pics = np.stack([load_resized(p, size) for p in paths])
    x = torch.from_numpy(pics).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return pics, x


def _embed(model, paths: list, view: str, device, batch: int) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(paths), batch):
            _, x = _pictures(model, paths[start:start + batch], view)
            out.append(model.embed(x.to(device), view=view).float().cpu().numpy())
    return np.concatenate(out)


def tsne_run(run: str | Path, out: str | Path, data=None, dataset=None, split=None, area=None,
             cross_data=None, cross_dataset=None, cross_split=None, cross_crop: bool | None = None,
             view: str = "query", max_points: int = 500, perplexity: float = 30.0, seed: int = 0,
             device: str = "cpu", batch: int = 32) -> Path:
    """Fig. 8: t-SNE of a run's same-area vs cross-area test descriptors → ``out/tsne.png`` (+ ``tsne.json``).

    Same-area = the run's evaluation split (or ``data``/``dataset``/``split``); cross-area = ``cross_data``
    (another dataset, e.g. CVACT for a CVUSA run), or by default VIGOR's cross-area test split of the same
    folder. ``view``: ``query`` (ground), ``reference`` (aerial) or ``both``. At most ``max_points`` images per
    group and view (evenly spaced).
    """
    import torch

    from crossview.errors import ConfigError
    from crossview.io import write_json_atomic

    model, cfg, run_data = load_run(run)
    model = model.to(torch.device(device))
    same = _read_split(cfg, data or run_data, dataset, split, area, None)
    if cross_data is None:
        if same.dataset != "vigor":
            raise ConfigError("give --cross-data DIR (and --cross-dataset) for the cross-area descriptors; only "
                              "VIGOR-like folders hold a cross-area split of their own")
        cross = _read_split(cfg, data or run_data, dataset, split, "cross", None)
    else:
        cross = _read_split(cfg, cross_data, cross_dataset or same.dataset, cross_split, area, cross_crop)
    groups = {}
    for label, sp in (("same-area", same), ("cross-area", cross)):
        views = [("query", sp.records[0].query_view, [r.query_path for r in sp.records]),
                 ("reference", sp.references[0].view, [r.path for r in sp.references])]
        for kind, v, paths in views:
            if view not in (kind, "both"):
                continue
            idx = np.unique(np.linspace(0, len(paths) - 1, min(max_points, len(paths))).round().astype(int))
            name = label if view != "both" else f"{label} {kind}"
            groups[name] = _embed(model, [paths[i] for i in idx], v, torch.device(device), batch)
    out = Path(out)
    title = f"t-SNE of {view} descriptors: {same.dataset} {same.name} vs {cross.dataset} {cross.name}"
    png, xy = tsne_figure(groups, out / "tsne.png", title=title, seed=seed, perplexity=perplexity)
    sizes = {k: len(v) for k, v in groups.items()}
    write_json_atomic(out / "tsne.json", {"run": str(run), "groups": sizes, "xy": np.round(xy, 4).tolist(),
                                          "labels": [k for k, n in sizes.items() for _ in range(n)]})
    return png


def response_run(run: str | Path, out: str | Path, data=None, dataset=None, split=None, area=None,
                 n: int = 4, method: str = "gradcam", device: str = "cpu", width_px: int = 1200) -> Path:
    """Fig. 9: response maps of ``n`` matched test pairs (query with its positive reference) →
    ``out/response.png`` (+ ``response.json`` with each pair's similarity)."""
    import torch

    from crossview.io import write_json_atomic

    model, cfg, run_data = load_run(run)
    model = model.to(torch.device(device))
    sp = _read_split(cfg, data or run_data, dataset, split, area, None)
    idx = np.unique(np.linspace(0, len(sp.records) - 1, min(n, len(sp.records))).round().astype(int))
    pairs, info = [], []
    for i in idx:
        rec = sp.records[int(i)]
        ref = sp.references[rec.positives[0]]
        qp, qx = _pictures(model, [rec.query_path], rec.query_view)
        rp, rx = _pictures(model, [ref.path], ref.view)
        mq, mr, sim = response_maps(model, qx.to(device), rx.to(device), rec.query_view, ref.view, method=method)
        pairs.append({"query": qp[0], "reference": rp[0], "query_map": mq, "reference_map": mr,
                      "label": f"{rec.query_id}  cos {sim:.3f}"})
        info.append({"query": rec.query_id, "reference": str(ref.path), "similarity": sim})
    png = response_figure(pairs, Path(out) / "response.png", width_px=width_px)
    write_json_atomic(Path(out) / "response.json", {"run": str(run), "method": method, "pairs": info})
    return png


__all__ = ["figure_size", "load_run", "response_figure", "response_maps", "response_run", "tsne", "tsne_exact",
           "tsne_figure", "tsne_run"]
