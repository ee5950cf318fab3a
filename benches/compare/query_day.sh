#!/usr/bin/env bash
# A day of features, queried by DataFusion (`amoskys-pipeline sql`) and by DuckDB
# on the same Parquet files, in the same run, rounds interleaved so machine noise
# hits both alike. Prints each query's medians, both tools' start-up cost
# (SELECT 1) and the ratios, after checking the two give the same rows.
#
#     benches/compare/query_day.sh
#
# The day is the sample capture generator's office network over 24 hours
# (32 clients), replayed once into target/bench-data/day (a release build and a
# replay: minutes on 2 cores the first time, cached after). AMOSKYS_BENCH_ROUNDS
# (default 7) sets the rounds; AMOSKYS_BIN uses an optimised binary already
# built. Needs the test venv (scripts/setup.sh --test).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${AMOSKYS_BENCH_ROUNDS:-7}
if [[ -n ${AMOSKYS_BIN:-} ]]; then
    bin=$(realpath "$AMOSKYS_BIN")
else
    cargo build -q --release -p amoskys-pipeline
    bin=$PWD/target/release/amoskys-pipeline
fi
day=$PWD/target/bench-data/day
if [[ ! -d $day/features ]]; then
    mkdir -p target/bench-data
    "$bin" generate-capture target/bench-data/day.pcap --hosts 32 --minutes 1440 >&2
    "$bin" replay target/bench-data/day.pcap --out "$day" --no-progress >&2
fi
exec .venv/bin/python benches/compare/query_day.py "$bin" "$day" "$rounds"
