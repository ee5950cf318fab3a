"""Writing small classic pcap files of TCP sessions from Python (no code shared with
the pipeline): Ethernet, IPv4 and TCP headers built with struct, checksums right,
so the capture reads the same in tshark as in the pipeline."""
import ipaddress
import struct


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04


def tcp_frame(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
              payload: bytes = b"") -> bytes:
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      5 << 4, flags, 64240, 0, 0) + payload
    pseudo = s + d + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    eth = bytes.fromhex("020000000002") + bytes.fromhex("020000000001") + b"\x08\x00"
    return eth + ip + tcp


def cut_to_headers(frame: bytes, wire_len: int) -> bytes:
    """An Ethernet/IPv4 frame as a capture with a short snap length keeps it: its
    IP header says the packet was `wire_len` bytes on the wire (total length
    `wire_len` - 14), while the record holds only the bytes given."""
    ip = frame[14:34]
    ip = ip[:2] + struct.pack("!H", wire_len - 14) + ip[4:10] + b"\0\0" + ip[12:]
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return frame[:14] + ip + frame[34:]


def ssh_login_attempt(client: str, server: str, sport: int, t: float):
    """(time, frame) of one short SSH session that fails: handshake, banners, a
    few bytes of key exchange and authentication, and the server's FIN."""
    c, s = 1000, 5000
    out = []

    def add(dt, frm, flags, payload=b""):
        nonlocal c, s
        if frm == "c":
            out.append((t + dt, tcp_frame(client, server, sport, 22, c, s, flags, payload)))
            c += len(payload) + (1 if flags & (SYN | FIN) else 0)
        else:
            out.append((t + dt, tcp_frame(server, client, 22, sport, s, c, flags, payload)))
            s += len(payload) + (1 if flags & (SYN | FIN) else 0)

    add(0.000, "c", SYN)
    add(0.001, "s", SYN | ACK)
    add(0.002, "c", ACK)
    add(0.010, "s", PSH | ACK, b"SSH-2.0-OpenSSH_7.2\r\n")
    add(0.020, "c", PSH | ACK, b"SSH-2.0-libssh2_1.8\r\n")
    add(0.100, "c", PSH | ACK, bytes(96))
    add(0.300, "s", FIN | ACK)
    add(0.301, "c", FIN | ACK)
    add(0.302, "s", ACK)
    return out


def write_pcap(path, frames):
    """Writes (time_s, frame) pairs, sorted by time, as a microsecond pcap."""
    write_pcap_records(path, [(t, f, len(f)) for t, f in frames])


def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    pseudo = s + d + struct.pack("!BBH", 0, 17, len(udp))
    udp = udp[:6] + struct.pack("!H", _checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    eth = bytes.fromhex("020000000002") + bytes.fromhex("020000000001") + b"\x08\x00"
    return eth + ip + udp


def dns_message(qid: int, name: str, response: bool = False, rcode: int = 0, qtype: int = 1) -> bytes:
    """A DNS message with one question (and, for a NOERROR response to an A
    query, one answer)."""
    flags = (0x8180 | rcode) if response else 0x0100
    answers = 1 if response and rcode == 0 and qtype == 1 else 0
    m = struct.pack("!HHHHHH", qid, flags, 1, answers, 0, 0)
    for label in name.split("."):
        m += bytes([len(label)]) + label.encode()
    m += b"\0" + struct.pack("!HH", qtype, 1)
    if answers:
        m += struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + bytes([192, 0, 2, 1])
    return m


def write_pcap_records(path, records):
    """Writes (time_s, frame, original length) records, sorted by time: a frame
    may stand for a longer packet cut to its headers (original length > frame)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for t, frame, orig in sorted(records, key=lambda x: x[0]):
            sec = int(t)
            usec = int(round((t - sec) * 1e6))
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            f.write(struct.pack("<IIII", sec, usec, len(frame), max(orig, len(frame))))
            f.write(frame)
