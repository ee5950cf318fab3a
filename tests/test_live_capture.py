"""Live capture on the loopback interface of traffic the test makes itself (curl
against a local HTTP server), checked against tshark capturing the same traffic
at the same time."""
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import query, wait_until
from livejob import Job, free_port, need, summary_counter


@pytest.fixture
def http_server(tmp_path):
    port = free_port()
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_bytes(os.urandom(20000))
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: subprocess.run(["curl", "-s", "-o", "/dev/null",
                                       f"http://127.0.0.1:{port}/"]).returncode == 0,
               10, "the HTTP server to answer")
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def closed_connections(pkts, port):
    """How many of the connections to `port` in `pkts` (tshark's fields: ip.len,
    tcp.flags, tcp.srcport, tcp.dstport) tshark has seen to their end: reset, or
    both sides' FINs and then the other side's ACK of the last one."""
    by_client = {}
    for _, flags, sp, dp in pkts:
        from_server = int(sp) == port
        by_client.setdefault(dp if from_server else sp, []).append((int(flags, 16), from_server))
    done = 0
    for seq in by_client.values():
        fins = [i for i, (f, _) in enumerate(seq) if f & 0x01]
        if any(f & 0x04 for f, _ in seq):
            done += 1
        elif {seq[i][1] for i in fins} == {False, True} and \
                any(side != seq[fins[-1]][1] for _, side in seq[fins[-1] + 1:]):
            done += 1
    return done


def test_flows_of_live_loopback_traffic_match_tshark(tmp_path, http_server):
    need("curl")
    port = http_server
    bpf = f"tcp port {port}"
    # tshark prints each packet's fields as it captures it (-l: line by line).
    tshark = subprocess.Popen([need("tshark"), "-i", "lo", "-f", bpf, "-l", "-T", "fields",
                               "-e", "ip.len", "-e", "tcp.flags", "-e", "tcp.srcport", "-e", "tcp.dstport"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pkts = []
    reader = threading.Thread(target=lambda: pkts.extend(line.rstrip("\n").split("\t")
                                                         for line in tshark.stdout if line.strip()),
                              daemon=True)
    reader.start()
    # tshark says "Capturing on 'Loopback: lo'" once it is ready.
    deadline = time.time() + 20
    while time.time() < deadline and "Capturing on" not in tshark.stderr.readline():
        pass
    src = f"""
[[sources.pcap]]
name = "wire"
interface = "lo"
filter = "{bpf}"
"""
    n = 12
    with Job(tmp_path, src) as job:
        # Started means the capture is open with its filter: it sees what follows.
        assert job.listening["wire"] == "pcap lo", job.listening
        for i in range(n):
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/index.html"],
                               timeout=20)
            assert r.returncode == 0
        # Every connection over as tshark sees it: no packet is still to come. Then
        # the job has read as many as tshark (the totals are compared below).
        wait_until(lambda: closed_connections(list(pkts), port) == n, 20,
                   lambda: f"tshark to see {n} connections end ({closed_connections(list(pkts), port)})")
        job.wait_metric("amoskys_component_received_events_total", len(pkts), component_id="wire")
        tshark.terminate()
        tshark.wait(timeout=20)
        reader.join(timeout=20)
    summary = job.summary
    assert summary_counter(summary, "wire", "dropped") == 0
    assert summary_counter(summary, "wire", "kernel_dropped") == 0
    syns = sum(1 for p in pkts if int(p[1], 16) & 0x12 == 0x02)
    assert syns == n
    flows = job.table("flows")
    rows = query(f"select count(*), sum(packets_fwd + packets_bwd), sum(bytes_fwd + bytes_bwd), "
                 f"count(distinct community_id) from {flows} where dst_port = {port}")
    assert rows == [(n, len(pkts), sum(int(p[0]) for p in pkts), n)], rows
    # Every connection is one flow whose packet count equals tshark's for its client port.
    per_port = {}
    for p in pkts:
        client = p[2] if int(p[3]) == port else p[3]
        per_port[int(client)] = per_port.get(int(client), 0) + 1
    got = dict(query(f"select src_port, packets_fwd + packets_bwd from {flows} where dst_port = {port}"))
    assert got == per_port
    # Both ends are 127.0.0.1: the features table has its row.
    feats = job.table("features", "entity = '127.0.0.1'")
    assert query(f"select sum(packets_out) from {feats}")[0][0] == 2 * len(pkts)
