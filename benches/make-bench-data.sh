#!/usr/bin/env bash
# Builds the benchmark capture (about 2.5 M packets, 260 MB) into
# target/bench-data/bench.pcap with ../shared/data/bench/make-bench-pcap.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench-data/bench.pcap
[[ -f $out ]] && { echo "$out exists"; exit 0; }
mkdir -p "$(dirname "$out")"
bash ../shared/data/bench/make-bench-pcap.sh "$out"
