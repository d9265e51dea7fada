"""Descriptor shards: a resumable, order-preserving on-disk format for embeddings.

Layout of one embedded view::

    DIR/<view>/manifest.json                       the plan: model identity, item count, shard ranges
    DIR/<view>/shard-00003-of-00008.safetensors    tensors "descriptors" (n, D), "gps" (n, 2) float64 (NaN =
                                                    unknown), optionally more per-row arrays; JSON metadata "ids",
                                                    "start", "end", "model" (identity), "precision"

Shards written by earlier versions (``shard-*.pt``, a pickled dict of the same fields) still read, through
:func:`crossview.safe_load.load_checkpoint` (weights-only: no code in them runs); new shards are safetensors, which
hold no code at all.

Items are split into contiguous ranges (shard i covers ``[i·N // n, (i+1)·N // n)``), so concatenating the
shards in index order restores the input order whichever process wrote which shard. Every shard is written
atomically; a shard file that exists and matches the plan is finished and is skipped on a re-run. The
manifest holds only the plan (identical for every writer), so concurrent writers cannot make it stale.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossview.errors import ConfigError, CrossviewError, UnsafeCheckpointError
from crossview.io import atomic_write, write_json_atomic
from crossview.safe_load import load_checkpoint

MANIFEST = "manifest.json"
SHARD_RE = re.compile(r"shard-(\d{5})-of-(\d{5})\.(pt|safetensors)$")
FORMAT = "crossview-descriptor-shards/2"  # /1: the same plan with .pt shards


def shard_name(i: int, n: int, suffix: str = ".safetensors") -> str:
    return f"shard-{i:05d}-of-{n:05d}{suffix}"


def shard_file(path: str | Path) -> Path | None:
    """The shard file at ``path`` or, written by an earlier version, its ``.pt`` / ``.safetensors`` sibling."""
    path = Path(path)
    for p in (path, path.with_suffix(".safetensors"), path.with_suffix(".pt")):
        if p.exists():
            return p
    return None


def read_shard(path: str | Path, trust_checkpoint: bool = False) -> dict[str, Any]:
    """One shard as a dict: "ids", "descriptors" (tensor), "gps", "start", "end", "model", "precision" and any
    other per-row arrays. A ``.pt`` shard of an earlier version is read through
    :func:`~crossview.safe_load.load_checkpoint` (``trust_checkpoint``: unpickled without restriction)."""
    path = Path(path)
    if path.suffix == ".pt":
        return load_checkpoint(path, trust=trust_checkpoint, what="descriptor shard")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        blob = {k: f.get_tensor(k) for k in f.keys()}
    blob.update(meta)
    return blob


def shard_ranges(n_items: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, end)`` row ranges of ``n_shards`` shards covering ``n_items`` items."""
    if n_shards < 1:
        raise ValueError(f"number of shards must be >= 1, got {n_shards}")
    return [(i * n_items // n_shards, (i + 1) * n_items // n_shards) for i in range(n_shards)]


def parse_shard_arg(text: str) -> tuple[int, int]:
    """``"3/8"`` → (3, 8); shard indices are 0-based."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not int(m.group(2)) or int(m.group(1)) >= int(m.group(2)):
        raise ConfigError(f"--shard must be I/N with 0 <= I < N (e.g. --shard 3/8), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def ids_digest(ids: list[str]) -> str:
    h = hashlib.sha1()
    for i in ids:
        h.update(i.encode() + b"\n")
    return h.hexdigest()[:16]


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("name", "config_hash", "weights_hash", "dim")
    return all(a.get(k) == b.get(k) for k in keys if a.get(k) is not None and b.get(k) is not None)


def describe_model(m: dict[str, Any]) -> str:
    parts = [f"'{m.get('name')}'", f"config {m.get('config_hash')}"]
    if m.get("weights_hash"):
        parts.append(f"weights {m.get('weights_hash')}")
    if m.get("dim") is not None:
        parts.append(f"dim {m.get('dim')}")
    return " ".join(parts[:1]) + " (" + ", ".join(parts[1:]) + ")"


@dataclass
class ShardPlan:
    """What one view's shard folder should hold."""

    folder: Path
    ids: list[str]
    n_shards: int
    model: dict[str, Any]
    extra: dict[str, Any]

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return shard_ranges(len(self.ids), self.n_shards)

    def path(self, i: int) -> Path:
        return self.folder / shard_name(i, self.n_shards)

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "count": len(self.ids), "num_shards": self.n_shards,
            "ids_sha1": ids_digest(self.ids), "model": self.model,
            "shards": [{"file": shard_name(i, self.n_shards), "start": s, "end": e}
                       for i, (s, e) in enumerate(self.ranges)],
            **self.extra,
        }

    def write_manifest(self) -> Path:
        """Write the plan, refusing to mix with a folder made by another model or item list."""
        path = self.folder / MANIFEST
        want = self.manifest()
        if path.exists():
            have = json.loads(path.read_text())
            if not same_model(have.get("model", {}), self.model):
                raise ConfigError(
                    f"{self.folder} holds descriptors of model {describe_model(have.get('model', {}))}, not "
                    f"{describe_model(self.model)}; use another --out folder or delete this one")
            if have.get("ids_sha1") != want["ids_sha1"] or have.get("num_shards") != self.n_shards:
                raise ConfigError(
                    f"{self.folder} was planned for {have.get('count')} items in {have.get('num_shards')} shards "
                    f"(ids {have.get('ids_sha1')}); now {len(self.ids)} items in {self.n_shards} shards "
                    f"(ids {want['ids_sha1']}); use another --out folder or delete this one")
            if have == want:
                return path
        return write_json_atomic(path, want)

    def is_done(self, i: int, trust_checkpoint: bool = False) -> bool:
        """True when shard ``i`` exists with the planned rows (a finished shard from an earlier run). A shard that
        names code to run raises :class:`~crossview.errors.UnsafeCheckpointError` unless ``trust_checkpoint``."""
        p = shard_file(self.path(i))
        if p is None:
            return False
        s, e = self.ranges[i]
        try:
            blob = read_shard(p, trust_checkpoint)
        except UnsafeCheckpointError:
            raise
        except Exception:  # noqa: BLE001 — unreadable means unfinished: recompute it
            return False
        return blob.get("start") == s and blob.get("end") == e and list(blob.get("ids", [])) == self.ids[s:e]

    def save(self, i: int, descriptors, gps: np.ndarray | None, precision: str | None = None) -> Path:
        s, e = self.ranges[i]
        if descriptors.shape[0] != e - s:
            raise ValueError(f"shard {i} covers {e - s} items, got {descriptors.shape[0]} descriptors")
        g = np.full((e - s, 2), np.nan) if gps is None else np.asarray(gps, dtype=np.float64).reshape(e - s, 2)
        return save_shard(self.path(i), self.ids[s:e], descriptors, g,
                          {"start": s, "end": e, "model": self.model, "precision": precision})


def save_shard(path: str | Path, ids: list[str], descriptors, gps: np.ndarray, meta: dict[str, Any],
               arrays: dict[str, Any] | None = None) -> Path:
    """Write one shard as safetensors (atomically): the descriptors (a tensor or array), gps (n, 2), any other
    per-row ``arrays``, and ``meta`` plus the ids as JSON metadata."""
    import torch
    from safetensors.torch import save_file

    tensors = {"descriptors": torch.as_tensor(descriptors).contiguous(),
               "gps": torch.from_numpy(np.ascontiguousarray(gps, dtype=np.float64))}
    for k, v in (arrays or {}).items():
        tensors[k] = torch.as_tensor(np.ascontiguousarray(v)).contiguous()
    text = {k: json.dumps(v) for k, v in {**meta, "ids": list(ids)}.items()}
    return atomic_write(Path(path), lambda p: save_file(tensors, str(p), metadata=text))


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise CrossviewError(f"{folder} has no {MANIFEST}: not a descriptor shard folder (run `crossview embed`)")
    return json.loads(path.read_text())


def missing_shards(folder: str | Path) -> list[str]:
    man = read_manifest(folder)
    return [s["file"] for s in man["shards"] if shard_file(Path(folder) / s["file"]) is None]


def load_shards(folder: str | Path, dtype=None,
                trust_checkpoint: bool = False) -> tuple[list[str], Any, np.ndarray, dict[str, Any]]:
    """Merge a complete shard folder in order: ``(ids, descriptors (N, D) tensor, gps (N, 2), manifest)``. Shards
    are read without running code (``trust_checkpoint=True`` unpickles them freely; see ``crossview.safe_load``)."""
    import torch

    folder = Path(folder)
    man = read_manifest(folder)
    missing = missing_shards(folder)
    if missing:
        raise CrossviewError(f"{folder} is incomplete: {len(missing)} of {man['num_shards']} shards missing "
                             f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); run the same "
                             "`crossview embed` command again to finish it")
    ids: list[str] = []
    descs, gps = [], []
    for entry in man["shards"]:
        blob = read_shard(shard_file(folder / entry["file"]), trust_checkpoint)
        if blob["start"] != entry["start"] or blob["end"] != entry["end"]:
            raise CrossviewError(f"{folder / entry['file']} covers rows {blob['start']}..{blob['end']}, the "
                                 f"manifest says {entry['start']}..{entry['end']}; delete the folder and re-embed")
        ids.extend(blob["ids"])
        descs.append(blob["descriptors"] if dtype is None else blob["descriptors"].to(dtype))
        gps.append(np.asarray(blob["gps"]))
    if len(ids) != man["count"]:
        raise CrossviewError(f"{folder}: shards hold {len(ids)} items, the manifest says {man['count']}")
    desc = torch.cat(descs) if descs else torch.empty(0, man["model"].get("dim") or 0)
    return ids, desc, (np.concatenate(gps) if gps else np.empty((0, 2))), man
