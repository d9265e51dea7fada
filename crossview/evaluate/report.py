"""``evaluate_split``: embed a split (sharded, resumable), compute its metrics, print one table, write
``metrics.json`` and pictures. The ``crossview eval`` command is a thin layer over it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossview.data.records import Split
from crossview.errors import ConfigError, DatasetError
from crossview.evaluate.retrieval import metrics_from_ranks, positive_ranks, recall_curve, top_k
from crossview.evaluate.university import PROTOCOLS, evaluate_university, good_positions
from crossview.io import write_json_atomic

DIRECTIONS = ("standard", "official")
TABLE_KEYS = ("R@1", "R@5", "R@10", "R@1%", "hit_rate", "AP", "chance_R@1")


def format_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """A plain-text table: one line per (label, metrics) with the metric columns they have."""
    keys = [k for k in TABLE_KEYS if any(k in m for _, m in rows)]
    width = max(len("setting"), *(len(label) for label, _ in rows))
    head = f"{'setting':<{width}}  " + "  ".join(f"{k:>10}" for k in keys)
    lines = [head, "-" * len(head)]
    for label, m in rows:
        cells = [f"{m[k]:>10.2f}" if k in m else f"{'':>10}" for k in keys]
        lines.append(f"{label:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def _labels(split: Split) -> tuple[np.ndarray, np.ndarray]:
    ql = [r.label for r in split.records]
    gl = [r.label for r in split.references]
    if any(v is None for v in ql) or any(v is None for v in gl):
        raise DatasetError(f"{split.dataset}/{split.name}: University-1652 evaluation needs a class label on every "
                           "query and gallery item (Record.label / Reference.label)")
    return np.asarray(ql, dtype=np.int64), np.asarray(gl, dtype=np.int64)


def swap_direction(split: Split, q: torch.Tensor, r: torch.Tensor):
    """MFRGN's CVUSA/CVACT "official" direction: aerial queries (each record's positive tile) vs ground refs."""
    pos = np.asarray(split.positives())
    if len(np.unique(pos)) != len(pos):
        raise ConfigError("--direction official needs a one-to-one query/reference pairing (CVUSA, CVACT); "
                          f"{split.dataset}/{split.name} has references shared by several queries")
    return r[torch.as_tensor(pos)], q, np.arange(len(pos))


def evaluate_descriptors(split: Split, q: torch.Tensor, r: torch.Tensor, *, direction: str = "standard",
                         protocol: str = "original", device=None, block: int = 1024):
    """Metrics of a split from its descriptors. Returns ``(metrics, curve, ranking)`` where ``curve`` is the
    recall@k curve (percent) and ``ranking`` the (queries, references, positive sets, semi sets) used."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"--direction must be one of {DIRECTIONS}, got {direction!r}")
    if split.dataset == "university1652":
        if direction != "standard":
            raise ConfigError("--direction official applies to CVUSA/CVACT only")
        if protocol not in PROTOCOLS:
            raise ConfigError(f"--u1652-protocol must be one of {PROTOCOLS}, got {protocol!r}")
        ql, gl = _labels(split)
        by = {p: evaluate_university(q, ql, r, gl, p, device=device, block=max(1, block // 4)) for p in PROTOCOLS}
        metrics = {**by[protocol], "by_protocol": by}
        first, _, _ = good_positions(q, ql, r, gl, protocol, device=device, block=max(1, block // 4))
        curve = recall_curve(np.where(first < 0, np.iinfo(np.int64).max, first), min(100, r.shape[0]))
        positives = [np.flatnonzero(gl == lab).tolist() for lab in ql]
        return metrics, curve, (q, r, positives, None)
    if direction == "official":
        q, r, pos = swap_direction(split, q, r)
        semis = None
        positives = [[int(p)] for p in pos]
    else:
        pos = np.asarray(split.positives())
        semis = [list(rec.semi_positives) for rec in split.records]
        semis = semis if any(semis) else None
        positives = [list(rec.positives) for rec in split.records]
    ranks, above = positive_ranks(q, r, pos, semis, device=device, block=block)
    metrics = metrics_from_ranks(ranks, r.shape[0], semi_above=above)
    return metrics, recall_curve(ranks, min(100, r.shape[0])), (q, r, positives, semis)


def evaluate_split(
    model: torch.nn.Module,
    split: Split,
    out: str | Path,
    *,
    direction: str = "standard",
    protocol: str = "original",
    pictures: int = 8,
    picture_k: int = 5,
    embeddings: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch: int = 32,
    half: bool = False,
    precision: str = "fp32",
    model_name: str | None = None,
    root: Path | None = None,
    extra: dict[str, Any] | None = None,
    log=print,
    trust_checkpoint: bool = False,
) -> dict[str, Any]:
    """Embed (reusing finished shards), evaluate, print one table, write ``out/metrics.json``,
    ``out/recall_at_k.png`` and ``out/top{k}.png`` (``pictures`` queries). Returns the metrics.

    ``precision``: ``fp32`` or ``bf16`` (see :func:`crossview.device.cpu_precision`), recorded in the metrics with
    the layout and thread count (``inference``). ``trust_checkpoint``: reused shards are unpickled without
    restriction (``--trust-checkpoint``)."""
    from crossview.device import inference_record
    from crossview.evaluate.figures import recall_curve_plot, topk_sheet
    from crossview.search.embed import embed_split, view_folders
    from crossview.search.shards import load_shards

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    emb = Path(embeddings) if embeddings else out / "embeddings"
    t0 = time.perf_counter()
    embed_split(model, split, emb, batch=batch, device=device, half=half, precision=precision,
                model_name=model_name, root=root, log=log, trust_checkpoint=trust_checkpoint)
    t_embed = time.perf_counter() - t0
    folders = view_folders(split)
    _, q, _, qman = load_shards(emb / folders["query"], dtype=torch.float32, trust_checkpoint=trust_checkpoint)
    _, r, _, _ = load_shards(emb / folders["reference"], dtype=torch.float32, trust_checkpoint=trust_checkpoint)
    t1 = time.perf_counter()
    metrics, curve, (qd, rd, positives, semis) = evaluate_descriptors(
        split, q, r, direction=direction, protocol=protocol, device=device)
    t_eval = time.perf_counter() - t1

    label = f"{split.dataset} {split.name}"
    if split.meta.get("area"):
        label += f" ({split.meta['area']}-area)"
    label += " aerial→ground (MFRGN official)" if direction == "official" else ""
    rows = [(f"{label} [{p}]", m) for p, m in metrics["by_protocol"].items()] if "by_protocol" in metrics \
        else [(label, metrics)]
    table = format_table(rows)
    log(table)

    record = {**metrics, "dataset": split.dataset, "split": split.name, "direction": direction,
              "split_meta": {k: v for k, v in split.meta.items() if isinstance(v, str | int | float | bool)},
              "model": qman["model"].get("name"), "model_config_hash": qman["model"].get("config_hash"),
              "model_weights_hash": qman["model"].get("weights_hash"), "descriptor_dim": int(q.shape[1]),
              "embed_s": round(t_embed, 3), "eval_s": round(t_eval, 3), "embeddings": str(emb),
              "precision": qman.get("precision", precision), "inference": inference_record(precision, device),
              **(extra or {})}
    if split.dataset == "university1652":
        record["protocol"] = protocol
    write_json_atomic(out / "metrics.json", record)
    recall_curve_plot({label: curve}, out / "recall_at_k.png", title=f"recall@k — {label}")
    if pictures > 0 and qd.shape[0]:
        qpaths = [rec.query_path for rec in split.records]
        rpaths = [ref.path for ref in split.references]
        if direction == "official":
            qpaths, rpaths = [rpaths[p] for p in split.positives()], qpaths
        sel = np.unique(np.linspace(0, qd.shape[0] - 1, min(pictures, qd.shape[0])).round().astype(int))
        scores, rows_k = top_k(qd[torch.as_tensor(sel)], rd, picture_k, device=device)
        topk_sheet([qpaths[i] for i in sel], rpaths, rows_k, [positives[i] for i in sel],
                   [semis[i] for i in sel] if semis else None, out / f"top{picture_k}.png", scores=scores)
    log(f"metrics: {out / 'metrics.json'}")
    return record
