#!/usr/bin/env bash
# One run on a GPU machine (CUDA 13, cuBLAS, PyTorch; no Node, no network), from the
# repository root:   bash native/bench/gpu-check.sh
#
# Fits one device call: a global deadline (GPU_CHECK_BUDGET_S, default 390 s from the
# start, for a call with timeout_s ~420) is checked before every step, and each step's
# timeout is cut to the time that is left (minus a reserve for the summary). Steps in
# order of value:
#   (a) machine info  (b) build (-j16; only test_cuda_ops, test_cuda_train, test_cuda_curve,
#       test_cuda_attn_bench, test_cuda_vae, test_cuda_cnn, test_cuda_inception, bench_native, bench_inception,
#       and the kernel-development programs dev_cuda_attention, dev_cuda_norm of native/dev/cuda)
#   (c) CUDA tests (bf16 attention first: when it fails, the bench runs with
#       SPEED_CUDA_ATTENTION=fp32 so that it still produces numbers from the safe path);
#       the optimizer's non-finite-update check kernels on their own (ops-optimizer-skip); the
#       bf16 weight cache's conversions per step are asserted inside train-bf16;
#       then test_cuda_curve (200 DiT-S/2 steps b4, GPU fp32 vs CPU loss curve, <= 130 s,
#       only with >= 150 s left; into tests.txt, its CURVE line in the summary)
#   (d) test_cuda_attn_bench (attention at SDPA's shapes on both paths; LN and AdamW at
#       DiT-XL/2 sizes), the candidate kernels in native/dev/cuda (tc2 attention, one-pass norms:
#       checked against the CPU, then timed next to the product's kernels), bench_native --device cuda: DiT-S/2 b32+b256 with per-kernel rows,
#       DiT-XL/2 b32; DiT-B/2 and DiT-XL/2 b256 (recomputed activations) only with time to
#       spare (after the sanitizer)
#   (e) PyTorch, reduced: DiT-XL/2 b32 eager + compile, SDPA attention, copy, GEMM
#   (f) compute-sanitizer memcheck (+ racecheck) of the bf16 attention test, LN, the candidate
#       kernels' checks, and memcheck of the optimizer section, if >= 60 s left
#   then the CLI on the GPU (train 200 steps, grid, inference through the addon) when node is there
#   (g) the summary table, LAST (also written to summary.txt)
# At most 8 files in $OUT (or ./gpu-check-out): machine.txt build.txt tests.txt
# bench_native.jsonl torch.jsonl stderr.txt status.txt summary.txt.
#
# Test knobs (no GPU needed): SUMMARY_ONLY=1 (only the summary of $OUT), BUILD=dir (default
# build-gpu), SKIP_BUILD=1 (use BUILD as is), GPU_CHECK_BUDGET_S=n, SPEED_CUDA_ARCHITECTURES=90.
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
LOG=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$LOG"
BUILD=${BUILD:-build-gpu}
ARCH=${SPEED_CUDA_ARCHITECTURES:-90}
BUDGET=${GPU_CHECK_BUDGET_S:-390}
RESERVE=12  # seconds kept for the summary
T0=$(date +%s)
DEADLINE=$((T0 + BUDGET))
STATUS="$LOG/status.txt"
ERR="$LOG/stderr.txt"
TLOG="$LOG/tests.txt"
export PATH=$PATH:/usr/local/cuda/bin

