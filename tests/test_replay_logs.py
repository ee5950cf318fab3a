"""`replay CAPTURE --syslog LOG`: a capture and the log of the same hours, replayed
together, go through the same graph as the long-running job. loghub's OpenSSH_2k
log with a capture of the SSH connections behind its failed logins (written here
from the log, as in test_correlation.py) must give the same cross-source incidents
as the live job does, with every log line in `events`."""
import datetime
import json
import shutil
from collections import defaultdict

from conftest import DATA, query, replay, table
from pcapwrite import ssh_login_attempt, write_pcap
from test_correlation import (GAP_PANES, LOG, MIN_CONNECTIONS, MIN_FAILURES, SERVER, expected_incidents,
                              failed_by_window, failures, log_year, sessions)


def test_a_capture_and_its_log_replayed_together_make_the_cross_source_incidents(tmp_path):
    # The copy's modification time is now: RFC 3164 lines take the year that puts
    # them at most a day after it, as a listener receiving them now would.
    log = tmp_path / "auth.log"
    shutil.copyfile(LOG, log)
    year = log_year(datetime.datetime.now(datetime.timezone.utc))
    fails = failures(year)
    frames = []
    for t, remote, port in sessions(fails):
        frames += ssh_login_attempt(remote, SERVER, port, t)
    cap = tmp_path / "ssh.pcap"
    write_pcap(cap, frames)
    out = tmp_path / "out"
    s = replay(cap, out, "--syslog", log)
    lines = sum(1 for _ in LOG.open("rb"))
    assert s["events"]["lines"] == lines == 2000, s
    assert s["events"]["records"] == lines and s["events"]["late"] == 0, s
    assert query(f"select count(*) from {table(out, 'events')}")[0][0] == lines
    # The log's lines keep their own time, in the year derived from the file.
    first, last = query(f"select min(ts), max(ts) from {table(out, 'events')}")[0]
    assert (first.year, first.month, first.day) == (year, 12, 10), first
    assert last.year == year, last

    want = expected_incidents(fails, failed_by_window(year), GAP_PANES)
    assert len(want) >= 5 and "183.62.140.253" in want, want
    rows = query(f"select entity, severity, sources, evidence from {table(out, 'alerts')} "
                 f"where rule = 'bruteforce_incident'")
    got = defaultdict(int)
    for entity, severity, sources, evidence in rows:
        got[entity] += 1
        assert severity == "critical", (entity, severity)
        assert sorted(sources.split(",")) == ["pcap", "syslog"], sources
        ev = json.loads(evidence)
        assert ev["auth_failures_as_remote"] >= MIN_FAILURES, ev
        assert ev["auth_conn_attempts_out"] >= MIN_CONNECTIONS, ev
    assert dict(got) == want
    # One row per entity and window holds both sources' families.
    both = query(f"select count(*) from {table(out, 'features')} "
                 f"where entity = '183.62.140.253' and auth_failures_as_remote > 0 "
                 f"and auth_conn_attempts_out > 0")[0][0]
    assert both > 0


def test_the_capture_alone_raises_no_incident_and_writes_no_events(tmp_path):
    year = log_year(datetime.datetime.now(datetime.timezone.utc))
    frames = []
    for t, remote, port in sessions(failures(year)):
        frames += ssh_login_attempt(remote, SERVER, port, t)
    cap = tmp_path / "ssh.pcap"
    write_pcap(cap, frames)
    out = tmp_path / "out"
    s = replay(cap, out)
    assert "events" not in s, s
    assert not list((out / "events").rglob("*.parquet"))
    rules = {r for (r,) in query(f"select distinct rule from {table(out, 'alerts')}")}
    assert "bruteforce_incident" not in rules and "login_bruteforce_network" in rules, rules


def test_a_log_file_that_cannot_be_read_is_an_error(tmp_path):
    from conftest import run_bin
    cap = next((DATA / "pcap" / "zeek").glob("*.pcap"))
    r = run_bin("replay", cap, "--syslog", tmp_path / "missing.log", "--out", tmp_path / "out",
                "--no-progress", check=False)
    assert r.returncode != 0
    assert "missing.log" in r.stderr, r.stderr
