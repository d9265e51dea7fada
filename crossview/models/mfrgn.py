"""MFRGN (Wang et al., ACM MM 2024): multi-scale global and local descriptors for cross-view retrieval.

Structure (numbers as in the official code, ytao-wang/MFRGN @37ad6e6; docs/official_code_notes.md): a timm backbone
gives S1-S3 (strides 8/16/32), a strided 3x3 conv gives S4; shared 1x1 projections to 128 channels with GroupNorm and a
2-D sine position encoding; pyramid pooling sampling (PPS) reduces S1 to the low-level tokens L; the Self and Cross
Attention Module (SCAM) updates the high-level tokens H = [S2, S3, S4] twice and L once with Lite-Transformer encoders
(linear attention); a Linear over the token axis gives the 1792-d global descriptor; four Global-Prompt Attention Blocks
(GPAB) re-weight the raw maps with prompts made from the SCAM output and give the 256-d local descriptor. The output is
the L2-normalised concatenation.

``MFRGN`` has one shared backbone and projection, and one :class:`ViewHead` per view (``aerial``/``ground``) or a
single shared head (``shared``, the University-1652 model MFRGN-U). Ablation switches (paper Tables 4-5, Fig. 7) live
in the config: ``scales`` (``multi`` or ``s4``), ``global_flow`` (SCAM on/off), ``local_flow`` (``prompt``, ``ini``
or ``None``), ``attention`` (``linear``/``softmax``), ``pps`` and ``global_dim``/``local_dim``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossview.errors import ConfigError
from crossview.models.backbones import Backbone, measure_level_shapes


def sine_position_encoding(d_model: int, h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """Fixed 2-D sine encoding (d_model, h, w): channel 4j/4j+1 = sin/cos(x·f_j), 4j+2/4j+3 = sin/cos(y·f_j),
    f_j = 10000^(-2j / (d_model/2)), x and y 1-based column and row indices (the LoFTR form used by MFRGN)."""
    ys = torch.arange(1, h + 1, device=device, dtype=torch.float32).view(1, h, 1).expand(1, h, w)
    xs = torch.arange(1, w + 1, device=device, dtype=torch.float32).view(1, 1, w).expand(1, h, w)
    freq = torch.exp(torch.arange(0, d_model // 2, 2, device=device, dtype=torch.float32)
                     * (-math.log(10000.0) / (d_model // 2))).view(-1, 1, 1)
    pe = torch.empty(d_model, h, w, device=device, dtype=torch.float32)
    pe[0::4] = torch.sin(xs * freq)
    pe[1::4] = torch.cos(xs * freq)
    pe[2::4] = torch.sin(ys * freq)
    pe[3::4] = torch.cos(ys * freq)
    return pe.to(dtype) if dtype is not None else pe


def pyramid_pool(x: torch.Tensor, grids: list[tuple[int, int]]) -> torch.Tensor:
    """Pyramid pooling sampling: adaptive average pools to each (rows, cols) grid, flattened and concatenated.
    (B, C, H, W) -> (B, C, sum(rows·cols))."""
    return torch.cat([F.adaptive_avg_pool2d(x, g).flatten(2) for g in grids], dim=2)


class ConvNorm(nn.Sequential):
    """Conv2d + GroupNorm(32): the input projection of one level."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.GroupNorm(32, cout)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Katharopoulos et al. linear attention with φ(x) = elu(x) + 1. q (B, L, h, d), k/v (B, S, h, d).

    Values are divided by S before the sums and the result multiplied back (as the official code does, so that
    half-precision sums do not overflow); the two cancel exactly in real arithmetic."""
    q, k = F.elu(q) + 1, F.elu(k) + 1
    s = v.shape[1]
    kv = torch.einsum("bshd,bshv->bhdv", k, v / s)
    z = 1.0 / (torch.einsum("blhd,bhd->blh", q, k.sum(dim=1)) + eps)
    return torch.einsum("blhd,bhdv,blh->blhv", q, kv, z) * s


class LiteEncoderLayer(nn.Module):
    """One Lite-Transformer encoder layer of SCAM: queries X_q attend to keys/values [X_kv, X_q] (self- and
    cross-attention in one call); post-norm residual blocks, merge and MLP without bias (as the official code)."""

    def __init__(self, dim: int = 128, heads: int = 4, ffn_dim: int = 1024, dropout: float = 0.3,
                 attention: str = "linear"):
        super().__init__()
        if attention not in ("linear", "softmax"):
            raise ConfigError(f"attention must be 'linear' or 'softmax', got {attention!r}")
        self.heads, self.attention = heads, attention
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim, bias=False)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        for lin in (self.q, self.k, self.v):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor) -> torch.Tensor:
        b, n, c = xq.shape
        src = torch.cat([xkv, xq], dim=1)
        h, d = self.heads, c // self.heads
        q = self.q(xq).view(b, n, h, d)
        k = self.k(src).view(b, src.shape[1], h, d)
        v = self.v(src).view(b, src.shape[1], h, d)
        if self.attention == "linear":
            att = linear_attention(q, k, v)
        else:
            att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
                                                 ).transpose(1, 2)
        x = self.norm1(xq + self.drop(self.out(att.reshape(b, n, c))))
        return self.norm2(x + self.drop(self.ffn(x)))


class PromptProjection(nn.Sequential):
    """Maps SCAM tokens (B, 128, N) to a level's channel count: Conv1d-BN-Conv1d-GELU-BN over the token axis,
    kernel 5 (the ECA rule for 128 channels)."""

    def __init__(self, dim: int, channels: int, kernel: int = 5):
        super().__init__()
        self.conv1 = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.bn1 = nn.BatchNorm1d(dim)
        self.conv2 = nn.Conv1d(dim, channels, kernel, padding=kernel // 2)
        self.act = nn.GELU()
        self.bn2 = nn.BatchNorm1d(channels)


class GlobalPromptBlock(nn.Module):
    """GPAB for one level: channel weight from the prompt's average, spatial weight from its channel-wise max;
    M = F + F·σ(ch)·σ(sp), then global average pooling."""

    def __init__(self, dim: int, channels: int, kernel: tuple[int, int]):
        super().__init__()
        self.prompt = PromptProjection(dim, channels)
        self.channel = nn.Conv2d(channels, channels, 1)
        self.spatial = nn.Conv2d(1, 1, tuple(kernel), padding=(kernel[0] // 2, kernel[1] // 2))

    def forward(self, feat: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """feat (B, C, H, W) local map; tokens (B, 128, H·W) prompt tokens in row-major order -> (B, C)."""
        g = self.prompt(tokens).view(feat.shape[0], -1, *feat.shape[-2:])
        a_ch = self.channel(g.mean(dim=(2, 3), keepdim=True))
        a_sp = self.spatial(g.amax(dim=1, keepdim=True))
        m = feat + feat * torch.sigmoid(a_ch) * torch.sigmoid(a_sp)
        return m.mean(dim=(2, 3))


class ViewHead(nn.Module):
    """Everything after the shared projection, for one view (or shared by all views in MFRGN-U)."""

    def __init__(self, cfg: dict[str, Any], channels: list[int], grids: list[tuple[int, int]], pps: list,
                 kernels: list):
        super().__init__()
        d = cfg["d_model"]
        self.cfg, self.grids, self.pps_grids = cfg, grids, [tuple(g) for g in pps]
        multi = cfg["scales"] == "multi"
        n_high = sum(h * w for h, w in (grids[1:] if multi else grids[3:]))
        n_low = (sum(h * w for h, w in self.pps_grids) if cfg["pps"] else grids[0][0] * grids[0][1]) if multi else 0
        self.n_high, self.n_low = n_high, n_low
        if multi:
            self.pps_norm = nn.LayerNorm(d)
        if cfg["global_flow"]:
            layer = dict(dim=d, heads=cfg["heads"], ffn_dim=cfg["ffn_dim"], dropout=cfg["dropout"],
                         attention=cfg["attention"])
            self.scam_high = nn.ModuleList(LiteEncoderLayer(**layer) for _ in range(cfg["high_updates"]))
            self.scam_low = nn.ModuleList(LiteEncoderLayer(**layer) for _ in range(cfg["low_updates"]))
        if cfg["global_dim"]:
            if cfg["global_dim"] % d:
                raise ConfigError(f"global_dim {cfg['global_dim']} must be a multiple of d_model {d}")
            self.global_proj = nn.Linear(n_low + n_high, cfg["global_dim"] // d)
        if cfg["local_flow"]:
            level_ch = [*channels, d]
            ks = [tuple(k) for k in kernels]
            if not cfg["pps"]:
                ks[0] = ks[1]  # S1 stays an image: use the level-1 kernel (not defined by the official code)
            self.gpab = nn.ModuleList(GlobalPromptBlock(d, c, k) for c, k in zip(level_ch, ks))
            self.local_proj = nn.Linear(sum(level_ch), cfg["local_dim"])

    def forward(self, raw: list[torch.Tensor], proj: list[torch.Tensor], enc: list[torch.Tensor]) -> torch.Tensor:
        """raw: backbone maps S1-S3; proj: projected S1-S4 without position encoding; enc: with it."""
        cfg = self.cfg
        tok = [None if e is None else e.flatten(2).transpose(1, 2) for e in enc]  # (B, N_i, 128), row-major
        if cfg["scales"] == "multi":
            low0 = pyramid_pool(enc[0], self.pps_grids) if cfg["pps"] else enc[0].flatten(2)
            low0 = self.pps_norm(low0.transpose(1, 2))
            high0 = torch.cat(tok[1:], dim=1)
        else:
            low0, high0 = tok[3][:, :0], tok[3]
        low, high = low0, high0
        if cfg["global_flow"]:
            for layer in self.scam_high:
                high = layer(high, low)
            for layer in self.scam_low:
                low = layer(low, high)
        parts = []
        if cfg["global_dim"]:
            t = torch.cat([low, high], dim=1).transpose(1, 2)  # (B, 128, N)
            parts.append(self.global_proj(t).flatten(1))
        if cfg["local_flow"]:
            p_low, p_high = (low, high) if cfg["local_flow"] == "prompt" else (low0, high0)
            sizes = [h * w for h, w in self.grids[1:]]
            prompts = [p_low, *torch.split(p_high, sizes, dim=1)]
            s1 = pyramid_pool(raw[0], self.pps_grids).unsqueeze(-1) if cfg["pps"] else raw[0]
            feats = [s1, raw[1], raw[2], proj[3]]
            local = [blk(f, p.transpose(1, 2)) for blk, f, p in zip(self.gpab, feats, prompts)]
            parts.append(self.local_proj(torch.cat(local, dim=1)))
        return torch.cat(parts, dim=1)


class MFRGN(nn.Module):
    """MFRGN with per-view heads (``shared=False``: CVUSA/CVACT/VIGOR) or one shared head (MFRGN-U).

    ``config`` is the resolved model config (see :mod:`crossview.models.registry`); it is kept as ``self.config``.
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        cfg = self.config = config
        d = cfg["d_model"]
        self.backbone = Backbone(cfg["backbone"], pretrained=cfg.get("pretrained", False),
                                 weights=cfg.get("backbone_weights"), kwargs=cfg.get("backbone_kwargs"),
                                 tag=cfg.get("backbone_tag"))
        cfg["backbone_source"] = self.backbone.weights_source
        self.backbone.freeze_unused_head()
        ch = self.backbone.channels
        if cfg["scales"] == "multi":
            self.input_proj = nn.ModuleList(ConvNorm(c, d) for c in ch)
        elif cfg["scales"] != "s4":
            raise ConfigError(f"scales must be 'multi' or 's4', got {cfg['scales']!r}")
        if cfg["scales"] == "s4" and (cfg["global_flow"] or cfg["local_flow"]):
            raise ConfigError("scales='s4' (the paper's Baseline) has no SCAM or GPAB: set global_flow=False, "
                              "local_flow=None")
        if cfg["local_flow"] not in (None, "prompt", "ini"):
            raise ConfigError(f"local_flow must be 'prompt', 'ini' or None, got {cfg['local_flow']!r}")
        if not cfg["local_flow"]:
            cfg["local_dim"] = 0
        self.s4_proj = ConvNorm(ch[-1], d, kernel=3, stride=2)
        self.view_heads = dict(cfg["view_heads"])  # view -> head name
        heads = {}
        for head in dict.fromkeys(self.view_heads.values()):
            size = tuple(cfg["sizes"][head])
            shapes = measure_level_shapes(self.backbone, size)
            shapes.append(((shapes[-1][0] + 1) // 2, (shapes[-1][1] + 1) // 2))
            heads[head] = ViewHead(cfg, ch, shapes, cfg["pps_grids"][head], cfg["spatial_kernels"][head])
        self.heads = nn.ModuleDict(heads)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        cfg["descriptor_dim"] = cfg["global_dim"] + cfg["local_dim"]

    def head_for(self, view: str) -> str:
        if view not in self.view_heads:
            raise ConfigError(f"{self.config.get('name', 'mfrgn')}: unknown view {view!r}; this model embeds "
                              f"{sorted(self.view_heads)}")
        return self.view_heads[view]

    def embed(self, x: torch.Tensor, view: str) -> torch.Tensor:
        """(B, 3, H, W) normalised images of ``view`` -> (B, D) float32 L2-normalised descriptors."""
        head = self.head_for(view)
        check_input(x, tuple(self.config["sizes"][head]), view, self.config.get("name", "mfrgn"))
        raw = self.backbone.forward_levels(x)
        s4 = self.s4_proj(raw[-1])
        proj = [*(p(r) for p, r in zip(self.input_proj, raw)), s4] if self.config["scales"] == "multi" \
            else [None, None, None, s4]
        enc = [None if p is None else p + sine_position_encoding(p.shape[1], *p.shape[-2:], p.device, p.dtype)
               for p in proj]
        out = self.heads[head](raw, proj, enc)
        return F.normalize(out.float(), dim=-1)

    def forward(self, x: torch.Tensor, view: str) -> torch.Tensor:
        return self.embed(x, view)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)


def check_input(x: torch.Tensor, size: tuple[int, int], view: str, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != tuple(size):
        raise ConfigError(f"{name}: {view} images must be (B, 3, {size[0]}, {size[1]}) (H x W = {size[0]}x{size[1]}, "
                          f"the size the model was built for), got {tuple(x.shape)}; resize them or build the model "
                          f"with another size")
