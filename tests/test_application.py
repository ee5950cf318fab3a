"""Application metadata of flows (HTTP, TLS, SSH) against the ground truth of
independent tools on the captures of ../shared/data/pcap/l7: Zeek's http.log,
ssl.log and ssh.log, and the JA3/JA3S/JA4/HASSH values of fingerprints.tsv (an
independent implementation of the published definitions, which agrees with
nDPI's JA3 and Suricata's HASSH; see MANIFEST.md). Every capture is replayed
once, in a session fixture; each test compares one field family and prints its
agreement table."""
import collections

import pyarrow.parquet as pq
import pytest

from conftest import DATA, run_bin

L7 = DATA / "pcap" / "l7"


def captures():
    return sorted(
        p for p in L7.rglob("*")
        if p.suffix in (".pcap", ".pcapng") and p.is_file()
    )


@pytest.fixture(scope="session")
def flows(tmp_path_factory):
    """Flow rows of every capture, by (capture path relative to DATA, src, sport, dst, dport)."""
    out = {}
    root = tmp_path_factory.mktemp("l7")
    for i, cap in enumerate(captures()):
        d = root / str(i)
        r = run_bin("replay", "-w", "1", "--no-progress", "--out", str(d), str(cap))
        assert r.returncode == 0, r.stderr
        files = list((d / "flows").rglob("*.parquet"))
        rel = str(cap.relative_to(DATA))
        for f in files:
            for row in pq.read_table(f).to_pylist():
                out[(rel, row["src_ip"], row["src_port"], row["dst_ip"], row["dst_port"])] = row
    return out


def zeek_log(path):
    """Rows of a Zeek TSV log as dicts ('-' is None, '(empty)' is '')."""
    fields, rows = None, []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            vals = [None if v == "-" else ("" if v == "(empty)" else v) for v in line.split("\t")]
            rows.append(dict(zip(fields, vals)))
    return rows


def zeek_rows(name):
    """(capture, row) for every Zeek baseline `name` beside exactly one capture."""
    for log in sorted((L7 / "zeek").glob(f"*/{name}")):
        caps = [p for p in log.parent.iterdir() if p.suffix in (".pcap", ".pcapng")]
        if len(caps) != 1:
            continue
        for row in zeek_log(log):
            yield str(caps[0].relative_to(DATA)), row


def flow_of(flows, cap, row):
    return flows.get((cap, row["id.orig_h"], int(row["id.orig_p"]), row["id.resp_h"], int(row["id.resp_p"])))


def agreement(title, results):
    """Prints the table; returns the disagreements."""
    tally = collections.Counter()
    bad = []
    for field, want, got, where in results:
        ok = want == got
        tally[(field, ok)] += 1
        if not ok:
            bad.append((field, want, got, where))
    print(f"\n{title}")
    for field in sorted({f for f, _ in tally}):
        print(f"  {field:22} {tally[(field, True)]:3} agree, {tally[(field, False)]:3} differ")
    return bad


def test_http_fields_equal_zeeks_http_log(flows):
    results = []
    for cap, z in zeek_rows("http.log"):
        if z["trans_depth"] != "1":
            continue  # the first request of each connection is what a flow keeps
        f = flow_of(flows, cap, z)
        assert f is not None, (cap, z["uid"])
        where = (cap, z["uid"])
        results += [
            ("method", z["method"], f["http_method"], where),
            ("host", z["host"], f["http_host"], where),
            ("uri", z["uri"], f["http_uri"], where),
            ("user_agent", z["user_agent"], f["http_user_agent"], where),
        ]
        # A request without a version is HTTP/0.9 to Zeek, which then reads no
        # status from the server (it logs 0); the servers in these captures did
        # answer with an HTTP/1.x status line, which is what a flow keeps.
        if z["version"] != "0.9":
            want = int(z["status_code"]) if z["status_code"] else None
            results.append(("status_code", want, f["http_status"], where))
    bad = agreement("HTTP vs Zeek http.log (first request per connection)", results)
    assert len(results) >= 40
    assert not bad, bad


def test_tls_sni_and_version_equal_zeeks_ssl_log(flows):
    results = []
    for cap, z in zeek_rows("ssl.log"):
        f = flow_of(flows, cap, z)
        assert f is not None, (cap, z["uid"])
        where = (cap, z["uid"])
        results.append(("server_name", z["server_name"], f["tls_sni"], where))
        results.append(("version", z["version"], f["tls_version"], where))
        assert f["app_protocol"] == "tls", where
    bad = agreement("TLS vs Zeek ssl.log", results)
    assert len(results) >= 10
    assert not bad, bad


