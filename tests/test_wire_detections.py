"""Detections read from packets, on traffic made on loopback by real tools and
sockets (ping, curl against pyftpdlib's FTP server, inetutils' telnetd with the
system's login(1), UDP and DNS datagrams from Python's socket module), captured by tshark and replayed: each raises its
detection on the host that did it, and on no other."""
import socket
import struct
import subprocess
import sys
import time

from conftest import run_bin, wait_until
from livejob import free_port, need
from wire import alerts_of, capture_while


def rules_on(alerts, rule):
    return sorted({e for r, e, _ in alerts if r == rule})


def test_echo_data_of_varying_sizes_is_an_icmp_tunnel(tmp_path):
    """ping with eight data sizes from 600 to 1300 bytes and a pattern, five
    echoes each: tens of kilobytes of echo data in varying sizes, which
    icmp_tunnel reports. The same host's ordinary pings before it (one size)
    would not."""
    ping = need("ping")

    def traffic():
        for size in range(600, 1400, 100):
            subprocess.run([ping, "-n", "-q", "-c", "5", "-i", "0.01", "-s", str(size),
                            "-p", "a5c3e1f0", "127.0.0.1"], check=True, capture_output=True)
    pcap = capture_while(tmp_path, "icmp", traffic)
    alerts = alerts_of(tmp_path, pcap)
    assert rules_on(alerts, "icmp_tunnel") == ["127.0.0.1"], alerts
    summary = next(s for r, _, s in alerts if r == "icmp_tunnel")
    # 40 requests and their 40 replies, all from 127.0.0.1 (loopback).
    assert "8 different sizes" in summary, summary


def test_ordinary_ping_is_not_a_tunnel(tmp_path):
    ping = need("ping")
    pcap = capture_while(tmp_path, "icmp", lambda: subprocess.run(
        [ping, "-n", "-q", "-c", "20", "-i", "0.01", "127.0.0.1"], check=True, capture_output=True))
    assert rules_on(alerts_of(tmp_path, pcap), "icmp_tunnel") == []


