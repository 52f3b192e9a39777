# Keel — developer entry points. Everything a fresh machine needs is the Rust toolchain.

CARGO        ?= cargo
BENCH_DIR    ?= ./bench-data
BENCH_SECS   ?= 10s
RESULTS      ?= results/storage-$(shell date -u +%Y%m%dT%H%M%SZ)

.PHONY: all build run test torture bench bench-storage bench-broker fmt lint fuzz clean

all: build

build:
	$(CARGO) build --release --workspace --locked

## The broker on this machine: one shard per core, native protocol on 127.0.0.1:9400, data in
## ./keel-data. Stop it with Ctrl-C (clean shutdown). Extra flags: make run ARGS="--cores 1".
run:
	$(CARGO) build --release --locked --bin keel
	target/release/keel serve $(ARGS)

## All tests: unit, model-based property tests, corruption and fault tests, and the SIGKILL crash
## test (100 cycles). Must pass on a 2-core machine well within CI's limit.
test:
	$(CARGO) test --workspace --locked -- --show-output

## Long runs: 1000 SIGKILL cycles and 5000 cases per model property.
torture:
	KEEL_CRASH_CYCLES=1000 KEEL_MODEL_CASES=5000 $(CARGO) test --release --locked -p keel-storage --test crash --test model -- --nocapture

## The storage benchmark: the disk's own limit, then the log against it (fsync=never and
## fsync=always with 8 appenders), recovery of a 1 GiB log after SIGKILL. Results (JSON) land in
## $(RESULTS)/ and a summary is printed.
bench-storage: build
	BENCH_DIR=$(BENCH_DIR) BENCH_SECS=$(BENCH_SECS) RESULTS=$(RESULTS) ci/bench-storage.sh

## The broker benchmark: the disk's baseline, then `keel serve` driven by keel-bench over the
## native protocol — produce throughput (fsync=never), produce latency at 50 MB/s (acks=all,
## fsync=always), end-to-end latency at 200 MB/s — and the broker's peak RSS. 60 s per run
## (BROKER_SECS=10s make bench-broker for less); JSON in results/broker-*/ and a summary.
bench-broker: build
	BENCH_DIR=$(BENCH_DIR) ci/bench-broker.sh

## The standard workloads (bench/workloads/) against Keel's native protocol and its Kafka
## listener, side by side, with the loopback and disk baselines of the same run: one
## `keel-bench run` per workload; results/bench-*/<workload>/{result.json,report.md,*.svg} and
## results/bench-*/summary.md. 60 s per workload and target (BENCH_DURATION=20s make bench).
bench: build
	BENCH_DIR=$(BENCH_DIR) ci/bench.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked

## Fuzz the decoders (needs cargo-fuzz: `cargo install cargo-fuzz`), 5 minutes each: the record
## batch decoder and the native protocol's frame + request decoder. Not run in CI.
fuzz:
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run batch_decode -- -max_total_time=300
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run request_decode -- -max_total_time=300

clean:
	$(CARGO) clean
