"""Every built-in packet detection fires on traffic made to show it, and on the
host that did it: a capture written here (pcapwrite, no code shared with the
pipeline) with one scenario per host, replayed. The shared captures cover the
rest (test_detections.py); these are the ones no shared capture shows."""
import random

from conftest import query, replay, table
from pcapwrite import (ACK, FIN, PSH, RST, SYN, cut_to_headers, dns_message, tcp_frame,
                       udp_frame, write_pcap_records)

T0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC


def rec(t, frame, orig=None):
    """A record; with `orig`, of a packet that was `orig` bytes on the wire and
    is kept cut to `frame`, as a short snap length keeps it."""
    if orig:
        return (t, cut_to_headers(frame, orig), orig)
    return (t, frame, len(frame))


def session(client, server, sport, dport, t, out_payload=b"", orig_out=None):
    """A complete TCP connection: handshake, one request, FIN both ways."""
    r = [rec(t, tcp_frame(client, server, sport, dport, 1, 0, SYN)),
         rec(t + 0.001, tcp_frame(server, client, dport, sport, 1, 2, SYN | ACK)),
         rec(t + 0.002, tcp_frame(client, server, sport, dport, 2, 2, ACK))]
    if out_payload:
        r.append(rec(t + 0.003, tcp_frame(client, server, sport, dport, 2, 2, PSH | ACK, out_payload), orig_out))
    r += [rec(t + 0.004, tcp_frame(client, server, sport, dport, 3, 2, FIN | ACK)),
          rec(t + 0.005, tcp_frame(server, client, dport, sport, 2, 4, FIN | ACK)),
          rec(t + 0.006, tcp_frame(client, server, sport, dport, 4, 3, ACK))]
    return r


def scenarios():
    rnd = random.Random(7)
    r = []
    # Horizontal scan: 10.0.0.66 probes port 445 on 150 hosts (closed: RST-ACK).
    for k in range(150):
        t = T0 + 40 + rnd.uniform(0, 20)
        dst = f"10.1.{k // 100}.{k % 100 + 1}"
        r.append(rec(t, tcp_frame("10.0.0.66", dst, 40000 + k, 445, 1, 0, SYN)))
        r.append(rec(t + 0.001, tcp_frame(dst, "10.0.0.66", 445, 40000 + k, 0, 2, RST | ACK)))
    # DNS reflection: 250 answers from 50 resolvers to 10.0.0.77, which asked nothing.
    for k in range(250):
        t = T0 + 40 + rnd.uniform(0, 20)
        r.append(rec(t, udp_frame(f"198.51.100.{k % 50 + 1}", "10.0.0.77", 53, 80,
                                  dns_message(k, "example.org", response=True, qtype=255))))
    # DGA: 10.0.0.88 asks for 30 generated names; 27 do not exist.
    for k in range(30):
        t = T0 + 40 + rnd.uniform(0, 20)
        name = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(14)) + ".com"
        r.append(rec(t, udp_frame("10.0.0.88", "10.0.0.53", 5000 + k, 53, dns_message(k, name))))
        r.append(rec(t + 0.02, udp_frame("10.0.0.53", "10.0.0.88", 53, 5000 + k,
                                         dns_message(k, name, response=True, rcode=0 if k < 3 else 3))))
    # Beaconing: 10.0.0.99 connects to 203.0.113.50:443 every 5 s exactly.
    for k in range(30):
        r += session("10.0.0.99", "203.0.113.50", 50000 + k, 443, T0 + 5 * k)
    # Exfiltration: 10.0.0.111 sends 20-40 kB every half minute for five minutes,
    # then 60 MB in one pane (frames cut to their headers, original length 1500).
    for k in range(10):
        t = T0 + 30 * k + 3
        for j in range(rnd.randint(14, 27)):
            r += session("10.0.0.111", "203.0.113.60", 20000 + 100 * k + j, 443, t + rnd.uniform(0, 25),
                         b"x" * 64, 1500)
    for j in range(40_000):
        t = T0 + 330 + j * 0.0005
        r.append(rec(t, tcp_frame("10.0.0.111", "203.0.113.60", 60000, 443, 1 + j * 1446, 1, ACK, b"x" * 16), 1500))
    return r


EXPECTED = {
    ("horizontal_scan", "10.0.0.66"),
    ("dns_reflection", "10.0.0.77"),
    ("dga", "10.0.0.88"),
    ("beaconing", "10.0.0.99"),
    ("exfiltration", "10.0.0.111"),
}


def test_each_packet_detection_fires_on_its_own_host(tmp_path):
    cap = tmp_path / "scenarios.pcap"
    write_pcap_records(cap, scenarios())
    out = tmp_path / "out"
    replay(cap, out)
    got = query(f"select rule, entity, severity, summary from {table(out, 'alerts')} order by rule")
    assert {(r[0], r[1]) for r in got} == EXPECTED, got
    assert len(got) == len(EXPECTED), got
