"""Shared helpers for the end-to-end tests.

The tests run the real `amoskys-pipeline` binary on captures from ../shared/data
and check its Parquet output with independent readers (DuckDB, pyarrow) against
independent tools (capinfos, tshark).
"""
import json
import os
import re
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("AMOSKYS_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()
BIN = Path(os.environ.get("AMOSKYS_BIN", ROOT / "target" / "debug" / "amoskys-pipeline"))

# Folders whose captures are replayed and checked against capinfos/tshark.
CONFORMANCE_FOLDERS = ["tcpdump", "zeek", "suricata-verify", "ndpi", "esnet", "stopddos"]


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"missing {path}: the tests need ../shared/data beside the checkout "
                    f"(or AMOSKYS_SHARED_DATA) and a built binary (or AMOSKYS_BIN)")
    return path


def captures(folder: str) -> list[Path]:
    base = require(DATA / "pcap" / folder)
    return sorted(p for p in base.rglob("*") if p.suffix in (".pcap", ".pcapng", ".cap"))


def run_bin(*args, timeout=300, check=True):
    proc = subprocess.run([str(require(BIN)), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    assert "panicked" not in proc.stderr, proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def replay(inputs, out: Path, *extra, timeout=300):
    """Replays `inputs` into `out`; returns the run's JSON summary."""
    if out.exists():
        shutil.rmtree(out)
    summary = out.parent / (out.name + ".summary.json")
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    run_bin("replay", *inputs, "--out", out, "--no-progress", "--summary-json", summary, *extra,
            timeout=timeout)
    return json.loads(summary.read_text())


def table(out: Path, name: str) -> str:
    """A DuckDB table expression over one output table."""
    return f"read_parquet('{out}/{name}/**/*.parquet', hive_partitioning=true, union_by_name=true)"


def wait_until(cond, timeout=60, what="the condition", interval=0.05):
    """Calls `cond` until it returns a true value, and returns that value. Past
    `timeout` seconds, fails with an AssertionError naming `what` (a string, or a
    function returning one, called then: e.g. to show the last value seen)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for "
                                 f"{what() if callable(what) else what}")
        time.sleep(interval)  # the poll interval: nothing to wait on but time between checks


def has_table(out: Path, name: str) -> bool:
    return any((out / name).rglob("*.parquet"))


ALERT_COLUMNS = "rule, entity, severity, id, summary, evidence"


def alert_rows(out: Path, summary: dict, columns: str = ALERT_COLUMNS):
    """The rows of a replay's alerts table (`columns`, in window, rule and entity
    order), checked against the replay's summary: exactly as many as the run says
    it raised. A replay that raises none writes no alerts table, so [] here only
    means "none" when the summary agrees; on its own it proves nothing, hence
    CANARY_RULE for tests of silence."""
    if not has_table(out, "alerts"):
        assert summary["alerts"] == 0, f"the run raised {summary['alerts']} alerts but wrote no alerts table"
        return []
    rows = query(f"select {columns} from {table(out, 'alerts')} order by window_start, rule, entity")
    assert len(rows) == summary["alerts"], (len(rows), summary["alerts"])
    return rows


# A low-severity rule that matches every entity with traffic, grouped into one
# alert per run of windows: a replay with any features row raises it and so must
# write the alerts table. Tests that expect silence from the built-in detections
# add it (canary_config) and leave its alerts out, so that an alerts table that
# was never written fails them instead of looking like silence. (Adding it changes
# no built-in alert: checked on every capture in ../shared/data.)
CANARY = "canary_any_traffic"
CANARY_RULE = f'''
[[rules]]
name = "{CANARY}"
condition = "packets_out >= 0 or packets_in >= 0"
group_by = "all"
severity = "low"
'''


def canary_config(d: Path, extra: str = "") -> Path:
    """A flows.toml in `d` with CANARY_RULE (and `extra`)."""
    cfg = d / "canary.toml"
    cfg.write_text(CANARY_RULE + extra)
    return cfg


def silent_alerts(out: Path, summary: dict, columns: str = ALERT_COLUMNS):
    """For a replay run with canary_config: the alerts other than the canary's,
    after checking that the run computed features and the alerts sink wrote the
    canary's alert for them (`columns` must start with the rule)."""
    assert summary["feature_rows"] > 0, "no features: the detections had nothing to run on"
    assert query(f"select count(*) from {table(out, 'features')}")[0][0] == summary["feature_rows"]
    rows = alert_rows(out, summary, columns)
    assert any(r[0] == CANARY for r in rows), f"no {CANARY} alert: the alerts sink wrote nothing"
    return [r for r in rows if r[0] != CANARY]


def close(a, b):
    """Equal within float rounding (relative 1e-9), or both null."""
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1.0)


def query(sql: str):
    return duckdb.connect().execute(sql).fetchall()


