"""Training's torch.distributed helpers; the set-up shared by every command is :mod:`crossview.distributed` (its
names are re-exported here for training code)."""

from __future__ import annotations

import torch

from crossview.distributed import DistInfo, all_gather_no_grad, init_distributed, is_dist

__all__ = ["DistInfo", "all_gather_no_grad", "all_gather_with_grad", "init_distributed", "is_dist"]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank in rank order; gradients flow back to each rank's own slice.

    The backward of ``torch.distributed.nn.functional.all_gather`` sums the gradients of the gathered
    tensor over ranks (a reduce-scatter), which together with DDP's gradient averaging gives exactly the
    gradient of the mean loss over the global batch. All ranks must pass the same shape.
    """
    if not is_dist():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)
