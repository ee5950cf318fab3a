"""Windows and the first feature set, recomputed here from tshark's decoding of
the same captures (Python, no code shared with the pipeline), and the
independence of the output from the worker count."""
import json
import math
import subprocess
from collections import defaultdict

import pytest

from conftest import DATA, captures, close, ip_bytes, query, replay, table, tshark_packets

HOP_NS = 30 * 10**9
SYN, RST, PSH, ACK, FIN = 0x02, 0x04, 0x08, 0x10, 0x01


def echo_data(cap):
    """{frame number: the data of an ICMP or ICMPv6 echo request or reply}: the
    message's bytes as tshark delimits them (its raw JSON), past the 8-byte
    header. (tshark's own `data` field leaves out a leading timestamp.)"""
    r = subprocess.run(["tshark", "-n", "-r", str(cap), "-o", "ip.defragment:FALSE", "-Y",
                        "icmp.type == 0 || icmp.type == 8 || icmpv6.type == 128 || icmpv6.type == 129",
                        "-T", "json", "-x"], capture_output=True, text=True, check=True)
    out = {}
    for pk in json.loads(r.stdout or "[]"):
        layers = pk["_source"]["layers"]
        raw = layers.get("icmp_raw") or layers.get("icmpv6_raw")
        if isinstance(raw[0], list):  # an ICMP error quoting one: the outer
            raw = raw[0]
        out[int(layers["frame"]["frame.number"])] = bytes.fromhex(raw[0])[8:]
    return out


def byte_entropy(data):
    """Bits per byte, rounded to f32 as the pipeline keeps it."""
    import struct
    if not data:
        return 0.0
    counts = defaultdict(int)
    for b in data:
        counts[b] += 1
    n = len(data)
    h = max(0.0, -sum(c / n * math.log2(c / n) for c in counts.values()))
    return struct.unpack("f", struct.pack("f", h))[0]


AMPLIFIER_PORTS = {17, 19, 69, 111, 123, 137, 161, 389, 520, 1434, 1900, 3283, 3702, 5353, 5683,
                   10001, 11211, 27015, 27960, 37810}


def parse(p, echoes=None):
    """One tshark row as (ts_ns, src, dst, proto, sport, dport, flags, length,
    dns, window, echo data)."""
    sec, _, frac = p["frame.time_epoch"].partition(".")
    ts = int(sec) * 10**9 + int((frac + "000000000")[:9])
    src = p.get("ip.src") or p.get("ipv6.src")
    dst = p.get("ip.dst") or p.get("ipv6.dst")
    # The outer IPv4 protocol decides (an ICMP error quotes a TCP header that
    # tshark decodes too); IPv6 here carries no extension headers.
    outer = int(p["ip.proto"]) if p.get("ip.proto") else None
    if p.get("tcp.srcport") and outer in (None, 6):
        proto, sp, dp = 6, int(p["tcp.srcport"]), int(p["tcp.dstport"])
    elif p.get("udp.srcport") and outer in (None, 17):
        proto, sp, dp = 17, int(p["udp.srcport"]), int(p["udp.dstport"])
    elif p.get("icmp.type"):
        proto, sp, dp = 1, 0, 0
    elif p.get("icmpv6.type"):
        proto, sp, dp = 58, 0, 0
    else:
        proto, sp, dp = outer or 0, 0, 0
    flags = int(p["tcp.flags"], 16) if p.get("tcp.flags") and proto == 6 else 0
    # DNS over UDP port 53: (kind 1 query / 2 response, rcode, qtype, name).
    dns = None
    if proto == 17 and 53 in (sp, dp) and p.get("dns.flags.response"):
        response = p["dns.flags.response"] in ("1", "True")
        name = p.get("dns.qry.name") or ""
        qtype = int(p["dns.qry.type"]) if p.get("dns.qry.type") else 0
        dns = (2 if response else 1, int(p.get("dns.flags.rcode") or 0), qtype,
               "" if name == "<Root>" else name)
    window = int(p["tcp.window_size_value"]) if proto == 6 and p.get("tcp.window_size_value") else 0
    echo = (echoes or {}).get(int(p["frame.number"])) if proto in (1, 58) else None
    return ts, src, dst, proto, sp, dp, flags, ip_bytes(p), dns, window, echo


