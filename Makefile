# The two commands: `make demo` runs the demo pipeline, `make test` runs the tests.
# Both create .venv with pinned dependencies when it is missing.
.PHONY: demo test lint setup

setup:
	@bash scripts/bootstrap.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
