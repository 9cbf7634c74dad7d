#!/usr/bin/env bash
# Benchmark: does the plan's predicted step time meet the clock? For each model: `alpa-plan
# profile` on 1 and on 2 ranks, then per case `alpa-plan search` with the profile and without
# (datasheet figures), `mpirun alpa-run --plan` for STEPS steps, and the predicted iteration time
# against the measured one (median of steps 3..STEPS; the error is (predicted - measured) /
# measured). Cases: one device (data on local:1) and, on 2 ranks, data, zero3, megatron tp 2,
# shard, auto and a 2-stage pipeline (megatron pp 2). More ranks than this machine's 2 cores
# would oversubscribe it: left out.
# usage: scripts/bench/fidelity.sh [STEPS] [MODELS...]   (models: gpt bert moe wresnet; default gpt)
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${1:-10}
shift || true
MODELS=${*:-gpt}
OUT=${ALPA_BENCH_DIR:-build/bench}/fidelity
mkdir -p "$OUT"
PY=/usr/bin/python3
B=${ALPA_BIN:-build/apps}
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPI=(mpirun --allow-run-as-root --oversubscribe --bind-to none -x OPENBLAS_NUM_THREADS)

# Sizes taking 0.3 s or more per step here, batch 8.
declare -A GEN=(
  [gpt]="gpt test --layers 4 --hidden 512 --heads 8 --seq 256 --vocab 512"
  [bert]="bert test --layers 4 --hidden 512 --heads 8 --seq 256 --vocab 512"
  [moe]="moe test --layers 4 --hidden 256 --heads 8 --seq 256 --vocab 512 --experts 4"
  [wresnet]="wresnet test --width 64 --image 64"
)
: > "$OUT/rows.jsonl"
for m in $MODELS; do
  model="$OUT/$m.onnx"
  # shellcheck disable=SC2086
  $PY scripts/models/generate.py ${GEN[$m]} --batch 8 -o "$model" > /dev/null
  for n in 1 2; do
    "${MPI[@]}" -np $n $B/alpa-plan profile --model "$model" --batch 8 --cluster local:$n --optimizer sgd \
      -o "$OUT/${m}_profile$n.json" > "$OUT/${m}_profile$n.txt" 2>&1
  done
  cases=("1 data" "2 data" "2 zero3" "2 megatron --tp 2 --pp 1 --dp 1" "2 shard" "2 auto" "2 megatron --tp 1 --pp 2 --dp 1 --microbatches 4")
  for c in "${cases[@]}"; do
    read -r n method rest <<< "$c"
    for src in profile datasheet; do
      name="${m}_${n}_${method}$(echo "$rest" | tr -d " -")_$src"
      prof=()
      [ $src = profile ] && prof=(--profile "$OUT/${m}_profile$n.json")
      # shellcheck disable=SC2086
      if ! $B/alpa-plan search "$model" --batch 8 --cluster local:$n --method $method $rest --optimizer sgd \
          --precision fp32 "${prof[@]}" -o "$OUT/$name.plan.json" > "$OUT/$name.search.txt" 2>&1; then
        echo "{\"case\": \"$name\", \"error\": \"search failed\"}" >> "$OUT/rows.jsonl"; continue
      fi
      if ! "${MPI[@]}" -np $n $B/alpa-run --plan "$OUT/$name.plan.json" --model "$model" --steps "$STEPS" "${prof[@]}" \
          --metrics "$OUT/$name.jsonl" > "$OUT/$name.run.txt" 2>&1; then
        echo "{\"case\": \"$name\", \"error\": \"run failed\"}" >> "$OUT/rows.jsonl"; continue
      fi
      $PY - "$OUT" "$name" "$m" "$n" "$method${rest:+ $rest}" "$src" >> "$OUT/rows.jsonl" <<'PYEOF'
import json, statistics, sys
out, name, model, n, method, src = sys.argv[1:]
plan = json.load(open(f"{out}/{name}.plan.json"))
steps = [json.loads(l) for l in open(f"{out}/{name}.jsonl")]
measured = statistics.median(s["step_ms"] for s in steps[2:]) / 1e3
predicted = plan["estimate"]["iteration_time_s"]
print(json.dumps({"case": name, "model": model, "ranks": int(n), "method": method, "costs": src,
                  "predicted_s": predicted, "measured_s": measured, "error": (predicted - measured) / measured}))
PYEOF
    done
  done
done
$PY - "$OUT" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/rows.jsonl")]
print("| model | ranks | method | costs from | predicted | measured | error |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    if "error" in r and isinstance(r["error"], str):
        print(f"| {r['case']} | | | | | | {r['error']} |")
        continue
    print(f"| {r['model']} | {r['ranks']} | {r['method']} | {r['costs']} | {r['predicted_s']:.3f} s | {r['measured_s']:.3f} s | {r['error']:+.1%} |")
for src in ("profile", "datasheet"):
    errs = [abs(r["error"]) for r in rows if r.get("costs") == src and not isinstance(r["error"], str)]
    if errs:
        print(f"\n{src}: median |error| {statistics.median(errs):.1%}, worst {max(errs):.1%} over {len(errs)} cases")
PYEOF