def name_entropy(name):
    """Bits per character, rounded to f32 as the pipeline keeps it."""
    import struct
    if not name:
        return 0.0
    counts = defaultdict(int)
    for ch in name.encode():
        counts[ch] += 1
    h = max(0.0, -sum(c / len(name.encode()) * math.log2(c / len(name.encode())) for c in counts.values()))
    return struct.unpack("f", struct.pack("f", h))[0]


def stats(xs):
    if not xs:
        return [None] * 4
    m = sum(xs) / len(xs)
    return [min(xs), max(xs), m, math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))]


def entropy(values):
    """Shannon entropy in bits of the distribution of `values`; None when empty."""
    if not values:
        return None
    counts = defaultdict(int)
    for v in values:
        counts[v] += 1
    n = len(values)
    return max(0.0, -sum(c / n * math.log2(c / n) for c in counts.values()))


def nearest_rank(values, q):
    """The smallest value with at least ceil(q·n) of the n values at or below it."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v), max(1, math.ceil(q * len(v)))) - 1]


def gap_bucket_us(gap_ns):
    """Whole microseconds, exact below 16, else the 4 leading bits kept."""
    us = max(0, gap_ns) // 1000
    if us < 16:
        return us
    shift = us.bit_length() - 4
    return (us >> shift) << shift


def pearson(xs, ys):
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    cxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    cxx = sum((x - mx) ** 2 for x in xs)
    cyy = sum((y - my) ** 2 for y in ys)
    if cxx == 0 or cyy == 0:
        return None
    return max(-1.0, min(1.0, cxy / math.sqrt(cxx * cyy)))


def expected_features(packets):
    """{(entity, window_start_s): {feature: value}} by the documented definitions."""
    per = defaultdict(list)
    sent_to = defaultdict(set)  # (entity, pane) -> peers it sent to
    for pk in packets:
        ts, src, dst = pk[0], pk[1], pk[2]
        pane = ts // HOP_NS
        sent_to[(src, pane)].add(dst)
        for w in (pane - 1, pane):
            per[(src, w)].append((True, pk))
            per[(dst, w)].append((False, pk))
    out = {}
    for (e, w), lst in per.items():
        o = [p for d, p in lst if d]
        i = [p for d, p in lst if not d]
        f = {}
        is_syn = lambda p: p[3] == 6 and bool(p[6] & SYN) and not p[6] & ACK
        is_synack = lambda p: p[3] == 6 and bool(p[6] & SYN) and bool(p[6] & ACK)
        flag = lambda p, b: p[3] == 6 and bool(p[6] & b)
        bo, bi = sum(p[7] for p in o), sum(p[7] for p in i)
        f.update(packets_out=len(o), packets_in=len(i), bytes_out=bo, bytes_in=bi,
                 packets_out_per_s=len(o) / 60, packets_in_per_s=len(i) / 60,
                 bytes_out_per_s=bo / 60, bytes_in_per_s=bi / 60,
                 bytes_out_share=bo / (bo + bi) if bo + bi else None)
        for name, protos in (("tcp", {6}), ("udp", {17}), ("icmp", {1, 58})):
            f[f"{name}_packets_out"] = sum(p[3] in protos for p in o)
            f[f"{name}_packets_in"] = sum(p[3] in protos for p in i)
        for d, lst_ in (("out", o), ("in", i)):
            for s, v in zip(("min", "max", "mean", "std"), stats([p[7] for p in lst_])):
                f[f"pkt_size_{d}_{s}"] = v
            gaps = [max(0, b[0] - a[0]) / 1e9 for a, b in zip(lst_, lst_[1:])]
            for s, v in zip(("min", "max", "mean", "std"), stats(gaps)):
                f[f"iat_{d}_{s}"] = v
            buckets = [gap_bucket_us(b[0] - a[0]) for a, b in zip(lst_, lst_[1:])]
            for q, name in ((0.5, "p50"), (0.9, "p90")):
                f[f"pkt_size_{d}_{name}"] = nearest_rank([p[7] for p in lst_], q)
                r = nearest_rank(buckets, q)
                f[f"iat_{d}_{name}"] = None if r is None else r / 1e6
        tss = [p[0] for _, p in lst]
        f["active_span_s"] = (max(tss) - min(tss)) / 1e9
        f.update(tcp_syn_out=sum(map(is_syn, o)), tcp_syn_in=sum(map(is_syn, i)),
                 tcp_synack_out=sum(map(is_synack, o)), tcp_synack_in=sum(map(is_synack, i)))
        for b, n in ((FIN, "fin"), (RST, "rst"), (PSH, "psh")):
            f[f"tcp_{n}_out"] = sum(flag(p, b) for p in o)
            f[f"tcp_{n}_in"] = sum(flag(p, b) for p in i)
        f["tcp_syn_ratio_out"] = f["tcp_syn_out"] / f["tcp_packets_out"] if f["tcp_packets_out"] else None
        f["tcp_rst_ratio_in"] = f["tcp_rst_in"] / f["tcp_packets_in"] if f["tcp_packets_in"] else None
        f["tcp_synack_per_syn"] = f["tcp_synack_in"] / f["tcp_syn_out"] if f["tcp_syn_out"] else None
        f["distinct_peers_out"] = len({p[2] for p in o})
        before = set().union(*(sent_to.get((e, q), set()) for q in range(w - 4, w)))
        f["new_peers_out"] = len({p[2] for p in o} - before)
        f["peer_entropy_out"] = entropy([p[2] for p in o])
        bins_bytes, bins_conns = [0] * 12, [0] * 12
        for _, p in lst:
            b = (p[0] - w * HOP_NS) // (5 * 10**9)
            bins_bytes[b] += p[7]
            bins_conns[b] += is_syn(p)
        f["bytes_conns_corr"] = pearson(bins_bytes, bins_conns)
        f["distinct_peers_in"] = len({p[1] for p in i})
        dports = [p[5] for p in o if p[3] in (6, 17)]
        f["distinct_dst_ports_out"] = len(set(dports))
        f["distinct_local_ports_in"] = len({p[5] for p in i if p[3] in (6, 17)})
        if dports:
            n = len(dports)
            counts = defaultdict(int)
            for d in dports:
                counts[d] += 1
            f["dst_port_entropy_out"] = max(0.0, -sum(c / n * math.log2(c / n) for c in counts.values()))
        else:
            f["dst_port_entropy_out"] = None
        tried = {(p[2], p[4], p[5]) for p in o if is_syn(p)}
        answered = {(p[1], p[5], p[4]) for p in i if is_synack(p)}
        failed = len(tried - answered)
        f.update(conn_attempts_out=len(tried), conn_failed_out=failed,
                 failed_conn_ratio_out=failed / len(tried) if tried else None,
                 conn_attempts_in=len({(p[1], p[5], p[4]) for p in i if is_syn(p)}),
                 auth_conn_attempts_out=len({t for t in tried if t[2] in (21, 22, 23, 3389)}))

        def cv(st):
            return st[3] / st[2] if st[2] else None

        def burst(st):
            return (st[3] - st[2]) / (st[3] + st[2]) if st[2] is not None and st[3] + st[2] > 0 else None

        out_gaps = stats([max(0, b[0] - a[0]) / 1e9 for a, b in zip(o, o[1:])])
        syns = [p for p in o if is_syn(p)]
        syn_gaps = stats([max(0, b[0] - a[0]) / 1e9 for a, b in zip(syns, syns[1:])])
        f.update(iat_out_cv=cv(out_gaps), iat_out_burstiness=burst(out_gaps),
                 syn_interval_mean_out=syn_gaps[2], syn_interval_cv_out=cv(syn_gaps),
                 syn_burstiness_out=burst(syn_gaps))
        f["syn_retransmits_out"] = f["tcp_syn_out"] - len(tried)
        syn_windows = [p[9] for p in syns]
        f["syn_window_mean_out"] = stats(syn_windows)[2]
        f["syn_window_distinct_out"] = len(set(syn_windows))
        f["tcp_zero_window_out"] = sum(p[3] == 6 and p[9] == 0 and not p[6] & RST for p in o)
        queries = [p[8] for p in o if p[8] and p[8][0] == 1]
        asked = [q for q in queries if q[2] != 0]
        responses = [p[8] for p in i if p[8] and p[8][0] == 2]
        nx = sum(r[1] == 3 for r in responses)
        lens = stats([len(q[3].encode()) for q in asked])
        ents = stats([name_entropy(q[3]) for q in asked])
        f.update(dns_queries_out=len(queries), dns_responses_in=len(responses), dns_nxdomain_in=nx,
                 dns_nxdomain_ratio_in=nx / len(responses) if responses else None,
                 dns_distinct_qnames_out=len({q[3] for q in asked}),
                 dns_distinct_qtypes_out=len({q[2] for q in asked}),
                 dns_txt_queries_out=sum(q[2] == 16 for q in asked),
                 dns_qname_len_mean_out=lens[2], dns_qname_len_max_out=lens[1],
                 dns_qname_entropy_mean_out=ents[2],
                 dns_qname_spread_out=entropy([q[3] for q in asked]),
                 dns_null_queries_out=sum(q[2] == 10 for q in asked))
        echoes = [p[10] for p in o if p[10] is not None]
        f.update(icmp_echo_out=len(echoes), icmp_echo_bytes_out=sum(map(len, echoes)),
                 icmp_echo_sizes_out=len({len(d) for d in echoes}) if echoes else None,
                 icmp_echo_entropy_mean_out=stats([byte_entropy(d) for d in echoes if d])[2])
        import ipaddress
        unicast = not ipaddress.ip_address(e).is_multicast and e != "255.255.255.255"
        amp = [p for p in i if p[3] == 17 and p[4] in AMPLIFIER_PORTS] if unicast else []
        sent_ports = {p[5] for p in o if p[3] in (6, 17)}
        f.update(udp_amplifier_in=sum(p[4] not in sent_ports for p in amp),
                 udp_amplifier_sources_in=len({p[1] for p in amp}))
        out[(e, w * 30)] = f
    return out


CASES = ["generated", "pcap/zeek/http-bro.org.pcap", "pcap/ndpi/synscan.pcap",
         "pcap/zeek/attacks/ftp-bruteforce.pcap", "pcap/esnet/nmap_80_w_service_detection.pcap",
         # ICMP echo (Linux ping with its timestamp; Windows ping over IPv6), SNMP
         # answers from port 161, asked for (test_wire_detections.py has
         # answers nobody asked for).
         "pcap/l7/zeek/icmp-events/icmp-ping.pcap", "pcap/l7/zeek/icmp6-ping/icmp6-ping.pcap",
         "pcap/zeek/snmp/snmpv1_get.pcap"]


@pytest.mark.parametrize("case", CASES)
def test_every_feature_equals_its_definition_recomputed_from_tshark(case, generated, tmp_path):
    cap = generated if case == "generated" else DATA / case
    out = tmp_path / "out"
    s = replay(cap, out)
    assert s["late"] == 0
    echoes = echo_data(cap)
    packets = [parse(p, echoes) for p in tshark_packets(cap) if p.get("ip.src") or p.get("ipv6.src")]
    assert len(packets) == s["ip_packets"]
    want = expected_features(packets)
    meta = json.loads((out / "feature_metadata.json").read_text())
    # The packet features; a replay sees no syslog, SNMP or MQTT, so those
    # families must be null in every row.
    # (DHCP features describe hardware addresses, not IP hosts: see the DHCP test;
    # the application family is read from reassembled payloads: see
    # test_application.py.)
    names = [f["name"] for f in meta["features"]
             if f["source"] == "pcap" and f["family"] not in ("dhcp", "app")]
    others = [f["name"] for f in meta["features"] if f["source"] not in ("pcap", "derived")]
    assert others, "the catalogue has the event families"
    cols = ", ".join(names)
    rows = query(f"select entity, epoch(window_start)::bigint, {cols} from {table(out, 'features')}")
    assert len(rows) == len(want)
    for r in rows:
        exp = want[(r[0], r[1])]
        for name, got in zip(names, r[2:]):
            assert close(got, exp[name]), f"{name} of {r[0]} at {r[1]}: got {got}, want {exp[name]}"
    non_null = " + ".join(f"count({n})" for n in others)
    assert query(f"select {non_null} from {table(out, 'features')}") == [(0,)]


def test_windows_hop_every_30_s_and_each_packet_is_in_two(generated, tmp_path):
    out = tmp_path / "out"
    s = replay(generated, out)
    t = table(out, "features")
    (n, bad_start, bad_len, po, pi), = query(
        f"select count(*), count(*) filter (where epoch_us(window_start) % 30000000 <> 0), "
        f"count(*) filter (where window_end - window_start <> interval 60 second), "
        f"sum(packets_out), sum(packets_in) from {t}")
    assert n > 0 and bad_start == 0 and bad_len == 0
    assert po == pi == 2 * s["ip_packets"]
    # The first window begins half a window before the capture's first pane ends.
    first_pane = s["first_ts_ns"] // HOP_NS
    (mn, mx), = query(f"select min(epoch(window_start))::bigint, max(epoch(window_start))::bigint from {t}")
    assert mn == (first_pane - 1) * 30
    assert mx == (s["last_ts_ns"] // HOP_NS) * 30


@pytest.mark.parametrize("cap", ["stopddos/pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng", "generated"])
def test_rows_do_not_depend_on_the_worker_count(cap, generated, tmp_path):
    path = generated if cap == "generated" else DATA / "pcap" / cap
    results = {}
    for w in (1, 2, 4):
        out = tmp_path / f"w{w}"
        replay(path, out, "-w", str(w))
        results[w] = {name: query(f"select * exclude (date, hour) from {table(out, name)} order by all")
                      for name in ("flows", "features")}
    assert len(results[1]["features"]) > 1000 if cap != "generated" else len(results[1]["features"]) > 100
    assert results[1] == results[2] == results[4]


def test_feature_metadata_carries_each_features_run_statistics(generated, tmp_path):
    """feature_metadata.json's per-feature count, null count, min, max, mean and std
    equal DuckDB's aggregates over the features table the same run wrote."""
    out = tmp_path / "out"
    replay(generated, out)
    meta = json.loads((out / "feature_metadata.json").read_text())
    t = table(out, "features")
    (rows,), = query(f"select count(*) from {t}")
    assert meta["rows"] == rows > 0
    for f in meta["features"]:
        n = f["name"]
        (cnt, present, mn, mx, mean, std), = query(
            f"select count(*), count({n}), min({n})::double, max({n})::double, avg({n}), "
            f"stddev_pop({n}) from {t}")
        st = f["stats"]
        assert (st["count"], st["null_count"]) == (cnt, cnt - present), n
        for key, want in (("min", mn), ("max", mx), ("mean", mean), ("std", std)):
            assert close(st[key], want), f"{n} {key}: {st[key]} vs {want}"


