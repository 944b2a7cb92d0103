#!/usr/bin/env python3
"""An independent PyTorch AutoencoderKL (SD's VAE, kl-f8) to cross-check speed-train's native VAE.

    /usr/bin/python3 tools/torch_vae.py DUMP.safetensors [--tol 1e-5]
    /usr/bin/python3 tools/torch_vae.py --bench WEIGHTS.safetensors [--size 256] [--batch 1] [--threads 2] [--reps 1]

Written from the published definitions, plain torch (no diffusers package), in BOTH
namings as two separate module trees, so that ``load_state_dict(strict=True)`` proves the
parameter names and shapes of a file:
  * ``LdmAutoencoder``: CompVis/LDM ``ldm/modules/diffusionmodules/model.py`` (Encoder /
    Decoder with ``down[i].block[j]``, ``mid.block_1/attn_1/block_2``, ``up[i]`` inserted
    at the front so ``up[L-1]`` runs first, ``nin_shortcut``, 1x1-conv q/k/v/proj_out,
    Downsample = pad (0,1,0,1) + conv stride 2, ``norm_out``);
  * ``DiffusersAutoencoder``: diffusers ``AutoencoderKL`` (``down_blocks[i].resnets[j]``,
    ``downsamplers[0].conv``, ``mid_block.resnets/attentions``, Linear ``to_q/to_k/to_v/
    to_out.0`` (older ``query/key/value/proj_attn`` are renamed on load), ``up_blocks``,
    ``conv_norm_out``).
Both: GroupNorm(32 by default, eps 1e-6), SiLU, single-head attention scaled by C^-0.5,
nearest x2 upsampling, quant_conv / post_quant_conv, moments = (mean, logvar).

DUMP (written by tools/vae_dump.mts) holds ``input.images`` [N,C,H,W], ``input.z``,
``output.moments`` (our quant_conv output), ``output.decoded`` and ``__metadata__``
{weights (the weight file), config (JSON)}. The script loads the weight file itself,
runs float32 on the CPU and prints one JSON line {"kind": "vae_crosscheck", ...} with
the relative error max|ours - torch| / max|torch| of the mean, the logvar and the
decoded images. Exit 0 when all are within --tol, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- safetensors (minimal reader: F32 / F16 / BF16 / F64) -------------------------------


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for k, v in header.items():
        b, e = v["data_offsets"]
        raw = data[b:e]
        dt = v["dtype"]
        if dt == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif dt == "F64":
            a = np.frombuffer(raw, dtype="<f8").astype(np.float32)
        elif dt == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{path}: tensor {k} has dtype {dt}")
        out[k] = torch.from_numpy(a.copy()).reshape(v["shape"])
    return out, meta


# ---- LDM (CompVis) naming -------------------------------------------------------------


def Normalize(c, groups):
    return nn.GroupNorm(groups, c, eps=1e-6, affine=True)


class LdmResnet(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = Normalize(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = Normalize(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1, 1, 0)
        self.cin, self.cout = cin, cout

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))  # dropout 0
        if self.cin != self.cout:
            x = self.nin_shortcut(x)
        return x + h


class LdmAttn(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = Normalize(c, groups)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)  # b, hw, c
        k = k.reshape(b, c, hh * ww)  # b, c, hw
        w_ = torch.bmm(q, k) * (int(c) ** (-0.5))
        w_ = torch.softmax(w_, dim=2)
        v = v.reshape(b, c, hh * ww)
        h = torch.bmm(v, w_.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


class LdmDown(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class LdmUp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class LdmEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch_mult = cfg["block_out_channels"]
        g = cfg["norm_num_groups"]
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch_mult[0], 3, 1, 1)
        self.down = nn.ModuleList()
        cin = ch_mult[0]
        for i, cout in enumerate(ch_mult):
            lvl = nn.Module()
            lvl.block = nn.ModuleList()
            for _ in range(cfg["layers_per_block"]):
                lvl.block.append(LdmResnet(cin, cout, g))
                cin = cout
            if i != len(ch_mult) - 1:
                lvl.downsample = LdmDown(cin)
            self.down.append(lvl)
        self.mid = nn.Module()
        self.mid.block_1 = LdmResnet(cin, cin, g)
        self.mid.attn_1 = LdmAttn(cin, g)
        self.mid.block_2 = LdmResnet(cin, cin, g)
        self.norm_out = Normalize(cin, g)
        self.conv_out = nn.Conv2d(cin, 2 * cfg["latent_channels"], 3, 1, 1)
        self.levels = len(ch_mult)

    def forward(self, x):
        h = self.conv_in(x)
        for i, lvl in enumerate(self.down):
            for b in lvl.block:
                h = b(h)
            if i != self.levels - 1:
                h = lvl.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class LdmDecoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch_mult = cfg["block_out_channels"]
        g = cfg["norm_num_groups"]
        L = len(ch_mult)
        cin = ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg["latent_channels"], cin, 3, 1, 1)
        self.mid = nn.Module()
        self.mid.block_1 = LdmResnet(cin, cin, g)
        self.mid.attn_1 = LdmAttn(cin, g)
        self.mid.block_2 = LdmResnet(cin, cin, g)
        self.up = nn.ModuleList()
        for i_level in reversed(range(L)):
            lvl = nn.Module()
            lvl.block = nn.ModuleList()
            cout = ch_mult[i_level]
            for _ in range(cfg["layers_per_block"] + 1):
                lvl.block.append(LdmResnet(cin, cout, g))
                cin = cout
            if i_level != 0:
                lvl.upsample = LdmUp(cin)
            self.up.insert(0, lvl)  # prepend, as LDM: up[L-1] is the first applied
        self.norm_out = Normalize(cin, g)
        self.conv_out = nn.Conv2d(cin, cfg["out_channels"], 3, 1, 1)
        self.levels = L

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i_level in reversed(range(self.levels)):
            for b in self.up[i_level].block:
                h = b(h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class LdmAutoencoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        z = cfg["latent_channels"]
        self.encoder = LdmEncoder(cfg)
        self.decoder = LdmDecoder(cfg)
        self.quant_conv = nn.Conv2d(2 * z, 2 * z, 1)
        self.post_quant_conv = nn.Conv2d(z, z, 1)

    def moments(self, x):
        return self.quant_conv(self.encoder(x))

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


# ---- diffusers naming -----------------------------------------------------------------


class DResnet(nn.Module):  # ResnetBlock2D (temb None, output_scale_factor 1)
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class DAttention(nn.Module):  # Attention(heads=1, dim_head=C, residual_connection=True)
    def __init__(self, c, groups):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.to_q = nn.Linear(c, c)
        self.to_k = nn.Linear(c, c)
        self.to_v = nn.Linear(c, c)
        self.to_out = nn.ModuleList([nn.Linear(c, c), nn.Dropout(0.0)])

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.group_norm(x).view(b, c, h * w).transpose(1, 2)  # b, hw, c
        q, k, v = self.to_q(t), self.to_k(t), self.to_v(t)
        s = torch.baddbmm(torch.empty(b, h * w, h * w, dtype=q.dtype), q, k.transpose(1, 2), beta=0, alpha=c ** -0.5)
        o = torch.bmm(s.softmax(dim=-1), v)
        o = self.to_out[0](o)
        return o.transpose(1, 2).reshape(b, c, h, w) + x


class DMid(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.resnets = nn.ModuleList([DResnet(c, c, groups), DResnet(c, c, groups)])
        self.attentions = nn.ModuleList([DAttention(c, groups)])

    def forward(self, x):
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class DDownsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class DUpsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DiffusersAutoencoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        boc, g, lpb, z = cfg["block_out_channels"], cfg["norm_num_groups"], cfg["layers_per_block"], cfg["latent_channels"]
        enc = nn.Module()
        enc.conv_in = nn.Conv2d(cfg["in_channels"], boc[0], 3, 1, 1)
        enc.down_blocks = nn.ModuleList()
        out_ch = boc[0]
        for i, ch in enumerate(boc):
            blk = nn.Module()
            blk.resnets = nn.ModuleList([DResnet(out_ch if j == 0 else ch, ch, g) for j in range(lpb)])
            out_ch = ch
            if i != len(boc) - 1:
                blk.downsamplers = nn.ModuleList([DDownsample(ch)])
            enc.down_blocks.append(blk)
        enc.mid_block = DMid(boc[-1], g)
        enc.conv_norm_out = nn.GroupNorm(g, boc[-1], eps=1e-6)
        enc.conv_out = nn.Conv2d(boc[-1], 2 * z, 3, 1, 1)
        self.encoder = enc
        dec = nn.Module()
        rev = list(reversed(boc))
        dec.conv_in = nn.Conv2d(z, rev[0], 3, 1, 1)
        dec.mid_block = DMid(rev[0], g)
        dec.up_blocks = nn.ModuleList()
        prev = rev[0]
        for i, ch in enumerate(rev):
            blk = nn.Module()
            blk.resnets = nn.ModuleList([DResnet(prev if j == 0 else ch, ch, g) for j in range(lpb + 1)])
            prev = ch
            if i != len(rev) - 1:
                blk.upsamplers = nn.ModuleList([DUpsample(ch)])
            dec.up_blocks.append(blk)
        dec.conv_norm_out = nn.GroupNorm(g, rev[-1], eps=1e-6)
        dec.conv_out = nn.Conv2d(rev[-1], cfg["out_channels"], 3, 1, 1)
        self.decoder = dec
        self.quant_conv = nn.Conv2d(2 * z, 2 * z, 1)
        self.post_quant_conv = nn.Conv2d(z, z, 1)
        self.levels = len(boc)

    def moments(self, x):
        e = self.encoder
        h = e.conv_in(x)
        for i, blk in enumerate(e.down_blocks):
            for r in blk.resnets:
                h = r(h)
            if i != self.levels - 1:
                h = blk.downsamplers[0](h)
        h = e.mid_block(h)
        return self.quant_conv(e.conv_out(F.silu(e.conv_norm_out(h))))

    def decode(self, z):
        d = self.decoder
        h = d.conv_in(self.post_quant_conv(z))
        h = d.mid_block(h)
        for i, blk in enumerate(d.up_blocks):
            for r in blk.resnets:
                h = r(h)
            if i != self.levels - 1:
                h = blk.upsamplers[0](h)
        return d.conv_out(F.silu(d.conv_norm_out(h)))


OLD_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def build(weights_path, cfg):
    """The module tree matching the file's naming, with the file loaded strictly."""
    sd, _ = read_safetensors(weights_path)
    if any(k.startswith("first_stage_model.") for k in sd):
        sd = {k[len("first_stage_model."):]: v for k, v in sd.items() if k.startswith("first_stage_model.")}
    sd = {k: v for k, v in sd.items() if not k.startswith("loss.")}
    if any(k.startswith("encoder.down_blocks.") for k in sd):
        m, naming = DiffusersAutoencoder(cfg), "diffusers"
        fixed = {}
        for k, v in sd.items():
            for old, new in OLD_ATTN.items():
                k = k.replace(f"attentions.0.{old}.", f"attentions.0.{new}.")
            fixed[k] = v
        sd = fixed
    else:
        m, naming = LdmAutoencoder(cfg), "ldm"
    m.load_state_dict(sd, strict=True)  # every name and shape, nothing extra
    return m.eval(), naming


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def crosscheck(dump, tol):
    t, meta = read_safetensors(dump)
    cfg = json.loads(meta["config"])
    m, naming = build(meta["weights"], cfg)
    x, z = t["input.images"], t["input.z"]
    with torch.no_grad():
        mom = m.moments(x)
        y = m.decode(z)
    zc = cfg["latent_channels"]
    ours_m, ours_y = t["output.moments"], t["output.decoded"]
    r = {
        "kind": "vae_crosscheck",
        "case": meta.get("case", ""),
        "naming": naming,
        "dtype": meta.get("dtype", ""),
        "config": cfg,
        "input": list(x.shape),
        "mean": rel(ours_m[:, :zc], mom[:, :zc]),
        "logvar": rel(ours_m[:, zc:], mom[:, zc:]),
        "decoded": rel(ours_y, y),
        "tol": tol,
    }
    r["pass"] = max(r["mean"], r["logvar"], r["decoded"]) <= tol
    print(json.dumps(r))
    return 0 if r["pass"] else 1


