# The two commands: `make demo` runs the demo pipeline, `make test` runs the tests.
# Both create .venv with pinned dependencies when it is missing.
.PHONY: demo demo-dpo test lint setup

setup:
	@bash scripts/bootstrap.sh

demo: setup
	@bash scripts/demo.sh

# the demo's data tuned with DPO instead of a reward model and RL (docs/dpo.md)
demo-dpo: setup
	@DEMO_CONFIG=examples/demo/pipeline_dpo.yaml DEMO_OUTPUT_DIR=runs/demo_dpo bash scripts/demo.sh

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
