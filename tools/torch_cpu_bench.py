#!/usr/bin/env python3
"""CPU side by side: PyTorch vs speed-train's native core, same models, batches and threads.

    /usr/bin/python3 tools/torch_cpu_bench.py [--ours build-torch/bench_native] [--threads 2]
        [--configs DiT-S/2@32x4,DiT-Ti/4@32x3] [--batches 8,32] [--iters 3] [--rounds 1] [--json]
        [--require-faster]

For each config it times, in float32 on the CPU, PyTorch's forward pass (no grad) and full
train step (noise + q_sample + forward + IDDPM hybrid loss + backward + AdamW + EMA; see
tools/torch_bench.py) and, when --ours is given, runs the native bench binary
(``bench_native --device cpu --models ... --batches ... --threads N --json``) for the same
configs, then prints a table with both and the ratio torch_ms / ours_ms (> 1: ours faster).
The two sides alternate per (config, batch), --rounds times, keeping each side's best
median, so that both see the same background load.
Issue 2's target is a ratio above 1 for the train step.

Both sides use the same thread count (--threads, default all cores); for PyTorch it sets
torch.set_num_threads and OMP/OPENBLAS_NUM_THREADS (Debian's torch does its GEMMs in
OpenBLAS). On a shared machine the numbers are noisy: the load average is printed.
Exit status: 1 when a run fails (or, with --require-faster, when ours is slower on a
train step), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_config(spec: str) -> Tuple[str, int, int]:
    """'DiT-S/2@32x4' -> ('DiT-S/2', 32, 4)."""
    try:
        model, shape = spec.split("@")
        size, ch = shape.lower().split("x")
        return model, int(size), int(ch)
    except ValueError:
        raise SystemExit(f"error: bad config {spec!r}; expected MODEL@SIZExCHANNELS, e.g. DiT-S/2@32x4")


def run_json(cmd: List[str], env=None) -> List[dict]:
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    recs = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-4000:])
        raise RuntimeError(f"{cmd[0]} exited with {p.returncode}")
    return recs


def torch_side(model: str, size: int, ch: int, batches: str, threads: int, iters: int) -> Dict:
    cmd = [sys.executable, os.path.join(HERE, "torch_bench.py"), "--device", "cpu", "--models", model,
           "--batches", batches, "--input-size", str(size), "--in-channels", str(ch), "--forward",
           "--threads", str(threads), "--iters", str(iters), "--warmup", "1", "--config-s", "30",
           "--budget-s", "1e9", "--gemm-size", "2048", "--json"]
    out = {}
    for r in run_json(cmd):
        if r.get("kind") == "gemm":
            out["gemm_gflops"] = r["tflops"] * 1e3
        elif r.get("kind") == "train_step" and r.get("status") == "ok":
            out[(r["batch"], "train_step")] = r["ms"]
            out[(r["batch"], "forward")] = r["forward_ms"]
    return out


def ours_side(binary: str, configs: List[str], batches: str, threads: int, iters: int) -> Dict:
    cmd = [binary, "--device", "cpu", "--models", ",".join(configs), "--batches", batches,
           "--threads", str(threads), "--iters", str(iters), "--no-kernels", "--json"]
    out = {}
    for r in run_json(cmd):
        what = r.get("what") or r.get("kind")
        if what == "gemm":
            out["gemm_gflops"] = r.get("gflops")
        elif what in ("forward", "train_step"):
            out[(r.get("model"), int(r.get("batch", 0)), what)] = float(r["ms"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", default=None, help="path of the native bench_native binary")
    ap.add_argument("--configs", default="DiT-S/2@32x4,DiT-Ti/4@32x3")
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat each (config, batch) pair, alternating sides; keep the best median")
    ap.add_argument("--json", action="store_true", help="also print one JSON line per row")
    ap.add_argument("--require-faster", action="store_true", help="exit 1 if ours is slower on a train step")
    a = ap.parse_args()
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    batches = [int(b) for b in a.batches.split(",") if b.strip()]
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    print(f"CPU side by side: threads {a.threads}, {os.cpu_count()} cores, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}" + ("  (busy machine: noisy)" if load[0] > 0.5 else ""))
    if load[0] > (os.cpu_count() or 1) and a.threads > 1:
        print("warning: more runnable processes than cores: multi-threaded timings (both sides) suffer from "
              "preemption; --threads 1 gives the fairer comparison on a shared machine")

    failed = False
    rows = []
    torch_gemm = ours_gemm = None
    # Interleaved per (config, batch) and repeated --rounds times (best of the rounds'
    # medians), so that both sides see the same background load.
    for spec in configs:
        model, size, ch = parse_config(spec)
        for b in batches:
            best: Dict = {}
            for _ in range(max(a.rounds, 1)):
                if a.ours:
                    try:
                        o = ours_side(a.ours, [spec], str(b), a.threads, a.iters)
                        ours_gemm = o.get("gemm_gflops", ours_gemm)
                        for what in ("forward", "train_step"):
                            v = o.get((spec, b, what))
                            if v is not None:
                                best[("ours", what)] = min(v, best.get(("ours", what), v))
                    except (RuntimeError, OSError) as e:
                        print(f"error: native bench: {e}", file=sys.stderr)
                        failed = True
                try:
                    tr = torch_side(model, size, ch, str(b), a.threads, a.iters)
                    torch_gemm = tr.get("gemm_gflops", torch_gemm)
                    for what in ("forward", "train_step"):
                        v = tr.get((b, what))
                        if v is not None:
                            best[("torch", what)] = min(v, best.get(("torch", what), v))
                except (RuntimeError, OSError) as e:
                    print(f"error: torch bench: {e}", file=sys.stderr)
                    failed = True
            for what in ("forward", "train_step"):
                t_ms = best.get(("torch", what))
                o_ms = best.get(("ours", what))
                rows.append({"kind": "cpu_side_by_side", "config": spec, "batch": b, "what": what,
                             "threads": a.threads, "torch_ms": t_ms, "ours_ms": o_ms,
                             "torch_img_per_s": round(b / (t_ms * 1e-3), 2) if t_ms else None,
                             "ours_img_per_s": round(b / (o_ms * 1e-3), 2) if o_ms else None,
                             "ratio": round(t_ms / o_ms, 3) if (t_ms and o_ms) else None})

    hdr = f"{'config':<16}{'batch':>6}  {'what':<11}{'torch ms':>11}{'img/s':>9}{'ours ms':>11}{'img/s':>9}{'torch/ours':>12}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        f = lambda v, fmt: (fmt % v) if v is not None else "-"  # noqa: E731
        print(f"{r['config']:<16}{r['batch']:>6}  {r['what']:<11}{f(r['torch_ms'], '%.1f'):>11}"
              f"{f(r['torch_img_per_s'], '%.1f'):>9}{f(r['ours_ms'], '%.1f'):>11}{f(r['ours_img_per_s'], '%.1f'):>9}"
              f"{f(r['ratio'], '%.2fx'):>12}")
        if a.json:
            print(json.dumps(r))
    if torch_gemm:
        print(f"torch GEMM 2048^3 fp32: {torch_gemm:.1f} GFLOP/s"
              + (f"; ours: {ours_gemm:.1f} GFLOP/s (its --gemm size)" if ours_gemm else ""))
    if a.require_faster:
        slow = [r for r in rows if r["what"] == "train_step" and r["ratio"] is not None and r["ratio"] < 1]
        if slow:
            print(f"FAIL: ours slower on {len(slow)} train-step config(s)")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
