#!/usr/bin/env bash
# PyTorch side of the GPU check (run on the GPU machine, from the repo root):
#   bash tools/gpu_torch_check.sh [extra torch_bench.py args]
# 1. the cross-check self-test under the machine's torch (sdpa path, float64 on the CPU);
# 2. tools/torch_bench.py on cuda: GEMM, copy, attention, DiT train steps eager + compile.
# JSON lines go to $OUT/torch_bench.jsonl (or ./torch_bench.jsonl without $OUT).
set -uo pipefail
OUT_DIR="${OUT:-.}"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
rc=0
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
"$PY" tools/torch_crosscheck.py --self-test | tail -4 || rc=1
"$PY" tools/torch_bench.py --device cuda --models "${MODELS:-DiT-XL/2,DiT-B/2,DiT-S/2}" \
  --batches "${BATCHES:-256,32}" --input-size 32 --in-channels 4 --compile --attention --copy --forward \
  --budget-s "${BUDGET_S:-180}" --json "$@" > "$OUT_DIR/torch_bench.jsonl" || rc=1
echo "torch_bench exit: $rc; $(wc -l < "$OUT_DIR/torch_bench.jsonl") JSON lines in $OUT_DIR/torch_bench.jsonl"
exit $rc
