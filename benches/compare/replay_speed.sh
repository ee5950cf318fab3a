#!/usr/bin/env bash
# Replay throughput of two binaries on one capture, in the same run: rounds
# interleaved (alternating which goes first) so machine noise hits both alike,
# with 1 and with 2 workers. Prints each round, the medians and the ratio new/old.
#
#     benches/compare/replay_speed.sh OLD_BIN [NEW_BIN] [CAPTURE]
#
# NEW_BIN defaults to target/release/amoskys-pipeline; CAPTURE to
# $AMOSKYS_BENCH_PCAP, else target/bench-data/bench.pcap (benches/make-bench-data.sh),
# else ../shared/data/bench/zeek-echo-connections.pcap. AMOSKYS_BENCH_ROUNDS
# (default 3) sets the rounds. An OLD_BIN of another commit comes from e.g.
# `git worktree add /tmp/old REV && (cd /tmp/old && cargo build --release)`.
set -euo pipefail
old=${1:?usage: replay_speed.sh OLD_BIN [NEW_BIN] [CAPTURE]}
old=$(realpath "$old")
cd "$(dirname "$0")/../.."
new=$(realpath "${2:-target/release/amoskys-pipeline}")
cap=${3:-${AMOSKYS_BENCH_PCAP:-target/bench-data/bench.pcap}}
[[ -f $cap ]] || cap=../shared/data/bench/zeek-echo-connections.pcap
cap=$(realpath "$cap")
rounds=${AMOSKYS_BENCH_ROUNDS:-3}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
summary=$("$new" replay -w 1 --no-progress --out "$tmp/count" "$cap" 2>&1) || { echo "$summary" >&2; exit 1; }
packets=$(sed -n 's/^replayed [0-9]* file(s)[^:]*: \([0-9]*\) packets.*/\1/p' <<<"$summary")
rm -rf "$tmp/count"

# Seconds one replay takes (the output directory made and removed outside it).
run() {
    local bin=$1 workers=$2 out=$tmp/out t0 t1
    rm -rf "$out"
    t0=$(date +%s.%N)
    "$bin" replay -w "$workers" --no-progress --out "$out" "$cap" >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
    t1=$(date +%s.%N)
    rm -rf "$out"
    awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

echo "capture: $cap (${packets:-?} packets)"
for w in 1 2; do
    o_s=() n_s=()
    for ((r = 1; r <= rounds; r++)); do
        if ((r % 2)); then o=$(run "$old" $w); n=$(run "$new" $w); else n=$(run "$new" $w); o=$(run "$old" $w); fi
        o_s+=("$o") n_s+=("$n")
        printf -- '-w %d round %d: old %.2f s, new %.2f s\n' "$w" "$r" "$o" "$n"
    done
    mo=$(median "${o_s[@]}") mn=$(median "${n_s[@]}")
    printf -- '-w %d: old %.0f packets/s, new %.0f packets/s, new/old %.1f %%\n' "$w" \
        "$(awk -v p="$packets" -v s="$mo" 'BEGIN {print p / s}')" \
        "$(awk -v p="$packets" -v s="$mn" 'BEGIN {print p / s}')" \
        "$(awk -v o="$mo" -v n="$mn" 'BEGIN {print 100 * o / n}')"
done
