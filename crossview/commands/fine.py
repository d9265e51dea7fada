"""``crossview fine-train PRESET --data DIR --out RUN [--set k=v]``,
``crossview fine-eval RUN --data DIR --out EVAL [--area same|cross] [--orientation known|prior|unknown]`` and
``crossview fine-model-info NAME|CHECKPOINT``, ``crossview fine-release RUN --out FILE.safetensors`` and
``crossview fine-convert ARCH FILE... --out CHECKPOINT`` (an official release, all its files, into one of ours)."""

from __future__ import annotations

import argparse
import sys

from crossview.safe_load import add_trust_argument


def add_fine_release_arguments(p: argparse.ArgumentParser) -> None:
    """``--fine-arch`` and ``--fine-backbone``: how a command that answers with a ``--fine-model`` reads the
    authors' release files (``locate``, ``serve``)."""
    p.add_argument("--fine-arch", help="the registered variant an official --fine-model checkpoint was released as "
                                       "(e.g. hcnet_vigor; list: crossview fine-model-info --list); a release of "
                                       "several files: --fine-model A,B,C")
    p.add_argument("--fine-backbone", metavar="PATH",
                   help="the backbone file of an official release whose checkpoint holds only the head (FG²: "
                        "dinov2_vitl14_pretrain.pth); or pack both once with `crossview fine-convert`")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fine-train", help="train a fine-grained localizer (HC-Net, PillarMatch, PlaneCorr, ...)",
                       description="Train a registered fine model from a preset; override any key with --set "
                                   "key=value (dotted keys reach the model config: --set model.bev_cells=16).")
    p.add_argument("preset", nargs="?", help="preset name (see --list)")
    p.add_argument("--data", help="dataset root: a `crossview synth --layout vigor` tree or real VIGOR")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--list", action="store_true", help="list the presets and exit")
    add_trust_argument(p)
    p.set_defaults(func=run_train)

    e = sub.add_parser("fine-eval", help="evaluate a fine-grained model: metres, degrees, pictures",
                       description="Evaluate a run folder (or an official checkpoint with --arch) on the test split; "
                                   "prints a table, writes metrics.json, predictions.npz and a picture per sample "
                                   "(true pose green, estimate red).")
    e.add_argument("run", help="run folder written by `crossview fine-train`, a checkpoint, or an official "
                               "checkpoint (with --arch)")
    e.add_argument("--data", required=True, help="dataset root")
    e.add_argument("--out", required=True, help="folder for metrics.json and pictures")
    e.add_argument("--arch", help="registered variant of an official checkpoint (e.g. hcnet_vigor); a release of "
                                  "several files: RUN as A,B,C")
    e.add_argument("--fine-backbone", metavar="PATH",
                   help="the backbone file of an official release whose checkpoint is the head only (FG²: "
                        "dinov2_vitl14_pretrain.pth; used by both stages)")
    e.add_argument("--area", choices=("same", "cross"), help="default: the run's")
    e.add_argument("--orientation", choices=("known", "prior", "unknown"),
                   help="known: the true heading is given; prior: a heading off by ±--prior-deg (fixed by --seed); "
                        "unknown: panoramas rolled by a random yaw fixed by --seed (default: the run's)")
    e.add_argument("--prior-deg", type=float, help="half-width of the prior protocol (default: the run's)")
    e.add_argument("--stage2", metavar="RUN", help="two-stage: a second model refines with the first one's heading "
                                                   "(FG²: second_run/model.pt, with --stage2-arch)")
    e.add_argument("--stage2-arch", help="registered variant of an official --stage2 checkpoint (e.g. fg2_vigor)")
    e.add_argument("--camera", choices=("panorama", "pinhole"), help="default: the run's")
    e.add_argument("--limit", type=int, help="evaluate at most this many test samples")
    e.add_argument("--pictures", type=int, default=16, help="pictures to draw (0 = none)")
    e.add_argument("--ransac", action="store_true", help="matching models: RANSAC at test time")
    e.add_argument("--seed", type=int, default=0, help="seed of the prior / unknown-orientation test yaws")
    e.add_argument("--matches", type=int, help="matching models: matches sampled at test time (default: the model's)")
    e.add_argument("--fix-heading", action="store_true",
                   help="matching models, known orientation: solve the translation only, at the known heading")
    e.add_argument("--device", default="cpu")
    add_trust_argument(e)
    e.set_defaults(func=run_eval)

    r = sub.add_parser("fine-release", help="pack a trained model of ours into one safetensors release file",
                       description="Writes the run's trained tensors (weights that come with the package, such as "
                                   "the Lite backbone, left out) as safetensors, with its config and what it was "
                                   "trained on in the file's metadata; --fine-model reads it.")
    r.add_argument("run", help="run folder written by `crossview fine-train` (or its checkpoint.pt)")
    r.add_argument("--out", required=True, help="the .safetensors file to write")
    r.add_argument("--temperature", type=float, help="search-area posteriors: the calibration temperature its "
                                                     "logits are divided by at inference")
    add_trust_argument(r)
    r.set_defaults(func=run_release)

    i = sub.add_parser("fine-model-info", help="parameters of a registered fine model and the official count",
                       description="Builds a registered fine model (random weights) and prints its parameters per "
                                   "module, the forward-used count, and, for published models, the official count. "
                                   "Given a checkpoint (ours, or an official release with --arch), loads it and "
                                   "says also where its weights came from.")
    i.add_argument("name", nargs="?", help="registered fine model (see --list), a checkpoint, or an official "
                                           "release's files joined by commas (with --arch)")
    i.add_argument("--arch", help="registered variant of an official checkpoint (e.g. fg2_vigor)")
    i.add_argument("--fine-backbone", metavar="PATH", help="the backbone file of an official release (FG²: "
                                                           "dinov2_vitl14_pretrain.pth)")
    add_trust_argument(i)
    i.add_argument("--list", action="store_true", help="list the registered fine models and exit")
    i.add_argument("--json", action="store_true", help="print JSON instead of a table")
    i.set_defaults(func=run_info)

    c = sub.add_parser("fine-convert", help="pack an official release (all its files) into one checkpoint of ours",
                       description="Reads the files an official release consists of (FG²: model.pt + "
                                   "dinov2_vitl14_pretrain.pth; GeoDistill: the localization net, the orientation "
                                   "net, dinov2_vitb14_pretrain.pth; HC-Net: best.pth), in any order, without running "
                                   "code from them; converts them strictly as ARCH and writes one self-contained "
                                   "checkpoint (.safetensors, or our torch format) that --fine-model reads alone. "
                                   "Prints what it used and what it ignored.")
    c.add_argument("arch", help="the registered variant the release is (e.g. fg2_vigor; crossview fine-model-info "
                                "--list)")
    c.add_argument("files", nargs="+", help="the release's files")
    c.add_argument("--out", required=True, help="checkpoint to write (.safetensors recommended)")
    add_trust_argument(c)
    c.set_defaults(func=run_convert)


