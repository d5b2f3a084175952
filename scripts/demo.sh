#!/usr/bin/env bash
# The demo: the whole RLHF pipeline on the embedded default model (SmolLM2-135M-Instruct,
# bundled) and the shipped summarization data. Run again, it skips finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
# DEMO_CONFIG=examples/demo/pipeline_dpo.yaml (make demo-dpo): the same data tuned with DPO
CONFIG=${DEMO_CONFIG:-examples/demo/pipeline.yaml}
OUT=${DEMO_OUTPUT_DIR:-runs/demo}
.venv/bin/rlhfkit run --config "$CONFIG" "output_dir=$OUT" "$@"
echo
echo "== open $OUT/report.html in a browser; curves: .venv/bin/tensorboard --logdir $OUT"
