"""Replay of the shared real captures, checked against capinfos and tshark.

Per capture:
- packets and bytes equal capinfos exactly (every packet is read, decoded or
  counted by reason);
- every decoded, timely IP packet is in exactly one flow record;
- the flows' Community IDs equal tshark's, packet for packet (outside tunnels,
  see below);
- the number of TCP flow records agrees with tshark's TCP conversation statistics
  within FLOW_TOLERANCE. (tshark's UDP conversation table is no independent count
  of bidirectional flows: its SNMP dissector, for one, files every request and its
  response as two conversations. For UDP the Community ID sets are the count.)

Tunnels (IP-in-IP, 6in4, GRE, VXLAN, Geneve) take an exception: the pipeline
keys flows on the outer headers, while tshark hashes the innermost ones. Packets
of those kinds are recognised from tshark's own decoding; outside them the
Community IDs still equal tshark's, and the outer flows' Community IDs equal the
ones computed here (Community ID v1) from the outer headers tshark decoded. The
captures taking the exception are pinned in TUNNEL_CAPTURES.
"""
import base64
import hashlib
import ipaddress
import subprocess

import pyarrow.dataset as ds
import pytest

from conftest import (CONFORMANCE_FOLDERS, capinfos, captures, has_table, query, replay, table,
                      tshark_packets)

TUNNEL_PROTOS = {"4", "41", "47"}
TUNNEL_UDP_PORTS = {"4789", "6081"}
# The captures in which tshark decodes tunnelled packets today, i.e. every
# capture that takes the tunnel exception (outer-header Community IDs for the
# tunnel flows, tshark's TCP conversations counted outside the tunnels). Pinned:
# a capture newly taking the exception fails its test until it is added here.
#   tcpdump/geneve.pcap       Geneve (UDP 6081): all 39 packets, 4 outer flows
#   tcpdump/various_gre.pcap  GRE (IP protocol 47): 30 of 100 packets, 1 outer flow
#   tcpdump/vxlan.pcap        VXLAN (UDP 4789): all 10 packets, 4 outer flows
#   ndpi/syslog.pcap          6in4 (IP protocol 41): 6 of 94 packets, 2 outer flows
TUNNEL_CAPTURES = {"tcpdump/geneve.pcap", "tcpdump/various_gre.pcap", "tcpdump/vxlan.pcap",
                   "ndpi/syslog.pcap"}
assert len(TUNNEL_CAPTURES) == 4
# Flow records may exceed tshark's conversations where a flow is cut by the idle
# timeout (120 s) or a port is reused after FIN/RST, which tshark counts as one
# conversation; and fall short where tshark splits one 5-tuple into several TCP
# streams. Measured on the shared captures: at most 1 record or 2 % apart.
FLOW_TOLERANCE = (2, 0.02)

ALL = [(f, c) for f in CONFORMANCE_FOLDERS for c in captures(f)]


def ids(case):
    folder, cap = case
    return f"{folder}/{cap.parent.name}/{cap.name}" if cap.parent.name != folder else f"{folder}/{cap.name}"


def is_tunnel(p):
    return p.get("ip.proto") in TUNNEL_PROTOS or p.get("udp.srcport") in TUNNEL_UDP_PORTS \
        or p.get("udp.dstport") in TUNNEL_UDP_PORTS


# A display filter for the packets is_tunnel does not take.
NOT_TUNNEL = "!(" + " || ".join([f"ip.proto == {p}" for p in sorted(TUNNEL_PROTOS)]
                                + [f"udp.port == {p}" for p in sorted(TUNNEL_UDP_PORTS)]) + ")"


def tshark_tcp_conversations(cap, display_filter=None):
    """TCP conversations in tshark's statistics (of the packets `display_filter`
    takes, if given)."""
    conv = "conv,tcp" + (f",{display_filter}" if display_filter else "")
    proc = subprocess.run(["tshark", "-n", "-r", str(cap), "-o", "ip.defragment:FALSE", "-q",
                           "-z", conv], capture_output=True, text=True, timeout=300)
    assert "invalid" not in proc.stderr, proc.stderr
    return sum(1 for line in proc.stdout.splitlines() if "<->" in line)


def outer_community_id(p):
    """Community ID v1 (seed 0) of a packet's outer IPv4 header and, for TCP and
    UDP, its outer ports, from the fields tshark decoded (their first occurrence is
    the outer one). None if the outer network layer is not IPv4."""
    layers = (p.get("frame.protocols") or "").split(":")
    if "ip" not in layers or ("ipv6" in layers and layers.index("ipv6") < layers.index("ip")):
        return None
    proto = int(p["ip.proto"])
    src, dst = ipaddress.ip_address(p["ip.src"]).packed, ipaddress.ip_address(p["ip.dst"]).packed
    sp = dp = 0
    if proto in (6, 17):
        l4 = "tcp" if proto == 6 else "udp"
        sp, dp = int(p[f"{l4}.srcport"]), int(p[f"{l4}.dstport"])
    if (src, sp) > (dst, dp):
        src, dst, sp, dp = dst, src, dp, sp
    data = (0).to_bytes(2, "big") + src + dst + bytes([proto, 0])
    if proto in (6, 17):
        data += sp.to_bytes(2, "big") + dp.to_bytes(2, "big")
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()


