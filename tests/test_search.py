"""Descriptor shards (resume, order, torchrun-style ranks), faiss indexes (exactness, round trip, model check),
and the evaluation report / index CLI on a tiny stand-in model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from crossview.data.records import Record, Reference, Split
from crossview.errors import ConfigError, CrossviewError
from crossview.search.embed import embed_images, embed_split, model_identity
from crossview.search.index import build_index, load_index, save_index
from crossview.search.shards import load_shards, parse_shard_arg, shard_ranges


class TinyModel(torch.nn.Module):
    """Stand-in with the crossview model interface: ``embed(x, view)`` and a config with sizes, mean, std."""

    def __init__(self, dim: int = 8, seed: int = 0, name: str = "tiny"):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.nn.Parameter(torch.randn(48, dim, generator=g))
        # the config keys crossview.models.input_spec reads
        self.config = {"name": name, "arch": "tiny", "sizes": {"ground": [16, 32], "aerial": [16, 16]},
                       "mean": [0.5] * 3, "std": [0.25] * 3}
        self.images = 0

    def embed(self, x: torch.Tensor, view: str) -> torch.Tensor:
        self.images += x.shape[0]
        return F.normalize(F.adaptive_avg_pool2d(x, 4).flatten(1) @ self.proj, dim=1)


def _image(path: Path, rng, size) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Split:
    """11 ground queries, 13 aerial tiles; query i's positive is tile i, its semi-positive tile i + 1."""
    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    refs = [Reference(i, _image(root / "sat" / f"t{i:02d}.png", rng, (20, 20)), gps=(40 + i / 100, -70.0))
            for i in range(13)]
    recs = [Record(f"q{i:02d}", _image(root / "pano" / f"q{i:02d}.png", rng, (20, 40)), "ground", (i,), (i + 1,),
                   gps=(40 + i / 100, -70.0)) for i in range(11)]
    return Split("vigor", "test", recs, refs, {"area": "same"})


