# shmkit developer commands. `make help` lists them.
.DEFAULT_GOAL := help
PY ?= python3

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: install
install: ## Install shmkit with test, bench and dev extras (editable)
	$(PY) -m pip install -e '.[test,bench,dev]'

.PHONY: build-dev
build-dev: ## Rebuild the extension in place (release profile)
	$(PY) -m pip install -e . --no-deps --no-build-isolation -q

.PHONY: format
format: ## Format Rust and Python
	cargo fmt
	$(PY) -m ruff format python tests benches examples tools .ci/check-wheel.py .ci/smoke.py
	$(PY) -m ruff check --fix python tests benches examples tools .ci/check-wheel.py .ci/smoke.py

.PHONY: lint
lint: ## cargo fmt --check, clippy -D warnings, ruff, mypy, stubtest
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --no-default-features -- -D warnings
	$(PY) -m ruff format --check python tests benches examples tools .ci/check-wheel.py .ci/smoke.py
	$(PY) -m ruff check python tests benches examples tools .ci/check-wheel.py .ci/smoke.py
	$(PY) -m mypy
	$(PY) -m mypy.stubtest shmkit._native --allowlist .stubtest-allowlist

.PHONY: test
test: ## The README's test command (pytest also runs cargo test)
	$(PY) -m pytest

FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz: ## Fuzz every target for FUZZ_SECONDS each (nightly + cargo-fuzz; crashes in fuzz/artifacts)
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh

.PHONY: loom
loom: ## Model-check the owner lock with loom (every interleaving up to LOOM_MAX_PREEMPTIONS, default 3)
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=$${LOOM_MAX_PREEMPTIONS:-3} \
		cargo test --no-default-features --release --lib sys::lock::model

.PHONY: bench
bench: ## criterion benches, then the Python benchmarks against the peers
	cargo bench --no-default-features
	$(PY) benches/bench_region.py
	$(PY) benches/bench_memif.py
	$(PY) benches/bench_netmap.py
	$(PY) benches/compare.py

.PHONY: all
all: format lint build-dev test ## Format, lint, build, test
