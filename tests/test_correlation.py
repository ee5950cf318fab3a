"""Cross-source correlation: loghub's OpenSSH_2k log sent over syslog while the
same job reads a capture of the SSH connections behind its failed logins (written
here from the log: one short session per sshd connection, i.e. per remote address
and source port, opened just before its first logged failure).
Each attacking address that shows up in both sources in one window gives one
incident of higher severity naming the evidence of both."""
import datetime
import json
import re
import socket
from collections import defaultdict

import pytest

from conftest import DATA, loghub_failed_by_window
from livejob import Job, free_port, syslog_source
from pcapwrite import ssh_login_attempt, write_pcap

LOG = DATA / "syslog" / "loghub" / "OpenSSH_2k.log"
SERVER = "192.0.2.22"
# The defaults of [correlation] (docs/DETECTIONS.md).
MIN_FAILURES, MIN_CONNECTIONS, GAP_PANES = 3, 3, 480


def log_year(now: datetime.datetime) -> int:
    """The year an RFC 3164 "Dec 10" gets when received now: this year, or the one
    before when that would be more than a day ahead."""
    t = datetime.datetime(now.year, 12, 10, 6, 55, 46, tzinfo=datetime.timezone.utc)
    return now.year - 1 if t.timestamp() > now.timestamp() + 86400 else now.year


def failures(year: int):
    """(remote, source port, epoch seconds, attempts) per failed-login line, from
    loghub's structured CSV (its own parse of the log)."""
    out = []
    for line in (DATA / "syslog" / "loghub" / "OpenSSH_2k.log_structured.csv").read_text().splitlines()[1:]:
        _, _, day, clock, _, _, rest = line.split(",", 6)
        if re.search(r",(E\d+),", line).group(1) not in ("E8", "E9", "E10", "E14"):
            continue
        content = rest.rsplit(",", 2)[0]
        remote = content.split(" from ")[1].split()[0]
        port = int(re.search(r" port (\d+)", content).group(1))
        n = int(content.split()[2]) if " repeated " in content else 1
        h, m, s = map(int, clock.split(":"))
        t = datetime.datetime(year, 12, int(day), h, m, s, tzinfo=datetime.timezone.utc).timestamp()
        out.append((remote, port, t, n))
    return out


def failed_by_window(year: int):
    """{remote: {window: failed logins}} as `auth_failures_as_remote` counts them."""
    return loghub_failed_by_window(lambda day, h, m, s: datetime.datetime(
        year, 12, day, h, m, s, tzinfo=datetime.timezone.utc).timestamp())


def sessions(fails):
    """The SSH connections behind the failures: one per (remote, source port), as
    sshd allows several passwords per connection, opened a second before its first
    failure is logged."""
    first = {}
    for remote, port, t, _ in fails:
        first.setdefault((remote, port), t - 1.0)
    return sorted((t, remote, port) for (remote, port), t in first.items())


def expected_incidents(fails, failed, gap_panes=GAP_PANES):
    """Per remote: windows (start pane; a window is two 30 s panes) where the log
    has at least MIN_FAILURES failures (`failed`, from failed_by_window) and the
    capture at least MIN_CONNECTIONS connection attempts; runs of such windows no
    more than GAP_PANES apart are one incident."""
    conns = defaultdict(lambda: defaultdict(int))
    for t, remote, _ in sessions(fails):
        pane = int(t) // 30
        for w in (pane - 1, pane):
            conns[remote][w] += 1
    out = {}
    for remote, windows in failed.items():
        firing = sorted(w for w, k in windows.items()
                        if k >= MIN_FAILURES and conns.get(remote, {}).get(w, 0) >= MIN_CONNECTIONS)
        if firing:
            out[remote] = 1 + sum(1 for a, b in zip(firing, firing[1:]) if b - a > gap_panes)
    return out


@pytest.mark.parametrize("gap", [None, "30m"])
def test_failed_logins_in_logs_and_their_connections_on_the_wire_make_one_incident_per_attack(tmp_path, gap):
    """With the default incident_gap (4 h) one incident per attacking address; with
    30 minutes, 103.99.0.122's two bursts (09:11 and 11:03) are two."""
    year = log_year(datetime.datetime.now(datetime.timezone.utc))
    fails = failures(year)
    frames = []
    for t, remote, port in sessions(fails):
        frames += ssh_login_attempt(remote, SERVER, port, t)
    cap = tmp_path / "ssh.pcap"
    write_pcap(cap, frames)
    port = free_port()
    src = syslog_source(port, "auth") + f'\n[[sources.pcap]]\nname = "recorded"\nfile = "{cap}"\n'
    extra = f'[correlation]\nincident_gap = "{gap}"\n' if gap else ""
    with Job(tmp_path, src, extra) as job:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(LOG.read_bytes())
        job.wait_metric("amoskys_events_sent_total", 2000)
        job.wait_metric("amoskys_component_received_events_total", len(frames), component_id="recorded")
    want = expected_incidents(fails, failed_by_window(year), 60 if gap else GAP_PANES)
    assert len(want) >= 5 and "183.62.140.253" in want, want
    assert want["103.99.0.122"] == (2 if gap else 1), want
    rows = job.rows(f"select entity, severity, sources, evidence, summary, id from {job.table('alerts')} "
                    f"where rule = 'bruteforce_incident' order by window_start")
    got = defaultdict(int)
    for entity, severity, sources, evidence, summary, _ in rows:
        got[entity] += 1
        assert severity == "critical", (entity, severity)
        assert sorted(sources.split(",")) == ["pcap", "syslog"], sources
        ev = json.loads(evidence)
        assert ev["auth_failures_as_remote"] >= MIN_FAILURES and ev["auth_conn_attempts_out"] >= MIN_CONNECTIONS, ev
        assert entity in summary, summary
    assert dict(got) == want
    # Alone, each source still raises its own detections for the loudest addresses.
    single = {(r, e) for r, e in job.rows(f"select rule, entity from {job.table('alerts')} "
                                          f"where rule <> 'bruteforce_incident'")}
    assert ("login_bruteforce_logs", "183.62.140.253") in single
    assert ("login_bruteforce_network", "183.62.140.253") in single