def capinfos(path: Path) -> tuple[int, int]:
    """(packets, bytes on the wire) as capinfos counts them."""
    out = subprocess.run(["capinfos", "-T", "-r", "-c", "-d", str(path)], capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    fields = out.stdout.strip().split("\t")
    return int(fields[1]), int(fields[2])


def classic_pcap_records(path: Path):
    """(packets, sum of original lengths) of a classic pcap file, read record by
    record here; None for other formats (pcapng). A record cut short at the end
    of the file is not counted, as libpcap does not return it."""
    import struct
    data = path.read_bytes()
    if len(data) < 24:
        return None
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<",
              b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}.get(magic)
    if endian is None:
        return None
    off, n, total = 24, 0, 0
    while off + 16 <= len(data):
        _, _, incl, orig = struct.unpack(endian + "IIII", data[off:off + 16])
        if off + 16 + incl > len(data):
            break
        n += 1
        total += orig
        off += 16 + incl
    return n, total


TSHARK_FIELDS = ["frame.time_epoch", "frame.len", "frame.protocols", "ip.len", "ipv6.plen", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
                 "ip.proto", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport",
                 "tcp.flags", "icmp.type", "icmpv6.type", "communityid",
                 "dns.flags.response", "dns.flags.rcode", "dns.qry.name", "dns.qry.type",
                 "tcp.window_size_value", "frame.number"]


def tshark_packets(path: Path):
    """Per-packet fields (first, i.e. outermost, occurrence) decoded by tshark."""
    cmd = ["tshark", "-n", "-r", str(path), "--enable-protocol", "communityid",
           "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
           "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    rows = []
    for line in out.stdout.splitlines():
        v = dict(zip(TSHARK_FIELDS, line.split("\t")))
        rows.append(v)
    return rows


def loghub_failed_by_window(epoch):
    """{remote: {window: failed logins}} for OpenSSH_2k.log as
    `auth_failures_as_remote` counts them, from loghub's structured CSV (its own
    parse of the log, not ours): each line counts in the two 60 s windows (start
    pane, 30 s each) that hold it, and per window the more of sshd's own `Failed
    <method>` lines (repeats included, `Failed none` not) and pam_unix's failures
    (`PAM N more` counting N), since one attempt is logged by both.
    `epoch(day, h, m, s)` is a line's time in seconds."""
    own = defaultdict(lambda: defaultdict(int))
    pam = defaultdict(lambda: defaultdict(int))
    for line in (DATA / "syslog" / "loghub" / "OpenSSH_2k.log_structured.csv").read_text().splitlines()[1:]:
        _, _, day, clock, _, _, rest = line.split(",", 6)
        event_id = re.search(r",(E\d+),", line).group(1)
        content = rest.rsplit(",", 2)[0]
        if event_id in ("E9", "E10", "E14"):
            remote, into = content.split(" from ")[1].split()[0], own
            n = int(content.split()[2]) if event_id == "E14" else 1
        elif event_id in ("E15", "E16", "E17", "E19", "E20"):
            remote, into = content.split("rhost=")[1].split()[0], pam
            n = int(content.split()[1]) if event_id in ("E15", "E16", "E17") else 1
        else:
            continue
        pane = int(epoch(int(day), *map(int, clock.split(":")))) // 30
        for w in (pane - 1, pane):
            into[remote][w] += n
    return {r: {w: max(own[r][w], pam[r][w]) for w in set(own[r]) | set(pam[r])}
            for r in set(own) | set(pam)}


def ip_bytes(p):
    """The bytes the pipeline counts for a packet tshark decoded: its outer IP
    header's total length (IPv6: 40 + payload length), at most the frame."""
    layers = (p.get("frame.protocols") or "").split(":")
    v4 = layers.index("ip") if "ip" in layers else None
    v6 = layers.index("ipv6") if "ipv6" in layers else None
    if v4 is not None and (v6 is None or v4 < v6) and p.get("ip.len"):
        n = int(p["ip.len"])
    elif v6 is not None and p.get("ipv6.plen") and int(p["ipv6.plen"]):
        n = 40 + int(p["ipv6.plen"])
    else:
        return int(p["frame.len"])
    return min(n, int(p["frame.len"]))


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """The project's own sample capture (known timestamps and content)."""
    d = tmp_path_factory.mktemp("generated")
    pcap = d / "sample.pcap"
    run_bin("generate-capture", pcap, "--hosts", "16", "--minutes", "4")
    return pcap


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Thirty minutes of the sample office without its scan, replayed and
    trained on twice (two model files): tests/test_models.py and the
    notebooks share it."""
    d = tmp_path_factory.mktemp("models")
    normal = d / "normal.pcap"
    run_bin("generate-capture", normal, "--hosts", "24", "--minutes", "30", "--seed", "3", "--no-scan")
    data = d / "normal"
    replay(normal, data)
    models = [d / "site.model", d / "again.model"]
    for m in models:
        r = run_bin("train", "--data", data, "--model", m)
        assert "trained on" in r.stderr, r.stderr
    return d, data, models
