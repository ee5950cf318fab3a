"""Built-in detections on the shared attack captures and logs, with the expected
alerts written down per file from the ground truth each ships with (MANIFEST.md,
Zeek's notice.log, loghub's structured parse), and silence on everything else."""
import json
import re
import socket
from collections import defaultdict

import pytest

from conftest import (DATA, alert_rows, canary_config, loghub_failed_by_window, query, replay,
                      run_bin, silent_alerts, table)
from livejob import Job, free_port, syslog_source

# Per capture: the (detection, entity) alerts expected, from the data's own ground truth.
ATTACKS = {
    # nmap SYN scan of 1,000 ports on one host (ndpi's synscan: 172.16.0.8 -> 64.13.134.52).
    "pcap/ndpi/synscan.pcap": {("vertical_scan", "172.16.0.8")},
    # stopddos: SYN-ACKs reflected onto the spoofed victim 10.10.10.10.
    "pcap/stopddos/amp.TCP.reflection.SYNACK.pcap": {("synack_reflection", "10.10.10.10")},
    # stopddos: SYN flood (ECN/CWR flags) from spoofed sources against 10.10.10.10.
    "pcap/stopddos/pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng": {("syn_flood", "10.10.10.10")},
    # Zeek's notice FTP::Bruteforcing: "192.168.56.1 had 20 failed logins on 1 FTP server".
    # zeek's ftp-bruteforce: 30 FTP connections from 192.168.56.1, each a refused
    # login (tshark: 30 replies 530), over about three minutes: first paced
    # below 20 connections a window (login_guessing_network, over ten minutes),
    # then a window above (login_bruteforce_network); the refusals read from
    # both sides add up to cleartext_login_bruteforce.
    "pcap/zeek/attacks/ftp-bruteforce.pcap": {("login_bruteforce_network", "192.168.56.1"),
                                               ("login_guessing_network", "192.168.56.1"),
                                               ("cleartext_login_bruteforce", "192.168.56.1")},
    # ndpi's bad-dns-traffic: long encoded names queried by 192.168.43.91 (its
    # labels decode to dnscat2 traffic). nDPI flags "Susp DGA Domain name", but
    # every query got an answer (159 NOERROR, 3 SERVFAIL, no NXDOMAIN), so it is
    # tunnelling, not a DGA's search for a live name: no `dga`.
    "pcap/ndpi/bad-dns-traffic.pcap": {("dns_tunnel", "192.168.43.91")},
    # esnet: `nmap -p 80 -sV` from 10.87.1.10: 11 connections to one host, all
    # accepted, torn down with 22 RSTs after the version probes (nmap_80_vanilla,
    # 3 connections and 3 RSTs, stays quiet: see the test below).
    "pcap/esnet/nmap_80_w_service_detection.pcap": {("service_probe", "10.87.1.10")},
    # zeek's dhcp_flood: 250 DHCPINFORMs in 5 s from one client hardware address
    # (90:b1:1c:99:49:29), each from another source address, each ACKed.
    "pcap/zeek/attacks/dhcp_flood.pcap": {("dhcp_flood", "90:b1:1c:99:49:29")},
}

SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


@pytest.mark.parametrize("capture", sorted(ATTACKS))
def test_an_attack_capture_raises_its_expected_alert_once(capture, tmp_path):
    out = tmp_path / "out"
    got = alert_rows(out, replay(DATA / capture, out))
    assert {(r[0], r[1]) for r in got} == ATTACKS[capture], got
    # One occurrence, however many overlapping windows saw it.
    assert len(got) == len(ATTACKS[capture]), got
    for rule, entity, severity, alert_id, summary, evidence in got:
        assert re.fullmatch(r"[0-9a-f]{32}", alert_id)
        assert summary.startswith(entity)
        assert evidence.startswith("{") and len(evidence) > 2
    # Same input, same ids.
    again = tmp_path / "again"
    assert [r[3] for r in alert_rows(again, replay(DATA / capture, again))] == [r[3] for r in got]


def test_the_other_captures_raise_nothing_above_low(tmp_path):
    """Every other conformance capture in ../shared/data (benign protocol samples,
    the plain nmap of one port, and the malware sample, which needs indicators:
    test_threat_intel.py) raises no alert above low severity. Each is replayed
    with the canary rule, so a capture with features whose alerts table was not
    written fails; one without features (no IP packets) must raise nothing."""
    files = [f for f in sorted((DATA / "pcap").rglob("*")) if f.suffix in (".pcap", ".pcapng")
             and str(f.relative_to(DATA)) not in ATTACKS]
    assert len(files) > 70
    cfg = canary_config(tmp_path)
    loud, checked = {}, 0
    for k, f in enumerate(files):
        out = tmp_path / str(k)
        s = replay(f, out, "--config", cfg)
        if s["feature_rows"] == 0:
            assert s["ip_packets"] == 0 and alert_rows(out, s) == [], f
            continue
        checked += 1
        hi = [r for r in silent_alerts(out, s) if SEVERITY_RANK[r[2]] > 0]
        if hi:
            loud[str(f.relative_to(DATA))] = hi
    assert not loud, loud
    # Most of them have IP traffic, hence features, hence the canary's alert.
    assert checked > 200, checked


def loghub_failures_by_window():
    """{remote: {window: failed logins}}, times as seconds of the log's days."""
    return loghub_failed_by_window(lambda day, h, m, s: day * 86400 + h * 3600 + m * 60 + s)