# ---------------------------------------------------------------- shards
def test_shard_ranges_and_argument():
    assert shard_ranges(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_ranges(2, 4) == [(0, 0), (0, 1), (1, 1), (1, 2)]
    assert parse_shard_arg("3/8") == (3, 8)
    for bad in ("8/8", "x", "1/0"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard_arg(bad)


def test_embed_shards_keep_order_skip_done_and_resume(world, tmp_path):
    model = TinyModel()
    out = tmp_path / "emb"
    folders = embed_split(model, world, out, shard_size=4, log=lambda *_: None)
    assert folders == {"query": out / "ground", "reference": out / "aerial"}
    assert sorted(p.name for p in (out / "ground").glob("shard-*")) == [
        "shard-00000-of-00003.safetensors", "shard-00001-of-00003.safetensors", "shard-00002-of-00003.safetensors"]
    ids, desc, gps, man = load_shards(out / "ground")
    assert ids == [r.query_id for r in world.records]
    want = embed_images(model, [r.query_path for r in world.records], "ground")
    torch.testing.assert_close(desc, want)
    np.testing.assert_allclose(gps[:, 0], [r.gps[0] for r in world.records])
    assert man["model"]["name"] == "tiny" and man["model"]["dim"] == 8 and man["count"] == 11

    seen = model.images
    embed_split(model, world, out, shard_size=4, log=lambda *_: None)
    assert model.images == seen + 1  # everything finished: only the blank image that tells the descriptor size
    (out / "aerial" / "shard-00001-of-00004.safetensors").unlink()
    mtime = (out / "aerial" / "shard-00000-of-00004.safetensors").stat().st_mtime_ns
    embed_split(model, world, out, shard_size=4, log=lambda *_: None)
    assert model.images == seen + 1 + 1 + 3  # the probe, then only the missing shard (tiles 3..5)
    assert (out / "aerial" / "shard-00000-of-00004.safetensors").stat().st_mtime_ns == mtime
    _, ref_desc, _, _ = load_shards(out / "aerial")
    torch.testing.assert_close(ref_desc, embed_images(model, [r.path for r in world.references], "aerial"))


def test_shard_i_of_n_and_ranks_merge_in_order(world, tmp_path):
    model = TinyModel()
    full = embed_images(model, [r.query_path for r in world.records], "ground")
    out = tmp_path / "by_shard"
    for i in (2, 0):
        embed_split(model, world, out, roles=("query",), shard=(i, 3), log=lambda *_: None)
    with pytest.raises(CrossviewError, match="1 of 3 shards missing"):
        load_shards(out / "ground")
    embed_split(model, world, out, roles=("query",), shard=(1, 3), log=lambda *_: None)
    torch.testing.assert_close(load_shards(out / "ground")[1], full)

    ranks = tmp_path / "ranks"  # what two torchrun ranks do: shards 0, 2, 4 and 1, 3 (ids in order on merge)
    for rank in (1, 0):
        embed_split(model, world, ranks, roles=("query",), shard_size=2, rank=rank, world=2, log=lambda *_: None)
    ids, desc, _, _ = load_shards(ranks / "ground")
    assert ids == [r.query_id for r in world.records]
    torch.testing.assert_close(desc, full)


def test_shard_folder_of_another_model_is_refused(world, tmp_path):
    embed_split(TinyModel(seed=0), world, tmp_path, roles=("query",), log=lambda *_: None)
    with pytest.raises(ConfigError, match="holds descriptors of model 'tiny'"):
        embed_split(TinyModel(seed=1), world, tmp_path, roles=("query",), log=lambda *_: None)


# ---------------------------------------------------------------- indexes
def _clustered(rng, n, d, n_centres=50, spread=0.3):
    centres = rng.standard_normal((n_centres, d))
    x = centres[rng.integers(0, n_centres, n)] + spread * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_flat_index_equals_brute_force_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    x, q = _clustered(rng, 2000, 32), _clustered(rng, 50, 32)
    ids = [f"tile{i}" for i in range(len(x))]
    gps = np.stack([np.linspace(40, 41, len(x)), np.full(len(x), -70.0)], 1)
    gps[3] = np.nan
    meta = {"name": "tiny", "config_hash": "aaaa", "weights_hash": "bbbb", "dim": 32}
    idx = build_index(x, ids, gps, meta, kind="flat")
    scores, got = idx.search(q, 10)
    sim = q.astype(np.float64) @ x.T.astype(np.float64)
    want_rows = np.argsort(-sim, axis=1, kind="stable")[:, :10]
    assert got.tolist() == [[ids[j] for j in row] for row in want_rows]
    np.testing.assert_allclose(scores, np.take_along_axis(sim, want_rows, 1), rtol=1e-5, atol=1e-6)

    path = save_index(idx, tmp_path / "tiles.faiss")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiles.faiss", "tiles.faiss.json"]  # no temp files left
    back = load_index(path, query_meta=dict(meta))
    s2, g2 = back.search(q, 10)
    np.testing.assert_array_equal(s2, scores)
    assert g2.tolist() == got.tolist() and back.ids == ids and back.meta == meta
    np.testing.assert_array_equal(np.isnan(back.gps), np.isnan(gps))
    np.testing.assert_allclose(back.gps[~np.isnan(gps)], gps[~np.isnan(gps)])

    other = {**meta, "name": "other-model", "weights_hash": "cccc"}
    with pytest.raises(ConfigError, match=r"index built with model 'tiny'.*query model is 'other-model'"):
        load_index(path, query_meta=other)
    with pytest.raises(ConfigError, match="weights"):
        back.check_query_model({**meta, "weights_hash": "dddd"})
    (tmp_path / "tiles.faiss").write_bytes(b"\0" + (tmp_path / "tiles.faiss").read_bytes()[1:])
    with pytest.raises(CrossviewError, match="does not match its sidecar"):
        load_index(path)


def test_ivfpq_index_recall_and_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x = _clustered(rng, 6200, 32, n_centres=100)
    q, x = x[:200], x[200:]  # queries from the same distribution, not in the index
    ids = [str(i) for i in range(len(x))]
    idx = build_index(x, ids, None, {"name": "tiny"}, kind="ivfpq", nlist=32, m=8, nbits=6, opq=False, nprobe=8)
    exact = build_index(x, ids, None, {"name": "tiny"}, kind="flat")
    _, approx_rows = idx.search_rows(q, 10)
    _, exact_rows = exact.search_rows(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx_rows, exact_rows)])
    assert recall >= 0.95, recall
    back = load_index(save_index(idx, tmp_path / "pq.faiss"))
    assert back.params["kind"] == "ivfpq" and back.params["nprobe"] == 8
    np.testing.assert_array_equal(back.search_rows(q, 10)[1], approx_rows)