def test_ssh_banners_equal_zeeks_ssh_log(flows):
    results = []
    for cap, z in zeek_rows("ssh.log"):
        f = flow_of(flows, cap, z)
        assert f is not None, (cap, z["uid"])
        where = (cap, z["uid"])
        results.append(("client", z["client"], f["ssh_client"], where))
        results.append(("server", z["server"], f["ssh_server"], where))
    bad = agreement("SSH vs Zeek ssh.log", results)
    assert len(results) >= 6
    assert not bad, bad


COLUMN = {"ja3": "tls_ja3", "ja3s": "tls_ja3s", "ja4": "tls_ja4",
          "hassh": "ssh_hassh", "hassh_server": "ssh_hassh_server"}


def test_fingerprints_equal_the_independent_implementation(flows):
    """JA3, JA3S, JA4, HASSH and HASSHServer as fingerprints.tsv computes them
    from the published definitions (its JA3s equal nDPI's, its HASSHs Suricata's)."""
    results = []
    lines = (L7 / "fingerprints.tsv").read_text().splitlines()
    header = next(l for l in lines if l.startswith("capture\t")).split("\t")
    for line in lines:
        if line.startswith("#") or line.startswith("capture\t"):
            continue
        r = dict(zip(header, line.split("\t")))
        if r["kind"] not in COLUMN or r["transport"] != "tcp":
            continue
        cap = r["capture"].removeprefix("pcap/l7/")
        cap = str((L7 / cap).relative_to(DATA))
        # The row names the packet that carried the value: the server's for
        # JA3S and HASSHServer.
        ends = (r["src"], int(r["sport"]), r["dst"], int(r["dport"]))
        if r["kind"] in ("ja3s", "hassh_server"):
            ends = (ends[2], ends[3], ends[0], ends[1])
        f = flows.get((cap, *ends))
        assert f is not None, r
        results.append((r["kind"], r["value"], f[COLUMN[r["kind"]]], (cap, r["frame"])))
    bad = agreement("Fingerprints vs fingerprints.tsv", results)
    assert len(results) >= 50
    assert not bad, bad


def test_protocols_are_recognised_by_content_not_port(flows):
    """nDPI's HTTP on the SIP port, Zeek's HTTP on a non-standard port, TLS to
    port 3001: recognised by what they carry."""
    by_cap = collections.defaultdict(set)
    for (cap, *_), row in flows.items():
        by_cap[cap].add(row["app_protocol"])
    want = {
        "pcap/l7/ndpi/http_on_sip_port/http_on_sip_port.pcap": "http",
        "pcap/l7/zeek/http-lower-case-nonstandard-port/http-lower-case-nonstandard-port.pcap": "http",
        "pcap/l7/ndpi/selfsigned/selfsigned.pcap": "tls",
        "pcap/l7/ndpi/ftp_failed/ftp_failed.pcap": "ftp",
        "pcap/l7/zeek/smtp/smtp.pcap": "smtp",
        "pcap/l7/suricata-verify/mqtt311-sub-userpass/input.pcap": "mqtt",
    }
    for cap, proto in want.items():
        assert proto in by_cap[cap], (cap, by_cap[cap])


def suricata_checks(case):
    """The `mqtt.*: value` lines of a suricata-verify test.yaml (each key is
    asserted once per test), as one dict; integers as integers."""
    import re
    out = {}
    for line in (L7 / "suricata-verify" / case / "test.yaml").read_text().splitlines():
        m = re.match(r"\s+(mqtt\.[\w.]+):\s+(\S.*)$", line)
        if m:
            v = m.group(2).strip()
            out[m.group(1)] = int(v) if v.isdigit() else v
    return [out]


def test_mqtt_records_equal_suricata_verify(flows):
    """CONNECT (protocol version, client id, user name), CONNACK return code and
    the first PUBLISH (topic, QoS) as suricata-verify expects them."""
    fields = {
        "mqtt.connect.protocol_version": "mqtt_version",
        "mqtt.connect.client_id": "mqtt_client_id",
        "mqtt.connect.username": "mqtt_username",
        "mqtt.connack.return_code": "mqtt_connack",
        "mqtt.publish.topic": "mqtt_topic",
        "mqtt.publish.qos": "mqtt_qos",
    }
    results = []
    for case in ("mqtt311-sub-userpass", "mqtt5-pub-qos2", "mqtt5-sub-mosquittoprops"):
        cap = str((L7 / "suricata-verify" / case / "input.pcap").relative_to(DATA))
        rows = [r for (c, *_), r in flows.items() if c == cap and r["dst_port"] == 1883]
        assert len(rows) == 1, (case, len(rows))
        f = rows[0]
        assert f["app_protocol"] == "mqtt" and f["app_anomalies"] == 0, f
        for m in suricata_checks(case):
            for key, col in fields.items():
                if key in m:
                    results.append((key, m[key], f[col], case))
        # The password is never kept.
        assert "pass" not in {str(v) for v in f.values()}, f
    bad = agreement("MQTT vs suricata-verify", results)
    assert len(results) >= 12
    assert not bad, bad
