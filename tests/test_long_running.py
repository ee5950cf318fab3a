"""The long-running job (`amoskys-pipeline --config FILE`) with syslog listeners on
loopback: util-linux `logger` and a TCP client as senders, SIGTERM to stop,
DuckDB to read what was written."""
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter

import pytest

from conftest import BIN, DATA, loghub_failed_by_window, query, require, wait_until


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp_path, port, *extra, syslog="", parquet="", runtime=""):
    cfg = tmp_path / "flows.toml"
    cfg.write_text(f'''
[runtime]
{runtime}

[[sources.syslog]]
name = "edge"
listen = ["udp://127.0.0.1:{port}", "tcp://127.0.0.1:{port}"]
{syslog}

[sinks.parquet]
path = "{tmp_path / 'data'}"
{parquet}
''')
    proc = subprocess.Popen([str(require(BIN)), "--config", str(cfg), *extra],
                            stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if line.startswith("writing to"):
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the job did not start: " + "".join(seen))


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, rest
    assert "panicked" not in rest, rest
    return rest


def events(tmp_path, where="true"):
    return f"(select * from read_parquet('{tmp_path / 'data'}/events/**/*.parquet', hive_partitioning=true) where {where})"


def test_logger_and_a_replayed_ssh_log_land_in_events(tmp_path):
    port, mport = free_port(), free_port()
    proc = start(tmp_path, port, "--metrics-listen", f"127.0.0.1:{mport}")
    p = str(port)
    try:
        for args in (["-d", "--rfc3164", "-t", "a3164"], ["-d", "--rfc5424", "-t", "a5424"],
                     ["-T", "--rfc5424", "-t", "tnl"], ["-T", "--octet-count", "--rfc5424", "-t", "toc"]):
            subprocess.run(["logger", "-n", "127.0.0.1", "-P", p, *args, "-p", "auth.notice",
                            "hello " + args[-1]], check=True, timeout=10)
        log = (DATA / "syslog" / "loghub" / "OpenSSH_2k.log").read_bytes()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(log)
        wait_scraped(mport, RECEIVED, 2004)
        wait_scraped(mport, SENT, 2004)
    finally:
        summary = stop(proc)
    t = events(tmp_path)
    assert query(f"select count(*) from {t}")[0][0] == 2004
    apps = {r[0]: r[1:] for r in query(f"select appname, protocol, facility, severity, message from {t} "
                                       f"where appname in ('a3164', 'a5424', 'tnl', 'toc')")}
    assert apps["a3164"] == ("rfc3164", "auth", 5, "hello a3164")
    assert apps["toc"] == ("rfc5424", "auth", 5, "hello toc")
    # Failed passwords per remote address, against loghub's structured parse.
    want = Counter()
    for line in (DATA / "syslog" / "loghub" / "OpenSSH_2k.log_structured.csv").read_text().splitlines()[1:]:
        content = line.split(",", 6)[6]
        event_id = re.search(r",(E\d+),", line).group(1)
        if event_id in ("E9", "E10"):
            want[content.split(" from ")[1].split()[0]] += 1
        elif event_id == "E14":
            want[content.split(" from ")[1].split()[0]] += int(content.split()[2])
    got = dict(query(f"select auth_remote, sum(auth_count)::bigint from {t} "
                     f"where auth_kind = 'failure' and auth_method = 'password' group by 1"))
    assert got == dict(want)
    assert "2004 events" in summary
    assert not list((tmp_path / "data").rglob("*.inprogress"))
    # The facility and app families of the sending host, against events.
    feats = f"read_parquet('{tmp_path / 'data'}/features/**/*.parquet', hive_partitioning=true)"
    (auth_events, apps), = query(f"select count(*) filter (where facility in ('auth', 'authpriv')), "
                                 f"count(distinct appname) from {t} where entity = '127.0.0.1'")
    (auth_feat, max_apps), = query(f"select sum(syslog_facility_auth)::bigint, max(syslog_distinct_apps) "
                                   f"from {feats} where entity = '127.0.0.1'")
    # Each message counts in the two windows that contain it.
    assert auth_feat == 2 * auth_events > 0
    assert 1 <= max_apps <= apps


def test_sigterm_during_live_input_keeps_every_acknowledged_record(tmp_path):
    port, mport = free_port(), free_port()
    proc = start(tmp_path, port, "--metrics-listen", f"127.0.0.1:{mport}")
    stop_sending = threading.Event()
    sent = [0]

    def sender():
        with socket.create_connection(("127.0.0.1", port)) as s:
            i = 0
            try:
                while not stop_sending.is_set():
                    s.sendall(b"".join(f"<13>Jan 15 09:00:00 host app: message {i + k}\n".encode()
                                       for k in range(100)))
                    i += 100
            except OSError:
                pass
            sent[0] = i

    th = threading.Thread(target=sender)
    th.start()
    try:
        # Input well under way (and still going) when the SIGTERM comes.
        wait_scraped(mport, RECEIVED, 20_000)
    finally:
        summary = stop(proc)
    stop_sending.set()
    th.join(timeout=10)
    accepted = int(re.search(r"stopped: (\d+) events", summary).group(1))
    assert accepted > 0
    # Every file is complete (DuckDB reads them all) and holds every record the
    # job reported as accepted.
    assert query(f"select count(*) from {events(tmp_path)}")[0][0] == accepted
    assert not list((tmp_path / "data").rglob("*.inprogress"))


def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


RECEIVED = 'amoskys_component_received_events_total{component_kind="source",component_type="syslog",component_id="edge"}'
SENT = "amoskys_events_sent_total"


def wait_scraped(mport, key, at_least, timeout=60):
    """Waits until the metric `key` (as scrape() names it) reaches `at_least`."""
    last = [None]

    def reached():
        try:
            last[0] = scrape(mport).get(key, 0)
        except OSError:  # the endpoint is not up yet
            last[0] = 0
        return last[0] >= at_least

    wait_until(reached, timeout, lambda: f"{key} >= {at_least} (at {last[0]})", interval=0.2)


def test_metrics_endpoint_counts_what_the_sources_saw(tmp_path):
    port, mport = free_port(), free_port()
    proc = start(tmp_path, port, "--metrics-listen", f"127.0.0.1:{mport}")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(50):
                s.sendto(f"<13>Jan 15 09:00:00 host app: metric {i}".encode(), ("127.0.0.1", port))
            s.sendto(b"\x00\x01 junk", ("127.0.0.1", port))  # no syslog: kept as it is
            s.sendto(b"\x00\x00 \n", ("127.0.0.1", port))    # nothing in it: discarded
        key = 'amoskys_component_received_events_total{component_kind="source",component_type="syslog",component_id="edge"}'
        sent_key = "amoskys_events_sent_total"
        junk_key = ('amoskys_component_discarded_events_total{component_id="edge",component_type="syslog",'
                    'reason="empty",intentional="false"}')
        m = {}

        def counted():
            m.clear()
            m.update(scrape(mport))
            return m.get(key) == 52 and m.get(sent_key) == 51

        wait_until(counted, 10, lambda: f"52 received and 51 sent: {m}", interval=0.3)
        assert m.get(key) == 52, m
        assert m.get(sent_key) == 51, m
        assert m.get(junk_key) == 1, m
        assert "amoskys_channel_depth_batches{component_id=\"edge\"}" in m
    finally:
        stop(proc)


def vm_hwm_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


BACKPRESSURE_LINE = "<13>Jan 15 09:00:00 host app: backpressure message number {:08d} " + "p" * 20 + "\n"


def numbered(first, count):
    return "".join(BACKPRESSURE_LINE.format(k) for k in range(first, first + count)).encode()


def test_a_fast_tcp_sender_is_slowed_not_buffered_and_nothing_is_lost(tmp_path):
    """Backpressure: 400,000 messages, built beforehand and written to one TCP
    connection as fast as loopback carries them, into a job whose Parquet writer is
    slowed down (zstd at its slowest level) and whose dataflow may hold only 4,096
    records. The source's queue fills and the listener waits: the sender is slowed
    to the writer's pace. Once the first 60,000 messages have brought the job to
    its working size, the next 340,000 (about 30 MB of text, several times that as
    records) raise its peak memory by less than their text size — a bound relative
    to the job's own first phase, not a machine-dependent figure. (Measured: a few
    MiB; with the source queue made unbounded, about four times the text.)
    Every message is written."""
    port, mport = free_port(), free_port()
    proc = start(tmp_path, port, "--metrics-listen", f"127.0.0.1:{mport}",
                 runtime="max_in_flight = 4096", parquet="zstd_level = 22\nrow_group_rows = 5000")
    phase1, phase2 = 60_000, 340_000
    n = phase1 + phase2
    first, rest = numbered(0, phase1), numbered(phase1, phase2)
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(first)
            wait_scraped(mport, RECEIVED, phase1, timeout=120)
            hwm1 = vm_hwm_kib(proc.pid) * 1024
            s.sendall(rest)
        wait_scraped(mport, RECEIVED, n, timeout=240)
        hwm2 = vm_hwm_kib(proc.pid) * 1024
    finally:
        summary = stop(proc)
    assert query(f"select count(*) from {events(tmp_path)}")[0][0] == n
    assert f"{n} events" in summary
    growth = hwm2 - hwm1
    assert growth < len(rest), (
        f"peak RSS grew by {growth / 2**20:.1f} MiB while {len(rest) / 2**20:.0f} MiB more text "
        f"arrived (peak after phase 1: {hwm1 / 2**20:.0f} MiB)")


def test_stopping_reads_what_open_connections_already_delivered(tmp_path):
    """SIGTERM right after a TCP sender's last write: what the kernel already took
    from the sender is still read and written (within the listener's drain time),
    and the job still stops with exit 0."""
    port = free_port()
    proc = start(tmp_path, port)
    n = 200_000
    try:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(numbered(0, n))
        # Stop while the connection is still open and its data still unread.
        summary = stop(proc)
        s.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert query(f"select count(*) from {events(tmp_path)}")[0][0] == n
    assert f"{n} events" in summary


def loghub_by_remote():
    """Per remote address, from loghub's structured parse of OpenSSH_2k.log: failed
    logins summed over the windows that hold them (as `auth_failures_as_remote`
    counts them), and invalid users."""
    failed = Counter()
    for remote, windows in loghub_failed_by_window(
            lambda day, h, m, s: day * 86400 + h * 3600 + m * 60 + s).items():
        failed[remote] = sum(windows.values())
    invalid = Counter()
    for line in (DATA / "syslog" / "loghub" / "OpenSSH_2k.log_structured.csv").read_text().splitlines()[1:]:
        content = line.split(",", 6)[6]
        if re.search(r",(E\d+),", line).group(1) == "E13":
            invalid[content.split(",")[0].split(" from ")[1].split()[0]] += 1
    return failed, invalid


@pytest.mark.parametrize("framing", ["newline", "octet-counting"])
def test_ssh_log_over_each_tcp_framing_gives_failures_per_remote_in_features(tmp_path, framing):
    port, mport = free_port(), free_port()
    proc = start(tmp_path, port, "--metrics-listen", f"127.0.0.1:{mport}")
    lines = (DATA / "syslog" / "loghub" / "OpenSSH_2k.log").read_bytes().splitlines()
    if framing == "newline":
        payload = b"".join(l + b"\n" for l in lines)
    else:
        payload = b"".join(str(len(l)).encode() + b" " + l for l in lines)
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(payload)
        wait_scraped(mport, RECEIVED, len(lines))
        wait_scraped(mport, SENT, len(lines))
    finally:
        summary = stop(proc)
    assert f"{len(lines)} events" in summary
    failed, invalid = loghub_by_remote()
    feats = (f"read_parquet('{tmp_path / 'data'}/features/**/*.parquet', hive_partitioning=true)")
    # Each message counts in the two windows that contain it.
    got = {e: (f, i // 2) for e, f, i in query(
        f"select entity, sum(auth_failures_as_remote)::bigint, sum(auth_invalid_users_as_remote)::bigint "
        f"from {feats} where auth_failures_as_remote > 0 or auth_invalid_users_as_remote > 0 group by 1")}
    want = {e: (failed[e], invalid[e]) for e in set(failed) | set(invalid)}
    assert got == want


def test_a_udp_flood_counts_every_datagram_it_drops(tmp_path):
    """UDP cannot be slowed: with a small receive buffer and a sender far faster
    than the job, datagrams are lost. Every one is accounted for: read by the
    source or counted as dropped by the kernel; and what was read is written,
    or counted as dropped on a full channel."""
    from livejob import Job, free_port as free, summary_counter
    port = free(socket.SOCK_DGRAM)
    src = f"""
[[sources.syslog]]
name = "flood"
listen = "udp://127.0.0.1:{port}"
udp_receive_buffer = 16384
"""
    n = 200_000
    with Job(tmp_path, src) as job:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            msgs = [f"<13>Jan 15 09:00:00 host app: flood {i}".encode() for i in range(n)]
            for m in msgs:
                s.sendto(m, ("127.0.0.1", port))
        # Every datagram read, or counted as dropped by the kernel, before the stop.
        seen = lambda: (job.metric_or_0("amoskys_component_received_events_total", component_id="flood")
                        + job.metric_or_0("amoskys_component_discarded_events_total",
                                          component_id="flood", reason="kernel_dropped"))
        wait_until(lambda: seen() >= n, 60, lambda: f"{n} datagrams read or dropped ({seen()})",
                   interval=0.2)
    read = summary_counter(job.summary, "flood", "received")
    kernel = summary_counter(job.summary, "flood", "kernel_dropped")
    channel = summary_counter(job.summary, "flood", "dropped")
    assert read + kernel == n, job.summary
    assert kernel + channel > 0, "the flood dropped nothing: it proves nothing"
    written = query(f"select count(*) from {job.table('events')}")[0][0]
    assert written == read - channel


def test_a_sender_that_never_pauses_cannot_hold_the_stop(tmp_path):
    """SIGTERM while one connection sends without a pause: the listener reads it
    for its bounded drain time, then cuts it (counted as cut_at_stop), and the job
    still exits 0 with everything it accepted written."""
    port, mport = free_port(), free_port()
    proc = start(tmp_path, port, "--metrics-listen", f"127.0.0.1:{mport}")
    stop_sending = threading.Event()
    chunk = numbered(0, 2000)

    def sender():
        try:
            with socket.create_connection(("127.0.0.1", port)) as s:
                while not stop_sending.is_set():
                    s.sendall(chunk)
        except OSError:
            pass  # the job closed the connection

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        try:
            # The sender well under way (and still going) when the SIGTERM comes.
            wait_scraped(mport, RECEIVED, 20_000)
        finally:
            summary = stop(proc)
    finally:
        stop_sending.set()
        t.join(timeout=10)
    assert re.search(r"cut_at_stop=[1-9]", summary), summary
    received = int(re.search(r"received=(\d+)", summary).group(1))
    assert received > 0
    assert query(f"select count(*) from {events(tmp_path)}")[0][0] == received
