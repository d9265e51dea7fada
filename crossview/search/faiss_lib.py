"""The faiss library, imported on first use with a clear error when it is missing (both index layouts use it)."""

from __future__ import annotations

from crossview.errors import CrossviewError


def faiss_module():
    """The ``faiss`` module; a CrossviewError naming the package to install when it is not there."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise CrossviewError("faiss is not installed: pip install faiss-cpu (or faiss-gpu)") from exc
    return faiss
