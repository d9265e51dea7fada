"""Reading retrieval weights from disk, and telling which released variant a file is.

The authors release bare state dicts (Sample4Geo, MFRGN), sometimes under ``module.`` (DataParallel) or inside
``{"model_state_dict": ...}`` (MFRGN's resume layout); we write ``{"config", "state_dict"}`` (``.pt``, read
weights-only) or a ``.safetensors`` file whose metadata holds the config as JSON. :func:`read_weights` reads any
of them without unpickling code (:mod:`crossview.safe_load`).

A released state dict does not always say which input sizes it was trained at. MFRGN's global token Linear does
(its width is the token count: 958 at the CVUSA / CVACT sizes, 1147 / 1672 at VIGOR's 320² / 320×640), so
:func:`matching_variants` finds the registered variants whose every parameter shape matches the file. Sample4Geo's
ConvNeXt fits any size: its four releases (CVUSA, CVACT, VIGOR, University-1652) are told apart only by the name
(``--arch sample4geo_vigor``) or by the dataset folder the official scripts save under
(``pretrained/<dataset>/...``), which :func:`variant_from_path` reads when no name is given.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossview.errors import ConfigError

if TYPE_CHECKING:
    import torch

# The registered variants that released files are, per official layout (the ablations and tiny CPU variants are
# trained here, so their files carry their config).
RELEASED: dict[str, tuple[str, ...]] = {
    "official_mfrgn": ("mfrgn_cvusa", "mfrgn_cvact", "mfrgn_vigor"),
    "official_mfrgn_u": ("mfrgn_u1652",),
    "official_sample4geo": ("sample4geo_cvusa", "sample4geo_cvact", "sample4geo_vigor", "sample4geo_u1652"),
}
# the dataset folder names the official training scripts save under, and the variant suffix each means
_PATH_HINTS = (("university", "u1652"), ("u1652", "u1652"), ("vigor", "vigor"), ("cvact", "cvact"),
               ("cvusa", "cvusa"))
SIZE_KEYS = ("aerial_size", "ground_size", "image_size")


def is_safetensors(path: str | os.PathLike) -> bool:
    """True for a ``.safetensors`` file (by name, or by its header when renamed)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and int.from_bytes(head[:8], "little") < 100_000_000 and head[8:9] == b"{"


def read_weights(path: str | os.PathLike, *, trust: bool = False) -> tuple[dict[str, torch.Tensor], dict | None]:
    """``(state_dict, saved_config or None)`` of a retrieval checkpoint file, without running code from it.

    Unwraps ``{"config", "state_dict"}`` (ours), ``{"state_dict"}`` / ``{"model"}`` / ``{"model_state_dict"}``
    wrappers (other keys such as optimizer state, epoch or loss are ignored) and a ``module.`` prefix.
    """
    from crossview.models.convert import strip_prefix
    from crossview.safe_load import load_checkpoint

    path = Path(path)
    if is_safetensors(path):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        config = json.loads(meta["config"]) if "config" in meta else None
        return strip_prefix(state), config
    return unwrap(load_checkpoint(path, trust=trust, what="retrieval checkpoint"), str(path))


def unwrap(obj: Any, where: str = "state dict") -> tuple[dict[str, torch.Tensor], dict | None]:
    """The state dict and saved config inside a loaded checkpoint object (see :func:`read_weights`)."""
    import torch

    from crossview.models.convert import strip_prefix

    config = obj.get("config") if isinstance(obj, dict) and isinstance(obj.get("config"), dict) else None
    state = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{where}: no state dict found (expected {{'config', 'state_dict'}}, a plain state dict, "
                          "or one under 'state_dict' / 'model_state_dict' / 'model')")
    return strip_prefix(state), config


def variant_from_path(path: str | os.PathLike | None, candidates: list[str]) -> str | None:
    """The candidate whose dataset the file's path names (``pretrained/vigor_same/...`` → ``*_vigor``), if one
    does and only one."""
    if path is None:
        return None
    parts = [p.lower() for p in Path(path).parts]
    found = []
    for hint, suffix in _PATH_HINTS:
        if any(re.search(rf"(^|[^a-z]){hint}", p) for p in parts):
            found += [c for c in candidates if c.endswith("_" + suffix)]
            break
    return found[0] if len(set(found)) == 1 else None


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two resolved configs build the same network on the same inputs (they differ at most by name)."""
    skip = {"name"}
    return {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}


def shape_problems(state: dict[str, torch.Tensor], cfg: dict[str, Any], layout: str) -> str | None:
    """None when ``state`` loads strictly into the model ``cfg`` builds (built on the meta device: no memory,
    no weights), else the converter's message."""
    import torch

    from crossview.models.convert import convert_official
    from crossview.models.registry import build

    with torch.device("meta"):
        model = build({**cfg, "pretrained": False})
    try:
        convert_official(state, model, layout)
    except ConfigError as exc:
        return str(exc)
    return None


