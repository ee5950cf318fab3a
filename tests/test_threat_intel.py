"""Threat-intelligence indicators: a file of IP addresses, networks and domains,
re-read while the job runs (an added line starts matches, a removed one stops
them), matched against peers in packets, names in DNS queries and the remote
addresses of authentication logs."""
import datetime
import socket
import time

from conftest import DATA, canary_config, query, replay, silent_alerts, table
from livejob import Job, free_port, syslog_source

BAD = "198.51.100.7"


def test_an_indicator_added_while_running_alerts_and_removing_it_stops_the_alerts(tmp_path):
    ind = tmp_path / "indicators.txt"
    ind.write_text("# nothing we see yet\n192.0.2.200\n")
    port = free_port()
    job = Job(tmp_path, syslog_source(port, "auth"),
              f'[threat_intel]\nfile = "{ind}"\nreload = "100ms"\n')
    # Event time is the messages' own: one message per 30 s pane, sent one at a
    # time, so that each pane is its own batch and the watermark moves with them.
    base = (int(time.time()) // 30 - 60) * 30
    sent = 0

    def send_panes(panes):
        nonlocal sent
        for p in panes:
            ts = datetime.datetime.fromtimestamp(base + 30 * p + 5, datetime.timezone.utc)
            line = (f"<38>1 {ts.strftime('%Y-%m-%dT%H:%M:%SZ')} web sshd 77 - - "
                    f"Failed password for root from {BAD} port {40000 + p} ssh2\n")
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(line.encode())
            sent += 1
            job.wait_metric("amoskys_events_sent_total", sent)

    def reload(text, loads):
        ind.write_text(text)
        job.wait_metric("amoskys_threat_intel_loads_total", loads)

    with job:
        job.wait_metric("amoskys_threat_intel_loads_total", 1)
        assert job.metric("amoskys_threat_intel_indicators") == 1
        send_panes(range(0, 4))
        reload(f"192.0.2.200\n{BAD}\n", 2)
        assert job.metric("amoskys_threat_intel_indicators") == 2
        send_panes(range(4, 9))
        job.wait_metric("amoskys_threat_intel_alerts_total", 1)
        reload("192.0.2.200\n", 3)
        send_panes(range(9, 15))
        assert job.metric("amoskys_threat_intel_alerts_total") == 1
        # Back as a network this time, with a line that is no indicator (counted).
        reload("192.0.2.200\n198.51.100.0/24\nnot-an-indicator\n", 4)
        assert job.metric("amoskys_threat_intel_bad_lines") == 1
        send_panes(range(15, 20))
        job.wait_metric("amoskys_threat_intel_alerts_total", 2)
    rows = job.rows(f"select entity, window_start, severity, summary, sources from {job.table('alerts')} "
                    f"where rule = 'threat_intel_match' order by window_start")
    assert len(rows) == 2, rows
    panes = [int(r[1].timestamp() - base) // 30 for r in rows]
    # The first match after each addition: it applies from the pane after the
    # one the job was at, which trails the newest message by the 10 s lateness.
    assert 4 <= panes[0] <= 6 and 15 <= panes[1] <= 17, (panes, rows)
    for entity, _, severity, summary, sources in rows:
        assert (entity, severity, sources) == ("127.0.0.1", "high", "syslog"), rows
        assert f"authentication message from {BAD}" in summary, summary
    assert "indicator 198.51.100.7" in rows[0][3] and "indicator 198.51.100.0/24" in rows[1][3], rows


def test_the_malware_capture_matches_the_hosts_ndpi_flags_as_malware(tmp_path):
    """malware.pcap's ground truth (nDPI's malware.pcap.out): flows 5 and 6 of
    192.168.7.7 to 144.139.247.220 carry "Client Contacted A Malware Host", and
    the malware category comes from the name www.internetbadguys.com, which
    192.168.7.7 asked 1.1.1.1 for."""
    truth = (DATA / "pcap" / "ndpi" / "malware.pcap.out").read_text()
    flagged = {line.split("->")[1].split(":")[0].strip() for line in truth.splitlines()
               if "Client Contacted A Malware Host" in line}
    assert flagged == {"144.139.247.220"}, flagged
    ind = tmp_path / "indicators.txt"
    ind.write_text("".join(f"{a}\n" for a in sorted(flagged)) + "internetbadguys.com\n")
    cfg = tmp_path / "flows.toml"
    cfg.write_text(f'[threat_intel]\nfile = "{ind}"\n')
    out = tmp_path / "out"
    replay(DATA / "pcap" / "ndpi" / "malware.pcap", out, "--config", cfg)
    got = query(f"select entity, summary, evidence from {table(out, 'alerts')} "
                f"where rule = 'threat_intel_match' order by window_start, summary")
    assert [r[0] for r in got] == ["192.168.7.7"] * 3, got
    # The name under the domain indicator; then, in a later pane, the
    # connections naming it (nDPI's flows 2 and 3, a TLS server name and an
    # HTTP Host of www.internetbadguys.com, both in its Malware category),
    # and the packets to the flagged host (an unanswered ICMP echo and SYN).
    assert "asked 1 DNS query for names under it (indicator internetbadguys.com)" in got[0][1], got
    named = [line for line in truth.splitlines()
             if "Hostname/SNI: www.internetbadguys.com" in line and "\tTCP " in line]
    assert len(named) == 2, named
    rest = sorted(r[1] for r in got[1:])
    assert "exchanged 2 packets with 144.139.247.220" in rest[0], got
    assert "showed its fingerprint in 2 TLS, HTTP or SSH exchanges (indicator internetbadguys.com)" \
        in rest[1], got
    # Without the indicators, the same capture raises nothing (but the canary
    # rule's alert: the alerts table was written).
    out2 = tmp_path / "plain"
    s = replay(DATA / "pcap" / "ndpi" / "malware.pcap", out2, "--config", canary_config(tmp_path))
    assert silent_alerts(out2, s) == []


def test_fingerprints_server_names_and_user_agents_are_indicators(tmp_path):
    """Indicators of the application layer, each taken from the ground truth,
    not from our output: tls-conn-with-extensions.pcap's JA3 (bare, as
    abuse.ch's SSLBL lists them) and its server's JA3S (fingerprints.tsv), a
    parent domain of its server name ssl.gstatic.com (Zeek's ssl.log), and a
    user agent of wikipedia.pcap (Zeek's http.log). Each matches, for the
    host that opened the connection; a JA4 that no client sent does not."""
    l7 = DATA / "pcap" / "l7" / "zeek"
    ua = next(r["user_agent"] for r in zeek_rows(l7 / "wikipedia" / "http.log") if r["user_agent"])
    ind = tmp_path / "indicators.txt"
    ind.write_text("62351d5ea3cd4f21f697965b10a9bbbe\nja3s:e07f21892995126f4b539c02215c8456\n"
                   "gstatic.com\nja4:t13d1516h2_8daaf6152771_b186095e22b6\n"
                   f"ua:{ua.upper()}\n")
    cfg = tmp_path / "flows.toml"
    cfg.write_text(f'[threat_intel]\nfile = "{ind}"\n')
    out = tmp_path / "tls"
    replay(l7 / "tls-conn-with-extensions" / "tls-conn-with-extensions.pcap", out, "--config", cfg)
    got = query(f"select entity, summary from {table(out, 'alerts')} "
                f"where rule = 'threat_intel_match' order by summary")
    texts = sorted(s.split("(indicator ")[1].rstrip(")") for _, s in got)
    assert texts == ["62351d5ea3cd4f21f697965b10a9bbbe", "gstatic.com",
                     "ja3s:e07f21892995126f4b539c02215c8456"], got
    assert {e for e, _ in got} == {"192.168.1.105"}, got
    assert all("TLS, HTTP or SSH exchange" in s for _, s in got), got
    out = tmp_path / "http"
    replay(l7 / "wikipedia" / "wikipedia.pcap", out, "--config", cfg)
    got = query(f"select summary from {table(out, 'alerts')} where rule = 'threat_intel_match'")
    assert got and all(f"indicator ua:{ua.lower()}" in s for (s,) in got), got


def zeek_rows(log):
    fields = None
    for line in log.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            yield {k: (None if v == "-" else v) for k, v in zip(fields, line.split("\t"))}