def test_sshd_failures_in_logs_raise_one_alert_per_attacking_address_and_burst(tmp_path):
    port = free_port()
    with Job(tmp_path, syslog_source(port)) as job:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall((DATA / "syslog" / "loghub" / "OpenSSH_2k.log").read_bytes())
        job.wait_metric("amoskys_events_sent_total", 2000)
        # Alerts are raised as windows close, while the job runs.
        job.wait_metric("amoskys_alerts_total", 1)
    # Expected: for each remote, one alert per run of consecutive windows with at
    # least 10 failures (the default threshold).
    want = defaultdict(int)
    for remote, windows in loghub_failures_by_window().items():
        firing = sorted(w for w, n in windows.items() if n >= 10)
        want[remote] = sum(1 for i, w in enumerate(firing) if i == 0 or firing[i - 1] != w - 1)
    want = {r: n for r, n in want.items() if n}
    assert want, "the log has brute-force bursts"
    got = defaultdict(int)
    alerts = job.rows(f"select rule, entity from {job.table('alerts')}")
    for rule, entity in alerts:
        assert rule in ("login_bruteforce_logs", "login_guessing_logs"), rule
        got[entity] += rule == "login_bruteforce_logs"
    assert {e: n for e, n in got.items() if n} == want
    # Slow guessing: where the failures of ten minutes (this window and the nine
    # non-overlapping ones before it) reach 10 though none of those windows
    # reaches 10 alone; recomputed from the per-window counts above, at the
    # windows where the remote has a row.
    rows = job.rows(f"select entity, epoch(window_start)::bigint // 30, auth_failures_as_remote "
                    f"from {job.table('features')} where auth_failures_as_remote is not null")
    per = defaultdict(dict)
    for e, w, n in rows:
        per[e][w] = n
    slow = defaultdict(int)
    for e, windows in per.items():
        firing = []
        for w in sorted(windows):
            xs = [windows[w - 2 * j] for j in range(10) if w - 2 * j in windows]
            if sum(xs) >= 10 and max(xs) <= 9:
                firing.append(w)
        slow[e] = sum(1 for i, w in enumerate(firing) if i == 0 or firing[i - 1] != w - 1)
    got_slow = defaultdict(int)
    for rule, entity in alerts:
        got_slow[entity] += rule == "login_guessing_logs"
    assert {e: n for e, n in got_slow.items() if n} == {e: n for e, n in slow.items() if n}


def test_a_rule_written_in_flows_toml_fires_and_a_bad_one_is_refused(tmp_path):
    cfg = tmp_path / "flows.toml"
    cfg.write_text('''
[detections.login_bruteforce_network]
enabled = false

[detections.login_guessing_network]
enabled = false

[detections.cleartext_login_bruteforce]
enabled = false

[[rules]]
name = "ftp_guessing"
condition = "auth_conn_attempts_out >= 10 and (distinct_peers_out <= 1 or conn_failed_out > 5)"
severity = "critical"
summary = "{entity} made {auth_conn_attempts_out} login connections"
''')
    out = tmp_path / "out"
    got = alert_rows(out, replay(DATA / "pcap/zeek/attacks/ftp-bruteforce.pcap", out, "--config", cfg))
    assert [(r[0], r[1], r[2]) for r in got] == [("ftp_guessing", "192.168.56.1", "critical")], got
    # Raised in the first window the condition held, with that window's values.
    evidence = json.loads(got[0][5])
    assert evidence["auth_conn_attempts_out"] >= 10
    assert got[0][4] == f"192.168.56.1 made {evidence['auth_conn_attempts_out']:.0f} login connections"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nname = "typo"\ncondition = "auth_conn_attempts > 10"\n')
    r = run_bin("validate", "--config", bad, check=False)
    assert r.returncode == 1
    assert "[[rules]] typo" in r.stderr and "not a feature" in r.stderr, r.stderr



def test_a_grouped_rule_alerts_per_network_as_duckdb_counts_its_hosts(tmp_path, generated):
    """`group_by = "network/24"` with `min_entities`: one alert per /24 and run of
    consecutive windows in which at least 4 of its hosts asked DNS, as DuckDB
    counts them over the same run's features table."""
    cfg = tmp_path / "flows.toml"
    cfg.write_text('''
[[rules]]
name = "busy_resolvers"
condition = "dns_queries_out >= 1"
group_by = "network/24"
min_entities = 4
severity = "low"
''')
    out = tmp_path / "out"
    replay(generated, out, "--config", cfg)
    per = query(f"""
        select regexp_replace(entity, '\\.[0-9]+$', '.0/24') as net, window_start, count(*) as n,
               max(dns_queries_out) as top
        from {table(out, 'features')}
        where dns_queries_out >= 1 and entity like '%.%.%.%'
        group by 1, 2 having count(*) >= 4 order by 1, 2""")
    want, prev = [], {}
    for net, ws, n, top in per:
        w = int(ws.timestamp()) // 30
        if prev.get(net) != w - 1:
            want.append((net, w, n, top))
        prev[net] = w
    assert want, "the sample capture has networks with several resolving hosts"
    got = query(f"select entity, epoch(window_start)::bigint // 30, evidence from {table(out, 'alerts')} "
                f"where rule = 'busy_resolvers' order by 1, 2")
    assert [(e, w) for e, w, _ in got] == [(n, w) for n, w, _, _ in want]
    for (_, _, ev), (_, _, n, top) in zip(got, want):
        assert json.loads(ev) == {"entities": n, "dns_queries_out": top}
