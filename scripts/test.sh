#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust tests, then the end-to-end tests
# that replay the captures in ../shared/data and check the output with tshark,
# capinfos, DuckDB and pyarrow, and run the long-running job against real
# components the tests start on loopback (mosquitto, net-snmp snmpd, snmpsim,
# logger, curl, openssl, live capture on lo). Installs what it needs
# (scripts/setup.sh --test).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step() { printf '\n==> [%4ds] %s\n' "$((SECONDS - started))" "$*" >&2; }
step "setup"
scripts/setup.sh --test

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step "cargo fmt --check"
cargo fmt --all -- --check
# --all-targets type-checks the benches too; building them would compile the
# whole stack (DataFusion included) a second time, with release optimisation.
step "cargo clippy"
cargo clippy -q --workspace --all-targets -- -D warnings
step "cargo test"
cargo test -q --workspace
step "end-to-end tests"
cargo build -q -p amoskys-pipeline
AMOSKYS_BIN="$PWD/target/debug/amoskys-pipeline" .venv/bin/python -m pytest -q -p no:cacheprovider tests
step "done"