def test_history_features_follow_their_definitions(generated, tmp_path):
    """delta, accel and zscore of every history base, recomputed in Python from
    the base columns of the same features table, entity by entity in window order."""
    out = tmp_path / "out"
    replay(generated, out)
    meta = json.loads((out / "feature_metadata.json").read_text())
    derived = [f["name"] for f in meta["features"]
               if f["source"] == "derived" and f["family"] != "horizon"]
    bases = sorted({n.rsplit("_", 1)[0] for n in derived})
    assert len(derived) == 3 * len(bases) >= 30
    cols = ", ".join(bases + derived)
    rows = query(f"select entity, epoch(window_start)::bigint // 30, {cols} "
                 f"from {table(out, 'features')} order by 1, 2")
    by_entity = defaultdict(list)
    for r in rows:
        by_entity[r[0]].append(r)
    checked = defaultdict(int)
    for ent_rows in by_entity.values():
        for bi, b in enumerate(bases):
            prev_w = prev_x = prev_d = None
            n, mean, var = 0, 0.0, 0.0
            for r in ent_rows:
                w, x = r[1], r[2 + bi]
                got = dict(zip(derived, r[2 + len(bases):]))
                adjacent = prev_w is not None and prev_w + 1 == w
                d = x - prev_x if adjacent and x is not None and prev_x is not None else None
                a = d - prev_d if adjacent and d is not None and prev_d is not None else None
                z = None
                if x is not None and n >= 5 and var > 0:
                    z = (x - mean) / math.sqrt(var)
                for name, want in ((f"{b}_delta", d), (f"{b}_accel", a), (f"{b}_zscore", z)):
                    assert close(got[name], want), f"{name} of {r[0]} at window {w}: {got[name]} vs {want}"
                    checked[name] += want is not None
                if x is not None:
                    if n == 0:
                        mean, var = x, 0.0
                    else:
                        dx = x - mean
                        mean += 0.1 * dx
                        var = 0.9 * (var + 0.1 * dx * dx)
                    n += 1
                prev_w, prev_x, prev_d = w, x, d
    # The generated capture is long enough to give every packet base a delta, and
    # a z-score of the number of peers.
    assert all(checked[f"{b}_delta"] > 0 for b in bases if b in
               ("packets_out", "bytes_out", "packets_in", "bytes_in")), dict(checked)
    assert checked["distinct_peers_out_zscore"] > 0, dict(checked)