summary() {
timeout 20 python3 - "$LOG" "$(( $(date +%s) - T0 ))" "${ATT_FALLBACK:-0}" "$ROOT/tools/results/h100_torch_bench.jsonl" <<'PY' | tee "$LOG/summary.txt"
import json, sys, os, re
log, secs, fallback, recorded = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
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
def read(name):
    try: return open(os.path.join(log, name)).read()
    except FileNotFoundError: return ""
nat, tor, rec = rows(os.path.join(log, "bench_native.jsonl")), rows(os.path.join(log, "torch.jsonl")), rows(recorded)
card = next((l[5:].strip() for l in read("machine.txt").splitlines() if l.startswith("card:")), "?")
print("\n================ gpu-check summary ================")
print(f"card: {card}   total {secs}s   bf16 attention: " + ("FELL BACK to fp32 (tc test failed)" if fallback else "tensor cores"))
st = [l.strip() for l in read("status.txt").splitlines() if l.strip()]
print("steps: " + " | ".join(st))
t = read("tests.txt")
if t:
    oks = len(re.findall(r"^ok  ", t, re.M)); fails = [l for l in t.splitlines() if l.startswith("FAIL")]
    progs = re.findall(r"^(PASSED|FAILED): (\d+) failure", t, re.M)
    print(f"tests: {oks} checks ok, {len(fails)} FAIL lines; programs passed {sum(p[0]=='PASSED' for p in progs)}, failed {sum(p[0]=='FAILED' for p in progs)}"
          + ("; SKIPPED (no GPU)" if "SKIPPED:" in t else ""))
    for l in fails[:10]: print("  " + l[:150])
    curves = re.findall(r"^CURVE (.*)$", t, re.M)
    for c in curves:  # test_cuda_curve's verdict line, shortened
        m = re.match(r"(\w+): (PASS|FAIL) .*? over steps (\S+): ([\d.]+%) at step -?\d+ \(bound (\S+)\).*?"
                     r"per-step max rel diff (\S+); param rel diff (\S+), EMA (\S+); steps (\S+), batch (\d+)(.*)", c)
        print("loss curve vs CPU (DiT-S/2): " + (f"{m[1]} {m[2]} ma10 max rel diff {m[4]} (bound {m[5]}, steps {m[3]}); "
              f"per-step {m[6]}; params {m[7]}, EMA {m[8]}; steps {m[9]} b{m[10]}{m[11]}" if m else c[:300]))
    if not curves:
        why = next((l for l in st if l.startswith("cuda-curve")), "not run")
        print("loss curve vs CPU (DiT-S/2): no verdict (" + why + ")")
    errs = re.findall(r"ERROR SUMMARY: (\d+) error", t)
    print("sanitizer ERROR SUMMARY: " + (",".join(errs) if errs else "not run"))
else:
    print("tests: not run")
PEAK = 989e12
f0 = lambda v, fmt="{:.0f}": fmt.format(v) if v else "-"
gem = sorted([r for r in nat if str(r.get("what", "")).startswith("gemm")], key=lambda r: -r.get("gflops", 0))
tg = [r for r in tor if r.get("kind") == "gemm"]; tg_src = "same run"
if not tg: tg = [r for r in rec if r.get("kind") == "gemm"]; tg_src = "recorded"
cp = [r for r in tor if r.get("kind") == "copy"]
copy_src = "measured"
if not cp:
    cp = [r for r in rec if r.get("kind") == "copy"]; copy_src = "recorded"
copy = cp[0].get("gb_s") if cp else None
print(f"GEMM ours {f0(gem[0]['gflops']/1e3 if gem else 0)} TFLOP/s | torch {f0(tg[0].get('tflops') if tg else 0)} TFLOP/s ({tg_src}) | copy {f0(copy)} GB/s ({copy_src})")
def tstep(src, model, b, impl):
    for r in src:
        if r.get("kind") == "train_step" and r.get("model") == model and r.get("batch") == b and r.get("impl") == impl and r.get("img_per_s"):
            return r["img_per_s"]
    return None
print(f"{'model':<12}{'batch':>6}{'ours img/s':>11}{'MFU':>7}{'act GiB':>8}{'eager':>9}{'compile':>9}{'x eager':>9}{'x comp':>8}  torch")
for r in nat:
    if r.get("what") not in ("train_step", "train_step recompute"): continue
    model = r["model"].split("@")[0]; b = r["batch"]; ours = r.get("imagesPerSec", 0)
    label = model + (" rc" if r["what"].endswith("recompute") else "") + (" *" if r.get("variant") else "")
    e = tstep(tor, model, b, "torch_eager"); c = tstep(tor, model, b, "torch_compile"); src = "same run"
    if not e and not c:
        e = tstep(rec, model, b, "torch_eager"); c = tstep(rec, model, b, "torch_compile"); src = "recorded" if (e or c) else "-"
    mfu = r.get("gflops", 0) * 1e9 / PEAK
    act = r.get("activationMB", 0) / 1024
    print(f"{label:<12}{b:>6}{ours:>11.0f}{100*mfu:>6.1f}%{act:>8.1f}{f0(e):>9}{f0(c):>9}{(ours/e if e else 0):>9.2f}{(ours/c if c else 0):>8.2f}  {src}")
variants = sorted({r["variant"] for r in nat if r.get("variant") and r.get("what") in ("train_step", "train_step recompute")})
for v in variants: print(f"  * kernels: {v} (candidates, not the default)")
def sdpa(src, b, h, hd):
    for r in src:
        if r.get("kind") == "attention" and r.get("status") == "ok" and r.get("batch") == b and r.get("heads") == h and r.get("head_dim") == hd:
            return r
    return None
HEADS = {"DiT-S/2": (6, 64), "DiT-B/2": (12, 64), "DiT-XL/2": (16, 72)}
for r in nat:
    if r.get("what") != "attention_fwd": continue
    model = r["model"].split("@")[0]; b = r["batch"]
    bw = next((x for x in nat if x.get("what") == "attention_bwd" and x["model"] == r["model"] and x["batch"] == b), None)
    if model not in HEADS: continue
    h, hd = HEADS[model]
    ours = r["ms"] + (bw["ms"] if bw else 0)
    s = sdpa(tor, b, h, hd); src = "same run"
    if not s: s = sdpa(rec, b, h, hd); src = "recorded"
    ratio = f"{ours / s['ms']:.2f}x SDPA ({src}: {s['ms']:.3f} ms, fwd {s.get('ms_fwd', 0):.3f})" if s else "no SDPA row"
    print(f"attention {model} b{b} h{h} hd{hd}: ours fwd {r['ms']:.3f} + bwd {bw['ms'] if bw else 0:.3f} = {ours:.3f} ms  -> {ratio}  (target <= 1.5x)")
# our attention at SDPA's exact shapes (test_cuda_attn_bench), both paths
for impl in ("bf16_tc", "bf16_tc_w8", "bf16_tc2", "bf16_tc2_w8", "fp32"):
    for r in nat:
        if r.get("what") != "attn_fwd" or r.get("impl") != impl: continue
        b, h, hd = r["batch"], r["heads"], r["head_dim"]
        bw = next((x for x in nat if x.get("what") == "attn_bwd" and x.get("impl") == impl and x.get("batch") == b and x.get("heads") == h and x.get("head_dim") == hd), None)
        ours = r["ms"] + (bw["ms"] if bw else 0)
        s = sdpa(tor, b, h, hd); src = "same run"
        if not s: s = sdpa(rec, b, h, hd); src = "recorded"
        ratio = f"{ours / s['ms']:.2f}x SDPA ({src} {s['ms']:.3f} ms, fwd {s.get('ms_fwd', 0):.3f})" if s else "no SDPA row"
        print(f"attention {impl:<10} b{b} h{h} L{r['seq']} hd{hd}: fwd {r['ms']:.3f} ({r.get('tflops', 0):.0f} TF/s) + bwd {bw['ms'] if bw else 0:.3f} ({bw.get('tflops', 0) if bw else 0:.0f} TF/s) = {ours:.3f} ms -> {ratio}; target <= 1.5x")
own_copy = next((r.get("gbps") for r in nat if r.get("what") == "copy"), None)
if own_copy: print(f"copy (ours, cudaMemcpy D2D): {own_copy:.0f} GB/s")
for what in ("optimizer_step", "ln_modulate_fwd", "ln_modulate_bwd", "ln_modulate_bwd_acc", "gated_residual_fwd", "gated_residual_bwd"):
    for r in nat:
        if r.get("what") == what and r.get("gbps"):
            ref = copy or own_copy
            pct = f" = {100 * r['gbps'] / ref:.0f}% of copy" if ref else ""
            where = r.get("size") or f"{str(r.get('model', '?')).split('@')[0]} b{r.get('batch', '?')}"
            if r.get("impl"): where += f" {r['impl']}"  # default / onepass* (dev_cuda_norm)
            print(f"{what:<20} {where:<16} {r['ms']:8.3f} ms {r['gbps']:7.0f} GB/s{pct} (target >= 80%)")
# where the step goes (bench_native --profile): the largest ops of each profiled step
groups = {}
for r in nat:
    if str(r.get("what", "")).startswith("step ") and r.get("share"):
        groups.setdefault((r["model"].split("@")[0], r["batch"], r.get("variant") or "default"), []).append(r)
for (model, b, v), rs in groups.items():
    tot = next((r for r in rs if r["what"] == "step total (profiled)"), None)
    ops = sorted((r for r in rs if r is not tot), key=lambda r: -r["share"])[:8]
    print(f"profile {model} b{b} [{v}]: {tot['ms'] if tot else 0:.1f} ms summed over ops; " +
          "; ".join(f"{r['what'][5:]} x{r.get('calls', 0)} {r['ms']:.1f}ms {100*r['share']:.0f}%" +
                    (f" {r['gflops']/1e3:.0f}TF/s" if r.get("gflops") else "") for r in ops))
for l in re.findall(r"^inception \d+x\d+ -> 299.*cuda.*$", t, re.M):  # bench_inception on the GPU
    print("Inception-v3 " + l[len("inception "):])
for r in (r for r in nat if str(r.get("what", "")).startswith("vae ")):  # the VAE rows
    print(f"VAE {r['model']} b{r['batch']} {r['what'][4:]}: {r.get('imagesPerSec', 0):.1f} images/s, "
          f"{r.get('gflops', 0)/1e3:.1f} TFLOP/s, {r.get('ratioToGemm', 0):.2f} x GEMM, {r.get('activationMB', 0):.0f} MiB")
others = [r for r in nat if r.get("what") in ("linear_fwd qkv", "linear_bwd qkv", "linear_fwd fc1+gelu", "linear_bwd fc1+gelu", "forward")]
if others:
    print("other: " + "; ".join(f"{r['what']}[{r['model'].split('@')[0]} b{r['batch']}] {r['ms']:.2f}ms {r.get('gflops', 0)/1e3:.0f}TF/s" for r in others[:12]))
PY
}
[ "${SUMMARY_ONLY:-0}" = 1 ] && { summary; exit 0; }
: > "$STATUS"; : > "$ERR"; : > "$TLOG"
: > "$LOG/bench_native.jsonl"; : > "$LOG/torch.jsonl"

