#!/usr/bin/env bash
# Sets up, builds, exports a small GPT with PyTorch, inspects it and the paper's GPT-3 39B
# (shape-only), then trains the small GPT on one CPU device with alpa-run and shows the loss
# going down; plans the same GPT data-parallel for 4 local CPU ranks and trains it on 4 MPI ranks,
# showing its loss next to the single device's, and again under Megatron-LM tensor x data
# parallelism, as the plan --method auto chooses (2 pipeline stages of 2 ranks, each sharded by the ILP, with
# a trace of the pipeline), and as Megatron-LM's tp2 x pp2; finally plans GPT-3 2.6B on 8 V100s
# (shard-parallel, one stage) and re-costs the plan, and searches GPT-3 39B on 64 V100s with the
# full hierarchical search (pipeline stages on submeshes, each sharded).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
OUT=${ALPA_DEMO_DIR:-build/demo}
mkdir -p "$OUT/data"
echo "== exporting a small GPT with torch.onnx.export"
/usr/bin/python3 scripts/models/generate.py gpt test -o "$OUT/gpt_test.onnx"
echo "== alpa-plan inspect $OUT/gpt_test.onnx --batch 8"
build/apps/alpa-plan inspect "$OUT/gpt_test.onnx" --batch 8
echo "== GPT-3 39B (shape-only, the paper's largest GPT)"
/usr/bin/python3 scripts/models/generate.py gpt 39B -o "$OUT/gpt_39b.onnx"
build/apps/alpa-plan inspect "$OUT/gpt_39b.onnx"
echo "== training the small GPT on one CPU device (8 fixed samples, Adam)"
/usr/bin/python3 - "$OUT/data" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(0)
ids = rng.integers(0, 512, (8, 17), dtype=np.int64)   # next-token prediction on 8 sequences
np.save(sys.argv[1] + "/input_ids.npy", ids[:, :16].copy())
np.save(sys.argv[1] + "/labels.npy", ids[:, 1:].copy())
PY
build/apps/alpa-run --model "$OUT/gpt_test.onnx" --batch 8 --data "$OUT/data" --steps 20 \
  --optimizer adam --lr 0.003 --metrics "$OUT/metrics.jsonl"
/usr/bin/python3 - "$OUT/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"loss: step 1 {rows[0]['loss']:.4f} -> step {rows[-1]['step']} {rows[-1]['loss']:.4f}")
PY
echo "== the same training on 4 MPI ranks: a data-parallel plan for local:4"
build/apps/alpa-plan search "$OUT/gpt_test.onnx" --batch 8 --cluster local:4 --method data --optimizer adam \
  --precision fp32 -o "$OUT/plan_local4.json"
MPI_ROOT_FLAG=()
if [ "$(id -u)" = 0 ]; then MPI_ROOT_FLAG=(--allow-run-as-root); fi
# train_4ranks PLAN NAME LABEL [alpa-run flags]: 20 steps on 4 ranks (metrics_NAME.jsonl), then the losses next
# to one device's and the bytes each rank sent per step.
train_4ranks() {
  OPENBLAS_NUM_THREADS=1 mpirun "${MPI_ROOT_FLAG[@]}" --oversubscribe --bind-to none -np 4 \
    build/apps/alpa-run --plan "$1" --model "$OUT/gpt_test.onnx" --data "$OUT/data" --steps 20 \
    --lr 0.003 --metrics "$OUT/metrics_$2.jsonl" "${@:4}"
  /usr/bin/python3 - "$OUT/metrics.jsonl" "$OUT/metrics_$2.jsonl" "$3" <<'PY'
import json, sys
one = [json.loads(l) for l in open(sys.argv[1])]
ranks = [json.loads(l) for l in open(sys.argv[2])]
print(f"step  loss (1 device)  loss ({sys.argv[3]})  bytes/step (rank 0): all-gather  all-reduce  reduce-scatter  send")
for a, b in zip(one, ranks):
    if a["step"] in (1, 2, 5, 10, 20):
        c = b["comm_bytes"]
        print(f"{a['step']:4d}  {a['loss']:15.6f}  {b['loss']:{len(sys.argv[3]) + 7}.6f}  {c['all_gather']:>30d}"
              f"  {c['all_reduce']:>10d}  {c['reduce_scatter']:>14d}  {c.get('send', 0):>4d}")
PY
}
train_4ranks "$OUT/plan_local4.json" 4ranks "4 ranks"
echo "== again with Megatron-LM tensor parallelism: tp 2 x dp 2 on the 4 ranks (vocab-parallel embedding and loss)"
build/apps/alpa-plan search "$OUT/gpt_test.onnx" --batch 8 --cluster local:4 --method megatron --tp 2 --pp 1 --dp 2 \
  --optimizer adam --precision fp32 -o "$OUT/plan_megatron4.json" | sed -n '4,6p'
train_4ranks "$OUT/plan_megatron4.json" megatron "tp2 x dp2"
echo "== and as the hierarchical search chooses it: alpa-plan search --method auto on local:4, 4 microbatches"
echo "   (the inter-operator DP picks stages and submeshes, an ILP shards each stage: here it splits"
echo "   the batch in some nodes and gathers it before tensor-parallel MLPs and the vocab-parallel head;"
echo "   the tied embedding's gradient is exchanged between the two stages once per step)"
build/apps/alpa-plan search "$OUT/gpt_test.onnx" --batch 8 --cluster local:4 --method auto --layers 4 --microbatches 4 \
  --optimizer adam --precision fp32 -o "$OUT/plan_auto4.json" --trace "$OUT/pipeline_predicted.json" | sed -n '4,8p'
train_4ranks "$OUT/plan_auto4.json" auto "auto plan" --trace "$OUT/pipeline_trace.json"
echo "   the pipeline's timeline, measured: $OUT/pipeline_trace.json; predicted by the plan:"
echo "   $OUT/pipeline_predicted.json (open both in https://ui.perfetto.dev)"
echo "== and in Megatron-LM's 3-D layout: 2 pipeline stages of tensor parallelism 2 on the 4 ranks"
build/apps/alpa-plan search "$OUT/gpt_test.onnx" --batch 8 --cluster local:4 --method megatron --tp 2 --pp 2 --dp 1 \
  --microbatches 4 --optimizer adam --precision fp32 -o "$OUT/plan_3d.json" | sed -n '3,6p'
train_4ranks "$OUT/plan_3d.json" 3d "tp2 x pp2"
echo "== planning GPT-3 2.6B (shape-only) on one p3.16xlarge host (8 V100s), Adam, fp16"
/usr/bin/python3 scripts/models/generate.py gpt 2.6B -o "$OUT/gpt_2.6b.onnx"
build/apps/alpa-plan search "$OUT/gpt_2.6b.onnx" --cluster builtin:p3.16xlarge:1 --method shard --microbatches 128 \
  -o "$OUT/plan_2.6b.json"
echo "== alpa-plan cost $OUT/plan_2.6b.json (re-validates and re-costs the plan)"
build/apps/alpa-plan cost "$OUT/plan_2.6b.json" --model "$OUT/gpt_2.6b.onnx"
echo "== the hierarchical search (--method auto) for GPT-3 39B (shape-only) on 8 p3.16xlarge hosts (64 V100s)"
echo "   (Alpa's paper: 2393 s to compile this plan; about 40 s here on 2 cores)"
/usr/bin/python3 scripts/models/generate.py gpt 39B -o "$OUT/gpt_39b.onnx"
build/apps/alpa-plan search "$OUT/gpt_39b.onnx" --cluster builtin:p3.16xlarge:8 -o "$OUT/plan_39b.json"
