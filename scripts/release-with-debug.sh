#!/usr/bin/env bash
# A release binary whose debug information (line tables) is kept apart:
#   target/release-debug/amoskys-pipeline        stripped, as `cargo build --release` makes it
#   target/release-debug/amoskys-pipeline.debug  its line tables; gdb, addr2line and
#                                                backtrace tools find it by the binary's
#                                                .gnu_debuglink section
# Needs objcopy (binutils, which gcc brings).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --profile release-debug -q -p amoskys-pipeline
bin=target/release-debug/amoskys-pipeline
objcopy --only-keep-debug "$bin" "$bin.debug"
objcopy --strip-debug --add-gnu-debuglink="$bin.debug" "$bin"
ls -l "$bin" "$bin.debug" >&2
