#!/usr/bin/env bash
# The main job on its built-in default (examples/default.toml): the long-running
# pipeline with syslog listeners on 127.0.0.1:5514 (UDP and TCP), Prometheus
# metrics on 127.0.0.1:9898 and Parquet under ./data, until Ctrl-C. Needs only
# Rust and Debian packages; nothing external has to run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -q -p amoskys-pipeline
cat >&2 <<'MSG'
Feed it from another terminal, for example:
  logger -n 127.0.0.1 -P 5514 -d -t sshd "Failed password for root from 203.0.113.9 port 4242 ssh2"
  logger -n 127.0.0.1 -P 5514 -T --rfc5424 -t app "hello over TCP"
  curl -s 127.0.0.1:9898/metrics | grep amoskys_
Files are finished every minute and at Ctrl-C (every accepted record is written, then
it exits). Read them with the job's own SQL, or with DuckDB (installed in .venv):
  target/release/amoskys-pipeline sql --data data "SELECT ts, entity, appname, auth_kind, auth_remote FROM events"
  target/release/amoskys-pipeline sql --data data "SELECT entity, window_start, syslog_messages, auth_failures_as_remote FROM features"
  .venv/bin/duckdb -c "SELECT ts, entity, appname, message, auth_kind, auth_remote FROM read_parquet('data/events/**/*.parquet', hive_partitioning=true)"
MSG
exec target/release/amoskys-pipeline --default "$@"