def test_horizon_features_sum_ten_minutes_of_windows(tmp_path):
    """`b_10m` and `b_10m_max` of each horizon base, recomputed in Python from
    the base column of the same features table: per entity, the sum and the
    largest of its non-null values at this window and the nine non-overlapping
    windows before it (w, w-2, ..., w-18; 30 s hops). On zeek's FTP brute force,
    whose login connections and refused logins spread over several minutes."""
    out = tmp_path / "out"
    replay(DATA / "pcap" / "zeek" / "attacks" / "ftp-bruteforce.pcap", out)
    meta = json.loads((out / "feature_metadata.json").read_text())
    horizon = [f["name"] for f in meta["features"] if f["family"] == "horizon"]
    bases = [n.removesuffix("_10m") for n in horizon if n.endswith("_10m")]
    assert len(horizon) == 2 * len(bases) >= 6
    cols = ", ".join(f"{b}, {b}_10m, {b}_10m_max" for b in bases)
    rows = query(f"select entity, epoch(window_start)::bigint // 30, {cols} "
                 f"from {table(out, 'features')} order by 1, 2")
    by_entity = defaultdict(dict)
    for r in rows:
        by_entity[r[0]][r[1]] = r[2:]
    checked = defaultdict(int)
    for e, windows in by_entity.items():
        for w, vals in windows.items():
            for k, b in enumerate(bases):
                xs = [windows[w - 2 * j][3 * k] for j in range(10)
                      if w - 2 * j in windows and windows[w - 2 * j][3 * k] is not None]
                want = (sum(xs), max(xs)) if xs else (None, None)
                got = (vals[3 * k + 1], vals[3 * k + 2])
                assert got == want, f"{b} of {e} at window {w}: {got} vs {want}"
                checked[b] += bool(xs) and want[0] > want[1]
    # Sums over more than one window with something in it, for the packet bases.
    assert checked["auth_conn_attempts_out"] > 0 and checked["app_login_failures_out"] > 0, dict(checked)