def run_train(args: argparse.Namespace) -> int:
    from crossview.errors import ConfigError
    from crossview.fine.presets import PRESETS, parse_override, resolve_config

    if args.list:
        for name, cfg in sorted(PRESETS.items()):
            print(f"{name:34s} model={cfg['variant']} area={cfg.get('area', 'same')} "
                  f"orientation={cfg.get('orientation', 'known')} steps={cfg.get('steps')}")
        return 0
    if not args.preset or not args.data or not args.out:
        raise ConfigError("give PRESET, --data DIR and --out RUN_DIR (list presets with --list)")
    from crossview.fine.train import train

    cfg = resolve_config(args.preset, dict(parse_override(t) for t in args.overrides))
    out = train(cfg, args.data, args.out, command=sys.argv, trust_checkpoint=args.trust_checkpoint)
    print(f"run folder: {out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from crossview.fine.evaluate import evaluate_run

    evaluate_run(args.run, args.data, args.out, area=args.area, orientation=args.orientation, stage2=args.stage2,
                 stage2_arch=args.stage2_arch, backbone=args.fine_backbone,
                 limit=args.limit, pictures=args.pictures, device=args.device, seed=args.seed, camera=args.camera,
                 prior_deg=args.prior_deg, arch=args.arch, ransac=args.ransac or None, num_matches=args.matches,
                 fix_heading=args.fix_heading or None, trust_checkpoint=args.trust_checkpoint)
    print(f"metrics: {args.out}/metrics.json")
    return 0


def run_info(args: argparse.Namespace) -> int:
    import json

    from crossview.errors import ConfigError
    from crossview.fine.info import fine_model_info, format_fine_info
    from crossview.fine.registry import list_fine_models

    if args.list:
        print("\n".join(list_fine_models()))
        return 0
    if not args.name:
        raise ConfigError("give a registered fine model name (list them with --list)")
    info = fine_model_info(args.name, arch=args.arch, backbone=args.fine_backbone,
                           trust_checkpoint=args.trust_checkpoint)
    print(json.dumps(info, indent=2) if args.json else format_fine_info(info))
    return 0


def run_release(args: argparse.Namespace) -> int:
    """``crossview fine-release RUN --out FILE``: the release file's path, and what it holds, on stdout."""
    import json
    from pathlib import Path

    from crossview.errors import ConfigError
    from crossview.fine.loading import load_fine, save_release

    out = Path(args.out)
    if out.suffix != ".safetensors":
        print(f"error: --out {out}: a release is a .safetensors file", file=sys.stderr)
        return 2
    try:
        model = load_fine(args.run, trust_checkpoint=args.trust_checkpoint)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    info: dict = {}
    if (run / "config.json").is_file():
        saved = json.loads((run / "config.json").read_text())
        info["trained"] = {"config": saved.get("config"), "data": saved.get("data")}
    if args.temperature is not None:
        info["temperature"] = float(args.temperature)
    path = save_release(model, out, **info)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        print(json.dumps({"release": str(path), "tensors": len(list(f.keys())), "info": sorted(info)}))
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """``crossview fine-convert ARCH FILE... --out CKPT``: what each file gave and what was ignored, then the
    checkpoint's path; JSON on the last line."""
    import json

    from crossview.fine.loading import convert_release

    done = convert_release(args.arch, args.files, args.out, trust_checkpoint=args.trust_checkpoint)
    print(f"{done['arch']}: {done['source']}")
    for f in done["files"]:
        parts = ", ".join(f.get("parts", [])) or "weights"
        print(f"  used    {f['file']}: {parts} ({f['tensors']} tensors, sha256 {f['sha256'][:12]})")
        if f["ignored"]:
            print(f"  ignored {f['file']}: {', '.join(f['ignored'])}")
    if done["unused_official_tensors"]:
        print(f"  ignored {len(done['unused_official_tensors'])} official tensors the forward never reads "
              f"(e.g. {done['unused_official_tensors'][0]})")
    for note in done["notes"]:
        print(f"  note: {note}")
    print(f"wrote {done['checkpoint']} (load it alone: --fine-model {done['checkpoint']})")
    print(json.dumps({"checkpoint": done["checkpoint"], "arch": done["arch"],
                      "files": [f["file"] for f in done["files"]]}))
    return 0