def test_the_pinned_tunnel_captures_are_conformance_captures():
    assert TUNNEL_CAPTURES <= {ids(c) for c in ALL}, TUNNEL_CAPTURES - {ids(c) for c in ALL}


@pytest.mark.parametrize("case", ALL, ids=[ids(c) for c in ALL])
def test_capture_replays_like_capinfos_and_tshark_see_it(case, tmp_path):
    folder, cap = case
    out = tmp_path / "out"
    s = replay(cap, out)

    assert (s["packets"], s["bytes"]) == capinfos(cap)
    assert s["ip_packets"] + sum(s["skipped"].values()) == s["packets"]
    assert s["file_errors"] == []

    tsh = tshark_packets(cap)
    tunnels_seen = any(is_tunnel(p) for p in tsh)
    # Exactly the pinned captures take the tunnel exception.
    assert tunnels_seen == (ids(case) in TUNNEL_CAPTURES), \
        f"tunnelled packets seen: {tunnels_seen}; TUNNEL_CAPTURES needs updating, or a tunnel check"
    theirs = {p["communityid"] for p in tsh if p.get("communityid") and not is_tunnel(p)}
    # outer_community_id, used for the tunnels below, agrees with tshark wherever
    # tshark's Community ID is of the outer headers (IPv4 TCP and UDP outside tunnels).
    for p in tsh:
        if p.get("communityid") and not is_tunnel(p) and p.get("ip.proto") in ("6", "17") \
                and p.get(("tcp" if p["ip.proto"] == "6" else "udp") + ".srcport"):
            assert outer_community_id(p) == p["communityid"], p
    if not has_table(out, "flows"):
        assert s["ip_packets"] == 0 and not theirs and not tunnels_seen
        return
    flows = table(out, "flows")
    (n, pk, by), = query(f"select count(*), sum(packets_fwd + packets_bwd), "
                         f"sum(bytes_fwd + bytes_bwd) from {flows}")
    assert pk == s["ip_packets"] - s["late"]
    assert n == s["flows"]
    rows = query(f"select community_id, proto, src_port, dst_port, packets_fwd + packets_bwd "
                 f"from {flows}")
    tunnel_flow = lambda proto, sp, dp: (str(proto) in TUNNEL_PROTOS or str(sp) in TUNNEL_UDP_PORTS
                                         or str(dp) in TUNNEL_UDP_PORTS)
    ours = {cid for cid, proto, sp, dp, _ in rows if not tunnel_flow(proto, sp, dp)}
    # Outside tunnels, equal to tshark's (in tunnel captures too).
    assert ours == theirs, f"ours only {ours - theirs}, tshark only {theirs - ours}"
    # The tunnels: one flow per outer 5-tuple, its Community ID that of the outer
    # headers, holding every tunnelled packet.
    tunnel_rows = [(cid, n) for cid, proto, sp, dp, n in rows if tunnel_flow(proto, sp, dp)]
    tunnelled = [p for p in tsh if is_tunnel(p)]
    outer = {outer_community_id(p) for p in tunnelled}
    assert {cid for cid, _ in tunnel_rows} == outer, (tunnel_rows, outer)
    assert sum(n for _, n in tunnel_rows) == len(tunnelled)
    if tunnels_seen:
        assert outer and None not in outer, outer

    ours_tcp = query(f"select count(*) from {flows} where proto = 6")[0][0]
    # tshark counts the TCP conversations inside tunnels, the pipeline the outer
    # flows: in tunnel captures, count tshark's outside them.
    conv = tshark_tcp_conversations(cap, NOT_TUNNEL if tunnels_seen else None)
    slack = max(FLOW_TOLERANCE[0], FLOW_TOLERANCE[1] * conv)
    assert abs(ours_tcp - conv) <= slack, f"{ours_tcp} TCP flow records, tshark {conv}"


@pytest.mark.parametrize("folder", CONFORMANCE_FOLDERS)
def test_independent_readers_see_the_tables(folder, tmp_path):
    """A whole folder replayed as one stream; DuckDB and pyarrow read the output."""
    out = tmp_path / "out"
    s = replay([str(c) for c in captures(folder)], out)
    for name, rows in [("flows", s["flows"]), ("features", s["feature_rows"])]:
        dataset = ds.dataset(out / name, format="parquet", partitioning="hive")
        t = dataset.to_table()
        assert t.num_rows == rows > 0
        assert {"date", "hour"} <= set(t.column_names)
        assert query(f"select count(*) from {table(out, name)}")[0][0] == rows
    feats = ds.dataset(out / "features", format="parquet", partitioning="hive").schema
    assert str(feats.field("window_start").type) == "timestamp[us, tz=UTC]"
    assert str(feats.field("entity").type) == "string"
    flows = ds.dataset(out / "flows", format="parquet", partitioning="hive").schema
    assert str(flows.field("first_ts").type) == "timestamp[us, tz=UTC]"
    assert str(flows.field("packets_fwd").type) == "uint64"
    # No file is visible before its footer: nothing is left in progress.
    assert not list(out.rglob("*.inprogress"))
