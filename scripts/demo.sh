#!/usr/bin/env bash
# The demo on the embedded default model (SmolLM2-135M-Instruct, bundled) and the shipped data.
set -euo pipefail
cd "$(dirname "$0")/.."
RLHFKIT=.venv/bin/rlhfkit
OUT=${DEMO_OUTPUT_DIR:-runs/demo}
mkdir -p "$OUT"

echo "== rlhfkit demo, partial: it shows data inspection and model loading."
echo "== Reward-model training exists as \`rlhfkit train-reward\` (see the README); RL tuning,"
echo "== evaluation and the one-command pipeline are not part of this release yet."
echo
echo "== 1. load the bundled model (converted into the cache on first use) and ask it something"
$RLHFKIT model check --prompt "Summarize in one sentence: the library will open until ten at night during exams."
echo
echo "== 2. inspect the preference dataset"
$RLHFKIT data inspect examples/summarize_preferences.jsonl --plot "$OUT/data" \
    instruction="Summarize in less than 50 words."
echo
echo "== 3. inspect the prompt dataset"
$RLHFKIT data inspect examples/summarize_prompts.jsonl instruction="Summarize in less than 50 words."
echo
echo "== done: token-length histograms are in $OUT/data"
