# One task runner for developers and CI: `make run`, `make test`, `make lint`, `make deploy-check`,
# `make models`.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Builds are kept outside the clone so that every clone (and CI) reuses them.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/aigronova/target

ORT_VERSION := 1.31.1
ORT_DIR := $(CURDIR)/.cache/onnxruntime
ORT_LIB := $(ORT_DIR)/libonnxruntime.so.$(ORT_VERSION)
export ORT_DYLIB_PATH ?= $(ORT_LIB)
# Microsoft's ONNX Runtime builds queue usage telemetry unless this is set before they load: the
# tests and benchmarks load the runtime in their own processes (the binary sets it for itself).
export ORT_DISABLE_TELEMETRY ?= 1

DEPLOY_VENV := $(CURDIR)/.cache/deploy-venv
PROMTOOL := $(CURDIR)/.cache/promtool/promtool

HTTP_ADDR ?= 127.0.0.1:8080
DATA_DIR ?= ./data

.PHONY: help run build test lint deploy-check fmt bench models onnxruntime clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

run: onnxruntime ## Build and start the whole platform (aigronova up) on $(HTTP_ADDR)
	cargo run --bin aigronova -- up --http-addr $(HTTP_ADDR) --data-dir $(DATA_DIR)

build: ## Build every crate
	cargo build --workspace

test: onnxruntime ## Run every test (needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379)
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast; \
	else \
		cargo test --workspace --no-fail-fast; \
	fi

lint: ## rustfmt check and clippy with warnings denied
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

BENCH_VENV := $(CURDIR)/.cache/bench-venv

bench: onnxruntime $(BENCH_VENV)/.installed ## Benchmarks in release mode, side by side with their reference (see BENCHMARKS.md)
	BENCH_PYTHON=$(BENCH_VENV)/bin/python cargo bench -p aigronova-e2e --bench gateway --bench audit --bench health --bench fin

$(BENCH_VENV)/.installed: tests/benches/python/requirements.txt
	rm -rf $(BENCH_VENV)
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/benches/python/requirements.txt
	touch $@

deploy-check: $(DEPLOY_VENV)/.installed $(PROMTOOL) ## Validate deploy/ offline: chart, manifests, Dockerfiles, Terraform, workflow, alerts
	$(DEPLOY_VENV)/bin/python deploy/check/check.py --promtool $(PROMTOOL)

$(DEPLOY_VENV)/.installed: deploy/requirements.txt deploy/constraints.txt
	rm -rf $(DEPLOY_VENV)
	python3 -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet --disable-pip-version-check -r deploy/requirements.txt
	touch $@

$(PROMTOOL):
	bash deploy/check/fetch-promtool.sh $(dir $(PROMTOOL))

fmt: ## Format the code
	cargo fmt --all

models: ## Retrain the models and check the committed files are reproduced byte for byte
	bash models/check_reproducible.sh

onnxruntime: $(ORT_LIB) ## Fetch libonnxruntime.so from the onnxruntime wheel of version $(ORT_VERSION)

$(ORT_LIB):
	@echo "Fetching ONNX Runtime $(ORT_VERSION) from the onnxruntime wheel"
	@mkdir -p $(ORT_DIR)/wheel
	python3 -m pip download --quiet --no-deps --only-binary=:all: --dest $(ORT_DIR)/wheel onnxruntime==$(ORT_VERSION)
	python3 -c 'import glob, shutil, sys, zipfile; \
		wheel = glob.glob("$(ORT_DIR)/wheel/onnxruntime-$(ORT_VERSION)-*.whl")[0]; \
		member = "onnxruntime/capi/libonnxruntime.so.$(ORT_VERSION)"; \
		zf = zipfile.ZipFile(wheel); \
		shutil.copyfileobj(zf.open(member), open("$(ORT_LIB).tmp", "wb"))'
	@mv $(ORT_LIB).tmp $(ORT_LIB)
	@rm -rf $(ORT_DIR)/wheel
	@echo "ONNX Runtime library: $(ORT_LIB)"

clean: ## Remove build outputs and the fetched runtime (not ./data)
	cargo clean
	rm -rf .cache
