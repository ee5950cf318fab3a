#!/usr/bin/env bash
# Replay throughput of the full feature catalogue against the first feature set
# exactly as it shipped: the release binary of commit c5a5b8e (54 packet features,
# no event, cross-source or history features), on the same capture, in the same
# run, rounds interleaved so machine noise hits both alike. Prints each round,
# the medians and their ratio.
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

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
summary=$("$new" replay -w 1 --out "$tmp/count" "$cap" 2>&1) || { echo "$summary" >&2; exit 1; }
packets=$(sed -n 's/^replayed [0-9]* file(s)[^:]*: \([0-9]*\) packets.*/\1/p' <<<"$summary")
rm -rf "$tmp/count"

# Seconds one replay with one worker takes (output directory made and removed
# outside the timing).
run() {
    local bin=$1 out=$tmp/out
    rm -rf "$out"
    local t0 t1
    t0=$(date +%s.%N)
    "$bin" replay -w 1 --out "$out" "$cap" >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
    t1=$(date +%s.%N)
    rm -rf "$out"
    awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}'
}

old_s=() new_s=()
for ((r = 1; r <= rounds; r++)); do
    # Alternate which goes first, so neither always meets a warmer cache.
    if ((r % 2)); then
        o=$(run "$old")
        n=$(run "$new")
    else
        n=$(run "$new")
        o=$(run "$old")
    fi
    old_s+=("$o") new_s+=("$n")
    printf 'round %d: first set %.2f s, full catalogue %.2f s\n' "$r" "$o" "$n"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mo=$(median "${old_s[@]}")
mn=$(median "${new_s[@]}")
echo "capture: $cap (${packets:-?} packets)"
if [[ -n $packets ]]; then
    printf 'first feature set (54, %s): %.0f packets/s\n' "${first:0:7}" "$(awk -v p="$packets" -v s="$mo" 'BEGIN {print p / s}')"
    printf 'full catalogue (%s features): %.0f packets/s\n' \
        "$(grep -c '^| `' docs/FEATURES.md)" "$(awk -v p="$packets" -v s="$mn" 'BEGIN {print p / s}')"
fi
printf 'full / first throughput: %.1f %%\n' "$(awk -v o="$mo" -v n="$mn" 'BEGIN {print 100 * o / n}')"
