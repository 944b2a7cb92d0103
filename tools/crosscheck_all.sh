#!/usr/bin/env bash
# Runs native/bench/dump_case for a set of DiT cases and checks each against the PyTorch
# reference (tools/torch_crosscheck.py). Exit status non-zero when any case fails.
#   bash tools/crosscheck_all.sh [BUILD_DIR (default build-torch)] [PYTHON (default /usr/bin/python3)]
set -uo pipefail
BUILD="${1:-build-torch}"
PY="${2:-${PYTHON:-/usr/bin/python3}}"
DUMP="$BUILD/dump_case"
[ -x "$DUMP" ] || { echo "error: $DUMP not found; build it: cmake --build $BUILD --target dump_case" >&2; exit 2; }
"$PY" -c 'import torch' 2>/dev/null || { echo "error: $PY has no torch (Debian: apt-get install python3-torch)" >&2; exit 2; }
DIR="$(mktemp -d)"; trap 'rm -rf "$DIR"' EXIT
cases=(
  "ti4_f64|--preset DiT-Ti/4 --size 8 --channels 3 --classes 10"
  "ti4_f32|--preset DiT-Ti/4 --size 8 --channels 3 --classes 10 --float32"
  "s2_f64|--preset DiT-S/2 --size 32 --channels 4 --classes 1000 --batch 4 --seed 3"
  "s2_f32|--preset DiT-S/2 --size 32 --channels 4 --classes 1000 --batch 4 --seed 3 --float32"
  "b8_uncond_vbscale|--preset DiT-B/8 --size 16 --channels 3 --classes 0 --dropout 0 --vb-scale 0.25 --batch 3 --float32"
  "ti8_nosigma|--preset DiT-Ti/8 --size 16 --channels 3 --learn-sigma 0 --batch 2 --float32"
)
fail=0
printf "%-20s %-6s %-12s %-12s %-12s %-12s\n" case result output loss grad max_abs_grad
for c in "${cases[@]}"; do
  name="${c%%|*}"; args="${c#*|}"
  if ! "$DUMP" --out "$DIR/$name.safetensors" $args > "$DIR/$name.dump.log" 2>&1; then
    echo "$name: dump_case failed:"; cat "$DIR/$name.dump.log"; fail=1; continue
  fi
  "$PY" tools/torch_crosscheck.py "$DIR/$name.safetensors" > "$DIR/$name.log" 2>&1; rc=$?
  line="$(grep '^{"kind": "crosscheck"' "$DIR/$name.log")"
  if [ -z "$line" ]; then echo "$name: crosscheck failed (rc $rc):"; tail -20 "$DIR/$name.log"; fail=1; continue; fi
  "$PY" -c 'import json,sys; r=json.loads(sys.argv[1]); w=r["worst"]; print("%-20s %-6s %-12.3e %-12.3e %-12.3e %-12.3e" % (sys.argv[2], "PASS" if r["pass"] else "FAIL", w["output"], w["loss"], w["grad"], r["max_abs"]["grad"]))' "$line" "$name"
  [ $rc -eq 0 ] || { fail=1; grep -E "FAIL" "$DIR/$name.log" | head -20; }
done
echo "(columns: worst relative-norm error per group; tolerance 1e-4, gradients 5e-4)"
exit $fail
