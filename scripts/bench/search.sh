#!/usr/bin/env bash
# Benchmark: the hierarchical search (--method auto) on the paper's weak-scaling suites, against
# baselines planned by the same cost model: GPT-3 against the best Megatron-LM configuration
# (--method megatron-grid), MoE and Wide-ResNet against pipeline + data parallelism (--method
# pp-dp) and ZeRO-2 on one stage (--method zero2, with the best power-of-two gradient
# accumulation up to 256 microbatches). Prints the search time of every case, the
# estimated throughput of our plan over the baseline's, and for GPT-3 39B on 64 GPUs the ratio
# of Alpa's 2393 s compilation (the paper) to our search time. Adam; GPT and MoE in fp16,
# Wide-ResNet in fp32 (as the paper trained them); builtin:p3.16xlarge (8 V100 per host).
# usage: scripts/bench/search.sh [gpt|moe|wresnet|all] [SIZE...]   (expects build/apps/alpa-plan)
#   e.g. scripts/bench/search.sh gpt 350M 2.6B
set -uo pipefail
cd "$(dirname "$0")/../.."
PLAN=build/apps/alpa-plan
OUT=${ALPA_BENCH_DIR:-build/bench}
mkdir -p "$OUT"
PY=/usr/bin/python3
THREADS=${ALPA_BENCH_THREADS:-$(nproc)}
suite=${1:-gpt}
shift || true

# family size GPUs precision baseline-methods
cases() {
  case $1 in
    gpt) printf '%s\n' "gpt 350M 1 fp16" "gpt 760M 2 fp16" "gpt 1.3B 4 fp16" "gpt 2.6B 8 fp16" "gpt 6.7B 16 fp16" "gpt 15B 32 fp16" "gpt 39B 64 fp16" ;;
    moe) printf '%s\n' "moe 380M 1 fp16" "moe 690M 2 fp16" "moe 1.3B 4 fp16" "moe 2.4B 8 fp16" "moe 10B 16 fp16" "moe 27B 32 fp16" "moe 70B 64 fp16" ;;
    wresnet) printf '%s\n' "wresnet 250M 1 fp32" "wresnet 500M 2 fp32" "wresnet 1B 4 fp32" "wresnet 2B 8 fp32" "wresnet 4B 16 fp32" "wresnet 6.8B 32 fp32" "wresnet 13B 64 fp32" ;;
  esac
}

# search FILE CLUSTER PRECISION METHOD -> "seconds iteration_s" (or "seconds -" when nothing fits)
search() {
  local file=$1 cluster=$2 precision=$3 method=$4 log start end it
  log="$OUT/$(basename "$file" .onnx)_$method.txt"
  start=$(date +%s.%N)
  local extra=()
  if [ -n "${MICROBATCHES:-}" ]; then extra=(--microbatches "$MICROBATCHES"); log="${log%.txt}_k$MICROBATCHES.txt"; fi
  "$PLAN" search "$file" --cluster "$cluster" --optimizer adam --precision "$precision" --method "$method" \
      --threads "$THREADS" "${extra[@]}" -o "$OUT/$(basename "$file" .onnx)_$method.json" > "$log" 2>&1
  end=$(date +%s.%N)
  it=$(grep -m1 -E '^  iteration time' "$log" | awk '{print $3, $4}')
  local secs
  secs=$(awk "BEGIN{printf \"%.1f\", $end - $start}")
  if [ -z "$it" ]; then echo "$secs -"; return; fi
  # to seconds
  echo "$secs $(echo "$it" | awk '{v=$1; if ($2=="ms") v/=1e3; else if ($2=="us") v/=1e6; printf "%.6g", v}')"
}

# best_zero2 FILE CLUSTER PRECISION -> "total seconds best_iteration_s" (or "... -" when nothing fits)
best_zero2() {
  local file=$1 cluster=$2 precision=$3 total=0 best="-" k secs it
  for k in 1 2 4 8 16 32 64 128 256; do
    read -r secs it <<< "$(MICROBATCHES=$k search "$file" "$cluster" "$precision" zero2)"
    total=$(awk "BEGIN{printf \"%.4f\", $total + $secs}")
    if [ "$it" != "-" ] && { [ "$best" = "-" ] || awk "BEGIN{exit !($it < $best)}"; }; then best=$it; fi
  done
  echo "$(awk "BEGIN{printf \"%.1f\", $total}") $best"
}

run_family() {
  local family=$1; shift
  local baselines
  if [ "$family" = gpt ]; then baselines="megatron-grid"; else baselines="pp-dp zero2"; fi
  printf '%-16s %5s %10s %12s' "case" "GPUs" "search s" "auto iter s"
  for b in $baselines; do printf ' %14s %10s %8s' "$b iter s" "search s" "ratio"; done
  printf '\n'
  while read -r fam size gpus precision; do
    [ -z "$fam" ] && continue
    if [ $# -gt 0 ] && [[ " $* " != *" $size "* ]]; then continue; fi
    local file="$OUT/${fam}_${size}.onnx" hosts cluster
    $PY scripts/models/generate.py "$fam" "$size" -o "$file" > /dev/null
    if [ "$gpus" -lt 8 ]; then
      # Fewer than 8 GPUs: one p3.16xlarge host with that many devices (the paper's 1-, 2-, 4-GPU cases).
      cluster="$OUT/p3.16xlarge_${gpus}gpu.json"
      sed "s/\"devices_per_host\": 8/\"devices_per_host\": $gpus/" profiles/p3.16xlarge.json > "$cluster"
    else hosts=$((gpus / 8)); cluster="builtin:p3.16xlarge:$hosts"; fi
    read -r auto_s auto_it <<< "$(search "$file" "$cluster" "$precision" auto)"
    printf '%-16s %5s %10s %12s' "$fam-$size" "$gpus" "$auto_s" "$auto_it"
    for b in $baselines; do
      if [ "$b" = zero2 ]; then
        # ZeRO-2 on one stage with its best gradient accumulation (the batch does not fit at
        # once): every power-of-two microbatch count up to 256, the fastest that fits.
        read -r b_s b_it <<< "$(best_zero2 "$file" "$cluster" "$precision")"
      else
        read -r b_s b_it <<< "$(search "$file" "$cluster" "$precision" "$b")"
      fi
      local ratio="-"
      if [ "$auto_it" != "-" ] && [ "$b_it" != "-" ]; then ratio=$(awk "BEGIN{printf \"%.3f\", $b_it / $auto_it}"); fi
      if [ "$auto_it" != "-" ] && [ "$b_it" = "-" ]; then ratio="baseline OOM"; fi
      printf ' %14s %10s %8s' "$b_it" "$b_s" "$ratio"
    done
    printf '\n'
    if [ "$fam-$size" = "gpt-39B" ]; then
      awk "BEGIN{printf \"  GPT-39B on 64 GPUs: search %.1f s; Alpa (paper) 2393 s: %.0fx faster\n\", $auto_s, 2393 / $auto_s}"
    fi
  done < <(cases "$family")
}

case $suite in
  all) for f in gpt moe wresnet; do echo "== $f"; run_family "$f" "$@"; done ;;
  *) echo "== $suite"; run_family "$suite" "$@" ;;
esac
echo "(throughput ratio = baseline iteration time / auto iteration time, both estimated by the same cost model)"
