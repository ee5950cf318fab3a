"""Cross-source features: one job listening for syslog over TCP and capturing the
same connections on the loopback interface, so the host 127.0.0.1 is seen by both
sources in the same windows."""
import datetime
import socket

from conftest import close
from livejob import Job, free_port, syslog_source

CROSS = {
    "auth_failures_per_conn_in": (["auth_failures"], ["conn_attempts_in"], 1.0),
    "auth_failures_as_remote_per_conn_out": (["auth_failures_as_remote"], ["conn_attempts_out"], 1.0),
    "syslog_messages_per_kpacket": (["syslog_messages"], ["packets_out", "packets_in"], 1000.0),
}


def test_cross_source_features_of_a_host_seen_in_its_logs_and_on_the_wire(tmp_path):
    port = free_port()
    src = syslog_source(port, "logs") + f'''
[[sources.pcap]]
name = "wire"
interface = "lo"
filter = "tcp port {port}"
'''
    conns, failures = 3, 0
    with Job(tmp_path, src) as job:
        # Started means the capture is open with its filter: it sees what follows.
        assert job.listening["wire"] == "pcap lo", job.listening
        for k in range(conns):
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            lines = [f"<38>1 {now} host sshd 4{k} - - Failed password for root from 127.0.0.1 "
                     f"port {40000 + k} ssh2\n" for _ in range(k + 2)]
            failures += len(lines)
            lines.append(f"<14>1 {now} host app - - - connection {k} done\n")
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall("".join(lines).encode())
            # One connection at a time: each one's messages are through first.
            job.wait_metric("amoskys_events_sent_total", failures + k + 1)
        job.wait_metric("amoskys_events_sent_total", failures + conns)
        # Every connection's packets captured and through the dataflow: at least
        # SYN, SYN-ACK, ACK, the data, a FIN each way and the last ACK, so all
        # the SYNs (conn_attempts_in) and the data are in.
        job.wait_metric("amoskys_component_received_events_total", 7 * conns, component_id="wire")
        job.wait_metric("amoskys_packets_sent_total", 7 * conns)
    terms = sorted({t for num, den, _ in CROSS.values() for t in num + den})
    cols = list(CROSS) + terms
    rows = [dict(zip(cols, r[1:])) for r in job.rows(
        f"select entity, {', '.join(cols)} from {job.table('features')} where entity = '127.0.0.1'")]
    assert rows, "no features row for 127.0.0.1"
    both = [r for r in rows if r["syslog_messages"] is not None and r["packets_out"] is not None]
    assert both, f"no window saw 127.0.0.1 in both sources: {rows}"
    # Every connection and failure falls in the window(s) that cover the whole test.
    assert max(r["conn_attempts_in"] for r in both) == conns, both
    assert max(r["auth_failures"] for r in both) == failures, both
    for r in rows:
        for name, (num, den, scale) in CROSS.items():
            n = None if any(r[t] is None for t in num) else sum(r[t] for t in num)
            d = None if any(r[t] is None for t in den) else sum(r[t] for t in den)
            want = None if n is None or d is None or d <= 0 else scale * n / d
            assert close(r[name], want), f"{name}: got {r[name]}, want {want} from {r}"
    for name in CROSS:
        assert any(r[name] is not None for r in both), f"{name} is null in every window: {both}"
