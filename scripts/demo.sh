#!/usr/bin/env bash
# Sets up, builds, generates a small GPT with PyTorch's exporter and inspects it, then inspects
# the paper's GPT-3 39B (shape-only) — the planner's first job until the search lands.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
OUT=${ALPA_DEMO_DIR:-build/demo}
mkdir -p "$OUT"
echo "== exporting a small GPT with torch.onnx.export"
/usr/bin/python3 scripts/models/generate.py gpt test -o "$OUT/gpt_test.onnx"
echo "== alpa-plan inspect $OUT/gpt_test.onnx --batch 8"
build/apps/alpa-plan inspect "$OUT/gpt_test.onnx" --batch 8
echo "== GPT-3 39B (shape-only, the paper's largest GPT)"
/usr/bin/python3 scripts/models/generate.py gpt 39B -o "$OUT/gpt_39b.onnx"
build/apps/alpa-plan inspect "$OUT/gpt_39b.onnx"
