"""Logs as real senders write them, over real sockets into the long-running job:
framing that must not swallow lines, client-chosen text that must not frame
another host, PAM failures that are login failures, lines that are not syslog,
and old logs timed by their reception."""
import re
import socket
import subprocess

from conftest import DATA, query
from livejob import Job, free_port, need, syslog_source

REMOTE = "198.51.100.20"
NAMED = "bad-host.example.net"


def send_tcp(port, data: bytes):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data)


def fed(tmp_path, payloads, expect):
    """A job whose syslog TCP listener got each payload on a connection of its
    own, stopped once `expect` events have gone into the dataflow."""
    port = free_port()
    with Job(tmp_path, syslog_source(port)) as job:
        for p in payloads:
            send_tcp(port, p)
        job.wait_metric("amoskys_events_sent_total", expect)
    return job


def lines_of(lines):
    return ("\n".join(lines) + "\n").encode()


def events(job, where="true"):
    return job.rows(f"select message, parse_error, auth_kind, auth_form, auth_remote, auth_injection, "
                    f"epoch(ts), epoch(received_ts) from {job.table('events', where)} order by message")


def alerts(job):
    return job.alert_rows("rule, entity, summary")


def test_lines_that_start_with_a_number_do_not_swallow_the_lines_after_them(tmp_path):
    lines = [
        "<13>Jan 15 09:00:00 gw app: first",
        "1705312800 gw app: an epoch first, no PRI",
        "42 apples in a message without PRI",
        "<13>Jan 15 09:00:01 gw app: after the numbers",
        "99999999999 more",
        "<13>Jan 15 09:00:02 gw app: last",
    ]
    # And an octet-counted connection with one malformed frame in it.
    counted = b"".join(f"{len(m)} {m}".encode() for m in ["<13>oc one", "<13>oc two"])
    job = fed(tmp_path, [lines_of(lines), counted[:13] + b"7 garbage\n" + counted[13:]], len(lines) + 3)
    got = [r[0] for r in events(job)]
    assert len(got) == len(lines) + 3, got
    for want in ["first", "an epoch first", "apples", "after the numbers", "more",
                 "last", "oc one", "oc two", "garbage"]:
        assert any(want in m for m in got), (want, got)


def test_lines_that_are_not_syslog_are_kept_with_their_authentication_facts(tmp_path):
    lines = [
        "type=USER_AUTH msg=audit(1705312790.123:77): pid=4242 uid=0 auid=4294967295 ses=4294967295 "
        "msg='op=PAM:authentication grantors=? acct=\"root\" exe=\"/usr/sbin/sshd\" "
        "hostname=198.51.100.7 addr=198.51.100.7 terminal=ssh res=failed'",
        "2024-01-15 09:59:59 bastion sshd[812]: Failed password for root from 198.51.100.8 port 4022 ssh2",
        "[2024-01-15T09:59:59.123] [sshd] Invalid user admin from 198.51.100.9 port 4023",
        "plain application output with no header at all",
    ]
    job = fed(tmp_path, [lines_of(lines)], len(lines))
    rows = events(job)
    assert len(rows) == len(lines), rows
    by_remote = {r[4]: r for r in rows if r[4]}
    assert set(by_remote) == {"198.51.100.7", "198.51.100.8", "198.51.100.9"}, rows
    assert by_remote["198.51.100.7"][2] == "pam_failure"
    assert by_remote["198.51.100.8"][2] == "failure"
    assert by_remote["198.51.100.9"][2] == "invalid_user"
    plain = [r for r in rows if r[0].startswith("plain")][0]
    assert plain[1] == "not_syslog" and plain[6] == plain[7], plain


