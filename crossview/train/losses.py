"""The symmetric InfoNCE loss of Sample4Geo / MFRGN, computed over the global batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crossview.train.distributed import all_gather_with_grad, is_dist


def symmetric_infonce(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    label_smoothing: float = 0.1,
) -> torch.Tensor:
    """CLIP-style loss: row i of ``a`` must match row i of ``b`` among every row of the global batch.

    ``a``, ``b``: (B_local, D) descriptors of this rank (re-normalised here, as the official loss does).
    ``logit_scale``: the exponentiated temperature (the official code passes ``model.logit_scale.exp()``).
    Returns ½·[CE(a→b) + CE(b→a)] averaged over this rank's rows. Under torchrun the other ranks' rows
    are all-gathered with gradients, so every rank sees all B_global − 1 negatives, as the official
    DataParallel gather does, without ever forming the B_global × B_global logits on one device.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"expected two (B, D) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    n = a.shape[0]
    offset = 0
    if is_dist():
        import torch.distributed as dist

        offset = dist.get_rank() * n
        a_all, b_all = all_gather_with_grad(a), all_gather_with_grad(b)
    else:
        a_all, b_all = a, b
    target = torch.arange(offset, offset + n, device=a.device)
    scale = logit_scale.float()
    loss_ab = F.cross_entropy(scale * a @ b_all.t(), target, label_smoothing=label_smoothing)
    loss_ba = F.cross_entropy(scale * b @ a_all.t(), target, label_smoothing=label_smoothing)
    return 0.5 * (loss_ab + loss_ba)
