"""The alert webhook against a real HTTP receiver started here (Python's
http.server on loopback): signatures checked with OpenSSL against the key
`amoskys-pipeline keygen` wrote, a receiver that is down (refusing connections,
then answering 503) before it comes up, and a job killed with alerts still
spooled. Alerts come from loghub's OpenSSH log (login_bruteforce_logs and
login_guessing_logs)."""
import base64
import json
import signal
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq

from conftest import BIN, DATA, require, wait_until
from livejob import Job, free_port, need, syslog_source

LOG = DATA / "syslog" / "loghub" / "OpenSSH_2k.log"


class Receiver:
    """Records every request; answers `status` (settable) to each."""

    def __init__(self, port):
        self.requests = []  # (status answered, headers, body)
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.status
                receiver.requests.append((status, self.headers, body))  # case-insensitive
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self):
        return [(h, b) for s, h, b in self.requests if s == 200]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def webhook_toml(port, tmp_path, extra=""):
    return f'''
[sinks.webhook]
url = "http://127.0.0.1:{port}/alerts"
headers = {{ Authorization = "Bearer test-token" }}
backoff_initial = "100ms"
backoff_max = "1s"
drain = "20s"
spool = "{tmp_path / 'spool'}"
{extra}
'''


def alert_ids_in_order(data_dir):
    """The ids of the alerts table, in the order they were written."""
    files = sorted((data_dir / "alerts").glob("date=*/hour=*/*.parquet"))
    return [i for f in files for i in pq.read_table(f).column("id").to_pylist()]


def feed(job, port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(LOG.read_bytes())
    job.wait_metric("amoskys_events_sent_total", 2000)


def test_alerts_arrive_signed_with_their_idempotency_keys(tmp_path):
    key = tmp_path / "alerts.key"
    out = subprocess.run([str(require(BIN)), "keygen", str(key)], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == (tmp_path / "alerts.key.pub").read_text().strip()
    hport, sport = free_port(), free_port()
    receiver = Receiver(hport)
    try:
        with Job(tmp_path, syslog_source(sport),
                 webhook_toml(hport, tmp_path, f'signing_key = "{key}"')) as job:
            feed(job, sport)
            job.wait_metric("amoskys_alerts_total", 1)
        ids = alert_ids_in_order(job.data)
        assert ids, "the log raises alerts"
        assert "delivered=" + str(len(ids)) in job.summary, job.summary
        got = receiver.accepted()
        assert [json.loads(b)["id"] for _, b in got] == ids
        for n, (headers, body) in enumerate(got):
            alert = json.loads(body)
            assert headers["Idempotency-Key"] == alert["id"]
            assert headers["Authorization"] == "Bearer test-token"
            assert alert["rule"] in ("login_bruteforce_logs", "login_guessing_logs"), alert
            counted = "auth_failures_as_remote" + ("_10m" if alert["rule"] == "login_guessing_logs" else "")
            assert alert["evidence"][counted] >= 10, alert
            sig = headers["Amoskys-Signature"]
            assert sig.startswith("ed25519=")
            (tmp_path / f"body{n}").write_bytes(body)
            (tmp_path / f"sig{n}").write_bytes(base64.b64decode(sig.removeprefix("ed25519=")))
            verify = [need("openssl"), "pkeyutl", "-verify", "-pubin", "-inkey", f"{key}.pub.pem",
                      "-rawin", "-in", str(tmp_path / f"body{n}"), "-sigfile", str(tmp_path / f"sig{n}")]
            assert subprocess.run(verify, capture_output=True).returncode == 0
        # A tampered body does not verify.
        (tmp_path / "body0").write_bytes(got[0][1].replace(b"login", b"logon"))
        assert subprocess.run([need("openssl"), "pkeyutl", "-verify", "-pubin", "-inkey", f"{key}.pub.pem",
                               "-rawin", "-in", str(tmp_path / "body0"), "-sigfile", str(tmp_path / "sig0")],
                              capture_output=True).returncode != 0
    finally:
        receiver.close()


def test_a_receiver_down_then_up_gets_every_alert_once_in_order(tmp_path):
    hport, sport = free_port(), free_port()
    receiver = None
    try:
        with Job(tmp_path, syslog_source(sport), webhook_toml(hport, tmp_path)) as job:
            feed(job, sport)
            job.wait_metric("amoskys_alerts_total", 1)
            # Nothing listens: connections refused, retried.
            job.wait_metric("amoskys_webhook_retries_total", 3)
            receiver = Receiver(hport)
            receiver.status = 503  # up, but failing for a while
            wait_until(lambda: len(receiver.requests) >= 3, 60, "3 requests answered 503")
            receiver.status = 200
            wait_until(lambda: len(receiver.accepted()) >= 1, 60, "a request answered 200")
            job.wait_metric("amoskys_webhook_retries_total", 3)
        ids = alert_ids_in_order(job.data)
        accepted = [json.loads(b)["id"] for _, b in receiver.accepted()]
        assert accepted == ids, (accepted, ids)
        assert any(s == 503 for s, _, _ in receiver.requests)
        retries = int(job.summary.split("retries=")[1].split()[0])
        assert retries >= 3, job.summary
    finally:
        if receiver:
            receiver.close()


def test_alerts_spooled_by_a_killed_job_are_delivered_after_a_restart(tmp_path):
    hport, sport = free_port(), free_port()
    # Reference: the alerts this input raises.
    (tmp_path / "ref").mkdir()
    ref = Job(tmp_path / "ref", syslog_source(sport))
    with ref as job:
        feed(job, sport)
    want = alert_ids_in_order(ref.data)
    assert want
    # Receiver down; the job spools every alert, then dies without a stop.
    job = Job(tmp_path, syslog_source(sport), webhook_toml(hport, tmp_path))
    job.start()
    try:
        feed(job, sport)
        spool = tmp_path / "spool" / "alerts.jsonl"
        wait_until(lambda: spool.exists() and spool.read_text().count("\n") >= len(want), 60,
                   f"{len(want)} alerts in {spool}")
    finally:
        job.proc.send_signal(signal.SIGKILL)
        job.proc.wait(timeout=30)
    receiver = Receiver(hport)
    try:
        # Restarted with no input: the spool is delivered first.
        with Job(tmp_path, syslog_source(free_port()), webhook_toml(hport, tmp_path)) as again:
            wait_until(lambda: len(receiver.accepted()) >= len(want), 60,
                       f"{len(want)} spooled alerts delivered")
        accepted = [json.loads(b)["id"] for _, b in receiver.accepted()]
        assert accepted == want
        assert "delivered=" + str(len(want)) in again.summary, again.summary
    finally:
        receiver.close()
