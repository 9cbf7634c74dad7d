#!/usr/bin/env bash
# Benchmark: import + inspect of the paper's largest models (shape-only ONNX), wall time and
# peak memory, side by side with a baseline run of the ONNX reference implementation's own
# loader and shape inference (python3-onnx) on the same file.
# Targets (issue 2): GPT-3 39B < 5 s and < 1 GB.
# usage: scripts/bench/inspect_large.sh [--json]   (expects a built build/apps/alpa-plan)
set -euo pipefail
cd "$(dirname "$0")/../.."
PLAN=build/apps/alpa-plan
OUT=${ALPA_BENCH_DIR:-build/bench}
mkdir -p "$OUT"
PY=/usr/bin/python3
JSON=0; [ "${1:-}" = "--json" ] && JSON=1

# measure CMD... → "wall_s max_rss_bytes" (best of 3 wall times, max RSS of that run)
measure() {
  local best_wall="" best_rss=""
  for _ in 1 2 3; do
    /usr/bin/time -f "%e %M" -o "$OUT/time.txt" "$@" > /dev/null
    read -r wall rss_kb < "$OUT/time.txt"
    if [ -z "$best_wall" ] || awk "BEGIN{exit !($wall < $best_wall)}"; then
      best_wall=$wall; best_rss=$((rss_kb * 1024))
    fi
  done
  echo "$best_wall $best_rss"
}

rows=()
printf "%-14s %12s %12s %14s %14s %10s %10s\n" model "alpa_s" "onnx_py_s" "alpa_rss_MiB" "onnx_rss_MiB" "time_ratio" "check"
for spec in "gpt 39B" "moe 70B" "wresnet 13B"; do
  set -- $spec
  file="$OUT/$1_$2.onnx"
  gen_start=$(date +%s.%N)
  $PY scripts/models/generate.py "$1" "$2" -o "$file" > /dev/null
  gen_s=$(awk "BEGIN{print $(date +%s.%N) - $gen_start}")
  read -r a_wall a_rss < <(measure "$PLAN" inspect "$file" --json)
  read -r b_wall b_rss < <(measure $PY -c "import onnx,sys; m=onnx.load(sys.argv[1]); onnx.shape_inference.infer_shapes(m)" "$file")
  # Correctness in the same run: the parameter count equals the generator's.
  want=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['param_count'])" "${file%.onnx}.json")
  got=$("$PLAN" inspect "$file" --json | $PY -c "import json,sys; print(json.load(sys.stdin)['parameters']['count'])")
  check=$([ "$want" = "$got" ] && echo pass || echo "FAIL($got!=$want)")
  ratio=$(awk "BEGIN{printf \"%.2f\", $a_wall / ($b_wall > 0 ? $b_wall : 0.01)}")
  printf "%-14s %12s %12s %14.1f %14.1f %10s %10s\n" "$1-$2" "$a_wall" "$b_wall" \
    "$(awk "BEGIN{print $a_rss/1048576}")" "$(awk "BEGIN{print $b_rss/1048576}")" "$ratio" "$check"
  rows+=("{\"model\":\"$1-$2\",\"generate_s\":$gen_s,\"alpa_inspect_s\":$a_wall,\"onnx_py_shape_inference_s\":$b_wall,\"alpa_peak_rss_bytes\":$a_rss,\"onnx_py_peak_rss_bytes\":$b_rss,\"param_count\":$got,\"check\":\"$check\"}")
done
if [ $JSON = 1 ]; then (IFS=,; echo "[${rows[*]}]"); fi
