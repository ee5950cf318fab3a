"""Syslog over TLS (RFC 5425) with mutual authentication: certificates made here
with the openssl CLI, a Python ssl client as the sender, DuckDB to read events."""
import socket
import ssl

from livejob import Job, free_port, make_pki, summary_counter


def tls_send(port, d, messages, client_cert=True):
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    if client_cert:
        ctx.load_cert_chain(str(d / "client.pem"), str(d / "client.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            for m in messages:
                b = m.encode()
                s.sendall(str(len(b)).encode() + b" " + b)
            # Without a client certificate TLS 1.3 fails only when the server
            # answers: read until it closes, which raises in that case.
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):
                pass


def test_tls_listener_with_client_certificates(tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    port = free_port()
    src = f"""
[[sources.syslog]]
name = "secure"
listen = "tls://127.0.0.1:{port}"
tls_cert = "{pki / 'server.pem'}"
tls_key = "{pki / 'server.key'}"
tls_client_ca = "{pki / 'ca.pem'}"
"""
    msgs = [f"<38>1 2026-01-15T09:00:0{i}Z gw sshd 77 - - Failed password for root from 198.51.100.{i} port 22 ssh2"
            for i in range(5)]
    with Job(tmp_path, src) as job:
        tls_send(port, pki, msgs)
        # Refused in the handshake: the message must not reach events, and the
        # failure is counted (how the client learns of it varies with TLS 1.3).
        try:
            tls_send(port, pki, ["<13>1 - - - - - - not authenticated"], client_cert=False)
        except (ssl.SSLError, ConnectionError, OSError):
            pass
        job.wait_metric("amoskys_component_errors_total", 1, component_id="secure",
                        error_type="tls_failures")
        job.wait_metric("amoskys_component_received_events_total", 5, component_id="secure")
        # The five through the dataflow, not only read. (The refused connection
        # sent nothing the job could read: its handshake failed, counted above.)
        job.wait_metric("amoskys_events_sent_total", 5)
    rows = job.rows(f"select auth_remote, auth_kind, protocol from {job.table('events')} order by 1")
    assert rows == [(f"198.51.100.{i}", "failure", "rfc5424") for i in range(5)]
    assert summary_counter(job.summary, "secure", "tls_failures") == 1