def bench(weights, cfg_json, size, batch, threads, reps):
    torch.set_num_threads(threads)
    cfg = json.loads(cfg_json)
    m, naming = build(weights, cfg)
    f = 2 ** (len(cfg["block_out_channels"]) - 1)
    x = torch.rand(batch, cfg["in_channels"], size, size) * 2 - 1
    z = torch.randn(batch, cfg["latent_channels"], size // f, size // f)
    out = {"kind": "torch_vae_bench", "size": size, "batch": batch, "threads": threads, "torch": torch.__version__}
    with torch.no_grad():
        for what, fn, arg in (("encode", m.moments, x), ("decode", m.decode, z)):
            fn(arg)  # warm-up
            walls, cpus = [], []
            for _ in range(reps):
                t0, c0 = time.perf_counter(), time.process_time()
                fn(arg)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            # best of reps: on a shared machine the fastest run is the least disturbed
            out[what + "_images_per_s"] = batch / min(walls)
            out[what + "_cpu_s_per_image"] = min(cpus) / batch
    print(json.dumps(out))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dump", nargs="?")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--bench", metavar="WEIGHTS")
    ap.add_argument("--config", default=json.dumps({"in_channels": 3, "out_channels": 3, "latent_channels": 4,
                                                    "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
                                                    "norm_num_groups": 32}))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(0)
    if a.bench:
        return bench(a.bench, a.config, a.size, a.batch, a.threads, a.reps)
    if not a.dump:
        ap.print_usage()
        return 2
    return crosscheck(a.dump, a.tol)


if __name__ == "__main__":
    sys.exit(main())
