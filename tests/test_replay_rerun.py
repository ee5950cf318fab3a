"""A replay's output is whole or absent: files are published only when the
replay has finished, named after its inputs, so the same replay into the same
directory replaces its earlier output — after a clean run or after a SIGKILL
half-way — and never adds to it; a replay stopped half-way leaves an earlier
whole output as it was, and two replays of one input into one directory at
once are refused."""
import json
import signal
import subprocess

from conftest import BIN, DATA, query, require, run_bin, table, wait_until

TABLES = ("flows", "features", "alerts")


def rows(out, name):
    """Every row of a table, sorted (the partition columns left out; NaN made
    comparable)."""
    return [tuple("NaN" if isinstance(v, float) and v != v else v for v in r)
            for r in query(f"select * exclude (date, hour) from {table(out, name)} order by all")]


def published(out):
    return sorted(p for p in out.rglob("*.parquet"))


def test_replaying_twice_into_one_directory_gives_the_rows_of_one_run(tmp_path):
    cap = require(DATA / "pcap/zeek/attacks/ftp-bruteforce.pcap")
    out = tmp_path / "out"
    run_bin("replay", cap, "--out", out, "--no-progress")
    first = {t: rows(out, t) for t in TABLES}
    files = published(out)
    assert first["flows"] and first["features"] and first["alerts"], first
    r = run_bin("replay", cap, "--out", out, "--no-progress")
    assert f"replaced {len(files)} file(s) of an earlier replay" in r.stderr, r.stderr
    assert {t: rows(out, t) for t in TABLES} == first
    assert published(out) == files
    # Another capture into the same directory adds its own rows beside them.
    other = require(DATA / "pcap/ndpi/synscan.pcap")
    r = run_bin("replay", other, "--out", out, "--no-progress")
    assert "replaced" not in r.stderr, r.stderr
    (n,), = query(f"select count(*) from {table(out, 'flows')}")
    assert n > len(first["flows"])
    assert not list(out.glob("_replay-*.incomplete"))


def test_a_killed_replay_leaves_nothing_that_looks_whole_and_running_it_again_does(tmp_path):
    """Two hours and a half of the sample office, written with one file open
    per table, so that hours are finished while the replay runs: killed once
    an hour is done, nothing is published and a marker says the output is not
    whole; the same command again gives a clean run's rows."""
    cap = tmp_path / "office.pcap"
    run_bin("generate-capture", cap, "--hosts", "6", "--minutes", "150", "--seed", "4")
    cfg = tmp_path / "flows.toml"
    cfg.write_text("[sinks.parquet]\nmax_open_files = 1\n")
    clean = tmp_path / "clean"
    run_bin("replay", cap, "--out", clean, "--no-progress", "--config", cfg, timeout=600)
    assert len({p.parent for p in published(clean / "flows")}) >= 3, published(clean)

    out = tmp_path / "out"

    def killed_half_way(check_refused=False):
        proc = subprocess.Popen([str(BIN), "replay", str(cap), "--out", str(out), "--no-progress",
                                 "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        scratch = out / "flows" / "_in_progress"
        try:
            # An hour finished: a second scratch file begun, or (were files
            # published as they finish) a new one in place.
            before = set(published(out))
            wait_until(lambda: proc.poll() is not None or set(published(out)) - before
                       or len([p for p in scratch.glob("*") if p.stat().st_mtime > start]) >= 2,
                       300, "a finished hour of flows")
            assert proc.poll() is None, "the replay ended before an hour was finished"
            if check_refused:
                r = run_bin("replay", cap, "--out", out, "--no-progress", "--config", cfg, check=False)
                assert r.returncode != 0 and "another replay of the same input" in r.stderr, r.stderr
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert len(list(out.glob("_replay-*.incomplete"))) == 1

    start = 0
    killed_half_way()
    assert published(out) == [], published(out)

    def same_as_clean():
        for t in TABLES:
            assert rows(out, t) == rows(clean, t), t
        assert [p.relative_to(out) for p in published(out)] == [p.relative_to(clean) for p in published(clean)]

    run_bin("replay", cap, "--out", out, "--no-progress", "--config", cfg, timeout=600)
    same_as_clean()
    assert not list(out.glob("_replay-*.incomplete"))
    assert not list(out.rglob("*.inprogress"))
    meta = json.loads((out / "feature_metadata.json").read_text())
    assert meta["features"]
    # Run again and killed half-way (a second replay of the same input
    # refused meanwhile): the finished output stays as it was.
    import time
    start = time.time()
    killed_half_way(check_refused=True)
    same_as_clean()
