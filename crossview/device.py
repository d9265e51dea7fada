"""The one place a compute device is chosen."""

from __future__ import annotations

import torch


def pick_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU (``cuda:local_rank``) when there is one, else the CPU; any other name as given."""
    if name is None or str(name) == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_of(device: str | torch.device | None, *tensors: torch.Tensor) -> torch.device:
    """``device`` when given, else the first non-CPU device among ``tensors``, else the CPU."""
    if device is not None:
        return torch.device(device)
    for x in tensors:
        if x.device.type != "cpu":
            return x.device
    return torch.device("cpu")