def test_history_state_is_bounded_on_a_flood_of_spoofed_sources(tmp_path):
    """stopddos' SYN flood from thousands of spoofed addresses, with room for the
    history of only 500 entities: the state stays at the cap, and the rest is
    evicted and counted."""
    cap = DATA / "pcap" / "stopddos" / "pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng"
    cfg = tmp_path / "flows.toml"
    cfg.write_text('[features]\nmax_entity_state = 500\nentity_state_idle = "100h"\n')
    out = tmp_path / "out"
    s = replay(cap, out, "--config", cfg)
    (entities,), = query(f"select count(distinct entity) from {table(out, 'features')}")
    assert entities > 5000
    # Every entity beyond the 500 kept was forgotten at least once.
    assert s["history_evicted"] >= entities - 500


def test_packet_features_only_is_the_full_catalogues_first_columns(generated, tmp_path):
    full, lean = tmp_path / "full", tmp_path / "lean"
    replay(generated, full)
    replay(generated, lean, "--features", "packet")
    meta_full = json.loads((full / "feature_metadata.json").read_text())
    meta_lean = json.loads((lean / "feature_metadata.json").read_text())
    names = [f["name"] for f in meta_lean["features"]]
    assert names == [f["name"] for f in meta_full["features"]
                     if f["source"] == "pcap" and f["family"] not in ("dhcp", "app")]
    cols = ", ".join(names)
    q = "select entity, window_start, {} from {} order by 1, 2"
    assert query(q.format(cols, table(lean, "features"))) == query(
        q.format(cols, f"(select * from {table(full, 'features')} where dhcp_client_messages is null)"))
    (lean_cols,), = query(f"select count(*) from (describe select * from {table(lean, 'features')})")
    # entity, window_start, window_end, the packet features, and the date/hour partitions.
    assert lean_cols == 3 + len(names) + 2


