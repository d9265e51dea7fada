"""The benchmark scripts stay runnable and on crossview's public API: each imports, answers ``--help``, imports no
underscore name of crossview, edits no ``sys.path`` and writes to no fixed ``/tmp`` folder (``--work``, default a
temporary folder). Nothing is measured here."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").rglob("*.py") if p.name not in ("__init__.py", "common.py"))


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _private_crossview_names(tree: ast.AST) -> list[str]:
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("crossview"):
            bad += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
            bad += [node.module] if any(part.startswith("_") for part in node.module.split(".")) else []
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
            bad.append(f"….{node.attr}")  # e.g. a locator's private method
    return bad


@pytest.mark.parametrize("path", SCRIPTS + [ROOT / "benchmarks" / "common.py"], ids=_module)
def test_a_benchmark_uses_public_names_only(path):
    text = path.read_text()
    tree = ast.parse(text)
    assert not _private_crossview_names(tree), f"{path.name} uses private crossview names"
    paths = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "path"
             and isinstance(n.value, ast.Name) and n.value.id == "sys"]
    assert not paths, f"{path.name} edits sys.path: run it as `python -m {_module(path)}`"
    assert "/tmp" not in text, f"{path.name} names a fixed /tmp folder: take --work (default: a temporary folder)"
    assert "PYTHONPATH" not in text


def test_private_names_are_seen():
    tree = ast.parse("from crossview.train.loop import _collate\nloc._window_pose(1)\n")
    assert _private_crossview_names(tree) == ["crossview.train.loop._collate", "…._window_pose"]


@pytest.mark.parametrize("path", SCRIPTS, ids=_module)
def test_a_benchmark_imports_and_answers_help(path, monkeypatch, capsys):
    try:
        mod = importlib.import_module(_module(path))
    except ImportError as exc:  # an optional library (faiss, rasterio, timm) that this install lacks
        pytest.skip(f"{path.name}: {exc}")
    monkeypatch.setattr(sys, "argv", [path.name, "--help"])
    with pytest.raises(SystemExit) as exit_:
        mod.main()
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_the_documented_pinhole_command_runs_by_its_path(tmp_path):
    """``python benchmarks/locate_pinhole.py …`` (the command the locate issue documents) works from any folder."""
    import subprocess

    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "locate_pinhole.py"), "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--prior-seed" in r.stdout and "--search" in r.stdout
