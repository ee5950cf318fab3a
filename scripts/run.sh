#!/usr/bin/env bash
# The main job on its built-in default: writes the project's sample capture and
# replays it into Parquet under out/data. Needs only Rust and Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -q -p amoskys-pipeline
bin=target/release/amoskys-pipeline
mkdir -p out
"$bin" generate-capture out/sample.pcap
"$bin" replay out/sample.pcap --out out/data "$@"
cat <<'MSG'

Tables are in out/data (flows/, features/, feature_metadata.json). For example:
  python3 -m pip install duckdb   # or use the duckdb CLI
  python3 -c "import duckdb; print(duckdb.sql(\"SELECT entity, window_start, packets_out, distinct_dst_ports_out FROM read_parquet('out/data/features/**/*.parquet', hive_partitioning=true) ORDER BY distinct_dst_ports_out DESC LIMIT 5\"))"
MSG
