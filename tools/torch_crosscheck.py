#!/usr/bin/env python3
"""Cross-check speed-train's native DiT + IDDPM loss against an independent PyTorch model.

    /usr/bin/python3 tools/torch_crosscheck.py DUMP.safetensors [--tol 1e-4] [--grad-tol 5e-4] [--verbose]
    /usr/bin/python3 tools/torch_crosscheck.py --self-test

DUMP is written by ``native/bench/dump_case`` and holds ``param.<name>`` (DiT state_dict
names), ``grad.<name>``, ``input.{x0,eps,t,y,weight,xt}``, ``output.{model_out,loss,mse,vb}``
(``output.vb`` before vb_scale: loss = mse + vb_scale * vb) and ``__metadata__`` {preset,
input_size, in_channels, num_classes, class_dropout_prob,
learn_sigma, vb_scale, T, schedule}.

The script builds DiT (tools/torch_dit.py) in float64, loads ``param.*``, runs the
forward pass on ``input.xt``/``t``/``y``, computes the IDDPM hybrid loss from
``input.x0``/``eps``/``weight``, back-propagates the batch-mean loss and compares
model_out, loss, mse, vb and every gradient with the dump. The error measure of a
tensor is the relative norm ``||ours - torch|| / max(||torch||, floor)`` where floor is
``1e-3 * RMS-scale`` of its group (so exactly-zero references, e.g. gradients behind a
zero adaLN gate, are judged against the group's scale rather than 0). Exit status:
0 all within --tol (--grad-tol for gradients), 1 some tensor above it, 2 unreadable dump or bad usage.

``--self-test`` writes a dump from this PyTorch model itself (float32, random weights)
and checks it: it exercises the plumbing without the native build.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import torch_dit as td  # noqa: E402


def _meta_value(v):
    if isinstance(v, (int, float, bool)):
        return v
    s = str(v).strip()
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def build_model(meta: Dict, params: Dict[str, torch.Tensor]) -> td.DiT:
    preset = meta.get("preset")
    if preset is None:
        raise ValueError("dump metadata lacks 'preset' (e.g. DiT-Ti/4)")
    depth, hidden, heads, patch = td.parse_preset(str(preset))
    pe = params.get("pos_embed")
    # Trust the tensors over the preset name when they disagree on the width or depth.
    if pe is not None and pe.shape[-1] != hidden:
        raise ValueError(f"preset {preset} has hidden {hidden}, but pos_embed is {list(pe.shape)}")
    nblk = len({k.split(".")[1] for k in params if k.startswith("blocks.")})
    if nblk and nblk != depth:
        raise ValueError(f"preset {preset} has depth {depth}, but the dump holds {nblk} blocks")
    return td.DiT(
        input_size=int(meta.get("input_size", 32)),
        patch_size=patch,
        in_channels=int(meta.get("in_channels", 4)),
        hidden_size=hidden,
        depth=depth,
        num_heads=heads,
        class_dropout_prob=float(meta.get("class_dropout_prob", 0.1)),
        num_classes=int(meta.get("num_classes", 1000)),
        learn_sigma=bool(meta.get("learn_sigma", True)),
    )


def schedule_betas(meta: Dict) -> np.ndarray:
    T = int(meta.get("T", 1000))
    sched = str(meta.get("schedule", "linear"))
    if sched != "linear":
        raise ValueError(f"schedule {sched!r} not supported by the cross-check (only 'linear')")
    return td.linear_betas(T)


class Row:
    def __init__(self, group, name, shape, max_abs, ref_max, ref_norm, diff_norm, floor):
        self.group, self.name, self.shape = group, name, shape
        self.max_abs, self.ref_max = max_abs, ref_max
        self.ref_norm, self.diff_norm = ref_norm, diff_norm
        self.err = diff_norm / max(ref_norm, floor) if max(ref_norm, floor) > 0 else diff_norm

    def line(self, tol) -> str:
        status = "ok" if self.err <= tol else "FAIL"
        shape = "x".join(str(s) for s in self.shape) or "scalar"
        return (f"  {self.name:<44} {shape:>14}  max|d| {self.max_abs:10.3e}  max|ref| {self.ref_max:10.3e}"
                f"  rel-norm {self.err:10.3e}  {status}")


def compare_group(group: str, pairs: List[Tuple[str, torch.Tensor, torch.Tensor]]) -> List[Row]:
    """pairs: (name, ours, reference). Floor = 1e-3 * RMS norm over the group's tensors."""
    norms = [float(r.double().norm()) for _, _, r in pairs]
    scale = math.sqrt(sum(n * n for n in norms) / max(len(norms), 1))
    floor = 1e-3 * scale
    rows = []
    for (name, a, b), nb in zip(pairs, norms):
        a = a.double().reshape(b.shape)
        d = (a - b.double()).abs()
        rows.append(Row(group, name, list(b.shape), float(d.max()) if d.numel() else 0.0,
                        float(b.abs().max()) if b.numel() else 0.0, nb, float(d.norm()), floor))
    return rows


