"""The synthetic cross-view world: a procedural, geo-referenced 2.5D city rendered from aerial, panoramic,
pinhole and drone cameras, written in the on-disk layouts of the real benchmarks.

``generate(layout, out, scale, seed)`` is deterministic: the same seed gives the same bytes in every file.
Modules: ``geo`` (lat/lon <-> local metres), ``styles`` (cities), ``world`` (height/albedo/class maps),
``cameras`` (projections and renderers), one writer per layout (``vigor``, ``cvusa``, ``cvact``, ``university``).
"""

from __future__ import annotations

from pathlib import Path

from crossview.synth.common import GENERATOR_VERSION
from crossview.synth.scales import LAYOUT_SCALES, SCALES

LAYOUTS = ("cvusa", "cvact", "vigor", "university1652")

__all__ = ["GENERATOR_VERSION", "LAYOUTS", "SCALES", "generate"]


def generate(layout: str, out: str | Path, scale: str = "small", seed: int = 0, workers: int | None = None) -> Path:
    """Write a complete synthetic dataset tree in ``layout`` under ``out`` and return its path.

    The tree appears atomically (built in a sibling temp folder, then renamed); an existing tree made with the
    same layout, scale, seed and generator version is kept. ``workers`` (default: the CPUs available) renders
    cities in parallel processes; the output does not depend on it.
    """
    from crossview.errors import ConfigError

    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if scale not in LAYOUT_SCALES[layout]:
        raise ConfigError(f"scale {scale!r} does not exist for the {layout} layout; choose one of "
                          f"{', '.join(LAYOUT_SCALES[layout])}")
    out = Path(out)
    if layout == "vigor":
        from crossview.synth.vigor import write_vigor as writer
    elif layout == "cvusa":
        from crossview.synth.cvusa import write_cvusa as writer
    elif layout == "cvact":
        from crossview.synth.cvact import write_cvact as writer
    else:
        from crossview.synth.university import write_university as writer
    return writer(out, scale=scale, seed=int(seed), workers=workers)
