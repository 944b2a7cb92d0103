"""DiT (adaLN-Zero) and the IDDPM hybrid loss in PyTorch, as an independent reference.

Written from the DiT paper (Peebles & Xie 2023), IDDPM (Nichol & Dhariwal 2021) and
../shared/reference/diffusion-math.md (sections 1, 2 and 4). Module structure and
parameter names follow facebookresearch/DiT's ``models.py`` so that the state_dict
written by speed-train (``param.<name>`` in a dump, or a checkpoint's
``model.safetensors``) loads with ``load_state_dict``:

    pos_embed                           [1, T, D]   fixed 2D sin-cos, not trained
    x_embedder.proj.weight / .bias      [D, C, p, p], [D]
    t_embedder.mlp.0.weight / .bias     [D, 256], [D]
    t_embedder.mlp.2.weight / .bias     [D, D], [D]
    y_embedder.embedding_table.weight   [num_classes + (dropout > 0), D]
    blocks.i.attn.qkv.weight / .bias    [3D, D], [3D]
    blocks.i.attn.proj.weight / .bias   [D, D], [D]
    blocks.i.mlp.fc1.weight / .bias     [4D, D], [4D]
    blocks.i.mlp.fc2.weight / .bias     [D, 4D], [D]
    blocks.i.adaLN_modulation.1.weight  [6D, D]      (and .bias [6D])
    final_layer.linear.weight / .bias   [p*p*Cout, D], [p*p*Cout]
    final_layer.adaLN_modulation.1.weight / .bias  [2D, D], [2D]

Works with torch 1.13 (Debian's python3-torch, CPU) and torch 2.x (GPU): attention uses
F.scaled_dot_product_attention when it exists and an explicit softmax otherwise.
No code here is copied from the DiT or IDDPM repositories.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------- presets

# name -> (depth, hidden_size, num_heads) (DiT's table) plus DiT-Ti for CPU work.
PRESETS: Dict[str, Tuple[int, int, int]] = {
    "Ti": (12, 192, 3),
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
PATCHES = (2, 4, 8)


def parse_preset(name: str) -> Tuple[int, int, int, int]:
    """"DiT-S/2" -> (depth, hidden, heads, patch). Raises ValueError listing valid names."""
    valid = ", ".join(f"DiT-{k}/{p}" for k in PRESETS for p in PATCHES)
    n = name.strip()
    if n.startswith("DiT-"):
        n = n[4:]
    try:
        size, patch_s = n.split("/")
        depth, hidden, heads = PRESETS[size]
        patch = int(patch_s)
        if patch not in PATCHES:
            raise KeyError(patch)
    except (ValueError, KeyError):
        raise ValueError(f"unknown DiT preset {name!r}; valid: {valid}") from None
    return depth, hidden, heads, patch


def dit_from_preset(name: str, **kw) -> "DiT":
    depth, hidden, heads, patch = parse_preset(name)
    return DiT(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch, **kw)


# --------------------------------------------------------------------------- embeddings


def sincos_2d_pos_embed(dim: int, grid: int) -> np.ndarray:
    """[grid*grid, dim] float64. Tokens row-major over (row, col); the first dim/2 channels
    encode the column index, the last dim/2 the row index; each half is
    [sin(pos*w_i), cos(pos*w_i)] with w_i = 10000^(-i/(dim/4)), i < dim/4."""
    if dim % 4 != 0:
        raise ValueError(f"hidden size {dim} must be a multiple of 4 for the 2D sin-cos embedding")
    quarter = dim // 4
    w = 1.0 / (10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter))

    def one_axis(pos: np.ndarray) -> np.ndarray:
        a = pos[:, None] * w[None, :]
        return np.concatenate([np.sin(a), np.cos(a)], axis=1)

    idx = np.arange(grid * grid)
    row = (idx // grid).astype(np.float64)
    col = (idx % grid).astype(np.float64)
    return np.concatenate([one_axis(col), one_axis(row)], axis=1)


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """[N, dim]: [cos(t f_i), sin(t f_i)], f_i = exp(-ln(max_period) i / (dim/2))."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64, device=t.device)
    f = torch.exp(-math.log(max_period) * i / half)
    a = t.to(torch.float64)[:, None] * f[None, :]
    emb = torch.cat([torch.cos(a), torch.sin(a)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class PatchEmbed(nn.Module):
    """Patchify as a convolution with kernel = stride = p, then flatten to tokens."""

    def __init__(self, patch: int, in_ch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, kernel_size=patch, stride=patch, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # [N, D, h, w]
        return x.flatten(2).transpose(1, 2)  # [N, h*w, D], row-major grid


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        w = self.mlp[0].weight
        return self.mlp(timestep_features(t, self.freq_dim).to(w.dtype))


class LabelEmbedder(nn.Module):
    """Class table with a trailing "null" row when label dropout is on. Labels given to
    forward() are already dropped (num_classes = null); ``drop_labels`` does the drop."""

    def __init__(self, num_classes: int, dim: int, dropout: float):
        super().__init__()
        self.num_classes = num_classes
        self.dropout = dropout
        self.embedding_table = nn.Embedding(num_classes + (1 if dropout > 0 else 0), dim)

    def drop_labels(self, y: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if self.dropout <= 0:
            return y
        u = torch.rand(y.shape, generator=generator, device=y.device)
        return torch.where(u < self.dropout, torch.full_like(y, self.num_classes), y)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y.long())


_HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, use_sdpa: Optional[bool] = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)
        self.use_sdpa = _HAS_SDPA if use_sdpa is None else (use_sdpa and _HAS_SDPA)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, l, d = x.shape
        # qkv output channels split as [3][heads][head_dim]
        qkv = self.qkv(x).reshape(n, l, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [N, H, L, hd]
        if self.use_sdpa:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            s = torch.matmul(q * self.scale, k.transpose(-2, -1))
            o = torch.matmul(s.softmax(dim=-1), v)
        return self.proj(o.transpose(1, 2).reshape(n, l, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=True)
        self.fc2 = nn.Linear(hidden, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.attn = Attention(dim, heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim, bias=True))
        self.eps = 1e-6

    def _ln(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), None, None, self.eps)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g1[:, None, :] * self.attn(modulate(self._ln(x), sh1, sc1))
        x = x + g2[:, None, :] * self.mlp(modulate(self._ln(x), sh2, sc2))
        return x


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch: int, out_ch: int):
        super().__init__()
        self.linear = nn.Linear(dim, patch * patch * out_ch, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        x = F.layer_norm(x, (x.shape[-1],), None, None, 1e-6)
        return self.linear(modulate(x, shift, scale))


class DiT(nn.Module):
    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
    ):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} not divisible by patch {patch_size}")
        self.input_size = input_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.hidden_size = hidden_size
        self.depth = depth
        self.num_heads = num_heads
        self.num_classes = num_classes
        self.learn_sigma = learn_sigma
        self.grid = input_size // patch_size
        self.num_tokens = self.grid * self.grid
        self.grad_checkpointing = False  # recompute each block in backward (saves memory)

        # Registration order gives DiT's state_dict order: pos_embed (a direct
        # parameter) first, then x_embedder, t_embedder, y_embedder, blocks, final_layer.
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = (
            LabelEmbedder(num_classes, hidden_size, class_dropout_prob) if num_classes > 0 else None
        )
        pe = torch.from_numpy(sincos_2d_pos_embed(hidden_size, self.grid)).float()[None]
        self.pos_embed = nn.Parameter(pe, requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self, generator: Optional[torch.Generator] = None) -> None:
        """DiT's initialisation: Xavier-uniform Linear weights and the patch
        weight viewed as [D, C p p], zero biases, N(0, 0.02) for the class table and the
        timestep MLP, zeros for every adaLN Linear and the final Linear."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
            w = self.x_embedder.proj.weight
            bound = math.sqrt(6.0 / (w.shape[0] + w[0].numel()))
            w.uniform_(-bound, bound)
            nn.init.zeros_(self.x_embedder.proj.bias)
            if self.y_embedder is not None:
                nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
            nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
            nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
            for b in self.blocks:
                nn.init.zeros_(b.adaLN_modulation[1].weight)
                nn.init.zeros_(b.adaLN_modulation[1].bias)
            for lin in (self.final_layer.adaLN_modulation[1], self.final_layer.linear):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[N, T, p*p*Cout] -> [N, Cout, H, W]; each token's output is read as [p][p][Cout]."""
        n = x.shape[0]
        p, g, c = self.patch_size, self.grid, self.out_channels
        x = x.reshape(n, g, g, p, p, c)  # n, row, col, pi, pj, c
        x = x.permute(0, 5, 1, 3, 2, 4)  # n, c, row, pi, col, pj
        return x.reshape(n, c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t)
        if self.y_embedder is not None:
            if y is None:
                raise ValueError("class-conditional DiT needs labels y")
            c = c + self.y_embedder(y)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                h = checkpoint(blk, h, c, use_reentrant=False)
            else:
                h = blk(h, c)
        return self.unpatchify(self.final_layer(h, c))


# --------------------------------------------------------------------------- diffusion


def linear_betas(T: int) -> np.ndarray:
    s = 1000.0 / T
    return np.linspace(s * 1e-4, s * 0.02, T, dtype=np.float64)


def diffusion_tables(betas: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-timestep float64 tables of the diffusion schedule (IDDPM's betas and posterior coefficients; names as in native DiffusionTables)."""
    betas = np.asarray(betas, dtype=np.float64)
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    if len(betas) > 1:
        post_log_var = np.log(np.concatenate([[post_var[1]], post_var[1:]]))
    else:  # a one-step process has no t = 1 entry to borrow; keep it finite
        post_log_var = np.log(np.maximum(post_var, 1e-20))
    return {
        "betas": betas,
        "abar": abar,
        "sqrt_abar": np.sqrt(abar),
        "sqrt_1m_abar": np.sqrt(1.0 - abar),
        "sqrt_recip_abar": np.sqrt(1.0 / abar),
        "sqrt_recipm1_abar": np.sqrt(1.0 / abar - 1.0),
        "coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
        "coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
        "log_beta": np.log(betas),
        "post_log_var": post_log_var,
    }


def tables_to(tables: Dict[str, np.ndarray], device, dtype=torch.float32) -> Dict[str, torch.Tensor]:
    """The tables as tensors on `device` (avoids a host-to-device copy per loss call)."""
    return {k: torch.as_tensor(v, dtype=dtype, device=device) for k, v in tables.items()}


def _take(table, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if isinstance(table, torch.Tensor):
        v = table.to(device=like.device, dtype=like.dtype)[t.long()]
    else:
        v = torch.as_tensor(table, dtype=like.dtype, device=like.device)[t.long()]
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def q_sample(tables, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return _take(tables["sqrt_abar"], t, x0) * x0 + _take(tables["sqrt_1m_abar"], t, x0) * eps


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(dim=1)


def _approx_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_nll(x0: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Elementwise -log P(x0) for bins of width 2/255 on [-1, 1], edge bins open."""
    cx = x0 - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_std_normal_cdf(inv_std * (cx + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_std * (cx - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_1m_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    logp = torch.where(x0 < -0.999, log_cdf_plus, torch.where(x0 > 0.999, log_1m_cdf_min, log_delta))
    return -logp


def iddpm_hybrid_loss(
    tables,
    model_out: torch.Tensor,
    x0: torch.Tensor,
    xt: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    vb_scale: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference §2. Returns per-sample (loss, mse, vb) with loss = mse + vb_scale * vb,
    mse = mean_CHW(w_t (eps - eps_hat)^2) and vb (in bits, before vb_scale) computed with
    eps_hat detached, so it trains only the variance channels. ("Rescaled MSE" is
    vb_scale = T/1000; IDDPM logs the scaled term, speed-train the unscaled one.)
    A model without learned sigma (C output channels) gets loss = mse and vb = 0."""
    C = x0.shape[1]
    if model_out.shape[1] == C:
        mse = _mean_flat((eps - model_out) ** 2)
        if weight is not None:
            mse = mse * weight.to(mse.dtype)
        return mse, mse, torch.zeros_like(mse)
    if model_out.shape[1] != 2 * C:
        raise ValueError(f"model output has {model_out.shape[1]} channels; expected {C} or {2 * C}")
    eps_hat, v = model_out[:, :C], model_out[:, C:]
    mse = _mean_flat((eps - eps_hat) ** 2)
    if weight is not None:
        mse = mse * weight.to(mse.dtype)

    eps_d = eps_hat.detach()
    frac = (v + 1.0) / 2.0
    lb = _take(tables["log_beta"], t, xt)
    plv = _take(tables["post_log_var"], t, xt)
    log_var = frac * lb + (1.0 - frac) * plv
    c1 = _take(tables["coef1"], t, xt)
    c2 = _take(tables["coef2"], t, xt)
    x0_hat = _take(tables["sqrt_recip_abar"], t, xt) * xt - _take(tables["sqrt_recipm1_abar"], t, xt) * eps_d
    mu = c1 * x0_hat + c2 * xt
    mu_true = c1 * x0 + c2 * xt
    kl = 0.5 * (-1.0 + log_var - plv + torch.exp(plv - log_var) + (mu_true - mu) ** 2 * torch.exp(-log_var))
    kl = _mean_flat(kl) / math.log(2.0)
    nll = _mean_flat(discretized_gaussian_nll(x0, mu, 0.5 * log_var)) / math.log(2.0)
    vb = torch.where(t.to(x0.device) == 0, nll, kl)
    return mse + vb_scale * vb, mse, vb


# --------------------------------------------------------------------------- FLOPs


def dit_forward_flops(
    depth: int, hidden: int, heads: int, patch: int, input_size: int, in_channels: int,
    learn_sigma: bool = True, mlp_ratio: float = 4.0,
) -> float:
    """Analytic forward FLOPs per image (multiply-add = 2 FLOPs).

    forward = 2 * (token matmul weights) * L + 4 * L^2 * D * depth + 2 * (per-image matmul weights)
    token matmul weights = depth * (3D^2 + D^2 + 2 * mlp_ratio * D^2) + C p^2 D + D p^2 Cout
    per-image weights    = depth * 6D^2 + 2D^2 + 256 D + D^2  (adaLN, final adaLN, t-MLP)
    attention            = QK^T and attn*V: 2 * 2 * L^2 * D per layer
    Elementwise ops (LN, GELU, softmax, residuals) are not counted. train step = 3 * forward.
    For DiT-XL/2 at 32x32x4 this gives ~237 GFLOP, twice the 118.6 "Gflops" (MACs) of
    the DiT paper.
    """
    D = hidden
    L = (input_size // patch) ** 2
    cout = 2 * in_channels if learn_sigma else in_channels
    tok = depth * (4 * D * D + 2 * int(mlp_ratio * D) * D) + in_channels * patch * patch * D + D * patch * patch * cout
    img = depth * 6 * D * D + 2 * D * D + 256 * D + D * D
    return 2.0 * tok * L + 4.0 * L * L * D * depth + 2.0 * img


def model_flops(model_name: str, input_size: int, in_channels: int, learn_sigma: bool = True) -> float:
    depth, hidden, heads, patch = parse_preset(model_name)
    return dit_forward_flops(depth, hidden, heads, patch, input_size, in_channels, learn_sigma)


# --------------------------------------------------------------------------- safetensors


_ST_DTYPES = {
    "F64": (np.float64, torch.float64),
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),
    "I64": (np.int64, torch.int64),
    "I32": (np.int32, torch.int32),
    "I16": (np.int16, torch.int16),
    "I8": (np.int8, torch.int8),
    "U8": (np.uint8, torch.uint8),
    "BOOL": (np.bool_, torch.bool),
}


def load_safetensors(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """(tensors, __metadata__). Uses the ``safetensors`` package when importable and a
    small parser of the format otherwise (8-byte little-endian header length, JSON
    header, raw little-endian bytes). Malformed files raise ValueError naming the file."""
    import json
    import struct

    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: too short for a safetensors file ({len(blob)} bytes)")
    (hlen,) = struct.unpack("<Q", blob[:8])
    if hlen > len(blob) - 8:
        raise ValueError(f"{path}: header length {hlen} exceeds file size {len(blob)}")
    try:
        header = json.loads(blob[8 : 8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: bad safetensors header: {e}") from None
    meta = header.pop("__metadata__", {}) or {}
    try:  # the real package when available (torch 2.x machines)
        from safetensors.torch import load_file  # type: ignore

        return load_file(path), meta
    except ImportError:
        pass
    data = memoryview(blob)[8 + hlen :]
    out: Dict[str, torch.Tensor] = {}
    for name, info in header.items():
        dt = info.get("dtype")
        if dt == "BF16":
            b, e = info["data_offsets"]
            raw = np.frombuffer(data[b:e], dtype=np.uint16).astype(np.uint32) << 16
            out[name] = torch.from_numpy(raw.view(np.float32).copy()).reshape(info["shape"])
            continue
        if dt not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dt!r}")
        npdt, _ = _ST_DTYPES[dt]
        b, e = info["data_offsets"]
        shape = [int(s) for s in info["shape"]]
        count = int(np.prod(shape)) if shape else 1
        if e > len(data) or e - b != count * np.dtype(npdt).itemsize:
            raise ValueError(f"{path}: tensor {name!r} byte range [{b}, {e}) does not match shape {shape} {dt}")
        arr = np.frombuffer(data[b:e], dtype=np.dtype(npdt).newbyteorder("<")).copy()
        out[name] = torch.from_numpy(arr.reshape(shape))
    return out, meta