def run_check(path: str, tol: float, grad_tol: float, verbose: bool, threads: Optional[int]) -> int:
    if threads:
        torch.set_num_threads(threads)
    try:
        tensors, raw_meta = td.load_safetensors(path)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = {k: _meta_value(v) for k, v in raw_meta.items()}
    params = {k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")}
    grads = {k[len("grad."):]: v for k, v in tensors.items() if k.startswith("grad.")}
    need = ["input.x0", "input.eps", "input.t", "input.xt", "output.model_out"]
    missing = [k for k in need if k not in tensors]
    if missing or not params:
        print(f"error: {path}: missing {missing or 'param.* tensors'}", file=sys.stderr)
        return 2

    try:
        model = build_model(meta, params).double()
        betas = schedule_betas(meta)
    except ValueError as e:
        print(f"error: {path}: {e}", file=sys.stderr)
        return 2
    tables = td.diffusion_tables(betas)

    sd = model.state_dict()
    unknown = sorted(set(params) - set(sd))
    absent = sorted(set(sd) - set(params))
    if unknown or absent:
        print(f"error: state_dict mismatch: not in torch DiT {unknown[:8]}, not in dump {absent[:8]}",
              file=sys.stderr)
        return 1
    bad_shape = [(k, list(params[k].shape), list(sd[k].shape)) for k in sd if params[k].shape != sd[k].shape]
    if bad_shape:
        print(f"error: shape mismatch (name, dump, torch): {bad_shape[:8]}", file=sys.stderr)
        return 1
    model.load_state_dict({k: v.double() for k, v in params.items()}, strict=True)
    pe_ref = torch.from_numpy(td.sincos_2d_pos_embed(model.hidden_size, model.grid))[None]

    x0 = tensors["input.x0"].double()
    eps = tensors["input.eps"].double()
    t = tensors["input.t"].long()
    xt = tensors["input.xt"].double()
    N = x0.shape[0]
    y = tensors["input.y"].long() if "input.y" in tensors else None
    weight = tensors["input.weight"].double() if "input.weight" in tensors else torch.ones(N, dtype=torch.float64)
    vb_scale = float(meta.get("vb_scale", 1.0))

    print(f"dump      {path}")
    print(f"model     {meta.get('preset')}  input {model.input_size}x{model.input_size}x{model.in_channels}"
          f"  classes {model.num_classes} (dropout {meta.get('class_dropout_prob')})"
          f"  learn_sigma {model.learn_sigma}  N {N}  T {len(betas)} {meta.get('schedule', 'linear')}"
          f"  vb_scale {vb_scale}")
    print(f"torch     {torch.__version__}  float64  threads {torch.get_num_threads()}"
          f"  sdpa {'yes' if td._HAS_SDPA else 'no (manual softmax)'}")
    print(f"t         {t.tolist()}" + (f"\ny         {y.tolist()}" if y is not None else ""))
    print(f"dtype     ours: computed in {meta.get('dtype', '?')}, stored as {tensors['output.model_out'].dtype}")

    model.zero_grad(set_to_none=True)
    out = model(xt, t, y)
    rows: List[Row] = []
    # Inputs our side derived: x_t from x0 and eps with the schedule; pos_embed.
    rows += compare_group("derived", [
        ("input.xt (= q_sample(x0, t, eps))", xt, td.q_sample(tables, x0, t, eps).detach()),
        ("param.pos_embed (fixed sin-cos)", params["pos_embed"], pe_ref),
    ])
    rows += compare_group("output", [("output.model_out", tensors["output.model_out"], out.detach())])

    if "output.loss" in tensors:
        loss, mse, vb = td.iddpm_hybrid_loss(tables, out, x0, xt, t, eps, weight, vb_scale)
        mean_loss = loss.mean()
        mean_loss.backward()
        lpairs = []
        for key, ref in (("output.loss", loss), ("output.mse", mse), ("output.vb", vb)):
            if key not in tensors:
                continue
            ours = tensors[key]
            ref = ref.detach()
            if ours.numel() == 1 and ref.numel() > 1:  # a batch mean was dumped
                ref = ref.mean().reshape(ours.shape)
            lpairs.append((key, ours, ref))
        # Each loss term judged on its own scale (vb is tiny next to mse at large t).
        for p in lpairs:
            rows += compare_group("loss", [p])
        print(f"loss      torch mean {float(mean_loss):.10g}"
              + (f"   ours mean {float(tensors['output.loss'].double().mean()):.10g}" if "output.loss" in tensors else ""))
        gpairs = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if name not in grads:
                print(f"  note: grad.{name} not in dump")
                continue
            ref = p.grad.detach() if p.grad is not None else torch.zeros_like(p)
            gpairs.append((f"grad.{name}", grads[name], ref))
        rows += compare_group("grad", gpairs)
        gn_ours = math.sqrt(sum(float(g.double().norm()) ** 2 for _, g, _ in gpairs))
        gn_ref = math.sqrt(sum(float(r.norm()) ** 2 for _, _, r in gpairs))
        print(f"gradnorm  torch {gn_ref:.10g}   ours {gn_ours:.10g}   rel {abs(gn_ours - gn_ref) / max(gn_ref, 1e-300):.3e}")
    else:
        print("note: no output.loss in the dump: only the forward pass is compared")
    if not model.learn_sigma:
        print("note: learn_sigma is off: loss = mse (fixed variance), vb = 0")

    for r in rows:
        r.tol = grad_tol if r.group == "grad" else tol
    fails = [r for r in rows if r.err > r.tol]
    print()
    for group in ("derived", "output", "loss", "grad"):
        g = [r for r in rows if r.group == group]
        if not g:
            continue
        worst = max(g, key=lambda r: r.err)
        print(f"[{group}] {len(g)} tensors, worst rel-norm {worst.err:.3e} ({worst.name}),"
              f" max abs diff {max(r.max_abs for r in g):.3e}")
        for r in g:
            if verbose or group != "grad" or r.err > r.tol or r is worst:
                print(r.line(r.tol))
    print()
    summary = {
        "kind": "crosscheck", "dump": path, "preset": meta.get("preset"), "N": N, "tol": tol,
        "grad_tol": grad_tol,
        "pass": not fails, "worst": {g: max((r.err for r in rows if r.group == g), default=0.0)
                                      for g in ("derived", "output", "loss", "grad")},
        "max_abs": {g: max((r.max_abs for r in rows if r.group == g), default=0.0)
                    for g in ("derived", "output", "loss", "grad")},
    }
    print(json.dumps(summary))
    if fails:
        print(f"FAIL: {len(fails)} tensor(s) above tolerance (rel-norm {tol:g}, gradients {grad_tol:g}): "
              + ", ".join(r.name for r in fails[:10]))
        return 1
    print(f"PASS: {len(rows)} tensors within rel-norm {tol:g} (gradients {grad_tol:g})")
    return 0


# ---------------------------------------------------------------------------- self test


def write_safetensors(path: str, tensors: Dict[str, torch.Tensor], meta: Dict[str, str]) -> None:
    codes = {torch.float32: "F32", torch.float64: "F64", torch.int32: "I32", torch.int64: "I64"}
    header: Dict = {"__metadata__": meta}
    blobs, off = [], 0
    for k, v in tensors.items():
        b = v.detach().contiguous().cpu().numpy().tobytes()
        header[k] = {"dtype": codes[v.dtype], "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def self_test(tol: float, grad_tol: float) -> int:
    """Dump from the torch model in float32 with non-zero weights, then cross-check."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    meta = {"preset": "DiT-Ti/8", "input_size": "16", "in_channels": "3", "num_classes": "10",
            "class_dropout_prob": "0.1", "learn_sigma": "true", "vb_scale": "1", "T": "1000",
            "schedule": "linear"}
    m = td.DiT(input_size=16, patch_size=8, in_channels=3, hidden_size=192, depth=12, num_heads=3,
               num_classes=10, class_dropout_prob=0.1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    N = 4
    x0 = torch.rand(N, 3, 16, 16, generator=g) * 2 - 1
    x0[0, 0, 0, :4] = torch.tensor([-1.0, 1.0, -1.0, 1.0])  # edge bins of the t=0 NLL
    eps = torch.randn(N, 3, 16, 16, generator=g)
    t = torch.tensor([0, 1, 500, 999], dtype=torch.int32)
    y = torch.tensor([3, 10, 0, 9], dtype=torch.int32)
    w = torch.tensor([1.0, 0.5, 1.2, 0.8])
    tables = td.diffusion_tables(td.linear_betas(1000))
    xt = td.q_sample(tables, x0.double(), t, eps.double()).float()
    out = m(xt, t, y)
    loss, mse, vb = td.iddpm_hybrid_loss(tables, out, x0, xt, t, eps, w)
    loss.mean().backward()
    ts = {f"param.{k}": v.float() for k, v in m.state_dict().items()}
    ts.update({f"grad.{k}": p.grad for k, p in m.named_parameters() if p.requires_grad})
    ts.update({"input.x0": x0, "input.eps": eps, "input.t": t, "input.y": y, "input.weight": w,
               "input.xt": xt, "output.model_out": out.detach(), "output.loss": loss.detach(),
               "output.mse": mse.detach(), "output.vb": vb.detach()})
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "selftest.safetensors")
        write_safetensors(p, ts, meta)
        rc = run_check(p, tol, grad_tol, verbose=False, threads=None)
    # Independent check of the loss gradient: float64 finite differences on the output.
    o = (torch.randn(2, 6, 4, 4, dtype=torch.float64, generator=g) * 0.5).requires_grad_(True)
    x0s = torch.rand(2, 3, 4, 4, dtype=torch.float64, generator=g) * 2 - 1
    eps_s = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g)
    ts_ = torch.tensor([0, 321])
    xts = td.q_sample(tables, x0s, ts_, eps_s)

    def f_vb(v):  # vb part only: depends on v (and eps_hat through stop-gradient: none)
        return td.iddpm_hybrid_loss(tables, torch.cat([o[:, :3].detach(), v], 1), x0s, xts, ts_, eps_s)[2].sum()

    ok = torch.autograd.gradcheck(f_vb, (o[:, 3:].detach().clone().requires_grad_(True),), eps=1e-6, atol=1e-7)
    lsum = td.iddpm_hybrid_loss(tables, o, x0s, xts, ts_, eps_s)[0].sum()
    (go,) = torch.autograd.grad(lsum, o)
    expect_eps = -2 * (eps_s - o[:, :3].detach()) / (3 * 16)
    stop_ok = torch.allclose(go[:, :3], expect_eps)
    print(f"self-test: vb gradcheck {'ok' if ok else 'FAIL'}; eps_hat gradient is the mse's only "
          f"(stop-gradient on vb): {'ok' if stop_ok else 'FAIL'}")
    return rc if (ok and stop_ok) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dump", nargs="?", help="safetensors file written by native/bench/dump_case")
    ap.add_argument("--tol", type=float, default=1e-4, help="max relative-norm error per tensor (default 1e-4)")
    ap.add_argument("--grad-tol", type=float, default=5e-4,
                    help="max relative-norm error per gradient tensor (default 5e-4: float32 sums over "
                         "N*L terms lose ~1e-5..1e-4 on small gradients)")
    ap.add_argument("--verbose", "-v", action="store_true", help="print every gradient row")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--self-test", action="store_true", help="check against a dump made by this torch model")
    a = ap.parse_args()
    if a.self_test:
        return self_test(a.tol, a.grad_tol)
    if not a.dump:
        ap.print_usage(sys.stderr)
        return 2
    return run_check(a.dump, a.tol, a.grad_tol, a.verbose, a.threads)


if __name__ == "__main__":
    sys.exit(main())
