#!/usr/bin/env bash
# Benchmark: the intra-op ILP at paper scale — GPT-3 2.6B on 8 V100s (builtin:p3.16xlarge:1)
# and GPT-3 39B on 64 V100s (builtin:p3.16xlarge:8), one stage, shard-parallel, Adam, fp16,
# 128 microbatches (so the activations of a microbatch fit 16 GB). Prints the size of the whole
# graph as one ILP before and after follower merging, what the decomposition solved, the solve
# time per logical view, and, side by side, the baseline: the same view solved as one ILP
# (--no-decompose, 30 s safety limit per ILP).
# Targets (issue 4): 2.6B@8 ≤ 2 s, 39B@64 ≤ 10 s.
# usage: scripts/bench/ilp_scaling.sh   (expects a built build/apps/alpa-plan)
set -euo pipefail
cd "$(dirname "$0")/../.."
PLAN=build/apps/alpa-plan
OUT=${ALPA_BENCH_DIR:-build/bench}
mkdir -p "$OUT"
PY=/usr/bin/python3

run() {  # name cluster baseline_view
  local name=$1 cluster=$2 view=$3 file="$OUT/gpt_$1.onnx"
  $PY scripts/models/generate.py gpt "$name" -o "$file" > /dev/null
  echo "== GPT-3 $name on $cluster"
  local start end
  start=$(date +%s.%N)
  "$PLAN" search "$file" --cluster "$cluster" --method shard --microbatches 128 --optimizer adam --precision fp16 \
      --threads 2 --ilp-stats -o "$OUT/plan_$name.json" > "$OUT/search_$name.txt"
  end=$(date +%s.%N)
  sed -n '2,$p' "$OUT/search_$name.txt" | grep -E '^  (mesh|[0-9]+x[0-9]+ )|before merging|^best' || true
  printf "whole command (import, every view, plan written): %.2f s\n" "$(awk "BEGIN{print $end - $start}")"
  local dec_s base_s
  "$PLAN" search "$file" --cluster "$cluster" --method shard --microbatches 128 --optimizer adam --precision fp16 \
      --threads 2 --logical-mesh "$view" --time-limit 30 > "$OUT/search_${name}_view.txt"
  "$PLAN" search "$file" --cluster "$cluster" --method shard --microbatches 128 --optimizer adam --precision fp16 \
      --threads 2 --logical-mesh "$view" --time-limit 30 --no-decompose > "$OUT/search_${name}_mono.txt" || true
  echo "-- view $view: decomposed vs one ILP (baseline)"
  grep -E "^  $view " "$OUT/search_${name}_view.txt" | sed 's/^/  decomposed: /'
  grep -E "^  $view " "$OUT/search_${name}_mono.txt" | sed 's/^/  one ILP:    /'
}

run 2.6B builtin:p3.16xlarge:1 1x8
run 39B builtin:p3.16xlarge:8 8x8
