"""CPU inference precision: the one decision (crossview.device), its record in outputs and index sidecars, the fp32
fallback on processors without bf16, and the ``--precision`` / ``--threads`` flags."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from crossview import device as dev
from crossview.cli import main
from crossview.errors import ConfigError


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(dev, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})


@pytest.fixture
def old_cpu(monkeypatch):
    monkeypatch.setattr(dev, "cpu_flags", lambda: {"sse4_2", "avx2", "avx512f"})


def test_auto_picks_bf16_only_where_the_cpu_has_it(bf16_cpu):
    assert dev.cpu_precision("auto", "cpu") == "bf16"
    assert dev.cpu_precision("fp32", "cpu") == "fp32"
    assert dev.cpu_precision("auto", "cuda:0") == "fp32"  # GPUs keep their own --half path


def test_cpu_without_bf16_falls_back_to_fp32(old_cpu):
    assert not dev.cpu_bf16_supported()
    assert dev.cpu_precision("auto", "cpu") == "fp32"
    assert dev.cpu_precision("bf16", "cpu") == "bf16"  # asked for explicitly: honoured (emulated)


def test_amx_counts_as_bf16(monkeypatch):
    monkeypatch.setattr(dev, "cpu_flags", lambda: {"amx_tile", "amx_bf16"})
    assert dev.cpu_precision("auto") == "bf16"


def test_unknown_precision_names_the_flag():
    with pytest.raises(ConfigError, match="--precision"):
        dev.cpu_precision("int4")


def test_autocast_context(one_thread):
    import torch

    lin = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    with dev.inference_autocast("bf16", "cpu"):
        assert lin(x).dtype == torch.bfloat16
    with dev.inference_autocast("fp32", "cpu"):
        assert lin(x).dtype == torch.float32


def test_channels_last_keeps_the_identity_hash(one_thread):
    import torch

    from crossview.models import create_model
    from crossview.search.embed import model_identity

    torch.manual_seed(0)
    m = create_model("mfrgn_tiny")
    before = model_identity(m)
    dev.prepare_for_inference(m, "bf16", "cpu")
    assert next(p for p in m.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    assert model_identity(m)["weights_hash"] == before["weights_hash"]


def test_threads_and_competing_load_warning(monkeypatch, capsys):
    import torch

    threads = torch.get_num_threads()
    try:
        assert dev.configure_threads(1, warn=False) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(dev, "usable_cpus", lambda: 2)
        monkeypatch.setattr("os.getloadavg", lambda: (7.5, 5.0, 3.0))
        dev.configure_threads(2)
        assert "competing for the CPU" in capsys.readouterr().err
        monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))
        monkeypatch.setattr(dev, "competing_load", lambda n: None)
        dev.configure_threads(2)
        assert capsys.readouterr().err == ""
        with pytest.raises(ConfigError, match="--threads"):
            dev.configure_threads(0)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("command", ["embed", "eval", "locate", "locate-index", "serve"])
def test_precision_flag_parses_and_errors_name_it(command, capsys):
    from crossview.cli import build_parser

    need = {"embed": ["m", "root", "--dataset", "vigor", "--out", "o"], "eval": ["m", "--out", "o"],
            "locate": ["p.jpg", "--index", "i"], "locate-index": ["tiles", "--model", "m", "--out", "o"],
            "serve": ["--index", "i"]}[command]
    args = build_parser().parse_args([command, *need, "--precision", "bf16", "--threads", "1"])
    assert (args.precision, args.threads) == ("bf16", 1)
    assert build_parser().parse_args([command, *need]).precision == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, *need, "--precision", "fp8"])
    assert "--precision" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """A random-weight tiny retrieval model and a 2×2 tile set cut from one picture."""
    import torch

    from crossview.models import create_model, save_model
    from crossview.tiles import build_tiles

    root = tmp_path_factory.mktemp("precision")
    torch.manual_seed(0)
    save_model(create_model("mfrgn_tiny"), root / "model.pt")
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).resize((256, 256), Image.NEAREST) \
        .save(root / "ortho.png")
    manifest = build_tiles(root / "ortho.png", root / "tiles", corners=(40.001, -74.001, 40.0, -73.999), tile_px=128)
    return root, manifest


def test_bf16_index_records_it_and_answers_fp32_queries(tiles, one_thread):
    from crossview.locate import Locator, index_tiles
    from crossview.models import load_model
    from crossview.search.embed import embed_images
    from crossview.search.index import load_index
    from crossview.tiles import read_manifest

    root, manifest = tiles
    index = index_tiles(manifest, root / "model.pt", root / "bf16.index", precision="bf16")
    side = json.loads((root / "bf16.index.json").read_text())
    assert side["model"]["precision"] == "bf16"
    idx = load_index(index)
    records = read_manifest(manifest)
    model = load_model(str(root / "model.pt"))
    q = embed_images(model, [t.path for t in records], "aerial", precision="fp32")
    _, ids = idx.search(q, 1)
    assert [i[0] for i in ids] == [t.id for t in records]  # every fp32 tile finds its own bf16 descriptor
    loc = Locator(index, precision="fp32")  # an fp32 locator accepts the bf16 index (same model identity)
    assert loc.describe()["precision"] == "fp32"


def test_cli_locate_records_precision(tiles, tmp_path, capsys, one_thread):
    root, manifest = tiles
    index = tmp_path / "fp32.index"
    assert main(["locate-index", str(manifest), "--model", str(root / "model.pt"), "--out", str(index),
                 "--precision", "fp32", "--threads", "1"]) == 0
    assert json.loads((tmp_path / "fp32.index.json").read_text())["model"]["precision"] == "fp32"
    photo = tmp_path / "pano.jpg"
    Image.fromarray((np.random.default_rng(2).random((128, 256, 3)) * 255).astype(np.uint8)).save(photo)
    capsys.readouterr()
    assert main(["locate", str(photo), "--index", str(index), "--precision", "bf16", "--threads", "1",
                 "--top-k", "2", "--out", str(tmp_path / "o")]) == 0
    saved = json.loads((tmp_path / "o" / "locate.json").read_text())
    assert saved["precision"] == "bf16"


def test_embed_and_eval_record_precision(tmp_path, one_thread):
    """metrics.json and the shard manifests say which precision made the descriptors."""
    from crossview.data.records import Record, Reference, Split
    from crossview.evaluate.report import evaluate_split
    from crossview.models import create_model
    from crossview.search.shards import read_manifest

    rng = np.random.default_rng(0)
    refs, recs = [], []
    for i in range(3):
        for kind, size in (("aerial", (64, 64)), ("ground", (128, 64))):
            pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / f"{kind}{i}.png")
        refs.append(Reference(i, tmp_path / f"aerial{i}.png"))
        recs.append(Record(f"q{i}", tmp_path / f"ground{i}.png", "ground", (i,)))
    split = Split("vigor", "test", recs, refs)
    model = create_model("mfrgn_tiny")
    record = evaluate_split(model, split, tmp_path / "eval", pictures=0, precision="bf16", log=lambda *a: None)
    assert record["precision"] == "bf16" and record["inference"]["channels_last"] is True
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["precision"] == "bf16"
    for sub in (tmp_path / "eval" / "embeddings").iterdir():
        assert read_manifest(sub)["precision"] == "bf16"
    # `crossview index build` carries it from the shards into the sidecar
    assert main(["index", "build", "--shards", str(tmp_path / "eval" / "embeddings"), "--out",
                 str(tmp_path / "refs.index")]) == 0
    assert json.loads((tmp_path / "refs.index.json").read_text())["model"]["precision"] == "bf16"


def test_subnetwork_autocast_keeps_geometry_fp32(one_thread):
    import torch

    class Solver(torch.nn.Module):  # a feature network, then a pose solve that needs fp32
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Linear(4, 4)
            self.seen = None

        def forward(self, x):
            f = self.features(x)
            self.seen = f.dtype
            return torch.linalg.det(f.view(-1, 2, 2) + torch.eye(2))

    torch.manual_seed(0)
    net, x = Solver(), torch.randn(3, 4)
    ref = net(x)
    with dev.subnetwork_autocast(net, "bf16", "cpu"):
        got = net(x)
        assert net.seen == torch.float32 and got.dtype == torch.float32
    assert torch.allclose(got, ref, atol=0.05)
    assert "forward" not in vars(net.features)  # the class's forward is back
    with dev.inference_autocast("bf16", "cpu"):  # whole-model autocast would hand bf16 features to the solver
        net(x)
    assert net.seen == torch.bfloat16


def test_fine_model_bf16_pose_close_to_fp32(one_thread):
    import torch

    from crossview.fine import localize
    from crossview.fine.registry import create_fine

    torch.manual_seed(0)
    net = create_fine("hcnet_tiny").eval()
    rng = np.random.default_rng(0)
    (gh, gw), side = net.input_sizes("panorama")
    ground = (rng.random((gh, gw, 3)) * 255).astype(np.uint8)
    tile = (rng.random((side, side, 3)) * 255).astype(np.uint8)
    a = localize(ground, tile, "panorama", heading_prior=30.0, model=net, metres_per_pixel=0.1)
    dev.prepare_for_inference(net, "bf16")
    with dev.subnetwork_autocast(net, "bf16"):
        b = localize(ground, tile, "panorama", heading_prior=30.0, model=net, metres_per_pixel=0.1)
    assert math.hypot(a.x_m - b.x_m, a.y_m - b.y_m) < 0.05


# -- torch.compile of the embedding network (crossview.device.embedder) --

class _Net(torch.nn.Module):
    """A small embedding network with the ``embed(x, view=)`` interface (conv, norm, pooling, linear)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norm = torch.nn.GroupNorm(2, 8)
        self.fc = torch.nn.Linear(8, 5)

    def embed(self, x, view="ground"):
        y = torch.nn.functional.gelu(self.norm(self.conv(x))).mean((2, 3))
        return self.fc(y) * (2.0 if view == "aerial" else 1.0)