def test_pam_failures_alone_are_a_brute_force_and_host_names_are_kept(tmp_path):
    pam = ("<86>Jan 15 09:00:{s:02d} web1 sshd[{pid}]: pam_unix(sshd:auth): authentication failure; "
           "logname= uid=0 euid=0 tty=ssh ruser= rhost={host}  user=root")
    lines = [pam.format(s=i, pid=100 + i, host=REMOTE) for i in range(12)]
    lines += [pam.format(s=i, pid=200 + i, host=NAMED) for i in range(12)]
    lines.append(f"<86>Jan 15 09:00:30 web1 sshd[999]: PAM 5 more authentication failures; logname= "
                 f"uid=0 euid=0 tty=ssh ruser= rhost={REMOTE}  user=root")
    job = fed(tmp_path, [lines_of(lines)], len(lines))
    feats = dict(job.rows(f"select entity, max(auth_failures_as_remote) from {job.table('features')} "
                          f"where entity in ('{REMOTE}', '{NAMED}') group by 1"))
    assert feats == {REMOTE: 17, NAMED: 12}, feats
    brute = {(r, e) for r, e, _ in alerts(job) if r == "login_bruteforce_logs"}
    assert brute == {("login_bruteforce_logs", REMOTE), ("login_bruteforce_logs", NAMED)}, alerts(job)


def test_client_chosen_text_cannot_frame_another_host(tmp_path):
    port = free_port()
    real, fake, fake6 = "203.0.113.5", "192.0.2.66", "2001:db8::66"
    msgs = [
        # Certain: the format puts sshd's own address last.
        f"Invalid user x from {fake} port 1 from {real} port 22",
        f"Connection closed by authenticating user x {fake6} port 1 {real} port 22 [preauth]",
        f"pam_unix(login:auth): authentication failure; logname= uid=0 euid=0 tty=x ruser=y rhost={fake} rhost={real}",
        # Two readings: no one is blamed.
        f"Failed password for invalid user x from {fake} port 1 ssh2 from {real} port 22 ssh2",
        f"Failed password for root from {real} port 22 ssh2 from {fake6} port 1 ssh2",
    ]
    lines = [f"<86>Jan 15 09:00:0{i} web1 sshd[{100 + i}]: {m}" for i, m in enumerate(msgs)]
    # A user name with a newline and control characters, IPv6 source: one reading.
    lines.append(f"<86>Jan 15 09:00:09 web1 sshd[109]: Failed password for invalid user a\\012b\x1b[0m "
                 f"from 2001:db8::5 port 22 ssh2")
    with Job(tmp_path, syslog_source(port, udp=True)) as job:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            for line in lines:
                u.sendto(line.encode(), ("127.0.0.1", port))
        job.wait_metric("amoskys_events_sent_total", len(lines))
    rows = events(job)
    remotes = [r[4] for r in rows]
    assert fake not in remotes and fake6 not in remotes, rows
    assert remotes.count(real) == 3 and "2001:db8::5" in remotes, rows
    assert sum(1 for r in rows if r[5]) == 5, rows
    entities = {r[0] for r in job.rows(f"select distinct entity from {job.table('features')}")}
    assert fake not in entities and fake6 not in entities, entities
    inj = [a for a in alerts(job) if a[0] == "log_injection"]
    assert [a[1] for a in inj] == ["127.0.0.1"], alerts(job)


def test_old_logs_timed_by_reception_reach_the_windows(tmp_path):
    """A day's file forwarded at once: with event time its lines fall behind the
    watermark once a current line has moved it; timed by reception they are in
    the windows like any other."""
    log = (DATA / "syslog" / "loghub" / "OpenSSH_2k.log").read_bytes().splitlines()[:200]
    for time_mode, want_late in (("event", True), ("received", False)):
        port = free_port()
        src = syslog_source(port, name=f"relay-{time_mode}") + f'time = "{time_mode}"\n'
        d = tmp_path / time_mode
        d.mkdir()
        with Job(d, src) as job:
            need("logger")
            subprocess.run([need("logger"), "-n", "127.0.0.1", "-P", str(port), "-T", "--rfc5424",
                            "-t", "app", "a current line"], check=True, timeout=10)
            job.wait_metric("amoskys_events_sent_total", 1)
            send_tcp(port, b"\n".join(log) + b"\n")
            job.wait_metric("amoskys_events_sent_total", 1 + len(log))
        late = int(re.search(r"\((\d+) behind the watermark\)", job.summary).group(1))
        assert (late > 0) == want_late, (time_mode, job.summary)
        counted = query(f"select sum(auth_failures_as_remote) from {job.table('features')}")[0][0] or 0
        assert (counted > 0) == (not want_late), (time_mode, counted)