def test_unsolicited_responses_from_amplifier_ports_are_reflection(tmp_path):
    """Twenty 'reflectors' (127.0.0.2-21) answer from the SSDP, memcached,
    WS-Discovery and Ubiquiti ports to 127.0.0.1, which asked none of them:
    udp_reflection on 127.0.0.1. Meanwhile 127.0.0.50 asks 127.0.0.60's
    memcached port and gets 250 answers: asked for, no alert."""
    victim_port = free_port(socket.SOCK_DGRAM)
    amp_ports = [1900, 11211, 3702, 10001]

    def traffic():
        for i in range(20):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((f"127.0.0.{2 + i}", amp_ports[i % 4]))
                for _ in range(15):
                    s.sendto(b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\n" + bytes(300), ("127.0.0.1", victim_port))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            server.bind(("127.0.0.60", 11211))
            client.bind(("127.0.0.50", 0))
            client.sendto(b"\x00\x01\x00\x00\x00\x01\x00\x00stats\r\n", ("127.0.0.60", 11211))
            _, asker = server.recvfrom(2048)
            for _ in range(250):
                server.sendto(bytes(1000), asker)
    pcap = capture_while(tmp_path, "udp", traffic)
    alerts = alerts_of(tmp_path, pcap)
    assert rules_on(alerts, "udp_reflection") == ["127.0.0.1"], alerts
    summary = next(s for r, _, s in alerts if r == "udp_reflection")
    assert "300 UDP packets" in summary and "20 host(s)" in summary, summary


def dns_query(qid, name, qtype):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + struct.pack(">HH", qtype, 1)


def test_queries_for_null_records_are_reported(tmp_path):
    """Twelve queries for NULL records (iodine's downstream) from 127.0.0.1 to
    port 53: dns_null_queries. Queries for A records beside them are not
    counted."""
    def traffic():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(12):
                s.sendto(dns_query(i, f"p{i:03x}a9f3k2.t.example.org", 10), ("127.0.0.1", 53))
                s.sendto(dns_query(100 + i, "www.example.org", 1), ("127.0.0.1", 53))
    pcap = capture_while(tmp_path, "udp port 53", traffic)
    alerts = alerts_of(tmp_path, pcap)
    assert rules_on(alerts, "dns_null_queries") == ["127.0.0.1"], alerts
    assert "12 DNS queries for NULL records" in next(s for r, _, s in alerts if r == "dns_null_queries")


FTP_SERVER = """
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
auth = DummyAuthorizer()
auth.add_user("alice", "right-pass", sys.argv[2], perm="elr")
FTPHandler.authorizer = auth
FTPHandler.auth_failed_timeout = 0
FTPServer(("127.0.0.1", int(sys.argv[1])), FTPHandler).serve_forever()
"""


def test_refused_ftp_logins_on_the_wire_are_a_brute_force(tmp_path):
    """pyftpdlib's FTP server, curl guessing alice's password twelve times then
    logging in: the flows name the user and count each refusal, and
    cleartext_login_bruteforce is raised for the client."""
    import duckdb
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    server = subprocess.Popen([sys.executable, "-c", FTP_SERVER, str(port), str(home)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    curl = need("curl")
    url = f"ftp://127.0.0.1:{port}/"
    try:
        wait_until(lambda: subprocess.run([curl, "-s", "-o", "/dev/null", "--user", "alice:right-pass", url])
                   .returncode == 0, 15, "the FTP server to answer", interval=0.2)

        def traffic():
            for i in range(12):
                r = subprocess.run([curl, "-s", "-o", "/dev/null", "--user", f"alice:guess{i}", url])
                assert r.returncode == 67, r.returncode  # curl: login denied
            subprocess.run([curl, "-s", "-o", "/dev/null", "--user", "alice:right-pass", url], check=True)
            time.sleep(0.2)
        pcap = capture_while(tmp_path, f"tcp port {port}", traffic)
    finally:
        server.terminate()
        server.wait(timeout=10)
    alerts = alerts_of(tmp_path, pcap)
    assert rules_on(alerts, "cleartext_login_bruteforce") == ["127.0.0.1"], alerts
    files = [str(f) for f in (tmp_path / "out" / "flows").rglob("*.parquet")]
    rows = duckdb.sql(f"select login_user, login_attempts, login_failures from read_parquet({files}) "
                      f"where dst_port = {port} order by first_ts").fetchall()
    assert rows == [("alice", 1, 1)] * 12 + [("alice", 1, 0)], rows
    feats = [str(f) for f in (tmp_path / "out" / "features").rglob("*.parquet")]
    most = duckdb.sql(f"select max(ftp_login_failures_out), max(app_login_failures_out_10m), "
                      f"max(app_login_successes_out) "
                      f"from read_parquet({feats}) where entity = '127.0.0.1'").fetchall()[0]
    # (the readiness check's login is before the capture.)
    assert most == (12, 12, 1), most


class TelnetClient:
    """A Telnet client on a socket: refuses every option the server offers or
    asks for (RFC 854's minimal implementation) and reads text until a prompt."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.text = b""

    def until(self, prompt):
        while prompt not in self.text:
            data = self.sock.recv(4096)
            assert data, f"the server closed before {prompt!r}: {self.text!r}"
            answer, i = b"", 0
            while i < len(data):
                if data[i] == 255 and i + 2 < len(data) and 251 <= data[i + 1] <= 254:
                    # WILL/WONT → DONT; DO/DONT → WONT.
                    answer += bytes([255, 254 if data[i + 1] <= 252 else 252, data[i + 2]])
                    i += 3
                else:
                    self.text += data[i:i + 1]
                    i += 1
            if answer:
                self.sock.sendall(answer)
        self.text = self.text.split(prompt, 1)[1]

    def line(self, text):
        self.sock.sendall(text.encode() + b"\r\n")


def test_refused_telnet_logins_on_the_wire_are_counted(tmp_path):
    """inetutils' telnetd running the system's login(1) (socat accepting on
    loopback, as inetd would), and two clients each failing twice for users
    that do not exist: the flows say telnet, name each client's last user and
    count its refusals; the client host's telnet_login_failures_out is 4."""
    import duckdb
    import threading
    port = free_port()
    server = subprocess.Popen([need("socat"), f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                               f"EXEC:{need('telnetd')} -E /bin/login,nofork"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    errors = []

    def guess(n):
        try:
            c = TelnetClient(port)
            for k in range(2):
                c.until(b"login: ")
                c.line(f"nobody-{n}-{k}")
                c.until(b"Password: ")
                c.line(f"guess-{n}-{k}")
            c.until(b"login: ")
            c.sock.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    try:
        def ready():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(ready, 15, "socat to listen", interval=0.1)

        def traffic():
            clients = [threading.Thread(target=guess, args=(n,)) for n in range(2)]
            for t in clients:
                t.start()
            for t in clients:
                t.join(60)
        pcap = capture_while(tmp_path, f"tcp port {port}", traffic)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert not errors, errors
    out = tmp_path / "out"
    r = run_bin("replay", "--no-progress", "--out", str(out), str(pcap))
    assert r.returncode == 0, r.stderr
    files = [str(f) for f in (out / "flows").rglob("*.parquet")]
    rows = duckdb.sql(f"select app_protocol, login_user, login_attempts, login_failures "
                      f"from read_parquet({files}) where dst_port = {port} and src_port != 0 "
                      f"order by login_user").fetchall()
    assert rows == [("telnet", "nobody-0-1", 2, 2), ("telnet", "nobody-1-1", 2, 2)], rows
    feats = [str(f) for f in (out / "features").rglob("*.parquet")]
    most = duckdb.sql(f"select max(telnet_login_failures_out), max(app_login_failures_out_10m), "
                      f"max(app_login_successes_out) "
                      f"from read_parquet({feats}) where entity = '127.0.0.1'").fetchall()[0]
    assert most == (4, 4, 0), most
    # The passwords are in no column.
    every = duckdb.sql(f"select * from read_parquet({files})").fetchall()
    assert not [v for row in every for v in row if "guess-" in str(v)]


def test_a_tls_client_no_other_host_uses_is_rare(tmp_path):
    """openssl s_server on loopback. First three hosts (127.0.0.2-4) fetch a
    page with curl; eleven minutes later (the second capture shifted by
    editcap, merged by mergecap) 127.0.0.2 again with curl, and 127.0.0.9 with
    Python's ssl module and no server name: its JA4 is the network's only one
    of its kind, so tls_rare_client names it and no curl host. The second
    capture alone (nothing learned yet) raises nothing."""
    import duckdb
    import ssl
    from livejob import make_pki
    make_pki(tmp_path)
    for d in ("first", "second", "merged", "alone"):
        (tmp_path / d).mkdir()
    port = free_port()
    server = subprocess.Popen([need("openssl"), "s_server", "-accept", f"127.0.0.1:{port}", "-www",
                               "-cert", str(tmp_path / "server.pem"), "-key", str(tmp_path / "server.key")],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    curl = need("curl")

    def fetch(host):
        subprocess.run([curl, "-sk", "-o", "/dev/null", "--interface", host,
                        "--resolve", f"pipeline.test:{port}:127.0.0.1", f"https://pipeline.test:{port}/"],
                       check=True, timeout=30)

    def own_client():
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.9", 0)) as s:
            with ctx.wrap_socket(s) as t:
                t.sendall(b"GET / HTTP/1.0\r\n\r\n")
                t.recv(100)

    try:
        wait_until(lambda: subprocess.run([curl, "-sk", "-o", "/dev/null", f"https://127.0.0.1:{port}/"])
                   .returncode == 0, 15, "openssl s_server to answer", interval=0.2)
        first = capture_while(tmp_path / "first", f"tcp port {port}",
                              lambda: [fetch(f"127.0.0.{i}") for i in (2, 3, 4)])
        second = capture_while(tmp_path / "second", f"tcp port {port}",
                               lambda: (fetch("127.0.0.2"), own_client()))
    finally:
        server.terminate()
        server.wait(timeout=10)
    shifted, merged = tmp_path / "shifted.pcapng", tmp_path / "merged.pcapng"
    subprocess.run([need("editcap"), "-t", "660", str(second), str(shifted)], check=True)
    subprocess.run([need("mergecap"), "-w", str(merged), str(first), str(shifted)], check=True)
    alerts = alerts_of(tmp_path / "merged", merged)
    assert rules_on(alerts, "tls_rare_client") == ["127.0.0.9"], alerts
    feats = [str(f) for f in (tmp_path / "merged" / "out" / "features").rglob("*.parquet")]
    per_host = dict(duckdb.sql(f"select entity, sum(tls_rare_ja4_out) from read_parquet({feats}) "
                               f"where tls_client_hellos_out > 0 group by entity").fetchall())
    # (each hello counts in the two windows that hold it)
    assert per_host == {"127.0.0.2": 0, "127.0.0.3": 0, "127.0.0.4": 0, "127.0.0.9": 2}, per_host
    assert rules_on(alerts_of(tmp_path / "alone", second), "tls_rare_client") == []


def test_malformed_application_data_is_counted_as_anomalies(tmp_path):
    """Application data that breaks its protocol, made on loopback: a server
    answering curl's HTTP request with a status line without a code, and a
    client sending mosquitto a PUBLISH with QoS 3 (reserved, MQTT 3.1.1
    section 3.3.1.2) after a valid CONNECT. Each flow is recognised, counts an
    anomaly in `app_anomalies`, and its client's `app_anomalies_out` counts it;
    the replay exits cleanly."""
    import duckdb
    import getpass
    import threading
    http_port, mqtt_port = free_port(), free_port()
    listener = socket.create_server(("127.0.0.1", http_port))

    def bad_http_server():
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 abc\r\nContent-Length: 0\r\n\r\n")
    conf = tmp_path / "m.conf"
    conf.write_text(f"user {getpass.getuser()}\nlistener {mqtt_port} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen([need("mosquitto"), "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    connect = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04bad1"
    try:
        def listening():
            try:
                socket.create_connection(("127.0.0.1", mqtt_port)).close()
                return True
            except OSError:
                return False
        wait_until(listening, 15, "mosquitto to listen", interval=0.2)

        def traffic():
            t = threading.Thread(target=bad_http_server)
            t.start()
            subprocess.run([need("curl"), "-s", "-o", "/dev/null", f"http://127.0.0.1:{http_port}/"])
            t.join(timeout=10)
            with socket.create_connection(("127.0.0.1", mqtt_port)) as s:
                s.sendall(connect)
                assert s.recv(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
                s.sendall(b"\x36\x07\x00\x03a/b\x00\x01")  # PUBLISH, QoS 3
                time.sleep(0.2)
        pcap = capture_while(tmp_path, f"tcp port {http_port} or tcp port {mqtt_port}", traffic)
    finally:
        listener.close()
        broker.terminate()
        broker.wait(timeout=10)
    alerts_of(tmp_path, pcap)  # replays into tmp_path/out
    files = [str(f) for f in (tmp_path / "out" / "flows").rglob("*.parquet")]
    rows = duckdb.sql(f"select dst_port, app_protocol, app_anomalies from read_parquet({files}) "
                      f"where src_port not in ({http_port}, {mqtt_port}) order by dst_port").fetchall()
    assert sorted(rows) == sorted([(http_port, "http", 1), (mqtt_port, "mqtt", 1)]), rows
    feats = [str(f) for f in (tmp_path / "out" / "features").rglob("*.parquet")]
    (most,), = duckdb.sql(f"select max(app_anomalies_out) from read_parquet({feats}) "
                          f"where entity = '127.0.0.1'").fetchall()
    assert most == 2, most
