"""Does a change alter what replay writes? Replays every capture under
../shared/data/pcap (or the given folders) with two binaries and compares the
flows, features and alerts tables row for row (all columns, sorted; alert ids
included). Prints one line per capture that differs and a summary; exits 1 if
any table differs, 2 on a usage error.

    .venv/bin/python benches/compare/replay_equal.py --old OLD_BIN [--new NEW_BIN] [PATH ...]
    .venv/bin/python benches/compare/replay_equal.py --old-ref main~3 ...

--old-ref builds the release binary of a git commit in a worktree under
target/compare-old (a full release build the first time, cached after).
--new defaults to target/release/amoskys-pipeline. Captures are replayed one per
process, two at a time; each binary's output goes to a temporary directory.
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "pcap"
TABLES = ("flows", "features", "alerts")
SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp")


def build_old(ref: str) -> Path:
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", f"{ref}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    wt = ROOT / "target" / "compare-old" / "src"
    subprocess.run(["git", "-C", ROOT, "worktree", "prune"], check=True)
    if wt.is_dir():
        subprocess.run(["git", "-C", wt, "checkout", "-q", "--detach", commit], check=True)
    else:
        wt.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "-q", "--detach", wt, commit], check=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "amoskys-pipeline",
                    "--target-dir", ROOT / "target" / "compare-old" / "target"], cwd=wt, check=True)
    return ROOT / "target" / "compare-old" / "target" / "release" / "amoskys-pipeline"


def captures(paths):
    found = []
    for p in paths:
        p = Path(p)
        found += [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.suffix in SUFFIXES)
    return found


def replay(binary: Path, cap: Path, out: Path) -> int:
    return subprocess.run([binary, "replay", cap, "--out", out, "--no-progress", "--summary-json",
                           out.with_suffix(".json")], capture_output=True).returncode


def parquet(con, out: Path, table: str):
    files = list((out / table).rglob("*.parquet"))
    if not files:
        return None
    return f"read_parquet({[str(f) for f in files]}, hive_partitioning=true)"


def differences(con, a: Path, b: Path) -> list[str]:
    """What differs between two output directories, table by table."""
    found = []
    for table in TABLES:
        qa, qb = parquet(con, a, table), parquet(con, b, table)
        if qa is None and qb is None:
            continue
        if (qa is None) != (qb is None):
            found.append(f"{table}: written by {'new' if qa is None else 'old'} only")
            continue
        ca = [r[0] for r in con.execute(f"describe select * from {qa}").fetchall()]
        cb = [r[0] for r in con.execute(f"describe select * from {qb}").fetchall()]
        if ca != cb:
            gone, added = sorted(set(ca) - set(cb)), sorted(set(cb) - set(ca))
            found.append(f"{table}: columns differ (old only {gone}, new only {added}, order "
                         f"{'differs' if not gone and not added else 'n/a'})")
            shared = [c for c in ca if c in cb]
        else:
            shared = ca
        cols = ", ".join(f'"{c}"' for c in shared)
        only_a = con.execute(f"select count(*) from (select {cols} from {qa} except all select {cols} from {qb})").fetchone()[0]
        only_b = con.execute(f"select count(*) from (select {cols} from {qb} except all select {cols} from {qa})").fetchone()[0]
        if only_a or only_b:
            n = con.execute(f"select count(*) from {qa}").fetchone()[0]
            found.append(f"{table}: {only_a} of {n} old rows not in new, {only_b} new rows not in old")
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", type=Path, help="the binary before the change")
    ap.add_argument("--old-ref", help="build the old binary from this git commit instead")
    ap.add_argument("--new", type=Path, default=ROOT / "target" / "release" / "amoskys-pipeline")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("paths", nargs="*", default=[DATA])
    args = ap.parse_args()
    if (args.old is None) == (args.old_ref is None):
        ap.error("give exactly one of --old and --old-ref")
    old = build_old(args.old_ref) if args.old_ref else args.old
    for b in (old, args.new):
        if not os.access(b, os.X_OK):
            ap.error(f"no executable at {b}")
    caps = captures(args.paths)
    if not caps:
        ap.error("no captures found")
    tmp = Path(tempfile.mkdtemp(prefix="replay-equal-"))
    jobs = [(b, cap, tmp / side / str(i)) for i, cap in enumerate(caps) for side, b in (("old", old), ("new", args.new))]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        codes = list(pool.map(lambda j: replay(*j), jobs))
    con = duckdb.connect()
    differing = rows = 0
    for i, cap in enumerate(caps):
        rc_old, rc_new = codes[2 * i], codes[2 * i + 1]
        found = [] if rc_old == rc_new else [f"exit status {rc_old} before, {rc_new} after"]
        found += differences(con, tmp / "old" / str(i), tmp / "new" / str(i))
        for t in TABLES:
            q = parquet(con, tmp / "new" / str(i), t)
            rows += con.execute(f"select count(*) from {q}").fetchone()[0] if q else 0
        if found:
            differing += 1
            print(f"{cap}:", *found, sep="\n    ")
    print(f"{len(caps)} captures, {rows} rows written by the new binary; {differing} captures differ "
          f"(outputs in {tmp})")
    summary = {"captures": len(caps), "rows": rows, "differing": differing}
    print(json.dumps(summary))
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