left() { echo $((DEADLINE - $(date +%s))); }
# run_step NAME WANT_S MIN_S OUTFILE ERRFILE CMD...: runs CMD with timeout
# min(WANT_S, left - RESERVE), stdout appended to OUTFILE and stderr to ERRFILE;
# skipped (rc 125) when less than MIN_S would remain.
run_step() {
  local name=$1 want=$2 min=$3 outf=$4 errf=$5; shift 5
  local avail=$(( $(left) - RESERVE ))
  local t=$(( want < avail ? want : avail ))
  if [ "$t" -lt "$min" ]; then
    echo "$name SKIPPED (only ${avail}s left, needs ${min}s)" | tee -a "$STATUS"
    return 125
  fi
  local s=$(date +%s)
  echo "=== $name (timeout ${t}s, $(( s - T0 ))s since start) ===" >> "$errf"
  timeout --kill-after=3 "$t" "$@" >> "$outf" 2>> "$errf"
  local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - s ))s" | tee -a "$STATUS"
  return $rc
}
# step NAME WANT_S MIN_S LOGFILE CMD...: stdout and stderr both to LOGFILE
step() { local name=$1 want=$2 min=$3 log=$4; shift 4; run_step "$name" "$want" "$min" "$log" "$log" "$@"; }
# step_json NAME WANT_S MIN_S OUTFILE CMD...: stdout (JSON lines) to OUTFILE, stderr to stderr.txt
step_json() { local name=$1 want=$2 min=$3 outf=$4; shift 4; run_step "$name" "$want" "$min" "$outf" "$ERR" "$@"; }

