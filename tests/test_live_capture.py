"""Live capture on the loopback interface of traffic the test makes itself (curl
against a local HTTP server), checked against tshark capturing the same traffic
at the same time."""
import os
import subprocess
import sys
import time

import pytest

from conftest import query
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
    deadline = time.time() + 10
    while time.time() < deadline:
        if subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"]).returncode == 0:
            break
        time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def test_flows_of_live_loopback_traffic_match_tshark(tmp_path, http_server):
    need("curl")
    port = http_server
    bpf = f"tcp port {port}"
    reference = tmp_path / "reference.pcapng"
    tshark = subprocess.Popen([need("tshark"), "-i", "lo", "-f", bpf, "-w", str(reference)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
        time.sleep(0.5)
        for i in range(n):
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/index.html"],
                               timeout=20)
            assert r.returncode == 0
        job.wait_metric("amoskys_component_received_events_total", 1, component_id="wire")
        time.sleep(1.0)
        tshark.terminate()
        tshark.wait(timeout=20)
    summary = job.summary
    assert summary_counter(summary, "wire", "dropped") == 0
    assert summary_counter(summary, "wire", "kernel_dropped") == 0
    fields = subprocess.run([need("tshark"), "-r", str(reference), "-T", "fields", "-e", "ip.len",
                             "-e", "tcp.flags", "-e", "tcp.srcport", "-e", "tcp.dstport"],
                            capture_output=True, text=True, check=True).stdout.split("\n")
    pkts = [line.split("\t") for line in fields if line]
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
