# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Both create .venv and install the project when it is missing or pyproject.toml changed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Telemetry off everywhere (these machines have no internet; nobody opted in).
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
# timm ships huggingface_hub: never let it reach for the network (weights are local files).
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
PYTEST_ARGS ?=
# Test workers: one per core, at most 4 (each may start its own servers and team stack).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

.PHONY: install run serve stack-up stack-down bench bench-peers bench-full bench-backbone bench-heldout bench-adaptation test test-fast lint demo-data validate clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo-data: $(STAMP)
	autotransfer demo-data

validate: $(STAMP)
	autotransfer validate

# The main job: build the demo data, then run the Prefect retrain flow on it (validate ->
# pretrain -> similarity -> plan -> train -> evaluate -> register). Unchanged stages are
# cache hits; unchanged data and params since the champion skip retraining altogether.
run: $(STAMP)
	autotransfer demo-data
	autotransfer run
	@echo
	@autotransfer summary

# Nightly retraining: a Prefect server on 127.0.0.1:4200 (started unless one answers), the
# `retrain/nightly` deployment on the process pool, and a worker running in the foreground.
serve: $(STAMP)
	python -m flows.deploy --serve

# The team stack on loopback (README "Running as a team"): PostgreSQL, an S3 server (moto),
# MLflow server (PostgreSQL + S3 artifacts), Prefect server (PostgreSQL), a process worker,
# and the DVC remote `team` in .dvc/config.local. State and logs in .stack/.
stack-up: $(STAMP)
	autotransfer stack up

stack-down: $(STAMP)
	autotransfer stack down

# Benchmarks (measurements, not tests): results in bench/results/, summary in BENCHMARKS.md.
bench: $(STAMP)
	cd bench && python efficiency.py --repeats 3 --epochs 1
	cd bench && python probe_cache.py --repeats 3 --pretrain-epochs 2
	cd bench && python orchestration.py --repeats 3
	cd bench && python similarity_cost.py --sizes 1000 2000 5000 --repeats 3
	cd bench && python strategy_selection.py --seeds 0 --scenarios quick
	cd bench && python report.py

# Peers (fastai, Lightning, skada) are bench-only: a venv that sees .venv and adds them, never a
# dependency of the project.
PEERS := .venv-peers
$(PEERS)/.installed: $(STAMP)
	@test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	echo "import site; site.addsitedir('$(CURDIR)/$(VENV)/lib/python3.11/site-packages')" \
		> $(PEERS)/lib/python3.11/site-packages/autotransfer-venv.pth
	$(PEERS)/bin/python -m pip install --quiet "fastai==2.8.12" "lightning==2.6.6" "skada==0.6.0" "skorch==1.4.0"
	@touch $@

bench-peers: $(PEERS)/.installed
	cd bench && ../$(PEERS)/bin/python peers.py --seeds 0 1 2 --scenarios quick
	cd bench && python report.py

# Every table of BENCHMARKS.md §1-§7 (about 4 h on 2 cores: §5 ~2 h, §7 ~50 min). §5 is the synth-digits resnet18 at
# 32 px (7 scenarios x 3 seeds); the ImageNet lite0 backbone at 64 px is `bench-backbone` (§10),
# several hours on CPU per scenario's 3 seeds. Resumable: bench/full.py records each step with a
# fingerprint of the code it measured (bench/results/full_run.json) and a rerun skips the steps
# done at this code; dann.py also reuses its runs in bench/results/dann_runs/ whose setup matches.
bench-full: $(STAMP) $(PEERS)/.installed
	cd bench && python full.py --peers-python ../$(PEERS)/bin/python

# Held-out sets (bench/heldout_data.py: letters, scenes, textures; never used to design anything before
# BENCHMARKS.md §11): every strategy, the rules' pick and a scikit-learn probe at 3, 10, 30 labels per class,
# on the design data (seed 0) and on data built afresh (seed 1). About 1 h 15 min on 2 cores; resumable.
bench-heldout: $(STAMP)
	cd bench && python heldout.py --labels 3 10 30 --seeds 0
	cd bench && python heldout.py --labels 3 10 30 --seeds 0 --data-seed 1 --strategies linear_probe finetune_top finetune_all
	cd bench && python report.py

# Adaptation from the ImageNet backbone (BENCHMARKS.md §14): letters -> letters-m and digits -> digits-m, no target labels,
# source_only / dann / dann_mcc_pl, skada's DANN (the peer) and a bound with the target's labels, 5 seeds.
# About 2 h 20 min on 2 cores; resumable.
bench-adaptation: $(STAMP) $(PEERS)/.installed
	cd bench && ../$(PEERS)/bin/python adaptation.py --pairs letters:letters-m digits:digits-m --seeds 0 1 2 3 4
	cd bench && python report.py

bench-backbone: $(STAMP)
	cd bench && python strategy_selection.py --scenarios 'similar, all labels' --seeds 0 1 2
	cd bench && python report.py

# The full suite, what CI runs (12-13.5 minutes on 2 cores with two workers).
test: $(STAMP)
	$(PYTEST) --durations=15 $(PYTEST_ARGS)

# While iterating: everything but the slow and the scale-out tests (under 3 minutes).
test-fast: $(STAMP)
	$(PYTEST) -m "not slow and not scaleout" $(PYTEST_ARGS)

# Style (ruff lint + format), types (mypy, strict, on src/) and the layer contracts (import-linter).
lint: $(STAMP)
	$(BIN)/ruff check src flows tasks examples
	$(BIN)/ruff format --check src flows tasks examples
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf reports models .pytest_cache
