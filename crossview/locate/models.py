"""The models locate uses: the retrieval model and index over the tiles, and the fine-grained localizer."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from crossview.errors import ConfigError, CrossviewError, DatasetError
from crossview.locate.photo import Photo
from crossview.models.loading import RUN_MODEL_FILES


def resolve_checkpoint(path: str | os.PathLike, names: tuple[str, ...] = RUN_MODEL_FILES) -> Path:
    """A run folder (its ``model.safetensors``, or ``model.pt`` from earlier versions) or a checkpoint file -> the
    checkpoint file."""
    path = Path(path)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise ConfigError(f"{path} is a folder without {' or '.join(names)}; give a finished run folder or a "
                          "checkpoint file")
    if not path.is_file():
        raise ConfigError(f"model {path} does not exist; give a run folder or a checkpoint file")
    return path


def is_path(x: Any) -> bool:
    return isinstance(x, str | os.PathLike)


def load_retrieval(model: Path | Any, device: str, precision: str = "fp32", arch: str | None = None,
                    trust: bool = False):
    """A retrieval model from its checkpoint (``arch``: the released variant of an official file), ready for
    ``precision`` (channels-last on the CPU bf16 path); an already built model (an ``nn.Module``) is used as
    given."""
    from crossview.device import prepare_for_inference

    if not is_path(model):
        return prepare_for_inference(model.to(device), precision, device)
    from crossview.models import load_model

    net = load_model(str(model), arch=arch, trust_checkpoint=trust)
    return prepare_for_inference(net.to(device), precision, device)


def retrieval_identity(model) -> dict[str, Any]:
    from crossview.search.embed import model_identity

    views = tuple(v for v in ("ground", "aerial", "drone") if has_view(model, v))
    return model_identity(model, views=views)


def has_view(model, view: str) -> bool:
    from crossview.models import input_spec

    try:
        input_spec(model, view)
    except ConfigError:
        return False
    return True


def index_tiles(tiles: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike, *, kind: str = "flat",
                device: str = "cpu", batch: int = 32, precision: str = "fp32", layout: str = "flat",
                arch: str | None = None, trust_checkpoint: bool = False, **index_kwargs: Any) -> Path:
    """Embed the tiles of a manifest (``crossview tiles``) with a retrieval model and save an index at ``out``.

    ``model``: a training run folder or checkpoint (or a built model, whose checkpoint then goes unrecorded). The
    sidecar records the checkpoint and the manifest (absolute paths) so :class:`Locator` needs only the index.
    Returns ``out``; an index already built from the same model and manifest is kept. ``precision``
    (``auto | fp32 | bf16``, see :func:`crossview.device.cpu_precision`) is recorded in the sidecar; descriptors
    are stored as float32 either way, so queries in any precision search it. ``arch`` names the released
    variant of an official checkpoint (recorded too, so ``locate`` rebuilds the same model). ``layout="region"``:
    a region index folder instead (:mod:`crossview.search.region`: float16 descriptors per H3 cell;
    ``index_kwargs`` go to :func:`~crossview.search.region.build_region_index`).
    """
    from crossview.device import cpu_precision
    from crossview.search.embed import embed_images
    from crossview.search.index import build_index, load_index, save_index
    from crossview.tiles import MANIFEST, read_manifest

    tiles, out = Path(tiles), Path(out)
    manifest = (tiles / MANIFEST if tiles.is_dir() else tiles).resolve()
    checkpoint = resolve_checkpoint(model).resolve() if is_path(model) else None
    precision = cpu_precision(precision, device)
    net = load_retrieval(checkpoint or model, device, precision, arch, trust_checkpoint)
    ident = retrieval_identity(net)
    if out.exists():
        try:
            old = load_index(out, query_meta=ident)
            if checkpoint and old.meta.get("tiles_manifest") == str(manifest) and \
                    old.meta.get("checkpoint") == str(checkpoint) and old.meta.get("arch") == arch:
                return out
        except CrossviewError:
            pass
    records = read_manifest(manifest)
    desc = embed_images(net, [t.path for t in records], "aerial", batch=batch, device=device, precision=precision)
    meta = {**ident, "checkpoint": str(checkpoint) if checkpoint else None, "arch": arch,
            "tiles_manifest": str(manifest), "precision": precision}
    if layout == "region":
        from crossview.search.region import Part, build_region_index

        half = np.array([[0.5 * t.width * t.mpp, 0.5 * t.height * t.mpp] for t in records], np.float32)
        part = Part([t.id for t in records], np.array([[t.lat, t.lon] for t in records]), half, desc.numpy())
        return build_region_index([part], out, {**meta, "view": "aerial"}, **index_kwargs)
    index = build_index(desc, [t.id for t in records], [(t.lat, t.lon) for t in records], meta, kind=kind,
                        **index_kwargs)
    return save_index(index, out)


def load_fine_localizer(run: str | os.PathLike | Any, device: str, arch: str | None = None,
               precision: str = "fp32", trust_checkpoint: bool = False,
               backbone: str | os.PathLike | None = None) -> tuple[Any, str]:
    """(model, name) of a fine localizer: a run folder or checkpoint of ``crossview fine-train``, a registered
    name, or an official release with ``arch`` naming its variant (``--fine-arch hcnet_vigor``; a release of several
    files as their paths joined by commas, its backbone also as ``backbone``: ``--fine-backbone``), all through
    ``crossview.fine.load_fine``. An object that is not a path is used as given: a loaded model, or anything with
    ``localize_in_tile(photo, tile, heading_prior) -> Pose`` (and optionally ``cameras``). A loaded torch model is
    laid out for ``precision`` (channels-last on the CPU bf16 path). ``trust_checkpoint``: the checkpoint is
    unpickled without restriction (``--trust-checkpoint``)."""
    from crossview.device import prepare_for_inference

    if not is_path(run):
        if hasattr(run, "predict") and hasattr(run, "parameters"):
            prepare_for_inference(run, precision, device)
        return run, str(getattr(run, "method", type(run).__name__)).lower()
    from crossview.fine.loading import load_fine, refuse_bare_name

    refuse_bare_name(run)
    try:
        model = load_fine(run, arch=arch, device=device, trust_checkpoint=trust_checkpoint, backbone=backbone)
    except ConfigError as exc:
        raise ConfigError(f"--fine-model {run}: {exc}") from exc
    prepare_for_inference(model, precision, device)
    return model, model.config.get("name", model.config["arch"])


def run_median_error(run: str | os.PathLike | Any) -> float | None:
    """The held-out median position error (m) a fine run reports in its ``metrics.json`` (``crossview fine-train`` /
    ``fine-eval``), used as the floor of locate's uncertainty; None when the run was not evaluated."""
    if not is_path(run):
        return getattr(run, "median_m", None)
    folder = Path(run) if Path(run).is_dir() else Path(run).parent
    try:
        data = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    for d in (data, data.get("metrics") if isinstance(data, dict) else None):
        if isinstance(d, dict) and isinstance(d.get("median_m"), int | float) and math.isfinite(d["median_m"]):
            return float(d["median_m"])
    return None


