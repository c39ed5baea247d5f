.PHONY: demo test lint format bench
demo:  ## install and train on the bundled examples
	bash scripts/demo.sh
test:  ## install and run linters + tests (what CI runs)
	bash scripts/test.sh
lint:
	.venv/bin/ruff check src tests benchmarks && .venv/bin/ruff format --check src tests benchmarks
format:
	.venv/bin/ruff check --fix src tests benchmarks && .venv/bin/ruff format src tests benchmarks
bench:
	.venv/bin/python -m benchmarks