# ---- (a) what the machine has ------------------------------------------------------------
{
  echo "card: $(timeout 10 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv,noheader 2>/dev/null | head -1 | grep . || echo 'unknown (nvidia-smi failed)')"
  timeout 10 nvidia-smi || true
  command -v nvcc && timeout 10 nvcc --version || echo "nvcc: not on PATH"
  echo "--- cuBLASLt ---"
  ls /usr/local/cuda*/include/cublasLt.h /usr/local/cuda*/targets/*/include/cublasLt.h 2>/dev/null
  ls /usr/local/cuda*/lib64/libcublasLt.so* /usr/local/cuda*/targets/*/lib/libcublasLt.so* 2>/dev/null
  command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null || echo "compute-sanitizer: not found"
  timeout 30 python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" 2>&1 | tail -1
  nproc
} > "$LOG/machine.txt" 2>&1
head -1 "$LOG/machine.txt"
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1 || true)
echo "machine rc=0 $(( $(date +%s) - T0 ))s" >> "$STATUS"

# ---- (b) build: only what the checks need, -j16 ---------------------------------------------
BLOG="$LOG/build.txt"
: > "$BLOG"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  GEN=""; command -v ninja >/dev/null && GEN="-G Ninja"
  step configure 60 5 "$BLOG" cmake -S . -B "$BUILD" $GEN -DSPEED_CUDA=ON \
    -DSPEED_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_BUILD_TYPE=Release
  if ! step build 200 10 "$BLOG" cmake --build "$BUILD" -j16 --target test_cuda_ops test_cuda_train test_cuda_curve test_cuda_attn_bench test_cuda_vae test_cuda_cnn test_cuda_inception bench_native bench_inception dev_cuda_attention dev_cuda_norm; then
    # keep going with whatever did build (make: -k; ninja: -k 0)
    if [ -n "$GEN" ]; then K="-k 0"; else K="-k"; fi
    step build-rest 90 10 "$BLOG" cmake --build "$BUILD" -j16 --target test_cuda_ops test_cuda_train test_cuda_curve test_cuda_attn_bench test_cuda_vae test_cuda_cnn test_cuda_inception bench_native bench_inception dev_cuda_attention dev_cuda_norm -- $K
  fi
  grep -E "error|FAILED" "$BLOG" | head -8
fi

# ---- (c) CUDA tests ----------------------------------------------------------------------------
OPS="$BUILD/test_cuda_ops"; TRAIN="$BUILD/test_cuda_train"; BENCH="$BUILD/bench_native"
ATT_FALLBACK=0
if [ -x "$OPS" ]; then
  step ops-bf16-attention 60 10 "$TLOG" "$OPS" bf16 attention
  rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 77 ] && [ $rc -ne 125 ]; then
    ATT_FALLBACK=1
    echo "bf16 tensor-core attention FAILED its test: bench runs with SPEED_CUDA_ATTENTION=fp32" | tee -a "$STATUS"
  fi
  # the optional 8-warp attention kernels (SPEED_CUDA_ATTN_WARPS=8; not the default path)
  step ops-bf16-attnw8 40 10 "$TLOG" "$OPS" bf16 attnw8
  step ops-fp32 60 10 "$TLOG" "$OPS" fp32
  step ops-bf16 60 10 "$TLOG" "$OPS" bf16
  step ops-tf32 60 10 "$TLOG" "$OPS" tf32
  SPEED_CUDA_NO_FUSED_EPILOGUE=1 step ops-bf16-unfused-linear 30 5 "$TLOG" "$OPS" bf16 linear
else
  echo "tests: $OPS not built" | tee -a "$STATUS"
fi
# the VAE: its ops (conv2d im2col + cuBLASLt, group_norm, GEMM attention at head_dim 512)
# and SD's kl-f8 encode/decode against the CPU backend, then images/s at 256x256
VAET="$BUILD/test_cuda_vae"
if [ -x "$VAET" ]; then
  step vae-fp32 60 10 "$TLOG" "$VAET" fp32
  step vae-bf16 40 10 "$TLOG" "$VAET" bf16
  [ -x "$BENCH" ] && step_json bench-vae 40 10 "$LOG/bench_native.jsonl" "$BENCH" --device cuda \
    --models VAE-f8@256 --batches 8 --iters 3 --no-kernels --gemm 2048 --json
else
  echo "vae: $VAET not built" | tee -a "$STATUS"
fi
# the CNN feature network's training ops (conv2d_backward, ReLU) and a whole CNNClassifier
# train step against the CPU backend
CNNT="$BUILD/test_cuda_cnn"
if [ -x "$CNNT" ]; then
  step cnn-fp32 40 10 "$TLOG" "$CNNT" fp32
  step cnn-bf16 30 10 "$TLOG" "$CNNT" bf16
else
  echo "cnn: $CNNT not built" | tee -a "$STATUS"
fi

# Inception-v3 (FID's network): its ops (pools, global average, resize to 299, channel-slot
# copy, the convs at its kernel shapes) and the whole network's pool3 / logits / spatial
# features against the CPU backend, then images/s at 256x256 with fp32 operands (as
# evaluation runs it; the "inception ... cuda" line of tests.txt, quoted in the summary)
INCT="$BUILD/test_cuda_inception"
if [ -x "$INCT" ]; then
  step inception-fp32 60 10 "$TLOG" "$INCT" fp32
  step inception-tf32 40 10 "$TLOG" "$INCT" tf32
  [ -x "$BUILD/bench_inception" ] && step bench-inception 40 10 "$TLOG" "$BUILD/bench_inception" 256 32 16 2 cuda fp32
else
  echo "inception: $INCT not built" | tee -a "$STATUS"
fi
if [ -x "$TRAIN" ]; then
  step train-fp32 60 10 "$TLOG" "$TRAIN" fp32
  # bf16 includes the weight cache's conversions per step (each weight once)
  step train-bf16 60 10 "$TLOG" "$TRAIN" bf16
fi
# the optimizer's check kernels (skip an update that would store Inf/NaN,
# nothing written) on their own, named in the log (also inside the ops-* runs above)
[ -x "$OPS" ] && step ops-optimizer-skip 20 5 "$TLOG" "$OPS" fp32 optimizer
# The candidate kernels of native/dev/cuda (tc2 attention, one-pass norms), not in the product
# until a run says so: each program checks every version (the product's first) against the CPU;
# check only here, into tests.txt (its timings follow in (d))
DEVA="$BUILD/dev_cuda_attention"; DEVN="$BUILD/dev_cuda_norm"
[ -x "$DEVA" ] && step dev-attention-check 60 10 "$TLOG" "$DEVA" 0 0 0
[ -x "$DEVN" ] && step dev-norm-check 40 10 "$TLOG" "$DEVN" 0 0
# 200 DiT-S/2 steps at batch 4, GPU (FP32) vs the CPU backend's loss curve (~45-60 s,
# mostly the CPU side); only with >= 150 s left; --budget-s makes it judge the steps it managed
# (verdict "(partial)") instead of being killed
CURVE="$BUILD/test_cuda_curve"
if [ -x "$CURVE" ] && [ "$(left)" -ge 150 ]; then
  ct=$(( $(left) - RESERVE )); [ $ct -gt 130 ] && ct=130
  step cuda-curve "$ct" 60 "$TLOG" "$CURVE" --steps 200 --batch 4 --budget-s $(( ct - 8 ))
elif [ -x "$CURVE" ]; then
  echo "cuda-curve SKIPPED (only $(left)s left, needs 150s)" | tee -a "$STATUS"
else
  echo "cuda-curve: $CURVE not built" | tee -a "$STATUS"
fi
[ $ATT_FALLBACK = 1 ] && export SPEED_CUDA_ATTENTION=fp32

# ---- (d) native bench ----------------------------------------------------------------------------
NJ="$LOG/bench_native.jsonl"
# attention at SDPA's exact shapes (both paths), LN+modulate and AdamW at DiT-XL/2 sizes
if [ -x "$BUILD/test_cuda_attn_bench" ]; then
  step_json attn-bench 40 10 "$NJ" "$BUILD/test_cuda_attn_bench" 10
fi
# the candidates next to the product's kernels (rows bf16_tc2*, onepass*); each program checks
# again first and prints no timing when a check fails
[ -x "$DEVA" ] && step_json dev-attention-bench 60 15 "$NJ" "$DEVA" 0 0 10
[ -x "$DEVN" ] && step_json dev-norm-bench 40 10 "$NJ" "$DEVN" 0 10
if [ -x "$BENCH" ]; then
  step_json bench-S2 45 15 "$NJ" "$BENCH" --device cuda --models DiT-S/2@32x4 --batches 32,256 --iters 5 --json
  step_json bench-XL2-b32 45 15 "$NJ" "$BENCH" --device cuda --models DiT-XL/2@32x4 --batches 32 --iters 3 \
    --no-kernels --profile --gemm 2048 --json
  # cuBLASLt's GELU_AUX_BIAS epilogue ran fc1 at 93-110 TFLOP/s against 176-267 for the plain qkv
  # product: the profile rows of this run (GEMM + bias epilogue, then our GELU) say whether to drop it
  SPEED_CUDA_NO_FUSED_EPILOGUE=1 step_json bench-XL2-b32-unfused 30 10 "$NJ" "$BENCH" --device cuda \
    --models DiT-XL/2@32x4 --batches 32 --iters 3 --no-kernels --profile --gemm 1024 --json
else
  echo "bench: $BENCH not built" | tee -a "$STATUS"
fi

# ---- (e) PyTorch on the same GPU, reduced ------------------------------------------------------------
TJ="$LOG/torch.jsonl"
if [ -f tools/torch_bench.py ]; then
  avail=$(( $(left) - RESERVE - 5 ))
  # leave ~60 s for the sanitizer when there is room for both
  tb=$(( avail > 150 ? avail - 60 : avail )); [ $tb -gt 110 ] && tb=110
  step_json torch-bench "$tb" 30 "$TJ" python3 tools/torch_bench.py --device cuda \
    --models DiT-XL/2 --batches 32 --input-size 32 --in-channels 4 --compile \
    --attention --attn-shapes 256x16x256x72,256x6x256x64 --copy --iters 5 --warmup 2 \
    --json --budget-s $(( tb > 40 ? tb - 30 : 10 ))
fi

# ---- (f) compute-sanitizer on the new kernels --------------------------------------------------------
if [ -n "$SAN" ] && [ -x "$OPS" ] && [ $(( $(left) - RESERVE )) -ge 60 ]; then
  step memcheck-bf16-attention 60 40 "$TLOG" "$SAN" --tool memcheck --error-exitcode 9 "$OPS" bf16 attention
  step racecheck-bf16-attention 60 40 "$TLOG" "$SAN" --tool racecheck --error-exitcode 9 "$OPS" bf16 attention
  [ -x "$DEVA" ] && step memcheck-dev-attention-tc2 40 20 "$TLOG" "$SAN" --tool memcheck --error-exitcode 9 "$DEVA" 2 0 0 quick
  [ -x "$DEVA" ] && step racecheck-dev-attention-tc2 60 30 "$TLOG" "$SAN" --tool racecheck --error-exitcode 9 "$DEVA" 2 0 0 quick
  step memcheck-fp32-ln 30 20 "$TLOG" "$SAN" --tool memcheck --error-exitcode 9 "$OPS" fp32 ln
  step racecheck-fp32-ln 30 20 "$TLOG" "$SAN" --tool racecheck --error-exitcode 9 "$OPS" fp32 ln
  # the one-pass LN backward's double-buffered shared table
  [ -x "$DEVN" ] && step racecheck-dev-norm-onepass 40 20 "$TLOG" "$SAN" --tool racecheck --error-exitcode 9 "$DEVN" 3 0
  # the optimizer's check kernels (__syncthreads_or, the skip flag written by other blocks)
  step memcheck-fp32-optimizer 20 10 "$TLOG" "$SAN" --tool memcheck --error-exitcode 9 "$OPS" fp32 optimizer
  # the VAE's kernels (im2col + GEMM conv, GroupNorm's block reduction, upsample, the GEMM
  # attention's row softmax), op by op at the test's small shapes
  if [ -x "$VAET" ]; then
    for f in conv group_norm small attention; do
      step memcheck-fp32-vae-$f 25 8 "$TLOG" "$SAN" --tool memcheck --error-exitcode 9 "$VAET" fp32 $f
    done
    step racecheck-fp32-vae-group_norm 25 8 "$TLOG" "$SAN" --tool racecheck --error-exitcode 9 "$VAET" fp32 group_norm
  fi
  # the Inception kernels (pool.cu), op by op
  if [ -x "$INCT" ]; then
    for f in pool gap resize copy; do
      step memcheck-fp32-inception-$f 25 8 "$TLOG" "$SAN" --tool memcheck --error-exitcode 9 "$INCT" fp32 $f
    done
  fi
else
  echo "sanitizer SKIPPED ($( [ -n "$SAN" ] && echo "$(( $(left) - RESERVE ))s left" || echo "not found"))" | tee -a "$STATUS"
fi

# ---- (d') only with time to spare: DiT-B/2; DiT-XL/2 b256 with activation recomputation (saving
# every block's activations would take ~150 GB in float32; recomputed, ~14 GB) -------------------------
if [ -x "$BENCH" ] && [ $(( $(left) - RESERVE )) -ge 45 ]; then
  step_json bench-B2 40 30 "$NJ" "$BENCH" --device cuda --models DiT-B/2@32x4 --batches 32,256 --iters 3 \
    --no-kernels --gemm 1024 --json
fi
if [ -x "$BENCH" ] && [ $(( $(left) - RESERVE )) -ge 40 ]; then
  step_json bench-XL2-b256 35 30 "$NJ" "$BENCH" --device cuda --models DiT-XL/2@32x4 --batches 256 --iters 2 \
    --no-kernels --gemm 1024 --recompute --json
fi

# ---- data parallelism: NCCL collective on this GPU, world size 1 -------------------
# (2+ GPUs: mpirun -np <gpus> --allow-run-as-root "$BUILD/test_cuda_nccl"; training:
#  mpirun -np <gpus> npx speed-train -c CONFIG device=cuda, see docs/distributed.md)
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  step build-nccl 90 10 "$BLOG" cmake --build "$BUILD" -j16 --target test_cuda_nccl || true
fi
if [ -x "$BUILD/test_cuda_nccl" ]; then
  step nccl-world1 40 10 "$TLOG" "$BUILD/test_cuda_nccl"
  grep -E '"nccl_allreduce"' "$TLOG" | tail -3 > "$LOG/nccl.jsonl" || true
  echo "nccl: 2+ GPUs: mpirun -np <gpus> --allow-run-as-root $BUILD/test_cuda_nccl" | tee -a "$STATUS"
else
  echo "nccl: $BUILD/test_cuda_nccl not built (no NCCL found: pip install nvidia-nccl-cu13, or -DSPEED_NCCL_INCLUDE/-DSPEED_NCCL_LIB)" | tee -a "$STATUS"
fi

# ---- the CLI on this GPU: the addon (N-API, async workers) driving the CUDA backend end to end ---------
# Needs node from .gpu (source .gpu/enter.sh; stage it with native/bench/gpu-stage.sh, which fits
# the 64 MiB carry) and dist/ (npm run build:ts here). A short run: train, grid, inference.
if command -v node >/dev/null && [ -f dist/cli.js ] && [ -d node_modules/node-addon-api ] && [ $(( $(left) - RESERVE )) -ge 50 ]; then
  step build-addon 60 10 "$BLOG" cmake --build "$BUILD" -j16 --target speed_native
  ADDON="$BUILD/Release/speed_native.node"
  if [ -f "$ADDON" ]; then
    CLI_DIR=$(mktemp -d)
    SPEED_TRAIN_ADDON="$ADDON" step cli-train-cuda 40 15 "$TLOG" node dist/cli.js -c configs/default.yaml device=cuda \
      max_training_steps=200 log_every=50 experiment_dir="$CLI_DIR/run" sample.num_per_class=2 sample.steps=ddim10
    SPEED_TRAIN_ADDON="$ADDON" step cli-inference-cuda 30 10 "$TLOG" node dist/cli.js -c configs/default.yaml device=cuda \
      experiment_dir="$CLI_DIR/run" -p inference inference.num_samples=64 inference.steps=ddim10 inference.save_png=false
    ls "$CLI_DIR"/run/inference-*/samples.npz >/dev/null 2>&1 && echo "cli: samples.npz written on cuda" | tee -a "$STATUS"
  fi
else
  echo "cli: SKIPPED (needs node + dist/ + node_modules from .gpu, and >= 50 s)" | tee -a "$STATUS"
fi

# ---- (g) summary (last) --------------------------------------------------------------------------------
summary
