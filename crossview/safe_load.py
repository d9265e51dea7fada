"""Reading ``.pt`` / ``.pth`` files without running code from them.

Unrestricted unpickling (``torch.load`` with ``weights_only`` off) runs whatever a file names, so a downloaded
checkpoint could run arbitrary code. :func:`load_checkpoint` reads with ``weights_only=True`` (tensors, containers,
numbers, strings). A file that also names other Python globals is read again only when every one of them is on
:func:`allowed`, the few non-tensor things that official releases and our own older files hold:

- numpy scalars, dtypes and arrays (a loss or best distance saved as ``numpy.float64``; the numpy RNG state in our
  training checkpoints), under both numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``) names;
- ``argparse.Namespace`` (some official repositories save their arguments);
- a ``OneCycleLR`` state written by an older torch (HC-Net's ``lr_schedule``, trained with torch 1.13): its
  ``anneal_func`` was a bound method, pickled as ``getattr(the scheduler, "_annealing_linear")``, which drags in
  the scheduler and its ``AdamW``. These load as inert stand-ins (:class:`Placeholder`, :func:`attribute_name`,
  :func:`plain_dict`): no code of theirs runs, and nothing here reads them.

Any other global raises :class:`~crossview.errors.UnsafeCheckpointError` (a ``ConfigError``) naming the file and
the global; ``trust=True`` (``--trust-checkpoint`` on the command line) unpickles without restriction, with a
warning.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from crossview.errors import ConfigError, UnsafeCheckpointError

TRUST_HINT = "re-run with --trust-checkpoint if you trust this file (trust_checkpoint=True from Python)"


class Placeholder:
    """Stand-in for an optimizer or scheduler object pickled inside an old scheduler state: keeps the pickled
    attributes as a plain dict in ``state``; never runs code of the class it replaces."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return "Placeholder(<object pickled inside an old scheduler state>)"


def plain_dict(default_factory: Any = None, *args: Any) -> dict:
    """Stand-in for ``collections.defaultdict`` (an old optimizer's ``state``): a plain dict; the factory is
    ignored."""
    return {}


def attribute_name(obj: Any, name: str) -> str:
    """Stand-in for ``builtins.getattr`` (an old scheduler's bound ``anneal_func``): the attribute's name as a
    string, never the attribute itself."""
    return f"<{name}>"


