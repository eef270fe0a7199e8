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

SOAK_SECONDS ?= 300
.PHONY: soak
soak: ## Cross-object spray suite for SOAK_SECONDS per object kind (SHMKIT_SEED=n replays a run)
	SHMKIT_SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest tests/test_spray.py -s -q --timeout=0

FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz: ## Fuzz every target for FUZZ_SECONDS each (nightly + cargo-fuzz; crashes in fuzz/artifacts)
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh

# Each examined file (see .cargo/mutants.toml) with the test targets that exercise it: the
# lib's unit tests where the file has its own, plus the integration tests of its component.
# Only those are built and run for each of the hundreds of mutants (`cargo test
# --no-default-features --lib --test ...`); tests/queue.rs is left out (9 s a run), the queue
# header has its rules tested in layout.rs itself.
MUTANTS_FILES := \
	region/name.rs=--lib,--test,region \
	queue/layout.rs=--lib,--test,queue_repair,--test,peer_words,--test,fuzz_corpus \
	memif/wire.rs=--lib \
	netmap/kring.rs=--lib,--test,netmap,--test,fuzz_corpus \
	msgring.rs=--test,msgring,--test,msgring_repair,--test,fuzz_corpus \
	msgring/repair.rs=--test,msgring,--test,msgring_repair,--test,fuzz_corpus \
	msgring/reclaim.rs=--test,msgring,--test,msgq,--test,fuzz_corpus \
	objects/reader.rs=--test,objects,--test,fuzz_corpus \
	sys/lock/mod.rs=--lib,--test,region
MUTANTS_JOBS ?= 1
.PHONY: mutants
mutants: ## Mutation-test the validation and protocol modules (cargo-mutants; fails if a mutant is missed)
	@command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
	@status=0; for spec in $(MUTANTS_FILES); do \
		file=$${spec%%=*}; args=; \
		for t in $$(echo "$${spec#*=}" | tr , ' '); do args="$$args --cargo-arg=$$t"; done; \
		echo "== rust/src/$$file"; mkdir -p "target/mutants-out/$$file"; \
		nice -n 10 cargo mutants -j $(MUTANTS_JOBS) -F "^rust/src/$$file:" -o "target/mutants-out/$$file" $$args; \
		rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 3 ] || status=1; \
	done; \
	cat target/mutants-out/*/mutants.out/missed.txt target/mutants-out/*/*/mutants.out/missed.txt 2>/dev/null \
		| sed 's/^/MISSED: /'; \
	exit $$status

.PHONY: loom
loom: ## Model-check the owner lock and the queue's slot protocol with loom (every interleaving up to LOOM_MAX_PREEMPTIONS, default 3; some queue models cap it at 2)
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=$${LOOM_MAX_PREEMPTIONS:-3} \
		cargo test --no-default-features --release --lib -- sys::lock::model queue::ring::model

.PHONY: bench
bench: ## criterion benches, then the Python benchmarks against the peers
	cargo bench --no-default-features
	$(PY) benches/bench_region.py
	$(PY) benches/bench_memif.py
	$(PY) benches/bench_netmap.py
	$(PY) benches/bench_vale.py
	$(PY) benches/compare.py
	$(PY) benches/bench_objects.py

.PHONY: all
all: format lint build-dev test ## Format, lint, build, test
