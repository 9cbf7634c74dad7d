#!/usr/bin/env bash
# Benchmark: single-device CPU training step time and peak memory, alpa-run vs PyTorch, side by
# side on the same GPT (6 layers, hidden 512, seq 256, batch 8; vocab 512 by default), the same
# data and the same thread count. Target (issue 3): alpa-run <= 1.5x PyTorch's step time.
# usage: scripts/bench/train_gpt.sh [THREADS] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${1:-$(nproc)}
STEPS=${2:-10}
OUT=${ALPA_BENCH_DIR:-build/bench}/train_gpt
mkdir -p "$OUT/data"
PY=/usr/bin/python3
OVR='{"layers": 6, "hidden": 512, "heads": 8, "seq": 256}'
$PY scripts/models/generate.py gpt test --layers 6 --hidden 512 --heads 8 --seq 256 --batch 8 \
  -o "$OUT/gpt.onnx" > /dev/null
$PY - "$OUT" "$STEPS" <<'PYEOF'
import numpy as np, sys, json
out, steps = sys.argv[1], int(sys.argv[2])
meta = json.load(open(out + "/gpt.json"))
rng = np.random.default_rng(0)
n = meta["batch"] * steps
v, s = meta["config"]["vocab"], meta["config"]["seq"]
np.save(out + "/data/input_ids.npy", rng.integers(0, v, (n, s), dtype=np.int64))
np.save(out + "/data/labels.npy", rng.integers(0, v, (n, s), dtype=np.int64))
PYEOF

export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
/usr/bin/time -f "%M" -o "$OUT/alpa_rss.txt" build/apps/alpa-run --model "$OUT/gpt.onnx" \
  --batch 8 --data "$OUT/data" --steps "$STEPS" --lr 0.01 --metrics "$OUT/alpa.jsonl" 2> /dev/null
/usr/bin/time -f "%M" -o "$OUT/torch_rss.txt" $PY scripts/bench/torch_train.py gpt "$OUT/gpt.onnx" \
  "$OUT/data" "$STEPS" "$THREADS" "$OVR" > "$OUT/torch.json"

$PY - "$OUT" "$THREADS" <<'PYEOF'
import json, sys, statistics
out, threads = sys.argv[1], sys.argv[2]
alpa = [json.loads(l) for l in open(out + "/alpa.jsonl")]
torch_run = json.load(open(out + "/torch.json"))
# Median over steps 2..N (step 1 includes first-touch allocation in both).
a_ms = statistics.median(r["step_ms"] for r in alpa[1:])
t_ms = statistics.median(torch_run["step_ms"][1:])
a_rss = int(open(out + "/alpa_rss.txt").read().split()[-1]) * 1024
t_rss = int(open(out + "/torch_rss.txt").read().split()[-1]) * 1024
a_peak = max(r["peak_bytes"] for r in alpa)
loss_rel = abs(alpa[-1]["loss"] - torch_run["losses"][-1]) / abs(torch_run["losses"][-1])
print(f"GPT L6 h512 s256 b8, {threads} threads, median step (steps 2..{len(alpa)})")
print(f"{'':12} {'step_ms':>10} {'peak_rss_MiB':>14} {'pool_peak_MiB':>14}")
print(f"{'alpa-run':12} {a_ms:10.1f} {a_rss/2**20:14.1f} {a_peak/2**20:14.1f}")
print(f"{'pytorch':12} {t_ms:10.1f} {t_rss/2**20:14.1f} {'-':>14}")
print(f"step-time ratio alpa/pytorch: {a_ms/t_ms:.2f}  (target <= 1.5)")
print(f"final loss: alpa {alpa[-1]['loss']:.6f} pytorch {torch_run['losses'][-1]:.6f} (rel diff {loss_rel:.1e})")
print(json.dumps({"alpa_step_ms": a_ms, "torch_step_ms": t_ms, "ratio": a_ms / t_ms,
                  "alpa_peak_rss_bytes": a_rss, "torch_peak_rss_bytes": t_rss,
                  "alpa_pool_peak_bytes": a_peak, "final_loss_rel_diff": loss_rel}))
PYEOF