# Packet and history features that may be constant or null over the shared
# captures, and why.
MAY_BE_CONSTANT = {
    "dhcp_discovers": "the one shared capture with DHCP (zeek's dhcp_flood) has INFORMs and "
                      "ACKs only; test_dhcp_features_per_hardware_address covers the rest",
    **{n: "counts attack traffic only (exploit strings, executables fetched by IP address, "
          "refused MQTT logins); the shared conformance captures have none, and "
          "test_application.py makes each non-zero with curl and mosquitto_pub on loopback"
       for n in ("http_numeric_host_out", "http_exploit_requests_out",
                 "http_numeric_host_executables_in", "mqtt_auth_failures_out")},
    **{n: "the conformance captures hold no DNS query for NULL records and their pings keep one "
          "data size (or send no data); test_wire_detections.py makes them vary with ping and "
          "DNS datagrams on loopback, and the l7 ping captures check them against tshark above"
       for n in ("dns_null_queries_out", "icmp_echo_sizes_out", "icmp_echo_entropy_mean_out")},
    **{n: "read from application payloads: the conformance captures have no self-signed "
          "certificate and no SMTP, POP3 or IMAP login; test_application.py checks certificates "
          "against Zeek and nDPI on pcap/l7, operators/src/app/login.rs each protocol's logins, "
          "and test_wire_detections.py an FTP server's refusals and acceptance with curl"
       for n in ("tls_self_signed_in", "tls_c2_traits_in", "smtp_auth_failures_out",
                 "pop3_login_failures_out", "imap_login_failures_out", "app_login_successes_out")},
    **{n: "no shared capture has 3 TLS clients over more than 10 minutes; "
          "test_wire_detections.py makes one with curl, Python's ssl and openssl s_server"
       for n in ("tls_rare_ja4_out", "tls_rare_ja4_traits_out")},
    "telnet_login_failures_out": "the one Telnet login in the shared captures (nDPI's) succeeds; "
                                 "test_wire_detections.py makes refusals with telnetd and login(1)",
    "distinct_peers_out_zscore": "needs one host seen in 6 windows (3 minutes) with a varying "
                                 "number of peers; no shared capture has one (the generated "
                                 "capture does: test_history_features_follow_their_definitions)",
}
EVENT_BASES = ("syslog_", "auth_", "mqtt_")


