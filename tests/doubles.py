"""Test doubles and set-ups shared by several test modules (imported as ``from doubles import ...``; conftest.py
holds only fixtures): stand-ins for trained models that know the synthetic world's truth, and a random tile index.

Training a retrieval model and a fine model well enough to compare is minutes of CPU; the locate tests replace both
learned stages with doubles that know the world's truth, so what they test is everything around them: tiles from
the world's folder, the index, search, candidate selection by confidence, metres -> lat/lon at the edge, and the
error accounting against crossview_poses.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# The synthetic-cpu preset for 1 epoch of the `dense` world: 2,000 training pairs, 62 steps of 32 pairs (about 2.5
# minutes on 2 cores; the learning test trains it twice, real and shuffled, the e2e locate test reuses the real one).
DENSE_LEARN = {"epochs": 1, "eval_every": 0, "num_workers": 0, "checkpoint_every": 1000, "seed": 0}


class OracleRetrieval:
    """Stands in for a trained retrieval model: recognises each synthetic image and embeds it at its tile.

    Aerial tiles are recognised by an 8x8 thumbnail, panoramas by their row profile (unchanged by the heading
    roll); a panorama's descriptor is 1 at its positive tile and 0.8 at its semi-positives.
    """

    def __new__(cls, world):
        import torch

        class Oracle(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.config = {"name": "oracle", "arch": "oracle", "sizes": {"ground": [64, 128], "aerial": [64, 64]},
                               "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
                self.register_buffer("seed", torch.zeros(1))
                tiles = sorted(p.relative_to(world / "satellite").with_suffix("").as_posix()
                               for p in (world / "satellite").rglob("satellite_*.png"))
                self.slot = {t: i for i, t in enumerate(tiles)}
                self.tile_keys = torch.stack([self._tile_key(self._load(world / "satellite" / f"{t}.png", (64, 64)))
                                              for t in tiles])
                keys, targets = [], []
                for line in (world / "crossview_poses.jsonl").read_text().splitlines():
                    rec = json.loads(line)
                    if rec["camera"] != "panorama":
                        continue
                    keys.append(self._pano_key(self._load(world / rec["image"], (64, 128))))
                    target = torch.zeros(len(tiles))
                    for k, t in enumerate(rec["tiles"]):
                        target[self.slot[t["tile"].split("satellite/", 1)[1][:-4]]] = 1.0 if k == 0 else 0.8
                    targets.append(target)
                self.pano_keys, self.targets = torch.stack(keys), torch.stack(targets)

            @staticmethod
            def _load(path, hw):
                from crossview.data.cache import load_resized

                return torch.from_numpy(load_resized(path, hw).copy()).permute(2, 0, 1)[None].float() / 255

            @staticmethod
            def _tile_key(x):
                return torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)[0]

            @staticmethod
            def _pano_key(x):
                return x.mean(-1).flatten(1)[0]

            def embed(self, x, view):
                if view == "aerial":
                    keys = torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
                    return torch.eye(len(self.slot))[torch.cdist(keys, self.tile_keys).argmin(1)]
                keys = x.mean(-1).flatten(1)
                return self.targets[torch.cdist(keys, self.pano_keys).argmin(1)]

        return Oracle()


class NoisyTruthLocalizer:
    """Stands in for a trained fine model: in a tile that holds the camera it answers the true position (from
    the world's pixel labels, not from lat/lon) with 1.5 m and 3° Gaussian noise and confidence 0.9; elsewhere a
    random position with confidence 0.1."""

    def __init__(self, world, seed=0):
        self.rng = np.random.default_rng(seed)
        self.truth = {}
        for line in (world / "crossview_poses.jsonl").read_text().splitlines():
            rec = json.loads(line)
            for t in rec["tiles"]:
                self.truth[(rec["image"].rsplit("/", 1)[1], t["tile"].split("satellite/", 1)[1][:-4])] = (
                    t["x"], t["y"], rec["heading_deg"])

    def localize_in_tile(self, photo, tile, prior):
        from types import SimpleNamespace

        hit = self.truth.get((photo.path.name, tile.id))
        if hit is None:
            e, n = self.rng.uniform(-0.5, 0.5, 2) * tile.width * tile.mpp
            return SimpleNamespace(x_m=e, y_m=n, heading_deg=prior[0] if prior else 0.0, confidence=0.1)
        x, y, heading = hit
        e, n = (x - tile.width / 2) * tile.mpp, (tile.height / 2 - y) * tile.mpp
        de, dn = self.rng.normal(0, 1.5, 2)
        return SimpleNamespace(x_m=e + de, y_m=n + dn, heading_deg=(heading + self.rng.normal(0, 3)) % 360,
                               confidence=0.9)


def random_tile_index(folder: Path) -> tuple[Path, Path]:
    """A random tiny retrieval model (seed 0) over a 2 × 2 tile set cut from a random orthophoto near 40 N 74 W,
    and a random 256 × 512 panorama to locate in it: (index, photo). For locate tests of official checkpoints."""
    import numpy as np
    import torch
    from PIL import Image

    from crossview.locate import index_tiles
    from crossview.models import create_model, save_model
    from crossview.tiles import build_tiles

    torch.manual_seed(0)
    save_model(create_model("mfrgn_tiny"), folder / "retrieval.pt")
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).resize((256, 256), Image.NEAREST) \
        .save(folder / "ortho.png")
    manifest = build_tiles(folder / "ortho.png", folder / "tiles", corners=(40.001, -74.001, 40.0, -73.999),
                           tile_px=128)
    index = index_tiles(manifest, folder / "retrieval.pt", folder / "tiles.index")
    photo = folder / "pano.jpg"
    Image.fromarray((rng.random((256, 512, 3)) * 255).astype(np.uint8)).save(photo)
    return index, photo
