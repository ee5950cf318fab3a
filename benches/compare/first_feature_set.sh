#!/usr/bin/env bash
# Replay throughput of the full feature catalogue against the first feature set
# exactly as it shipped: the release binary of commit c5a5b8e (54 packet features,
# no event, cross-source or history features) as "old", the current one as
# "new", on the same capture, timed by replay_speed.sh (interleaved rounds,
# medians and their ratio, with 1 and 2 workers).
#
#     benches/compare/first_feature_set.sh [CAPTURE]
#
# CAPTURE defaults to $AMOSKYS_BENCH_PCAP, else target/bench-data/bench.pcap
# (benches/make-bench-data.sh). AMOSKYS_BENCH_ROUNDS (default 3) sets the rounds.
# The old binary is built once, from a git worktree under target/first-set (a
# full release build: minutes on 2 cores the first time, cached after).
set -euo pipefail
cap=${1:-${AMOSKYS_BENCH_PCAP:-}}
[[ -n $cap ]] && cap=$(realpath "$cap")
cd "$(dirname "$0")/../.."
root=$PWD
cap=${cap:-$root/target/bench-data/bench.pcap}
first=$(git rev-parse --verify "${FIRST_SET_COMMIT:-c5a5b8e}^{commit}")
rounds=${AMOSKYS_BENCH_ROUNDS:-3}
[[ -f $cap ]] || { echo "no capture at $cap: run benches/make-bench-data.sh or pass one" >&2; exit 2; }

wt=$root/target/first-set/src
git worktree prune
if [[ -d $wt && $(git -C "$wt" rev-parse HEAD) != "$first" ]]; then
    git -C "$wt" checkout -q --detach "$first"
elif [[ ! -d $wt ]]; then
    mkdir -p "$root/target/first-set"
    git worktree add -q --detach "$wt" "$first" >&2
fi
echo "building the first feature set ($first) and the current catalogue (release)" >&2
(cd "$wt" && CARGO_TARGET_DIR=$root/target/first-set/target cargo build -q --release -p amoskys-pipeline)
cargo build -q --release -p amoskys-pipeline
old=$root/target/first-set/target/release/amoskys-pipeline
new=$root/target/release/amoskys-pipeline

# The timing itself is replay_speed.sh's: interleaved rounds, medians, ratio.
AMOSKYS_BENCH_ROUNDS=$rounds exec "$root/benches/compare/replay_speed.sh" "$old" "$new" "$cap"
