#!/usr/bin/env bash
# One run on a GPU machine (CUDA 13, cuBLAS, PyTorch; no Node, no network), from the
# repository root:   bash native/bench/gpu-check.sh
# Builds the CUDA backend, runs the CUDA tests (against the CPU backend), compute-
# sanitizer on a reduced test, the native bench and the PyTorch comparison, and prints
# a short summary table LAST. Full logs go to $OUT (or ./gpu-check-out). Every step has
# a timeout so that the summary always prints; the whole script stays under ~8 minutes.
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
LOG=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$LOG"
BUILD=${BUILD:-build-gpu}
ARCH=${SPEED_CUDA_ARCHITECTURES:-90}
T0=$(date +%s)
STATUS="$LOG/status.txt"
: > "$STATUS"
step() {  # step NAME TIMEOUT_S LOGFILE CMD...
  local name=$1 t=$2 log=$3; shift 3
  local s=$(date +%s)
  echo "=== $name (timeout ${t}s) ===" | tee -a "$log"
  timeout --kill-after=5 "$t" "$@" >> "$log" 2>&1
  local rc=$?
  local d=$(( $(date +%s) - s ))
  echo "$name rc=$rc ${d}s" | tee -a "$STATUS"
  return $rc
}

# ---- what the machine has ------------------------------------------------------------
{
  echo "=== machine ==="
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv || true
  nvidia-smi || true
  command -v nvcc && nvcc --version || echo "nvcc: not on PATH"
  echo "--- cuBLASLt ---"
  ls /usr/local/cuda*/include/cublasLt.h /usr/local/cuda*/targets/*/include/cublasLt.h 2>/dev/null
  ls /usr/local/cuda*/lib64/libcublasLt.so* /usr/local/cuda*/targets/*/lib/libcublasLt.so* 2>/dev/null
  python3 - <<'PY' 2>/dev/null
import site, os, sys, glob
for p in site.getsitepackages() + sys.path:
    for f in glob.glob(os.path.join(p, "nvidia", "cublas", "*", "*cublasLt*")):
        print(f)
PY
  command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null || echo "compute-sanitizer: not found"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" 2>&1
} > "$LOG/machine.txt" 2>&1
head -4 "$LOG/machine.txt"
export PATH=$PATH:/usr/local/cuda/bin
SAN=$(command -v compute-sanitizer || true)

# ---- build ------------------------------------------------------------------------------
BLOG="$LOG/build.txt"
step configure 120 "$BLOG" cmake -S . -B "$BUILD" -G Ninja -DSPEED_CUDA=ON -DSPEED_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_BUILD_TYPE=Release
BUILD_OK=0
if step build 300 "$BLOG" cmake --build "$BUILD" -j16; then BUILD_OK=1; else
  # keep going with whatever targets did build
  step build-tests 200 "$BLOG" cmake --build "$BUILD" -j16 --target test_cuda_ops test_cuda_train bench_native -- -k 0 || true
fi
tail -30 "$BLOG" | grep -E "error|Error|FAILED" | head -20

# ---- tests --------------------------------------------------------------------------------
TLOG="$LOG/tests.txt"
if [ -x "$BUILD/test_cuda_ops" ]; then
  step ctest-cuda 150 "$TLOG" ctest --test-dir "$BUILD" -R cuda --output-on-failure --timeout 120
  # the same op tests with cuBLASLt epilogue fusion off (tells fused vs unfused apart)
  SPEED_CUDA_NO_FUSED_EPILOGUE=1 step ops-unfused 60 "$TLOG" "$BUILD/test_cuda_ops" bf16 linear
  step ctest-cpu 120 "$TLOG" ctest --test-dir "$BUILD" -E cuda --timeout 100
fi

# ---- compute-sanitizer on a reduced test ----------------------------------------------------
SLOG="$LOG/sanitizer.txt"
if [ -n "$SAN" ] && [ -x "$BUILD/test_cuda_ops" ]; then
  for f in patch ln gated embedding diffusion optimizer; do
    step "memcheck-$f" 40 "$SLOG" "$SAN" --tool memcheck --error-exitcode 9 "$BUILD/test_cuda_ops" fp32 "$f"
  done
  step memcheck-attention 60 "$SLOG" "$SAN" --tool memcheck --error-exitcode 9 "$BUILD/test_cuda_ops" fp32 attention
  step racecheck-attention 90 "$SLOG" "$SAN" --tool racecheck --error-exitcode 9 "$BUILD/test_cuda_ops" fp32 attention
  step memcheck-linear 60 "$SLOG" "$SAN" --tool memcheck --error-exitcode 9 "$BUILD/test_cuda_ops" bf16 linear
fi

# ---- native bench -----------------------------------------------------------------------------
NLOG="$LOG/bench_native.jsonl"
: > "$NLOG"
if [ -x "$BUILD/bench_native" ]; then
  timeout --kill-after=5 170 "$BUILD/bench_native" --device cuda \
    --models DiT-S/2@32x4,DiT-B/2@32x4,DiT-XL/2@32x4 --batches 32,256 --iters 5 --json \
    > "$NLOG" 2> "$LOG/bench_native.err"
  echo "bench-native rc=$? ($(grep -c '"what"' "$NLOG") rows)" | tee -a "$STATUS"
fi

# ---- PyTorch on the same GPU ---------------------------------------------------------------------
PLOG="$LOG/torch.jsonl"
: > "$PLOG"
if [ -f tools/torch_bench.py ]; then
  timeout --kill-after=5 200 python3 tools/torch_bench.py --device cuda \
    --models DiT-S/2,DiT-B/2,DiT-XL/2 --batches 32,256 --input-size 32 --in-channels 4 \
    --compile --attention --copy --json --budget-s 170 > "$PLOG" 2> "$LOG/torch.err"
  echo "torch-bench rc=$? ($(wc -l < "$PLOG") rows)" | tee -a "$STATUS"
fi

# ---- summary (last) -----------------------------------------------------------------------------------
python3 - "$LOG" "$(( $(date +%s) - T0 ))" <<'PY'
import json, sys, os, re
log, secs = sys.argv[1], sys.argv[2]
def rows(path):
    out = []
    try:
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                try: out.append(json.loads(line))
                except Exception: pass
    except FileNotFoundError: pass
    return out
nat, tor = rows(os.path.join(log, "bench_native.jsonl")), rows(os.path.join(log, "torch.jsonl"))
card = "?"
try:
    m = open(os.path.join(log, "machine.txt")).read().splitlines()
    card = m[2].split(",")[0] if len(m) > 2 else "?"
except Exception: pass
print("\n================ gpu-check summary ================")
print(f"card: {card}   total {secs}s")
print("steps: " + " | ".join(l.strip() for l in open(os.path.join(log, "status.txt"))))
try:
    t = open(os.path.join(log, "tests.txt")).read()
    fails = [l for l in t.splitlines() if l.startswith("FAIL")]
    print("test lines FAIL: %d" % len(fails))
    for l in fails[:12]: print("  " + l[:150])
    for l in t.splitlines():
        if "tests passed" in l or "tests failed" in l: print("  ctest: " + l.strip())
except FileNotFoundError: print("tests: not run")
try:
    s = open(os.path.join(log, "sanitizer.txt")).read()
    errs = re.findall(r"ERROR SUMMARY: (\d+) error", s)
    print("sanitizer: ERROR SUMMARY counts " + (",".join(errs) if errs else "none found"))
except FileNotFoundError: print("sanitizer: not run")
PEAK = 989e12
gemm = [r for r in nat if r.get("what") == "gemm"]
copy = [r for r in tor if r.get("kind") == "copy"]
tg = [r for r in tor if r.get("kind") == "gemm"]
copy_gbps = copy[0].get("gbps") if copy else None
print(f"measured: ours GEMM {gemm[0]['gflops']/1e3:.0f} TFLOP/s" if gemm else "measured: ours GEMM -", end="")
print(f" | torch GEMM {tg[0].get('tflops', 0):.0f} TFLOP/s" if tg else " | torch GEMM -", end="")
print(f" | copy {copy_gbps:.0f} GB/s" if copy_gbps else " | copy -")
def tstep(model, batch, impl):
    for r in tor:
        if r.get("kind") == "train_step" and r.get("model") == model and r.get("batch") == batch and r.get("impl") == impl and r.get("img_per_s"):
            return r["img_per_s"]
    return None
print(f"{'model':<10}{'batch':>6}{'ours img/s':>12}{'eager':>10}{'compile':>10}{'x eager':>9}{'x comp':>8}{'MFU':>7}")
for r in nat:
    if r.get("what") != "train_step": continue
    model = r["model"].split("@")[0]; b = r["batch"]; ours = r.get("imagesPerSec", 0)
    e = tstep(model, b, "torch_eager") or tstep(model, b, "eager")
    c = tstep(model, b, "torch_compile") or tstep(model, b, "compile")
    mfu = r.get("gflops", 0) * 1e9 / PEAK
    f = lambda v: f"{v:.0f}" if v else "-"
    print(f"{model:<10}{b:>6}{ours:>12.0f}{f(e):>10}{f(c):>10}{(ours/e if e else 0):>9.2f}{(ours/c if c else 0):>8.2f}{100*mfu:>6.1f}%")
ks = [r for r in nat if r.get("what") not in ("train_step", "forward", "gemm")]
if ks:
    print("kernels (ours): " + "; ".join(
        f"{r['what']}[{r['model'].split('@')[0]} b{r['batch']}] {r['ms']:.3f}ms" +
        (f" {r['gbps']:.0f}GB/s" + (f"={100*r['gbps']/copy_gbps:.0f}%copy" if copy_gbps else "") if r.get('gbps') else "") +
        (f" {r['gflops']/1e3:.0f}TF/s" if r.get('gflops') and not r.get('gbps') else "")
        for r in ks[:24]))
att = [r for r in tor if r.get("kind") == "attention" and r.get("status") == "ok"]
if att:
    print("torch SDPA fwd+bwd: " + "; ".join(f"{r.get('shape', r.get('spec', '?'))} {r['ms']:.3f}ms" for r in att))
PY