def test_should_compile_rules(monkeypatch):
    small = _Net()
    big = torch.nn.Linear(5000, 5000)  # 25 M parameters
    assert not dev.should_compile(small, 10**6, "bf16", "cpu", "auto")  # small network: never in auto
    assert dev.should_compile(big, dev.COMPILE_AUTO_MIN_ITEMS, "bf16", "cpu", "auto")
    assert not dev.should_compile(big, dev.COMPILE_AUTO_MIN_ITEMS - 1, "bf16", "cpu", "auto")  # short job
    assert not dev.should_compile(big, 10**6, "fp32", "cpu", "auto")
    assert not dev.should_compile(big, 10**6, "bf16", "cuda:0", "auto")
    assert dev.should_compile(small, 1, "fp32", "cpu", "on")
    assert not dev.should_compile(big, 10**6, "bf16", "cpu", "off")
    monkeypatch.setattr(dev, "_compile_mode", "auto")
    dev.set_compile_mode("on")
    assert dev.should_compile(small, 1, "fp32")  # the process-wide choice is the default
    with pytest.raises(ConfigError, match="--compile"):
        dev.set_compile_mode("always")


def test_embedder_pads_the_last_batch_and_compiles_once(monkeypatch, one_thread):
    """The compiled function always sees full batches (no second compile for the short last batch), and the
    padding rows never reach the output; one compile per model, view and batch size."""
    import torch

    compiled, seen = [], []

    def fake_compile(module, options=None):
        compiled.append(options)

        def run(x):
            seen.append(x.shape[0])
            return module(x)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    net = _Net().eval()
    x = torch.randn(3, 3, 8, 8)
    f = dev.embedder(net, "aerial", batch=5, compiled=True)
    with torch.no_grad():
        out = f(x)
        torch.testing.assert_close(out, net.embed(x, view="aerial"))
        dev.embedder(net, "aerial", batch=5, compiled=True)(x[:2])
        dev.embedder(net, "ground", batch=5, compiled=True)(x)
    assert out.shape == (3, 5) and seen == [5, 5, 5]
    assert compiled == [{"freezing": True}] * 2  # aerial once, ground once


