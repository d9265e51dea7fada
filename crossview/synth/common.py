"""Shared pieces of the layout writers: seeded generators per item, ids, camera placement, atomic trees."""

from __future__ import annotations

import json
import os
import shutil
import string
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from crossview.errors import CrossviewError
from crossview.synth.world import BUILDING, CAR, TREE, World

GENERATOR_VERSION = "1"
_ID_CHARS = np.array(list(string.ascii_letters + string.digits + "-_"))


def item_rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator per item, so results do not depend on the order items are made in."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def random_id(rng: np.random.Generator, n: int = 22) -> str:
    """A panorama-id-like string (letters, digits, '-', '_'; starts with a letter or digit)."""
    first = _ID_CHARS[rng.integers(62)]
    return first + "".join(_ID_CHARS[rng.integers(64, size=n - 1)])


def is_open(world: World, e: float, n: float, radius: float = 1.2) -> bool:
    """True where a camera can stand: flat open ground with no building, tree or car within ``radius`` m."""
    k = max(1, int(np.ceil(radius / world.cell)))
    r, c, inside = world.cell_of(e, n)
    if not inside:
        return False
    R, C = world.shape
    win = world.cls[max(r - k, 0):min(r + k + 1, R), max(c - k, 0):min(c + k + 1, C)]
    return bool(~np.isin(win, (BUILDING, TREE, CAR)).any())


def parallel_map(fn: Callable, jobs: list, workers: int, desc: str = "synth") -> list:
    """``[fn(j) for j in jobs]``, in processes when ``workers > 1`` (results in job order), with a progress bar."""
    import multiprocessing as mp

    from crossview.progress import progress

    # fork only: workers inherit module state (a world built once in the parent) without pickling it
    if workers <= 1 or len(jobs) <= 1 or "fork" not in mp.get_all_start_methods():
        return [fn(j) for j in progress(jobs, desc=desc, unit="job")]
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("fork"),
                             initializer=_die_with_parent) as ex:
        return list(progress(ex.map(fn, jobs), total=len(jobs), desc=desc, unit="job"))


def _die_with_parent() -> None:
    """Linux: a worker gets SIGKILL when the generating process dies, so a killed run stops writing at once."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux / no glibc: workers end when their queue closes
        pass


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None, scale: str) -> int:
    """Explicit ``workers`` wins; by default tiny runs in-process (start-up costs more than it saves)."""
    if workers is not None:
        return max(1, int(workers))
    return 1 if scale == "tiny" else default_workers()


def build_tree(out: Path, meta: dict, write: Callable[[Path], None]) -> Path:
    """Write a dataset tree atomically: ``write(tmp)`` fills a temporary sibling folder, which is renamed onto
    ``out`` only when complete. An existing tree with the same layout/scale/seed/version is kept as is."""
    out = Path(out)
    meta_path = out / "crossview_meta.json"
    keys = ("layout", "scale", "seed", "generator_version")
    if out.exists():
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            if all(old.get(k) == meta.get(k) for k in keys):
                return out
            raise CrossviewError(
                f"{out} already holds a synthetic {old.get('layout')} tree (scale {old.get('scale')}, seed "
                f"{old.get('seed')}); delete it or choose another --out to write {meta['layout']} "
                f"(scale {meta['scale']}, seed {meta['seed']})")
        if any(out.iterdir()):
            raise CrossviewError(f"{out} exists and is not empty; choose an empty or new --out folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write(tmp)
        (tmp / "crossview_meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _remove_stale_partials(out: Path) -> None:
    """Delete temp folders of earlier runs into ``out`` whose process is gone (killed runs)."""
    for p in out.parent.glob(f".{out.name}.partial-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:  # alive, owned by someone else
            pass


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
