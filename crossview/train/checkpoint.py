"""Run-folder checkpoints: written atomically, holding everything a resumed run needs to continue exactly."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossview import safe_load
from crossview.io import save_torch_atomic


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **state: Any) -> Path:
    """Save ``state`` (+ RNG states) to ``path`` via a temp file and rename: a kill never leaves half a file."""
    state["rng"] = rng_state()
    return save_torch_atomic(path, state)


def load_checkpoint(path: Path, trust_checkpoint: bool = False) -> dict[str, Any]:
    """A run checkpoint read without running code from it (numpy RNG state included; see
    :mod:`crossview.safe_load`); ``trust_checkpoint=True`` unpickles it without restriction."""
    return safe_load.load_checkpoint(path, trust=trust_checkpoint, what="training checkpoint")