def _numpy_globals() -> list[tuple[Any, str]]:
    """numpy scalar / array reconstruction under its numpy 1 and numpy 2 names, and the dtype classes."""
    import numpy as np

    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1.x
        multiarray = importlib.import_module("numpy.core.multiarray")
    out: list[tuple[Any, str]] = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for core in ("numpy.core", "numpy._core"):
        out += [(multiarray.scalar, f"{core}.multiarray.scalar"),
                (multiarray._reconstruct, f"{core}.multiarray._reconstruct")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: each dtype instance has its own class (BUILD needs it)
    for name in dir(dtypes) if dtypes is not None else ():
        cls = getattr(dtypes, name)
        if name.endswith("DType") and isinstance(cls, type) and name != "ObjectDType":
            out.append((cls, f"numpy.dtypes.{name}"))
    return out


@lru_cache(maxsize=1)
def allowed() -> dict[str, Any]:
    """The allowlist: fully qualified global name → the object the restricted unpickler uses for it."""
    import argparse

    legacy_schedule = {"builtins.getattr": attribute_name, "builtins.dict": dict,
                       "collections.defaultdict": plain_dict,
                       "torch.optim.lr_scheduler.OneCycleLR": Placeholder, "torch.optim.adamw.AdamW": Placeholder}
    return {**{name: obj for obj, name in _numpy_globals()}, "argparse.Namespace": argparse.Namespace,
            **legacy_schedule}


def _globals_in(path: Path, error: Exception) -> list[str]:
    """The globals of ``path`` the default ``weights_only`` unpickler refused (from the archive, else from the
    error message); empty when ``error`` is not about globals (a truncated or foreign file)."""
    import torch

    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 — a legacy (non-zip) file: the message names the first refused global
        names = re.findall(r"GLOBAL ([\w.]+)", str(error))
        return [n if "." in n else f"builtins.{n}" for n in names]


def _refuse(path: Path, what: str, reason: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(f"{path}: refusing to unpickle this {what}: {reason}; {TRUST_HINT}")


def load_checkpoint(path: str | os.PathLike, *, trust: bool = False, what: str = "checkpoint") -> Any:
    """``torch.load(path)`` on the CPU without running code from the file (see :func:`_load`). A file that cannot
    be read at all (missing, truncated, not a PyTorch file) raises :class:`~crossview.errors.ConfigError` naming it
    and its role ``what``; a refused one :class:`~crossview.errors.UnsafeCheckpointError`."""
    try:
        return _load(Path(path), trust, what)
    except UnsafeCheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 — whatever torch.load raised, said with the file's name
        raise ConfigError(f"{path}: not a readable PyTorch {what} ({exc})") from exc


def _load(path: Path, trust: bool, what: str) -> Any:
    """``torch.load(path)`` on the CPU without running code from the file.

    Reads with ``weights_only=True``; a file naming other globals is read again (still restricted) when they are
    all on :func:`allowed`, else :class:`~crossview.errors.UnsafeCheckpointError` names the file and the globals.
    ``trust=True`` allows every global the file names and warns that it did. ``what`` names the file's role in
    messages.
    """
    import torch

    if trust:
        obj = _load_trusted(path)
        warnings.warn(f"{path}: {what} unpickled without restriction (--trust-checkpoint): any code in it has run",
                      stacklevel=3)
        return obj
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = _globals_in(path, exc)
        if not names:
            raise
    table = allowed()
    unknown = [n for n in names if n not in table]
    if unknown:
        raise _refuse(path, what, f"it names {', '.join(sorted(set(unknown)))}, which plain weights never need "
                      "(unpickling it could run code)")
    try:
        with torch.serialization.safe_globals([(obj, name) for name, obj in table.items()]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # an allowed global used in a way plain data never is
        found = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        raise _refuse(path, what, f"it uses {', '.join(sorted(set(names)))} in a way plain data never does"
                      f" ({found.group(1)[:200] if found else exc})") from exc


def _resolve_global(name: str) -> Any:
    """The object a pickle's ``module.qualname`` global names (imports the module)."""
    module, _, qualname = name.rpartition(".")
    while module:
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            return obj
        except (ImportError, AttributeError):  # a nested class: move one more part into the qualname
            module, _, head = module.rpartition(".")
            qualname = f"{head}.{qualname}"
    raise UnsafeCheckpointError(f"cannot resolve the global {name!r} that the trusted file names")


def _load_trusted(path: Path) -> Any:
    """Load ``path`` allowing exactly the globals it names (what the user chose to trust); still torch's
    weights-only reader, so a global the file does not declare up front is never resolved."""
    import torch

    extra: dict[str, Any] = dict(allowed())  # numpy dtype classes are built, never named up front
    for _ in range(256):  # a legacy (non-zip) file reveals its globals one refusal at a time
        try:
            with torch.serialization.safe_globals([(obj, name) for name, obj in extra.items()]):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            names = [n for n in _globals_in(path, exc) if n not in extra]
            if not names:
                raise
            extra.update({n: _resolve_global(n) for n in names})
    raise UnsafeCheckpointError(f"{path}: names too many globals to load even when trusted")


def add_trust_argument(parser: Any) -> None:
    """``--trust-checkpoint`` on a sub-command that reads ``.pt`` / ``.pth`` files (``args.trust_checkpoint``)."""
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="unpickle checkpoint files without restriction (only for files you trust: unpickling "
                             "can run code); by default they load weights-only and a file naming other code is "
                             "refused")