def test_no_packet_or_history_feature_is_constant_or_always_null_over_the_real_captures(tmp_path):
    """Every conformance capture in ../shared/data, each replayed on its own (they
    come from different years; as one stream the newest would make the rest
    late): each packet and history feature takes at least two distinct values."""
    files = [f for d in ("zeek", "ndpi", "suricata-verify", "esnet", "tcpdump", "stopddos")
             for f in captures(d)]
    assert len(files) > 50
    for k, f in enumerate(files):
        replay(f, tmp_path / "runs" / str(k))
    meta = json.loads((tmp_path / "runs" / "0" / "feature_metadata.json").read_text())
    # History features of syslog and MQTT bases are null in a replay, which has no
    # events: the live-job tests cover those families.
    names = [f["name"] for f in meta["features"]
             if f["source"] == "pcap" or (f["source"] == "derived" and not f["name"].startswith(EVENT_BASES))]
    t = f"read_parquet('{tmp_path}/runs/*/features/**/*.parquet', hive_partitioning=true)"
    exprs = ", ".join(f"count(distinct {n})" for n in names)
    distinct = dict(zip(names, query(f"select {exprs} from {t}")[0]))
    dull = {n: d for n, d in distinct.items() if d < 2 and n not in MAY_BE_CONSTANT}
    assert not dull, f"constant or always null over the shared captures: {dull}"


