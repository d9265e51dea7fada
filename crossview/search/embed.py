"""Embedding extraction as a resumable, sharded stage (``crossview embed``).

``embed_split(model, split, out)`` writes ``out/<view>/shard-*.safetensors`` for the queries and the references of a
:class:`~crossview.data.records.Split`; finished shards are skipped, so an interrupted run resumes, several
machines can each take ``--shard i/n``, and under ``torchrun`` each rank takes every ``world``-th shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossview.data.records import Split
from crossview.search.shards import MANIFEST, ShardPlan, ids_digest

DEFAULT_SHARD_SIZE = 8192


def model_input_spec(model: torch.nn.Module, view: str) -> tuple[tuple[int, int], Sequence[float], Sequence[float]]:
    """``((h, w), mean, std)`` of ``view`` for ``model`` (via :func:`crossview.models.input_spec`)."""
    try:
        from crossview.models import input_spec
    except ImportError:
        input_spec = None
    if input_spec is not None:
        try:
            return input_spec(model, view)
        except Exception:  # noqa: BLE001 — a model that is not from crossview.models may carry its own spec
            if not callable(getattr(model, "input_spec", None)):
                raise
    return model.input_spec(view)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):  # e.g. CVACT's UTM table: recorded by shape, not copied into the manifest
        return {"array_shape": list(obj.shape), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def model_identity(model: torch.nn.Module, name: str | None = None, views: Sequence[str] = ()) -> dict[str, Any]:
    """What an index or shard folder records about the model that made its descriptors.

    ``config_hash`` covers the model's config; ``weights_hash`` covers every parameter and buffer, so
    two checkpoints of one architecture are told apart. ``preprocessing`` gives each view's input size
    and normalisation.
    """
    cfg = getattr(model, "config", None) or getattr(model, "cfg", None) or {}
    cfg = _plain(cfg)
    text = json.dumps(cfg, sort_keys=True, default=str)
    if not name:
        name = (cfg.get("name") or cfg.get("model") or cfg.get("arch")) if isinstance(cfg, dict) else None
    h = hashlib.sha1()
    for key, t in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    pre = {}
    for v in views:
        size, mean, std = model_input_spec(model, v)
        pre[v] = {"size": [int(size[0]), int(size[1])], "mean": [float(x) for x in mean],
                  "std": [float(x) for x in std]}
    dim = getattr(model, "embed_dim", None) or getattr(model, "descriptor_dim", None)
    if dim is None and views:  # one forward on a blank image tells the descriptor size
        size = pre[views[0]]["size"]
        p = next(model.parameters(), None)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            x = torch.zeros(1, 3, *size, device=p.device if p is not None else "cpu")
            dim = int(model.embed(x, view=views[0]).shape[-1])
        model.train(was_training)
    return {"name": name or type(model).__name__, "config_hash": hashlib.sha1(text.encode()).hexdigest()[:16],
            "weights_hash": h.hexdigest()[:16], "config": cfg, "preprocessing": pre,
            "dim": int(dim) if dim is not None else None}


@torch.no_grad()
def embed_images(model: torch.nn.Module, paths: Sequence[str | Path], view: str, *, batch: int = 32,
                 device: str | torch.device = "cpu", half: bool = False, cache_dir: Path | None = None,
                 precision: str = "fp32", compile: str | None = None) -> torch.Tensor:
    """L2-normalised float32 descriptors (N, D) of image files seen as ``view``, in order.

    ``precision``: ``fp32`` or ``bf16`` (autocast + channels-last, :func:`crossview.device.cpu_precision` decides);
    the descriptors are float32 either way. ``compile``: ``auto | on | off`` (default: the process-wide
    ``--compile``, see :func:`crossview.device.should_compile`)."""
    from crossview.data.images import ImageSource
    from crossview.progress import progress

    size, _, _ = model_input_spec(model, view)
    source = ImageSource([str(p) for p in paths], tuple(size), cache_dir)
    embed = ArrayEmbedder(model, view, batch=batch, device=device, half=half, precision=precision,
                          compile=compile, n_hint=len(source))
    out = [embed([source.get(i) for i in range(start, min(start + batch, len(source)))])
           for start in progress(range(0, len(source), batch), desc=f"embed {view}", unit="batch")]
    embed.done()
    return torch.cat(out) if out else torch.empty(0, 0)


class ArrayEmbedder:
    """Embeds batches of images already at the model's input size (uint8 (3, H, W) tensors, as
    :class:`~crossview.data.images.ImageSource` gives them) exactly as :func:`embed_images` does: the one code path
    for image files and for tiles cut in memory (``crossview locate-index RASTERS``). ``done()`` restores the
    model's training mode."""

    def __init__(self, model: torch.nn.Module, view: str, *, batch: int = 32, device: str | torch.device = "cpu",
                 half: bool = False, precision: str = "fp32", compile: str | None = None, n_hint: int = 0):
        from crossview.device import embedder, prepare_for_inference, should_compile

        self.size, self.mean, self.std = model_input_spec(model, view)
        self.model, self.device, self.half, self.precision = model, torch.device(device), half, precision
        self.was_training = model.training
        prepare_for_inference(model, precision, self.device)
        self.embed = embedder(model, view, batch, should_compile(model, n_hint, precision, self.device, compile))

    @torch.no_grad()
    def __call__(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        from crossview.data.transforms import normalize
        from crossview.device import as_input, inference_autocast

        x = torch.stack(list(images)).to(self.device)
        x = as_input(normalize(x, self.mean, self.std), self.precision)
        with inference_autocast(self.precision, self.device, self.half):
            d = self.embed(x)
        return torch.nn.functional.normalize(d.float(), dim=1).cpu()

    def done(self) -> None:
        self.model.train(self.was_training)


def split_items(split: Split, role: str, root: Path | None = None):
    """``(view, ids, paths, gps)`` of a split's queries (``role="query"``) or references."""
    def rel(p: Path) -> str:
        if root is not None:
            try:
                return str(Path(p).resolve().relative_to(Path(root).resolve()))
            except ValueError:
                pass
        return str(p)

    if role == "query":
        recs = split.records
        view = recs[0].query_view if recs else "ground"
        ids = [r.query_id for r in recs]
        return view, ids, [r.query_path for r in recs], [r.gps for r in recs]
    refs = split.references
    return (refs[0].view if refs else "aerial"), [rel(r.path) for r in refs], [r.path for r in refs], \
        [r.gps for r in refs]


def view_folders(split: Split) -> dict[str, str]:
    """Folder name of each role: the view kind (``ground``, ``aerial``, ...), role-prefixed on a clash."""
    qv = split.records[0].query_view if split.records else "ground"
    rv = split.references[0].view if split.references else "aerial"
    return {"query": qv, "reference": rv} if qv != rv else {"query": f"query-{qv}", "reference": f"reference-{rv}"}


def _gps_array(gps: Sequence[tuple[float, float] | None]) -> np.ndarray:
    return np.array([g if g is not None else (np.nan, np.nan) for g in gps], dtype=np.float64).reshape(-1, 2)


def embed_split(
    model: torch.nn.Module,
    split: Split,
    out: str | Path,
    *,
    roles: Sequence[str] = ("query", "reference"),
    shard: tuple[int, int] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch: int = 32,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    half: bool = False,
    precision: str = "fp32",
    model_name: str | None = None,
    root: Path | None = None,
    rank: int = 0,
    world: int = 1,
    log=print,
    trust_checkpoint: bool = False,
) -> dict[str, Path]:
    """Embed a split into shard folders; returns ``{role: folder}``.

    ``shard=(i, n)``: split every view into ``n`` shards and compute only shard ``i`` (other processes or
    machines take the others). Without it, ``ceil(N / shard_size)`` shards per view, all computed here
    (each torchrun rank taking every ``world``-th). Finished shards are skipped. ``precision`` (``fp32`` or
    ``bf16``) is recorded in the manifest and in each shard; the stored descriptors are ``dtype`` either way.
    ``trust_checkpoint``: existing shards are unpickled without restriction (``--trust-checkpoint``).
    """
    out = Path(out)
    folders = view_folders(split)
    views = [split_items(split, role)[0] for role in roles]
    ident = model_identity(model, model_name, views)
    done: dict[str, Path] = {}
    for role in roles:
        view, ids, paths, gps = split_items(split, role, root)
        n = shard[1] if shard else max(1, -(-len(ids) // max(1, shard_size)))
        existing = out / folders[role] / MANIFEST
        if shard is None and existing.exists():  # reuse a folder with its own sharding (e.g. made by --shard i/n)
            have = json.loads(existing.read_text())
            if have.get("ids_sha1") == ids_digest(ids):
                n = int(have["num_shards"])
        plan = ShardPlan(out / folders[role], ids, n, ident,
                         {"view": view, "role": role, "dataset": split.dataset, "split": split.name,
                          "split_meta": _plain(split.meta), "dtype": str(dtype).replace("torch.", ""),
                          "precision": precision})
        plan.folder.mkdir(parents=True, exist_ok=True)
        if rank == 0:
            plan.write_manifest()
        mine = [shard[0]] if shard else list(range(n))
        mine = [i for i in mine if i % world == rank] if world > 1 and not shard else mine
        gps_all = _gps_array(gps)
        for i in mine:
            s, e = plan.ranges[i]
            if plan.is_done(i, trust_checkpoint):
                log(f"{plan.path(i)}: done, skipped")
                continue
            desc = embed_images(model, paths[s:e], view, batch=batch, device=device, half=half,
                                precision=precision)
            plan.save(i, desc.to(dtype), gps_all[s:e], precision=precision)
            log(f"{plan.path(i)}: {e - s} {view} descriptors")
        done[role] = plan.folder
    return done
