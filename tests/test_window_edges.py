"""Window edges, with hand-computed expectations: a record exactly on a 30 s
boundary B belongs to the windows starting at B - 30 and B, not to the one that
ends at B; a record a microsecond earlier to the windows starting at B - 60 and
B - 30."""
import datetime
import socket
import struct
import time

from conftest import query, replay, table
from livejob import Job, free_port, syslog_source

B = 1_700_000_010  # a multiple of 30 s


def write_pcap(path, packets):
    """Classic pcap, raw IPv4 (linktype 228), microsecond timestamps: one UDP
    datagram from 10.0.0.1 to 10.0.0.2 per (seconds, microseconds)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 228))
        for sec, usec in packets:
            udp = struct.pack("!HHHH", 40000, 53, 8, 0)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                             bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + udp
            f.write(struct.pack("<IIII", sec, usec, len(ip), len(ip)) + ip)


def test_a_packet_on_a_boundary_is_in_the_window_starting_there_and_the_one_before(tmp_path):
    cap = tmp_path / "edges.pcap"
    # One packet 1 µs before the boundary, one on it, one 1 µs before the next.
    write_pcap(cap, [(B - 1, 999_999), (B, 0), (B + 29, 999_999)])
    out = tmp_path / "out"
    replay(cap, out)
    got = dict(query(f"select epoch(window_start)::bigint, packets_out from {table(out, 'features')} "
                     f"where entity = '10.0.0.1'"))
    # [B-60, B) holds only the first; [B-30, B+30) all three; [B, B+60) the last two.
    assert got == {B - 60: 1, B - 30: 3, B: 2}, got


def test_a_syslog_message_on_a_boundary_is_in_the_window_starting_there_and_the_one_before(tmp_path):
    port = free_port()
    now = int(time.time())
    b = now - now % 30 - 300  # a boundary five minutes ago
    stamps = [(b - 1, 999_999), (b, 0), (b + 29, 999_999)]
    with Job(tmp_path, syslog_source(port)) as job:
        with socket.create_connection(("127.0.0.1", port)) as s:
            for sec, usec in stamps:
                ts = datetime.datetime.fromtimestamp(sec, datetime.timezone.utc).replace(microsecond=usec)
                s.sendall(f"<14>1 {ts.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} host app - - - edge\n".encode())
        job.wait_metric("amoskys_events_sent_total", 3)
    got = dict(job.rows(f"select epoch(window_start)::bigint, syslog_messages from {job.table('features')} "
                        f"where entity = '127.0.0.1'"))
    assert got == {b - 60: 1, b - 30: 3, b: 2}, got