def matching_variants(state: dict[str, torch.Tensor], layout: str, **overrides: Any) -> list[str]:
    """The released variants (:data:`RELEASED`) of ``layout`` whose every parameter shape matches ``state``;
    ``overrides`` (e.g. an inferred backbone) apply to each."""
    from crossview.models.registry import model_config

    return [name for name in RELEASED.get(layout, ())
            if shape_problems(state, model_config(name, **overrides), layout) is None]


def distinct(names: list[str], **overrides: Any) -> list[str]:
    """``names`` with variants that build the same network (CVUSA and CVACT sizes) kept once."""
    from crossview.models.registry import model_config

    out: list[str] = []
    for name in names:
        cfg = model_config(name, **overrides)
        if not any(same_model(cfg, model_config(o, **overrides)) for o in out):
            out.append(name)
    return out


def wrong_variant_hint(state: dict[str, torch.Tensor], layout: str, asked: str, **overrides: Any) -> str:
    """A sentence naming the released variant(s) that do fit ``state``, for an error about ``asked``."""
    fits = [n for n in matching_variants(state, layout, **overrides) if n != asked]
    if fits:
        return f"these weights are {' or '.join(fits)}'s: use --arch {fits[0]} (Python: arch={fits[0]!r})"
    others = [n for lay, names in RELEASED.items() if lay != layout for n in names]
    mine = ", ".join(RELEASED.get(layout, ()))
    return (f"no released {layout.replace('official_', '')} variant fits them either ({mine}); released variants "
            f"of other layouts: {', '.join(others)}")


# --- run folders and the command line -------------------------------------------------------------------------
RUN_MODEL_FILES = ("model.safetensors", "model.pt")  # what training writes now, then what it wrote before


def run_model_file(folder: str | os.PathLike) -> Path | None:
    """The trained model of a run folder (``model.safetensors``, or ``model.pt`` from earlier versions), or None
    while the run is unfinished."""
    for name in RUN_MODEL_FILES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def add_model_arguments(parser: Any) -> None:
    """``--arch`` and ``--random-weights`` on a sub-command that takes a retrieval model."""
    released = [n for names in RELEASED.values() for n in names]
    parser.add_argument("--arch", metavar="VARIANT",
                        help="which released model an official weights file is (" + " | ".join(released) +
                             "; all registered: crossview model-info --list): its sizes and views come from the "
                             "variant. Without it they are inferred from the weights where those fix them")
    parser.add_argument("--random-weights", type=int, metavar="SEED",
                        help="with a registered model name instead of weights: build it with random weights "
                             "from SEED (for smoke tests; the descriptors mean nothing)")


def resolve_model(spec: str | os.PathLike, *, arch: str | None = None, random_weights: int | None = None,
                  trust: bool = False) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """``(model, name, run_info)`` for what a user names on the command line: a run folder (its trained model and
    ``config.json``), a checkpoint file (ours or an official release, ``arch`` naming its variant), or a registered
    name — which has no weights, so it is refused unless ``random_weights`` gives the seed of a deliberate random
    model."""
    import torch

    from crossview.models import create_model, load_model
    from crossview.models.registry import list_models

    path = Path(spec)
    if path.is_dir():
        ckpt = run_model_file(path)
        if ckpt is None:
            raise ConfigError(f"{path} is not a finished run folder: no {' or '.join(RUN_MODEL_FILES)} (resume "
                              "training, or give a checkpoint file)")
        cfg_file = path / "config.json"
        info = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
        model = load_model(str(ckpt), arch=arch, trust_checkpoint=trust)
        return model, info.get("config", {}).get("model") or path.name, info
    if path.exists():
        model = load_model(str(path), arch=arch, trust_checkpoint=trust)
        return model, (getattr(model, "config", None) or {}).get("name") or path.stem, {}
    name = str(spec)
    if name not in list_models():
        raise ConfigError(f"{name}: no such file or run folder, and not a registered model (registered: "
                          f"{', '.join(list_models())})")
    if random_weights is None:
        raise ConfigError(f"{name} is a registered architecture, not weights: give its checkpoint (e.g. the "
                          f"authors' file with --arch {name}) or a training run; --random-weights SEED builds it "
                          "with seeded random weights, for smoke tests only")
    torch.manual_seed(int(random_weights))
    model = create_model(name)
    model.config["random_weights_seed"] = int(random_weights)
    return model, name, {}
