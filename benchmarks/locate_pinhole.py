"""``python benchmarks/locate_pinhole.py --world WORLD …``: the pinhole locate measurement at its documented path.

The experiment is ``benchmarks/experiments/locate_pinhole.py`` (also ``python -m benchmarks.experiments.locate_pinhole``
from the repository root). Run by its path, this file registers the ``benchmarks`` folder as the package of that
name (the path is not added to ``sys.path``) and runs the experiment as ``__main__`` with the same arguments.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path


def main() -> None:
    if "benchmarks" not in sys.modules:
        here = Path(__file__).resolve().parent
        spec = importlib.util.spec_from_file_location("benchmarks", here / "__init__.py",
                                                      submodule_search_locations=[str(here)])
        package = importlib.util.module_from_spec(spec)
        sys.modules["benchmarks"] = package
        spec.loader.exec_module(package)
    runpy.run_module("benchmarks.experiments.locate_pinhole", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
