"""The paper kit: presets and rows of MFRGN's tables, `crossview report` on hand-made folders, the figures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from crossview.paper import report as rep
from crossview.paper.figures import (
    _conditional_p,
    figure_size,
    response_figure,
    response_maps,
    tsne_exact,
    tsne_figure,
)
from crossview.paper.tables import (
    PAPER_PRESETS,
    ROWS,
    ROWS_BY_ID,
    cross_eval_command,
    protocol,
    rows_for_preset,
    tiny_model,
    twin_name,
)

# --- presets and rows ------------------------------------------------------------------------------------------


def test_presets_use_only_base_keys_and_resolve():
    from crossview.train.presets import BASE, PRESETS, resolve_config

    for name, cfg in PAPER_PRESETS.items():
        unknown = set(cfg) - set(BASE)
        assert not unknown, f"{name}: keys {unknown} are not training config keys"
        if name in PRESETS:  # merged by the lead: the one merge function must give BASE + preset
            resolved = resolve_config(name)
            assert {k: resolved[k] for k in cfg} == cfg
        assert cfg["dataset"] in ("cvusa", "cvact", "vigor")
        assert not cfg.get("crop") or cfg["dataset"] == "cvact", f"{name}: the pre-crop exists for CVACT only"


def test_every_preset_names_a_registered_model_with_valid_switches():
    from crossview.models import list_models, model_config

    registered = set(list_models())
    for name, cfg in PAPER_PRESETS.items():
        assert cfg["model"] in registered, f"{name}: model {cfg['model']} is not registered"
        model_config(cfg["model"], **cfg.get("model_kwargs", {}))  # unknown switches raise ConfigError


def test_fig7_ratios_split_the_2048_dimensions():
    from crossview.models import model_config

    for name, cfg in PAPER_PRESETS.items():
        if "-f7-" not in name:
            continue
        m = model_config(cfg["model"], **cfg.get("model_kwargs", {}))
        local = m["local_dim"] if m.get("local_flow") else 0
        g, l = (int(x) for x in name.rsplit("ratio-", 1)[1].split("-"))
        assert m["global_dim"] + local == 2048
        assert m["global_dim"] * l == local * g, name


def test_rows_hold_the_printed_numbers_and_point_at_presets():
    assert len(ROWS_BY_ID) == len(ROWS)
    assert {r.table for r in ROWS} == {"1", "2", "3", "4", "5", "f7"}
    for r in ROWS:
        assert r.preset is None or r.preset in PAPER_PRESETS, r.id
        assert r.twin is None or r.twin in PAPER_PRESETS, r.id
        assert set(r.paper) == set(r.measure)
    # a few cells as printed
    assert ROWS_BY_ID["t1-cvact-none-mfrgn"].paper["R@1"] == 88.78
    assert ROWS_BY_ID["t2-cvusa-none-mfrgn"].paper["R@1"] == 51.61
    assert ROWS_BY_ID["t2-cvact-none-mfrgn"].paper["R@1%"] == 95.04
    assert ROWS_BY_ID["t3-cross-mfrgn"].paper["hit_rate"] == 47.54
    assert ROWS_BY_ID["t3-same-saig-d"].paper["R@5"] is None
    assert ROWS_BY_ID["t4-cross-baseline"].paper["R@1"] == 10.78
    assert ROWS_BY_ID["t5-la1-pps1"].paper["GMACs/image"] == 21.80
    assert ROWS_BY_ID["t5-la0-pps0"].paper["Memory (MB)"] == 1166
    # The inference behind Table 4's presets: its last row prints Table 5's "LA on, PPS off" numbers, and the full
    # model's Table 5 row prints Table 1/2's plain MFRGN numbers; the rows share the runs.
    t4_same, t4_cross = ROWS_BY_ID["t4-same-mbaseline-g-lp"], ROWS_BY_ID["t4-cross-mbaseline-g-lp"]
    t5 = ROWS_BY_ID["t5-la1-pps0"]
    assert (t4_same.paper["R@1"], t4_cross.paper["R@1"]) == (t5.paper["Same-area R@1"], t5.paper["Cross-area R@1"])
    assert t4_same.preset == t5.preset
    full = ROWS_BY_ID["t5-la1-pps1"]
    assert full.paper["Same-area R@1"] == ROWS_BY_ID["t1-cvact-none-mfrgn"].paper["R@1"]
    assert full.paper["Cross-area R@1"] == ROWS_BY_ID["t2-cvact-none-mfrgn"].paper["R@1"]
    assert full.preset == ROWS_BY_ID["t1-cvact-none-mfrgn"].preset


def test_paper_rows_map_to_the_intended_switches():
    p = PAPER_PRESETS
    assert p["paper-t1-cvact-mfrgn-crop"]["crop"] and not p["paper-t1-cvact-mfrgn-crop"].get("gps_sample")
    plus = p["paper-t1-cvact-mfrgn-plus"]
    assert plus["crop"] and plus["gps_sample"] and plus["sim_sample"]
    assert not p["paper-t1-cvusa-mfrgn"].get("gps_sample") and p["paper-t1-cvusa-mfrgn"]["model"] == "mfrgn_cvusa"
    assert p["paper-t3-vigor-cross-mfrgn"]["area"] == "cross" and p["paper-t3-vigor-cross-mfrgn"]["epochs"] == 70
    assert p["paper-t4-cvact-baseline"]["model"] == "mfrgn_cvact_baseline"
    assert p["paper-t4-cvact-mbaseline-g-lini"]["model"] == "mfrgn_cvact_g_lini"
    assert p["paper-t4-cvact-mbaseline-g-lini"]["model_kwargs"] == {"pps": False}
    assert p["paper-t5-cvact-softmax-nopps"]["model"] == "mfrgn_cvact_softmax_no_pps"
    assert p["paper-t1-cvact-mfrgn"]["eval_split"] == "val" and p["paper-t1-cvusa-mfrgn"]["eval_split"] == "test"
    # CVUSA→CVACT "w/ Pre-processing": the plain CVUSA run evaluated on cropped CVACT
    row = ROWS_BY_ID["t2-cvusa-pre-mfrgn"]
    assert row.preset == "paper-t1-cvusa-mfrgn" and row.cross_eval == {"dataset": "cvact", "split": "val",
                                                                       "crop": True}
    assert ROWS_BY_ID["t2-cvact-pre-mfrgn"].cross_eval["crop"] is False


def test_synthetic_twins_keep_the_switches():
    assert tiny_model("mfrgn_cvact_g_lini") == "mfrgn_tiny_g_lini"
    assert tiny_model("mfrgn_vigor") == "mfrgn_tiny"
    assert tiny_model("sample4geo_cvusa") == "sample4geo_tiny"
    for name, cfg in PAPER_PRESETS.items():
        if name.startswith("paper-synthetic-"):
            continue
        twin = PAPER_PRESETS[twin_name(name)]
        for key in ("dataset", "area", "crop", "gps_sample", "sim_sample", "model_kwargs", "eval_split"):
            assert twin.get(key) == cfg.get(key), (name, key)
        assert twin["model"] == tiny_model(cfg["model"]) and twin["pretrained"] is False


def test_one_run_fills_several_rows_and_the_cross_eval_command():
    rows = {r.id for r, synthetic in rows_for_preset("paper-t1-cvact-mfrgn") if not synthetic}
    assert rows == {"t1-cvact-none-mfrgn", "t2-cvact-none-mfrgn", "t5-la1-pps1", "f7-ratio-7-1"}
    cmd = cross_eval_command(ROWS_BY_ID["t2-cvusa-pre-mfrgn"], "runs/a", "/data/CVACT")
    assert cmd == ["crossview", "eval", "runs/a", "--data", "/data/CVACT", "--dataset", "cvact", "--split", "val",
                   "--crop", "--out", "runs/a/eval-cvact-crop"]
    text = protocol(ROWS_BY_ID["t2-cvusa-pre-mfrgn"])
    assert "cross: cvact:val with the pre-crop" in text and "ground→aerial" in text


# --- report ------------------------------------------------------------------------------------------------------


def _run(root: Path, name: str, preset: str, r1: float, data: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    cfg = {**PAPER_PRESETS[preset], "preset": preset}
    (d / "config.json").write_text(json.dumps({"config": cfg, "data": data}))
    lines = [{"type": "train", "step": 1, "loss": 3.0},
             {"type": "eval", "step": 5, "R@1": r1 - 10, "R@5": 1.0, "R@10": 2.0, "R@1%": 3.0},
             {"type": "eval", "step": 9, "R@1": r1, "R@5": r1 + 5, "R@10": r1 + 6, "R@1%": 99.0,
              "chance_R@1": 1.25}]
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"type\": \"ev")  # torn line
    return d


def _eval(d: Path, r1: float, **meta) -> Path:
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"R@1": r1, "R@5": r1 + 1, "R@10": r1 + 2, "R@1%": r1 + 3, **meta}))
    return d


def _fake_cost(model, kwargs):
    return {"params_m": 7.5, "gmacs_image": 0.25, "gmacs_pair": 0.5, "memory_mb": None}


def _csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        return {row["row_id"]: row for row in csv.DictReader(f)}


def test_report_builds_the_expected_tables(tmp_path):
    cvact = _run(tmp_path, "t1cvact", "paper-t1-cvact-mfrgn", 80.0, "/data/cvact")
    cross = _eval(cvact / "eval-cvusa", 40.0, dataset="cvusa", split="test", data="/data/cvusa")
    cvusa = _run(tmp_path, "t1cvusa", "paper-t1-cvusa-mfrgn", 90.0, "/data/cvusa")
    plain = _eval(tmp_path / "elsewhere" / "plain", 30.0, dataset="cvact", checkpoint=str(cvusa), data="/data/cvact",
                  split_meta={"crop": False})
    cropped = _eval(tmp_path / "elsewhere" / "crop", 35.0, dataset="cvact", checkpoint=str(cvusa),
                    data="/data/cvact", crop=True)
    base = _run(tmp_path, "t4base", "paper-t4-cvact-baseline", 70.0, "/data/cvact")
    base2 = _run(tmp_path, "t4base2", "paper-t4-cvact-baseline", 72.0, "/data/cvact")
    # base2 evaluated again by `crossview eval` on its own test split: replaces its in-training number (71 → 72)
    again = _eval(base2 / "eval", 74.0, dataset="cvact", split="val", data="/data/cvact", checkpoint=str(base2))
    syn = _run(tmp_path, "syn", "paper-synthetic-t4-cvact-baseline", 12.0, "/syn/cvact")
    other = _run(tmp_path, "other", "paper-t1-cvact-mfrgn", 50.0, "/data/cvact")
    cfg = json.loads((other / "config.json").read_text())
    cfg["config"]["preset"] = "synthetic-cpu"
    (other / "config.json").write_text(json.dumps(cfg))

    crop_run = _run(tmp_path, "crop", "paper-t1-cvact-mfrgn-crop", 85.0, "/data/cvact")
    uncropped = _eval(crop_run / "eval", 60.0, dataset="cvact", data="/data/cvact", split_meta={"crop": False})
    folders = [cvact, cross, cvusa, plain, cropped, base, base2, again, syn, other, crop_run, uncropped]
    paths = rep.write_report([str(f) for f in folders], tmp_path / "out", cost_fn=_fake_cost)
    md = paths["markdown"].read_text()

    assert "| MFRGN | w/o Pre-processing & Sampling | 80.00 / 88.78 | 85.00 / 96.61 | 86.00 / 97.51 | " \
           "99.00 / 98.99 | 1 |" in md
    t2 = _csv(paths["table2.csv"])
    assert float(t2["t2-cvact-none-mfrgn"]["measured R@1"]) == 40.0
    assert t2["t2-cvact-none-mfrgn"]["paper R@1"] == "49.18"
    assert float(t2["t2-cvusa-none-mfrgn"]["measured R@1"]) == 30.0  # uncropped CVACT
    assert float(t2["t2-cvusa-pre-mfrgn"]["measured R@1"]) == 35.0  # cropped CVACT
    t1 = _csv(paths["table1.csv"])
    assert float(t1["t1-cvusa-pre-mfrgn"]["measured R@1"]) == 90.0  # CVUSA: the crop does not apply
    t4 = _csv(paths["table4.csv"])
    assert float(t4["t4-same-baseline"]["measured R@1"]) == 72.0 and t4["t4-same-baseline"]["n_runs"] == "2"
    assert t4["t4-cross-baseline"]["measured R@1"] == ""
    t5 = _csv(paths["table5.csv"])
    full = t5["t5-la1-pps1"]
    assert float(full["measured GMACs/image"]) == 0.25 and float(full["measured Same-area R@1"]) == 80.0
    assert float(full["measured Cross-area R@1"]) == 40.0 and full["paper GMACs/image"] == "21.80"
    assert "Counting convention" in md and "per single image" in md.replace("ONE image", "per single image")
    # synthetic twins: their own table, loudly marked
    syn_md = md[md.index("Table 4: component analysis, training on CVACT — synthetic twin"):]
    assert rep.SYNTHETIC_WARNING in syn_md and "12.00 / 83.52" in syn_md
    assert float(_csv(paths["table4_synthetic.csv"])["t4-same-baseline"]["measured chance R@1"]) == 1.25
    # the run of an unknown preset is listed, not dropped
    assert "not matched to a paper row" in md and str(other) in md
    # a crop-trained run evaluated on uncropped panoramas is not its row's protocol: listed, not averaged in
    assert float(t1["t1-cvact-pre-mfrgn"]["measured R@1"]) == 85.0 and str(uncropped) in md


def test_report_ordering_and_row_hint(tmp_path):
    runs = [_run(tmp_path, k, f"paper-t4-cvact-{k}", r1, "/d") for k, r1 in
            (("baseline", 60.0), ("mbaseline", 70.0), ("mbaseline-g", 65.0), ("mbaseline-g-lp", 60.0))]
    hinted = _eval(tmp_path / "x", 5.0)  # no config anywhere: placed by hand
    tables, unmatched = rep.build_tables(rep.collect([str(r) for r in runs] + [f"{hinted}@t4-cross-mbaseline"]),
                                         cost=False)
    t4 = next(t for t in tables if t.key == "4")
    measured, paper = rep.ordering(t4, "R@1", "CVACT")
    assert measured == "MBaseline > MBaseline+G > Baseline = MBaseline+G+L_p"
    assert paper == "MBaseline+G+L_p > MBaseline+G > Baseline > MBaseline"
    cross = next(r for r in t4.rows if r.row.id == "t4-cross-mbaseline")
    assert cross.measured["R@1"] == 5.0 and not unmatched


def test_report_errors_name_the_folder(tmp_path):
    from crossview.errors import CrossviewError

    with pytest.raises(CrossviewError, match="neither a run folder"):
        rep.read_result(tmp_path)
    with pytest.raises(CrossviewError, match="unknown row id"):
        rep.read_result(tmp_path, "t9-nothing")


def test_report_cli(tmp_path, capsys):
    from crossview.cli import main

    run = _run(tmp_path, "a", "paper-t3-vigor-same-mfrgn", 60.0, "/d")
    assert main(["report", str(run), "--out", str(tmp_path / "rep"), "--no-cost"]) == 0
    t3 = _csv(tmp_path / "rep" / "table3.csv")
    assert float(t3["t3-same-mfrgn"]["measured R@1"]) == 60.0 and t3["t3-same-mfrgn"]["paper hit_rate"] == "80.59"
    assert main(["report", "--list-rows"]) == 0
    assert "t5-la1-pps1" in capsys.readouterr().out


def test_count_macs_convention():
    lin = torch.nn.Linear(10, 20, bias=False)
    assert rep.count_macs(lambda: lin(torch.zeros(1, 10))) == 200  # one MAC per weight for one input
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    assert rep.count_macs(lambda: conv(torch.zeros(1, 3, 5, 5))) == 4 * 3 * 9 * 25


# --- figures ------------------------------------------------------------------------------------------------------


def test_conditional_p_hits_the_perplexity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    p = _conditional_p(d2, 10.0)
    entropy = -(p * np.log(np.maximum(p, 1e-300))).sum(axis=1)
    assert np.allclose(p.sum(axis=1), 1) and np.allclose(np.diag(p), 0)
    assert np.allclose(np.exp(entropy), 10.0, rtol=1e-3)


def test_tsne_separates_clusters_and_is_deterministic():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(60, 16)), rng.normal(size=(60, 16)) + 5])
    y = tsne_exact(x, iters=400, seed=0)
    assert y.shape == (120, 2) and np.isfinite(y).all()
    labels = np.r_[np.zeros(60), np.ones(60)]
    d = ((y[:, None] - y[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :5]
    assert (labels[nearest] == labels[:, None]).mean() > 0.98
    assert np.allclose(tsne_exact(x, iters=400, seed=0), y)


def test_tsne_figure_png(tmp_path):
    rng = np.random.default_rng(2)
    png, xy = tsne_figure({"same-area": rng.normal(size=(30, 8)), "cross-area": rng.normal(size=(20, 8))},
                          tmp_path / "t.png", size_px=(640, 480), perplexity=5)
    assert Image.open(png).size == (640, 480) and xy.shape == (50, 2)


class PatchToy(torch.nn.Module):
    """Channel 0 detects a saturated red patch; 1 and 2 a green and a blue background; descriptor = their means.

    Query and reference share the red patch (at different places) and differ in background colour, so the patch
    is what makes them similar."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.ReLU())
        w = torch.tensor([[35.0, -35.0, -35.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        self.backbone[0].weight.data = w.view(3, 3, 1, 1)
        self.backbone[0].bias.data = torch.tensor([-35 * 0.45, -0.25, -0.25])

    def embed(self, x, view):
        return F.normalize(self.backbone(x).mean(dim=(2, 3)), dim=-1)


def _planted(h, w, y, x, background, rng):
    a = rng.uniform(0, 0.2, size=(3, h, w)).astype(np.float32)
    a[background] += 0.4
    a[:, y:y + 8, x:x + 8] = 0
    a[0, y:y + 8, x:x + 8] = 1
    return torch.from_numpy(a)[None]


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_response_map_peaks_on_the_planted_matching_patch(method):
    rng = np.random.default_rng(0)
    q = _planted(32, 128, 12, 90, 1, rng)
    r = _planted(48, 48, 30, 5, 2, rng)
    mq, mr, sim = response_maps(PatchToy(), q, r, method=method, grid=8)
    assert mq.shape == (32, 128) and mr.shape == (48, 48) and 0 < sim < 1
    for m, (y, x) in ((mq, (12, 90)), (mr, (30, 5))):
        py, px = np.unravel_index(m.argmax(), m.shape)
        assert y - 2 <= py < y + 10 and x - 2 <= px < x + 10, (method, py, px)
        inside = m[y:y + 8, x:x + 8].mean()
        outside = (m.sum() - m[y:y + 8, x:x + 8].sum()) / (m.size - 64)
        assert inside > 10 * outside


@pytest.mark.slow  # builds an EfficientNet-Lite0 MFRGN (~10 s on an idle 2-core CPU)
def test_response_maps_and_figure_on_a_tiny_mfrgn(tmp_path):
    from crossview.models import create_model, input_spec

    torch.manual_seed(0)
    model = create_model("mfrgn_tiny").eval()
    (qh, qw), (rh, rw) = input_spec(model, "ground")[0], input_spec(model, "aerial")[0]
    q, r = torch.randn(1, 3, qh, qw), torch.randn(1, 3, rh, rw)
    mq, mr, sim = response_maps(model, q, r, "ground", "aerial")
    assert mq.shape == (qh, qw) and mr.shape == (rh, rw)
    assert np.isfinite(mq).all() and mq.min() >= 0 and math.isclose(mq.max(), 1.0, rel_tol=1e-6)
    expected = F.cosine_similarity(model.embed(q, "ground"), model.embed(r, "aerial")).item()
    assert sim == pytest.approx(expected, abs=1e-5)
    # Table 5's cost: the models package's meta-device count equals counting the real model's forward
    cost = rep.model_cost("mfrgn_tiny")
    assert cost["params_m"] * 1e6 == pytest.approx(sum(p.numel() for p in model.parameters()))
    for view, size in (("ground", (qh, qw)), ("aerial", (rh, rw))):
        direct = rep.count_macs(lambda v=view, s=size: model.embed(torch.zeros(1, 3, *s), v))
        assert cost["gmacs_per_view"][view] * 1e9 == pytest.approx(direct, rel=1e-6)
    assert cost["gmacs_pair"] == pytest.approx(sum(cost["gmacs_per_view"].values()))
    assert cost["gmacs_image"] == max(cost["gmacs_per_view"].values()) and cost["memory_mb"] is None
    pics = [((np.random.rand(qh, qw, 3) * 255).astype(np.uint8), (np.random.rand(rh, rw, 3) * 255).astype(np.uint8))]
    pairs = [{"query": pics[0][0], "reference": pics[0][1], "query_map": mq, "reference_map": mr, "label": "p"}] * 3
    png = response_figure(pairs, tmp_path / "resp.png", width_px=900)
    assert Image.open(png).size == figure_size(pics * 3, 900) == (900, 3 * round(900 / (qw / qh + rw / rh)))


@pytest.mark.slow  # a tiny synthetic VIGOR world + an (untrained) tiny MFRGN through both figure commands
def test_figure_commands_on_a_tiny_run(tiny_vigor_world, tmp_path):
    from crossview.cli import main
    from crossview.models import create_model, save_model

    world = tiny_vigor_world
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    save_model(create_model("mfrgn_tiny"), run / "model.pt")
    cfg = {**PAPER_PRESETS["paper-synthetic-t3-vigor-same-mfrgn"], "preset": "paper-synthetic-t3-vigor-same-mfrgn"}
    (run / "config.json").write_text(json.dumps({"config": cfg, "data": str(world)}))

    assert main(["figures", "tsne", str(run), "--out", str(tmp_path / "f"), "--max-points", "12"]) == 0
    assert Image.open(tmp_path / "f" / "tsne.png").size == (800, 800)
    info = json.loads((tmp_path / "f" / "tsne.json").read_text())
    assert set(info["groups"]) == {"same-area", "cross-area"} and len(info["xy"]) == sum(info["groups"].values())
    assert main(["figures", "response", str(run), "--out", str(tmp_path / "f"), "--n", "2", "--width", "600"]) == 0
    pairs = json.loads((tmp_path / "f" / "response.json").read_text())["pairs"]
    assert len(pairs) == 2 and all(-1 <= p["similarity"] <= 1 for p in pairs)
    w, h = Image.open(tmp_path / "f" / "response.png").size
    assert w == 600 and h == 2 * round(600 / (256 / 64 + 1))