def test_dhcp_features_per_hardware_address(tmp_path):
    """DHCP messages are windowed per client hardware address (chaddr), checked
    against tshark's DHCP dissector on zeek's dhcp_flood capture (250 INFORMs from
    one hardware address through 250 source addresses, each ACKed)."""
    cap = DATA / "pcap" / "zeek" / "attacks" / "dhcp_flood.pcap"
    out = tmp_path / "out"
    replay(cap, out)
    r = subprocess.run(["tshark", "-r", str(cap), "-Y", "dhcp", "-T", "fields", "-e", "frame.time_epoch",
                        "-e", "dhcp.option.dhcp", "-e", "dhcp.hw.mac_addr", "-e", "ip.src"],
                       capture_output=True, text=True, check=True)
    want = {}
    for line in r.stdout.splitlines():
        t, kind, mac, src = line.split("\t")
        kind, pane = int(kind), int(float(t)) // 30
        for w in (pane - 1, pane):
            f = want.setdefault((mac, w * 30), {"client": 0, "disc": 0, "inform": 0, "replies": 0, "ips": set()})
            if kind in (1, 3, 4, 7, 8):
                f["client"] += 1
                if src != "0.0.0.0":
                    f["ips"].add(src)
            f["disc"] += kind == 1
            f["inform"] += kind == 8
            f["replies"] += kind in (2, 5, 6)
    assert len(want) == 3, want
    rows = query(f"""select entity, epoch(window_start)::bigint, dhcp_client_messages,
        dhcp_client_messages_per_s, dhcp_discovers, dhcp_informs, dhcp_server_replies, dhcp_client_ips
        from {table(out, 'features')} where dhcp_client_messages is not null""")
    got = {(e, w): (m, ps, d, i, rep, ips) for e, w, m, ps, d, i, rep, ips in rows}
    assert set(got) == set(want)
    for k, f in want.items():
        assert got[k] == (f["client"], f["client"] / 60, f["disc"], f["inform"], f["replies"], len(f["ips"])), k
    # IP hosts carry no DHCP features.
    assert query(f"select count(*) from {table(out, 'features')} "
                 f"where dhcp_client_messages is not null and entity like '%.%'") == [(0,)]