# ---------------------------------------------------------------- report + CLI
def test_evaluate_split_writes_metrics_and_pictures(world, tmp_path):
    from crossview.evaluate import evaluate_retrieval
    from crossview.evaluate.report import evaluate_split

    model = TinyModel()
    lines: list[str] = []
    rec = evaluate_split(model, world, tmp_path / "eval", pictures=3, picture_k=4, log=lines.append)
    q = embed_images(model, [r.query_path for r in world.records], "ground")
    r = embed_images(model, [x.path for x in world.references], "aerial")
    want = evaluate_retrieval(q, r, world.positives(), [list(x.semi_positives) for x in world.records])
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("R@1", "R@5", "R@10", "R@1%", "hit_rate", "chance_R@1", "queries", "references"):
        assert saved[key] == want[key] == rec[key], key
    assert saved["model"] == "tiny" and saved["direction"] == "standard" and saved["descriptor_dim"] == 8
    table = next(line for line in lines if line.startswith("setting"))
    assert "R@1" in table and "hit_rate" in table
    for name in ("recall_at_k.png", "top4.png"):
        assert Image.open(tmp_path / "eval" / name).size[0] > 100
    with pytest.raises(ConfigError, match="one-to-one"):  # VIGOR-like: the official swap does not apply...
        bad = Split("vigor", "test", [*world.records, Record("dup", world.records[0].query_path, "ground", (0,))],
                    world.references)
        evaluate_split(model, bad, tmp_path / "eval2", direction="official", pictures=0, log=lambda *_: None)
    # ...on a 1:1 pairing it ranks the aerial tiles against the ground images
    rec2 = evaluate_split(model, world, tmp_path / "eval3", direction="official", pictures=2,
                          log=lambda *_: None)
    swapped = evaluate_retrieval(r[:11], q, np.arange(11))
    assert rec2["R@1"] == swapped["R@1"] and rec2["references"] == 11


def test_index_cli_build_and_search(world, tmp_path, capsys):
    from crossview.cli import main

    embed_split(TinyModel(), world, tmp_path / "emb", log=lambda *_: None)
    assert main(["index", "build", "--shards", str(tmp_path / "emb"), "--out", str(tmp_path / "i.faiss")]) == 0
    assert main(["index", "search", str(tmp_path / "i.faiss"), "--query-shards", str(tmp_path / "emb"), "-k", "3",
                 "--json", str(tmp_path / "res.json")]) == 0
    res = json.loads((tmp_path / "res.json").read_text())["results"]
    assert [r["query"] for r in res] == [r.query_id for r in world.records]
    assert all(len(r["top"]) == 3 and r["top"][0]["score"] >= r["top"][2]["score"] for r in res)
    assert res[0]["top"][0]["gps"] is not None
    embed_split(TinyModel(seed=5, name="tiny-b"), world, tmp_path / "emb_b", roles=("query",), log=lambda *_: None)
    code = main(["index", "search", str(tmp_path / "i.faiss"), "--query-shards", str(tmp_path / "emb_b")])
    assert code == 2
    err = capsys.readouterr().err
    assert "index built with model 'tiny'" in err and "'tiny-b'" in err


