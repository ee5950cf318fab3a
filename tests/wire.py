"""Traffic made on loopback by real tools, captured by tshark and replayed: what
the end-to-end tests of the wire-read detections share."""
from conftest import run_bin, wait_until
from livejob import need


def capture_while(tmp_path, bpf, make_traffic):
    """Runs `make_traffic()` while tshark captures `bpf` on loopback; the pcap."""
    import subprocess
    import time
    out = tmp_path / "traffic.pcapng"
    tshark = subprocess.Popen([need("tshark"), "-i", "lo", "-f", bpf, "-w", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # tshark says "Capturing on 'Loopback: lo'" once it listens.
        wait_until(lambda: out.exists(), 15, "tshark to start capturing")
        time.sleep(0.5)
        make_traffic()
        time.sleep(0.5)
    finally:
        tshark.terminate()
        tshark.wait(timeout=15)
    return out


def alerts_of(tmp_path, pcap):
    import duckdb
    out = tmp_path / "out"
    r = run_bin("replay", "--no-progress", "--out", str(out), str(pcap))
    assert r.returncode == 0, r.stderr
    files = list((out / "alerts").rglob("*.parquet"))
    if not files:
        return []
    return duckdb.sql(f"select rule, entity, summary from read_parquet({[str(f) for f in files]})").fetchall()
