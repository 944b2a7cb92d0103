#!/usr/bin/env python3
"""PyTorch baseline timings for speed-train: DiT train steps, attention, copy bandwidth, GEMM.

GPU (torch 2.x):
    python3 tools/torch_bench.py --device cuda --models DiT-S/2,DiT-B/2,DiT-XL/2 \\
        --batches 32,256 --input-size 32 --in-channels 4 --compile --attention --copy --json
CPU (torch 1.13 or 2.x; float32, no autocast):
    /usr/bin/python3 tools/torch_bench.py --device cpu --models DiT-Ti/4 --batches 8 --forward

A train step is what speed-train's native train step does: fresh noise and time steps,
q_sample, DiT forward (bf16 autocast on CUDA, float32 on the CPU), the IDDPM hybrid loss in
float32 (tools/torch_dit.py), backward, AdamW (fused=True on CUDA when available) and an
EMA update of all weights (torch._foreach_lerp_, or _foreach_mul_/_foreach_add_).
Times: median over --iters timed steps after --warmup steps (CUDA events on the GPU,
perf_counter on the CPU). FLOPs: tools/torch_dit.py:dit_forward_flops (train = 3 x forward).

Every result is one JSON line with --json (human text then goes to stderr); schema in
docs/pytorch.md. Exit status: 0 when every requested measurement ran (configs skipped
for --budget-s, or an OOM/compile failure reported as such, count as ran), 1 on an
unexpected error, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
import traceback


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--models", default="DiT-S/2,DiT-B/2,DiT-XL/2", help="comma-separated presets")
    ap.add_argument("--batches", default="32,256", help="comma-separated batch sizes")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--in-channels", type=int, default=4)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default=None,
                    help="autocast dtype of the forward (default bf16 on cuda, fp32 on cpu)")
    ap.add_argument("--eager", dest="eager", action="store_true", default=True, help="time eager (default)")
    ap.add_argument("--no-eager", dest="eager", action="store_false", help="skip eager train steps")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile train steps")
    ap.add_argument("--compile-scope", choices=["regional", "full"], default="regional",
                    help="regional: compile each DiT block, the final layer and the loss (identical blocks "
                         "share one compilation: fast cold start); full: compile forward+loss as one graph")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (default, max-autotune, ...)")
    ap.add_argument("--act-ckpt", choices=["auto", "on", "off"], default="auto",
                    help="activation checkpointing per block: auto = retry with it after an out-of-memory")
    ap.add_argument("--forward", action="store_true", help="also time the forward pass alone (no grad)")
    ap.add_argument("--no-train", action="store_true", help="skip train steps")
    ap.add_argument("--attention", action="store_true", help="time scaled_dot_product_attention fwd+bwd")
    ap.add_argument("--attn-shapes", default="256x16x256x72,256x12x256x64,256x6x256x64",
                    help="BxHxLxhead_dim list for --attention")
    ap.add_argument("--copy", action="store_true", help="device-to-device copy bandwidth")
    ap.add_argument("--copy-mib", type=int, default=None, help="copy buffer size (default 1024 cuda, 128 cpu)")
    ap.add_argument("--gemm", dest="gemm", action="store_true", default=True,
                    help="measure the large-GEMM rate first (default on)")
    ap.add_argument("--no-gemm", dest="gemm", action="store_false")
    ap.add_argument("--gemm-size", type=int, default=None, help="square GEMM size (default 8192 cuda, 1024 cpu)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--config-s", type=float, default=6.0, help="stop timing a config after this many seconds")
    ap.add_argument("--budget-s", type=float, default=180.0,
                    help="skip the remaining train-step configs once this much wall time has passed")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch and OpenBLAS); default all")
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="dense peak for MFU (default 989: H100 SXM bf16); fp32 on cpu has no peak")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="JSON lines on stdout, text on stderr")
    return ap.parse_args(argv)


ARGS = parse_args()
if ARGS.device == "cpu":
    # libgomp's default spin-waiting turns into long stalls when the cores are shared with
    # other processes (seen: 2 threads 6x slower than 1 at load 10 on 2 cores); sleep
    # instead unless the caller chose a policy.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if ARGS.threads:
    # OpenBLAS (Debian's torch uses it for GEMMs) reads its thread count at load time.
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = str(ARGS.threads)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import torch_dit as td  # noqa: E402

T0 = time.perf_counter()
FAILED = False


def say(msg: str) -> None:
    print(msg, file=sys.stderr if ARGS.json else sys.stdout, flush=True)


def emit(rec: dict) -> None:
    if ARGS.json:
        print(json.dumps(rec), flush=True)


def sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_it(fn, dev, warmup: int, iters: int, max_s: float):
    """(median ms, min ms, timed iterations)."""
    for _ in range(warmup):
        fn()
    sync(dev)
    times = []
    t_start = time.perf_counter()
    for _ in range(max(iters, 1)):
        if dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - s) * 1e3)
        if len(times) >= 3 and time.perf_counter() - t_start > max_s:
            break
    return statistics.median(times), min(times), len(times)


def is_oom(e: BaseException) -> bool:
    oom_t = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom_t is not None and isinstance(e, oom_t)) or "out of memory" in str(e).lower()


def free_memory(dev) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def first_line(e: BaseException) -> str:
    s = f"{type(e).__name__}: {e}".strip().splitlines()
    return (s[0] if s else type(e).__name__)[:300]


# ------------------------------------------------------------------------------- GEMM


def bench_gemm(dev, dtype) -> float:
    n = ARGS.gemm_size or (8192 if dev.type == "cuda" else 1024)
    g = torch.Generator(device=dev.type).manual_seed(ARGS.seed) if dev.type == "cuda" else None
    a = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
    c = torch.empty(n, n, device=dev, dtype=dtype)
    ms, ms_min, it = time_it(lambda: torch.matmul(a, b, out=c), dev, 3, 20 if dev.type == "cuda" else 5, 5.0)
    tflops = 2.0 * n ** 3 / (ms * 1e-3) / 1e12
    rec = {"kind": "gemm", "impl": "torch", "device": dev.type, "m": n, "n": n, "k": n,
           "dtype": dtype_name(dtype), "ms": round(ms, 4), "tflops": round(tflops, 3), "iters": it}
    say(f"gemm {n}^3 {dtype_name(dtype)}: {ms:.3f} ms  {tflops:.2f} TFLOP/s")
    emit(rec)
    del a, b, c
    return tflops


def dtype_name(dt) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.float64: "fp64"}[dt]


# ------------------------------------------------------------------------------- copy


def bench_copy(dev) -> None:
    mib = ARGS.copy_mib or (1024 if dev.type == "cuda" else 128)
    n = mib * (1 << 20)
    src = torch.empty(n, dtype=torch.uint8, device=dev).random_(0, 255)
    dst = torch.empty_like(src)
    ms, ms_min, it = time_it(lambda: dst.copy_(src), dev, 3, 20, 4.0)
    moved = 2 * n  # bytes read + bytes written
    gbs = moved / (ms * 1e-3) / 1e9
    say(f"copy {mib} MiB: {ms:.3f} ms  {gbs:.1f} GB/s (read + written)")
    emit({"kind": "copy", "impl": "torch", "device": dev.type, "bytes": moved, "ms": round(ms, 4),
          "gb_s": round(gbs, 2), "iters": it})
    del src, dst


# ------------------------------------------------------------------------------- attention


def attention_fn(q, k, v):
    if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)
    s = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))
    return torch.matmul(s.softmax(-1), v)


def bench_attention(dev, dtype) -> None:
    for spec in [s for s in ARGS.attn_shapes.split(",") if s.strip()]:
        try:
            B, H, L, hd = (int(x) for x in spec.lower().split("x"))
        except ValueError:
            say(f"bad --attn-shapes entry {spec!r} (want BxHxLxhead_dim)")
            sys.exit(2)
        rec = {"kind": "attention", "impl": "torch_sdpa" if hasattr(torch.nn.functional,
               "scaled_dot_product_attention") else "torch_manual", "device": dev.type,
               "batch": B, "heads": H, "seq": L, "head_dim": hd, "dtype": dtype_name(dtype)}
        try:
            q, k, v = (torch.randn(B, H, L, hd, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
            do = torch.randn(B, H, L, hd, device=dev, dtype=dtype)

            def fwd():
                with torch.no_grad():
                    attention_fn(q, k, v)

            def fwd_bwd():
                o = attention_fn(q, k, v)
                q.grad = k.grad = v.grad = None
                o.backward(do)

            ms_f, _, _ = time_it(fwd, dev, 3, ARGS.iters * 2, 3.0)
            ms_fb, _, it = time_it(fwd_bwd, dev, 3, ARGS.iters * 2, 3.0)
            f_fwd = 4.0 * B * H * L * L * hd  # QK^T and PV
            f_fb = 3.5 * f_fwd  # backward = 2.5 x forward (5 matmuls incl. the QK^T recompute)
            rec.update({"status": "ok", "ms": round(ms_fb, 4), "ms_fwd": round(ms_f, 4),
                        "tflops": round(f_fb / (ms_fb * 1e-3) / 1e12, 3),
                        "tflops_fwd": round(f_fwd / (ms_f * 1e-3) / 1e12, 3), "iters": it})
            say(f"attention B={B} H={H} L={L} hd={hd} {dtype_name(dtype)}: fwd {ms_f:.3f} ms "
                f"({rec['tflops_fwd']:.1f} TFLOP/s), fwd+bwd {ms_fb:.3f} ms ({rec['tflops']:.1f} TFLOP/s)")
            del q, k, v, do
        except Exception as e:  # OOM on small cards, missing kernels, ...
            rec.update({"status": "oom" if is_oom(e) else "error", "error": first_line(e)})
            say(f"attention {spec}: {rec['status']}: {rec['error']}")
        emit(rec)
        free_memory(dev)


# ------------------------------------------------------------------------------- train step


class TrainStep:
    """Owns one model, its optimizer, EMA and data; step() is one full training step."""

    def __init__(self, name: str, batch: int, dev, amp_dtype, impl: str, act_ckpt: bool):
        self.dev, self.batch, self.impl = dev, batch, impl
        torch.manual_seed(ARGS.seed)
        m = td.dit_from_preset(name, input_size=ARGS.input_size, in_channels=ARGS.in_channels,
                               num_classes=ARGS.num_classes).to(dev)
        m.train()
        m.grad_checkpointing = act_ckpt
        self.model = m
        self.params = [p for p in m.parameters() if p.requires_grad]
        self.ema = [p.detach().clone() for p in self.params]
        self.decay = 0.9999
        kw = {}
        if dev.type == "cuda":
            try:
                torch.optim.AdamW([torch.zeros(1, device=dev, requires_grad=True)], fused=True)
                kw["fused"] = True
            except (TypeError, RuntimeError, ValueError):
                kw["foreach"] = True
        self.opt_kind = "fused" if kw.get("fused") else ("foreach" if kw.get("foreach") else "default")
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **kw)
        self.tables = td.tables_to(td.diffusion_tables(td.linear_betas(1000)), dev, torch.float32)
        C, S = ARGS.in_channels, ARGS.input_size
        self.x0 = torch.randn(batch, C, S, S, device=dev)
        nc = max(ARGS.num_classes, 1)
        self.y = torch.randint(0, nc, (batch,), device=dev)
        self.w = torch.ones(batch, device=dev)
        self.amp_dtype = amp_dtype
        loss_fn = self._loss
        if impl == "torch_compile":
            ckw = {"dynamic": False}
            if ARGS.compile_mode:
                ckw["mode"] = ARGS.compile_mode
            if ARGS.compile_scope == "full":
                loss_fn = torch.compile(self._fwd_loss, **ckw)
            else:
                for i, blk in enumerate(m.blocks):
                    m.blocks[i] = torch.compile(blk, **ckw)
                m.final_layer = torch.compile(m.final_layer, **ckw)
                loss_fn = torch.compile(td.iddpm_hybrid_loss, **ckw)
        self.loss_fn = loss_fn

    def _loss(self, tables, out, x0, xt, t, eps, w):
        return td.iddpm_hybrid_loss(tables, out, x0, xt, t, eps, w)

    def _fwd_loss(self, x0, eps, t, y, w):
        xt = td.q_sample(self.tables, x0, t, eps)
        with self._autocast():
            out = self.model(xt, t, y)
        loss, _, _ = td.iddpm_hybrid_loss(self.tables, out.float(), x0, xt, t, eps, w)
        return loss.mean()

    def _autocast(self):
        if self.amp_dtype is None:
            import contextlib

            return contextlib.nullcontext()
        return torch.autocast(device_type=self.dev.type, dtype=self.amp_dtype)

    def forward_only(self):
        t = torch.randint(0, 1000, (self.batch,), device=self.dev)
        with torch.no_grad(), self._autocast():
            self.model(self.x0, t, self.y)

    def step(self):
        t = torch.randint(0, 1000, (self.batch,), device=self.dev)
        eps = torch.randn_like(self.x0)
        if self.impl == "torch_compile" and ARGS.compile_scope == "full":
            loss = self.loss_fn(self.x0, eps, t, self.y, self.w)
        else:
            xt = td.q_sample(self.tables, self.x0, t, eps)
            with self._autocast():
                out = self.model(xt, t, self.y)
            loss = self.loss_fn(self.tables, out.float(), self.x0, xt, t, eps, self.w)[0].mean()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            if hasattr(torch, "_foreach_lerp_"):
                torch._foreach_lerp_(self.ema, self.params, 1.0 - self.decay)
            else:
                torch._foreach_mul_(self.ema, self.decay)
                torch._foreach_add_(self.ema, self.params, alpha=1.0 - self.decay)


def run_train_config(name: str, batch: int, impl: str, dev, amp_dtype, gemm_tflops) -> dict:
    fwd_flops = td.model_flops(name, ARGS.input_size, ARGS.in_channels)
    rec = {"kind": "train_step", "impl": impl, "device": dev.type, "model": name, "batch": batch,
           "input_size": ARGS.input_size, "in_channels": ARGS.in_channels,
           "dtype": dtype_name(amp_dtype) if amp_dtype else "fp32",
           "gflop_per_img": round(3 * fwd_flops / 1e9, 3)}
    if impl == "torch_compile":
        rec["compile_scope"] = ARGS.compile_scope
    ckpt_choices = {"on": [True], "off": [False], "auto": [False, True]}[ARGS.act_ckpt]
    for ckpt in ckpt_choices:
        ts = None
        try:
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            ts = TrainStep(name, batch, dev, amp_dtype, impl, ckpt)
            rec["optimizer"] = f"AdamW({ts.opt_kind})"
            t_first = time.perf_counter()
            try:
                ts.step()
                sync(dev)
            except Exception as e:
                if impl == "torch_compile" and not is_oom(e):
                    rec.update({"status": "compile_failed", "error": first_line(e), "act_ckpt": ckpt})
                    return rec
                raise
            first_s = time.perf_counter() - t_first
            if impl == "torch_compile":
                rec["compile_s"] = round(first_s, 2)
            ms, ms_min, it = time_it(ts.step, dev, max(ARGS.warmup - 1, 0), ARGS.iters, ARGS.config_s)
            tflops = 3 * fwd_flops * batch / (ms * 1e-3) / 1e12
            if rec.pop("error", None) is not None:
                rec["oom_without_ckpt"] = True
            rec.update({"status": "ok", "act_ckpt": ckpt, "ms": round(ms, 3), "ms_min": round(ms_min, 3),
                        "img_per_s": round(batch / (ms * 1e-3), 2), "tflops": round(tflops, 4),
                        "mfu": round(tflops / ARGS.peak_tflops, 4) if amp_dtype is not None else None,
                        "frac_gemm": round(tflops / gemm_tflops, 4) if gemm_tflops else None,
                        "iters": it})
            if dev.type == "cuda":
                rec["mem_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
            if ARGS.forward and impl == "torch_eager":
                fms, _, _ = time_it(ts.forward_only, dev, 2, ARGS.iters, ARGS.config_s / 2)
                rec["forward_ms"] = round(fms, 3)
                rec["forward_img_per_s"] = round(batch / (fms * 1e-3), 2)
            return rec
        except Exception as e:
            if is_oom(e):
                rec.update({"status": "oom", "act_ckpt": ckpt, "error": first_line(e)})
                ts = None
                free_memory(dev)
                continue  # auto: retry with activation checkpointing
            raise
        finally:
            del ts
            free_memory(dev)
            if impl == "torch_compile" and hasattr(torch, "_dynamo"):
                torch._dynamo.reset()
    return rec


def describe(rec: dict) -> str:
    head = f"{rec['impl']:<14} {rec['model']:<9} b={rec['batch']:<4}"
    if rec.get("status") != "ok":
        return f"{head} {rec.get('status')}: {rec.get('error', '')}"
    s = (f"{head} {rec['ms']:9.2f} ms  {rec['img_per_s']:9.1f} img/s  {rec['tflops']:8.3f} TFLOP/s")
    if rec.get("mfu") is not None:
        s += f"  MFU {100 * rec['mfu']:5.1f}%"
    if rec.get("frac_gemm") is not None:
        s += f"  {100 * rec['frac_gemm']:5.1f}% of GEMM"
    if rec.get("act_ckpt"):
        s += "  [act-ckpt]"
    if "compile_s" in rec:
        s += f"  (compile+first step {rec['compile_s']:.1f} s)"
    if "forward_ms" in rec:
        s += f"  | forward {rec['forward_ms']:.2f} ms {rec['forward_img_per_s']:.1f} img/s"
    return s


def main() -> int:
    global FAILED
    dev = torch.device(ARGS.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        say("error: --device cuda but torch.cuda.is_available() is False")
        return 2
    if ARGS.threads:
        torch.set_num_threads(ARGS.threads)
    elif dev.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    dt_name = ARGS.dtype or ("bf16" if dev.type == "cuda" else "fp32")
    amp_dtype = torch.bfloat16 if dt_name == "bf16" else None
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    env = {"kind": "env", "torch": torch.__version__, "device": dev.type,
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "device_name": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "dtype": dt_name, "peak_tflops": ARGS.peak_tflops,
           "has_sdpa": td._HAS_SDPA, "has_compile": hasattr(torch, "compile")}
    say(f"torch {env['torch']} on {env['device_name']}, threads {env['threads']}, forward dtype {dt_name}")
    emit(env)

    models = [m.strip() for m in ARGS.models.split(",") if m.strip()]
    try:
        batches = [int(b) for b in ARGS.batches.split(",") if b.strip()]
        for m in models:
            td.parse_preset(m)
    except ValueError as e:
        say(f"error: {e}")
        return 2

    gemm_tflops = None
    if ARGS.gemm:
        gemm_tflops = bench_gemm(dev, torch.bfloat16 if (amp_dtype is not None and dev.type == "cuda") else torch.float32)
    if ARGS.copy:
        bench_copy(dev)
    if ARGS.attention:
        bench_attention(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32)

    impls = []
    if ARGS.eager:
        impls.append("torch_eager")
    if ARGS.compile:
        if hasattr(torch, "compile"):
            impls.append("torch_compile")
        else:
            say("note: torch.compile not available in this torch; compile runs reported as skipped")
    if not ARGS.no_train:
        for name in models:
            for batch in batches:
                for impl in impls + (["torch_compile"] if ARGS.compile and "torch_compile" not in impls else []):
                    elapsed = time.perf_counter() - T0
                    if impl == "torch_compile" and not hasattr(torch, "compile"):
                        rec = {"kind": "train_step", "impl": impl, "device": dev.type, "model": name,
                               "batch": batch, "status": "skipped", "error": "torch.compile unavailable"}
                    elif elapsed > ARGS.budget_s:
                        rec = {"kind": "train_step", "impl": impl, "device": dev.type, "model": name,
                               "batch": batch, "status": "skipped_budget",
                               "error": f"{elapsed:.0f} s elapsed > --budget-s {ARGS.budget_s:g}"}
                    else:
                        try:
                            rec = run_train_config(name, batch, impl, dev, amp_dtype, gemm_tflops)
                        except Exception as e:
                            FAILED = True
                            traceback.print_exc(file=sys.stderr)
                            rec = {"kind": "train_step", "impl": impl, "device": dev.type, "model": name,
                                   "batch": batch, "status": "error", "error": first_line(e)}
                    say(describe(rec))
                    emit(rec)
    say(f"total {time.perf_counter() - T0:.1f} s")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
