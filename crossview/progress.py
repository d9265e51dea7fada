"""Progress bars for long steps (embedding, training, evaluation, synth, tiling, the demo).

``progress(iterable, total=..., desc=...)`` wraps tqdm: bars go to stderr, and are off when stderr is not a
terminal (logs stay clean), under ``crossview --quiet`` or with ``CROSSVIEW_QUIET=1``. ``set_postfix`` shows live
figures (loss, lr, throughput) on a bar; on a disabled bar it does nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_QUIET = False


def set_quiet(quiet: bool = True) -> None:
    """Turn every progress bar off (``crossview --quiet``)."""
    global _QUIET
    _QUIET = bool(quiet)


def enabled() -> bool:
    """Bars are drawn only for a person watching a terminal."""
    if _QUIET or os.environ.get("CROSSVIEW_QUIET", "") not in ("", "0"):
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress(iterable: Iterable[T] | None = None, total: int | None = None, desc: str = "", unit: str = "it",
             **kwargs: Any) -> Iterator[T] | Any:
    """A tqdm bar over ``iterable`` (or a manual one with ``update`` when ``iterable`` is None)."""
    from tqdm.auto import tqdm

    on = enabled()
    width = {}
    if on:  # a terminal that reports no width (some ptys) would get an empty bar
        try:
            size = os.get_terminal_size(sys.stderr.fileno())
        except (OSError, ValueError):
            size = os.terminal_size((0, 0))
        width = {"dynamic_ncols": True} if size.columns > 0 else {"ncols": 100}
        if size.lines <= 0:  # tqdm hides bars below the screen's last row
            width["nrows"] = 24
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not on, leave=False, **width, **kwargs)
