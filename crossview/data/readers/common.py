"""Helpers shared by the benchmark readers: a problem collector and cheap file-existence checks.

Every reader walks its label/split files once and *collects* problems instead of stopping at the first one,
so ``crossview prepare`` can list everything wrong with a tree in one go. ``read_dataset`` raises the
collected list as one :class:`~crossview.errors.DatasetError`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from crossview.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_LISTED = 25  # problems shown by read_dataset before pointing at `crossview prepare` for the rest


class FileIndex:
    """Answers "does this file exist" from one ``os.listdir`` per directory (fast on 100k-file trees)."""

    def __init__(self) -> None:
        self._dirs: dict[str, frozenset[str]] = {}

    def names(self, directory: str | os.PathLike) -> frozenset[str]:
        directory = os.fspath(directory)
        names = self._dirs.get(directory)
        if names is None:
            try:
                names = frozenset(os.listdir(directory))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                names = frozenset()
            self._dirs[directory] = names
        return names

    def exists(self, path: str | os.PathLike) -> bool:
        directory, name = os.path.split(os.fspath(path))
        return name in self.names(directory)


@dataclass
class Scan:
    """What one pass over a dataset tree found.

    ``problems`` make the tree unusable (read_dataset raises, prepare exits non-zero); ``warnings`` are
    tolerated deviations (CVACT ids skipped because an image is missing, as the official code does).
    ``origins`` maps each referenced image to the first label line that referenced it, so later checks
    (decoding in ``prepare``) can say where a bad file came from.
    """

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)  # str(path) -> where
    files: FileIndex = field(default_factory=FileIndex)

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def image(self, path: Path, where: str, *, required: bool = True) -> bool:
        """Note that ``where`` references image ``path``; report it if missing (when ``required``)."""
        first = self.origins.setdefault(os.fspath(path), where)
        if self.files.exists(path):
            return True
        if required and first == where:  # each missing file once, with the first line that needs it
            self.problem(f"missing image {path} (referenced by {where})")
        return False

    def raise_if_problems(self, dataset: str, root: Path) -> None:
        if not self.problems:
            return
        shown = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(shown)
        if more:
            shown = [*shown, f"... and {more} more: run `crossview prepare {dataset} {root}` for the full list"]
        raise DatasetError(
            f"{dataset} tree at {root} has {len(self.problems)} problem(s); fix them (or re-download the files)",
            shown,
        )


def require_dir(path: Path, scan: Scan, what: str) -> bool:
    if path.is_dir():
        return True
    scan.problem(f"missing folder {path} ({what})")
    return False


def read_lines(path: Path, scan: Scan, what: str) -> list[tuple[int, str]] | None:
    """Non-blank lines of a text file with their 1-based line numbers; ``None`` (and a problem) if unreadable."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        scan.problem(f"missing file {path} ({what})")
        return None
    except OSError as exc:
        scan.problem(f"cannot read {path} ({what}): {exc}")
        return None
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_crossview_meta(root: Path) -> dict | None:
    """The synthetic world's ``crossview_meta.json`` (metres per pixel per city, offset convention), if any."""
    path = root / "crossview_meta.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot parse {path}: {exc}; regenerate the synthetic world or delete the file") from exc


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)