def test_embedder_falls_back_to_eager_when_compiling_fails(monkeypatch, capsys, one_thread):
    import torch

    def broken(module, options=None):
        def run(x):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    net = _Net().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        out = dev.embedder(net, "ground", batch=2, compiled=True)(x)
        torch.testing.assert_close(out, net.embed(x))
    assert "torch.compile failed" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_bf16_embedding_matches_eager(tmp_path, one_thread):
    """A real torch.compile (inductor, frozen weights) through embed_images: the same descriptors as the eager bf16
    and fp32 paths (cosine >= 0.9999), the 7 images embedded in batches of 4 (3 + 1 padding row in the last)."""
    import torch

    from crossview.search.embed import embed_images

    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        p = tmp_path / f"{i}.png"
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(p)
        paths.append(p)
    torch.manual_seed(0)
    net = _Net().eval()
    net.input_spec = lambda view: ((32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    eager = embed_images(net, paths, "aerial", batch=4, precision="bf16", compile="off")
    fast = embed_images(net, paths, "aerial", batch=4, precision="bf16", compile="on")
    fp32 = embed_images(net, paths, "aerial", batch=4, precision="fp32", compile="off")
    assert fast.shape == (7, 5)
    assert float((fast * eager).sum(1).min()) >= 0.9999
    assert float((fast * fp32).sum(1).min()) >= 0.9999
