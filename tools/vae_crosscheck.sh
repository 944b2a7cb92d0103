#!/usr/bin/env bash
# Cross-checks the native VAE against the independent PyTorch AutoencoderKL
# (tools/torch_vae.py) on random weights in every naming and dtype: SD's kl-f8 config at
# 64x64 input, tiny configs, diffusers (new and old attention names), LDM, a full SD
# checkpoint, F16 and BF16 files. Prints a table; exit status non-zero when a case fails.
# Needs the built addon (npm run build:native) and Debian's python3-torch.
#   bash tools/vae_crosscheck.sh [PYTHON (default /usr/bin/python3)]
set -uo pipefail
PY="${1:-${PYTHON:-/usr/bin/python3}}"
"$PY" -c 'import torch' 2>/dev/null || { echo "error: $PY has no torch (Debian: apt-get install python3-torch)" >&2; exit 2; }
DIR="$(mktemp -d)"; trap 'rm -rf "$DIR"' EXIT
TINY='{"blockOutChannels":[8,16],"layersPerBlock":1,"normNumGroups":4,"latentChannels":4}'
TINY3='{"blockOutChannels":[8,16,16],"layersPerBlock":2,"normNumGroups":8,"latentChannels":3,"inChannels":2,"outChannels":5}'
SD='{"blockOutChannels":[128,256,512,512],"layersPerBlock":2,"normNumGroups":32,"latentChannels":4}'
cases=(
  "sd_diffusers_64|diffusers|F32|$SD|64|1"
  "sd_ldm_64|ldm|F32|$SD|64|1"
  "sd_full_f16_64|full|F16|$SD|64|1"
  "tiny_diffusers|diffusers|F32|$TINY|16|3"
  "tiny_legacy_attn|legacy|F32|$TINY|16|2"
  "tiny_ldm_bf16|ldm|BF16|$TINY|16|2"
  "tiny3_ldm_in2_out5|ldm|F32|$TINY3|32|2"
)
fail=0
printf "%-18s %-9s %-5s %-14s %-10s %-10s %-10s %-6s %s\n" case naming dtype input mean logvar decoded result "ours enc/dec ms"
for c in "${cases[@]}"; do
  IFS='|' read -r name naming dtype cfg size batch <<< "$c"
  mkdir -p "$DIR/$name"
  dump="$DIR/$name/dump.safetensors"
  if ! t=$(node --import tsx tools/vae_dump.mts --out "$dump" --dir "$DIR/$name" --case "$name" --naming "$naming" --dtype "$dtype" --config "$cfg" --size "$size" --batch "$batch" 2>"$DIR/$name/dump.err"); then
    echo "$name: dump failed:"; tail -5 "$DIR/$name/dump.err"; fail=1; continue
  fi
  line=$("$PY" tools/torch_vae.py "$dump" 2>"$DIR/$name/torch.err"); rc=$?
  if [ -z "$line" ]; then echo "$name: torch_vae failed (rc $rc):"; tail -5 "$DIR/$name/torch.err"; fail=1; continue; fi
  "$PY" -c 'import json,sys; r=json.loads(sys.argv[1]); t=json.loads(sys.argv[2]); print("%-18s %-9s %-5s %-14s %-10.2e %-10.2e %-10.2e %-6s %.0f/%.0f" % (r["case"], r["naming"], r["dtype"], "x".join(map(str, r["input"])), r["mean"], r["logvar"], r["decoded"], "PASS" if r["pass"] else "FAIL", t["encode_ms"], t["decode_ms"]))' "$line" "$t"
  [ $rc -eq 0 ] || fail=1
done
echo "(max |ours - torch| / max |torch| per output, float32 CPU; tolerance 1e-5)"
exit $fail
