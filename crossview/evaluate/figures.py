"""Evaluation pictures: each query's top-k tiles with coloured borders, and recall@k curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from crossview.io import atomic_write

GREEN, ORANGE, RED = (30, 170, 60), (245, 150, 20), (215, 40, 40)


def border_colour(row: int, positives: set[int], semis: set[int]) -> tuple[int, int, int]:
    """Green = a true match, orange = a semi-positive (VIGOR), red = wrong."""
    return GREEN if row in positives else ORANGE if row in semis else RED


def _thumb(path: str | Path, height: int, max_width: int | None = None) -> Image.Image:
    with Image.open(path) as im:
        im = im.convert("RGB")
        w = max(1, round(im.width * height / im.height))
        if max_width:
            w = min(w, max_width)
        return im.resize((w, height), Image.BILINEAR)


def topk_sheet(
    query_paths: Sequence[str | Path],
    ref_paths: Sequence[str | Path],
    top_rows: np.ndarray,
    positives: Sequence[Sequence[int]],
    semi_positives: Sequence[Sequence[int]] | None,
    out: str | Path,
    *,
    tile_px: int = 128,
    border: int = 6,
    scores: np.ndarray | None = None,
) -> Path:
    """One row per query: the query image, then its top-k references with green/orange/red borders.

    ``top_rows[i]``: reference rows of query i, best first; ``positives[i]`` / ``semi_positives[i]``: its
    correct and semi-positive rows. Returns the PNG path.
    """
    n, k = top_rows.shape
    gap = 8
    rows = []
    for i in range(n):
        q = _thumb(query_paths[i], tile_px, max_width=4 * tile_px)
        pos, semi = set(map(int, positives[i])), set(map(int, semi_positives[i] if semi_positives else ()))
        tiles = []
        for j in range(k):
            r = int(top_rows[i, j])
            t = Image.new("RGB", (tile_px + 2 * border, tile_px + 2 * border), border_colour(r, pos, semi))
            t.paste(_thumb(ref_paths[r], tile_px, max_width=tile_px).resize((tile_px, tile_px)), (border, border))
            if scores is not None:
                ImageDraw.Draw(t).text((border + 3, border + 2), f"{j + 1}: {scores[i, j]:.3f}", fill=(255, 255, 255))
            tiles.append(t)
        rows.append((q, tiles))
    width = gap + max(q.width + gap + sum(t.width + gap for t in ts) for q, ts in rows)
    height = gap + n * (tile_px + 2 * border + gap)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    y = gap
    for q, tiles in rows:
        sheet.paste(q, (gap, y + border))
        x = gap + q.width + gap
        for t in tiles:
            sheet.paste(t, (x, y))
            x += t.width + gap
        y += tile_px + 2 * border + gap
    return atomic_write(out, lambda p: sheet.save(p, format="PNG"))


def recall_curve_plot(curves: dict[str, np.ndarray], out: str | Path, title: str = "recall@k") -> Path:
    """Plot recall@k (percent, index k-1) for each labelled curve; PNG via matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4), dpi=110)
    ax = fig.add_subplot()
    for label, curve in curves.items():
        ks = np.arange(1, len(curve) + 1)
        ax.plot(ks, curve, marker="o" if len(curve) <= 20 else None, markersize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return atomic_write(out, lambda p: fig.savefig(p, format="png"))