def fine_cameras(model) -> tuple[str, ...]:
    """The photo kinds a fine localizer places (HC-Net and GeoDistill need a full panorama)."""
    return tuple(getattr(model, "cameras", ("panorama",)))


def fine_localize(model, photo: Photo, tile, prior: tuple[float, float] | None, device: str = "cpu",
                   precision: str = "fp32", window: np.ndarray | None = None, **options: Any):
    """Pose of ``photo`` in ``tile`` (metres east/north of its centre) by ``crossview.fine.localize``; ``prior``'s
    centre is the believed heading of the panorama's centre column / the photo's optical axis. ``window``: an
    aerial image (H, W, 3) to use instead of the tile's file (a :class:`crossview.tiles.mosaic.Mosaic` window at
    the tile's ``mpp``); ``options`` go to the model's ``predict`` (e.g. ``ransac=False``).
    ``precision="bf16"`` runs the model's feature networks under bf16 autocast; its geometry stays fp32 (see
    :func:`crossview.device.subnetwork_autocast`)."""
    import inspect

    from crossview.device import subnetwork_autocast
    from crossview.fine import localize
    from crossview.fine.pose import CameraSpec

    if hasattr(model, "localize_in_tile"):
        if window is not None:
            raise ConfigError(f"the fine model {type(model).__name__} places photos in tile files only: use "
                              "--fine-search tiles with it")
        return model.localize_in_tile(photo, tile, prior)
    camera = CameraSpec("panorama") if photo.camera == "panorama" else CameraSpec("pinhole", photo.fov_deg)
    heading = prior[0] if prior else None
    # matching models sample FG²'s released test-time 1,024 matches
    if "num_matches" in inspect.signature(model.predict).parameters:
        options.setdefault("num_matches", 1024)
    with subnetwork_autocast(model, precision, device):
        return localize(np.asarray(photo.image), str(tile.path) if window is None else window, camera,
                        heading_prior=heading, model=model, metres_per_pixel=tile.mpp, tile=tile.id, device=device,
                        **options)


def match_tiles(ids: list[str], tiles: list, what: str, manifest) -> dict[str, Any]:
    """Index id -> Tile. Ids are tile ids (``crossview locate-index``) or, for indexes made by ``crossview index
    build`` from a dataset split, image paths: matched by path, by folder/stem, or by file name."""
    keys: dict[str, Any] = {}
    ambiguous: set[str] = set()
    for t in tiles:
        p = Path(t.path)
        for key in {t.id, p.as_posix(), p.name, p.stem, f"{p.parent.name}/{p.stem}", f"{p.parent.name}/{p.name}"}:
            if key in keys and keys[key] is not t:
                ambiguous.add(key)
            keys.setdefault(key, t)
    for key in ambiguous - {t.id for t in tiles}:  # a short name two tiles share identifies neither
        del keys[key]
    out, missing = {}, []
    for i in ids:
        q = Path(i)
        t = keys.get(i) or keys.get(q.as_posix()) or keys.get(f"{q.parent.name}/{q.name}") or keys.get(q.name)
        if t is None:
            missing.append(i)
        else:
            out[i] = t
    if missing:
        raise DatasetError(f"{what} and tile manifest {manifest} do not match: {len(missing)} of {len(ids)} index "
                           f"ids are not tiles there, e.g. {missing[0]!r}; pass the manifest the index was built from")
    return out


_load_fine, _run_median_error = load_fine_localizer, run_median_error  # the names earlier versions exported
