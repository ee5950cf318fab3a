"""Memory is bounded by settings, not by the input: 200,000 sshd failures from
as many spoofed addresses within a minute, over TCP syslog with current
timestamps. Every line is in `events`; the windows keep their first
`[window] max_entities` entities apart and count the rest under `100::`, where the
brute force still shows and alerts; the job's peak RSS stays under 512 MiB."""
import datetime
import socket
import threading
import time

from conftest import query
from livejob import Job, free_port, syslog_source

LINES = 200_000


def peak_rss_kib(pid, stop, out):
    """Follows VmHWM (the kernel's peak resident set) until `stop` is set or
    the process is gone."""
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        out[0] = int(line.split()[1])
        except OSError:
            return
        time.sleep(0.1)


def test_spoofed_sources_cannot_grow_the_job_beyond_its_bound(tmp_path):
    port = free_port()
    stop, peak = threading.Event(), [0]
    with Job(tmp_path, syslog_source(port)) as job:
        watcher = threading.Thread(target=peak_rss_kib, args=(job.proc.pid, stop, peak), daemon=True)
        watcher.start()
        conn = socket.create_connection(("127.0.0.1", port))
        batch = []
        for i in range(LINES):
            now = datetime.datetime.now().strftime("%b %e %H:%M:%S")
            src = f"{10 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.7"
            batch.append(f"<38>{now} gw sshd[{1000 + i % 30000}]: Failed password for invalid user "
                         f"u{i % 97} from {src} port {40000 + i % 20000} ssh2\n".encode())
            if len(batch) == 5000:
                conn.sendall(b"".join(batch))
                batch = []
        conn.sendall(b"".join(batch))
        conn.close()
        job.wait_metric("amoskys_events_sent_total", LINES, timeout=300)
        over = job.metric("amoskys_window_overflow_observations_total")
    stop.set()
    watcher.join(timeout=5)
    # Each line names its source address: past the default 20,000 a window,
    # the rest of each window's sources went to `100::` (one worker).
    assert over >= LINES - 2 * 20_000, over
    assert 0 < peak[0] < 512 * 1024, f"peak RSS {peak[0]} KiB"
    (events,), = query(f"select count(*) from {job.table('events')}")
    assert events == LINES
    overflow = "entity = '100::'"
    rows = query(f"select window_start, auth_failures_as_remote from {job.table('features', overflow)} order by 1")
    assert rows and max(n for _, n in rows) > LINES // 2, rows
    (n,), = query(f"select count(*) from {job.table('alerts', overflow)}")
    assert n >= 1