def test_model_identity_tells_weights_and_preprocessing_apart():
    a, b, c = TinyModel(seed=0), TinyModel(seed=0), TinyModel(seed=1)
    ia, ib, ic = (model_identity(m, views=["ground", "aerial"]) for m in (a, b, c))
    assert ia == ib and ia["name"] == "tiny" and ia["dim"] == 8
    assert ia["config_hash"] == ic["config_hash"] and ia["weights_hash"] != ic["weights_hash"]
    assert ia["preprocessing"]["ground"] == {"size": [16, 32], "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.fixture(scope="module")
def vigor_and_checkpoints(tmp_path_factory, tiny_vigor_world):
    """The tiny synthetic VIGOR world and two saved mfrgn_tiny checkpoints (same config, different weights)."""
    from crossview.models import create_model, save_model

    base = tmp_path_factory.mktemp("vigor_ckpt")
    torch.manual_seed(0)
    root = tiny_vigor_world
    return root, save_model(create_model("mfrgn_tiny"), base / "model.pt"), \
        save_model(create_model("mfrgn_tiny"), base / "other.pt")


@pytest.mark.slow
def test_cli_embed_shards_then_eval_reuses_them_and_index_checks_the_model(vigor_and_checkpoints, tmp_path):
    """embed --shard i/n (any order) → eval reuses every shard → index build → search a photo; another model's
    photo query is refused. A saved mfrgn_tiny checkpoint on the tiny synthetic VIGOR world. Embedded in fp32 (the
    photo query is fp32 and compared to the stored scores; bf16 shards have their own tests in test_precision)."""
    from crossview.cli import main
    from crossview.evaluate import evaluate_retrieval

    root, ckpt, other = vigor_and_checkpoints
    emb = tmp_path / "emb"
    for shard in ("1/2", "0/2"):
        assert main(["embed", str(ckpt), str(root), "--dataset", "vigor", "--split", "test", "--out", str(emb),
                     "--shard", shard, "--batch", "16", "--device", "cpu", "--precision", "fp32"]) == 0
    shards = sorted(emb.glob("*/shard-*.safetensors"))
    assert [p.name for p in shards] == ["shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors"] * 2
    stamps = [p.stat().st_mtime_ns for p in shards]
    out = tmp_path / "eval"
    assert main(["eval", str(ckpt), "--data", str(root), "--dataset", "vigor", "--out", str(out), "--embeddings",
                 str(emb), "--top-k-pictures", "2", "--device", "cpu", "--precision", "fp32"]) == 0
    assert [p.stat().st_mtime_ns for p in shards] == stamps  # nothing re-embedded
    metrics = json.loads((out / "metrics.json").read_text())
    _, q, _, _ = load_shards(emb / "ground")
    _, r, _, _ = load_shards(emb / "aerial")
    from crossview.data import read_dataset

    split = read_dataset("vigor", root, "test", area="same")
    want = evaluate_retrieval(q, r, split.positives(), [list(x.semi_positives) for x in split.records])
    assert {k: metrics[k] for k in want} == want
    assert metrics["area"] == "same" and metrics["checkpoint"] == str(ckpt)
    assert (out / "top5.png").exists() and (out / "recall_at_k.png").exists()

    index = tmp_path / "tiles.faiss"
    assert main(["index", "build", "--shards", str(emb), "--out", str(index)]) == 0
    photo = str(split.records[0].query_path)
    assert main(["index", "search", str(index), "--image", photo, "--model", str(ckpt), "-k", "5",
                 "--json", str(tmp_path / "hits.json")]) == 0
    hits = json.loads((tmp_path / "hits.json").read_text())["results"][0]["top"]
    scores, ids = load_index(index).search(q[:1], 5)
    assert [h["id"] for h in hits] == ids[0].tolist()
    np.testing.assert_allclose([h["score"] for h in hits], scores[0], rtol=1e-4, atol=1e-5)
    assert main(["index", "search", str(index), "--image", photo, "--model", str(other)]) == 2


@pytest.mark.slow
def test_embed_under_torchrun_two_ranks_keeps_order(vigor_and_checkpoints, tmp_path, free_port):
    import os
    import subprocess
    import sys

    from crossview.data import read_dataset
    from crossview.models import load_model

    root, ckpt, _ = vigor_and_checkpoints
    out = tmp_path / "emb"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port),
           "-m", "crossview.cli", "embed", str(ckpt), str(root), "--dataset", "vigor", "--out", str(out),
           "--shard-size", "5", "--batch", "8", "--device", "cpu", "--precision", "fp32"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    split = read_dataset("vigor", root, "test", area="same")
    ids, desc, _, man = load_shards(out / "ground")
    assert man["num_shards"] == 5 and ids == [x.query_id for x in split.records]  # 24 queries in shards of 4-5
    want = embed_images(load_model(str(ckpt)), [x.query_path for x in split.records], "ground", batch=8)
    torch.testing.assert_close(desc, want, rtol=1e-4, atol=1e-5)


def test_split_meta_with_arrays_is_recorded_as_json():
    """CVACT splits carry a UTM array in their meta: the shard manifest records its shape, not the array."""
    import json

    import numpy as np

    from crossview.search.embed import _plain

    meta = {"utm": np.zeros((5, 2)), "skipped": np.int64(3), "crop": True, "cities": ("A", "B")}
    plain = json.loads(json.dumps(_plain(meta)))
    assert plain == {"utm": {"array_shape": [5, 2], "dtype": "float64"}, "skipped": 3, "crop": True,
                     "cities": ["A", "B"]}
