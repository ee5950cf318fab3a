"""The syslog feature family, recomputed here from the `events` table the same job
wrote (Python, no code shared with the pipeline): loghub's OpenSSH log (four hours
of real sshd traffic) over TCP, then `logger` lines of every severity group and
facility group, sudo and sshd logins."""
import datetime
import ipaddress
import math
import re
import socket
import subprocess
import time
from collections import defaultdict

from conftest import DATA, close
from livejob import Job, free_port, need, syslog_source

HOP_US = 30 * 10**6
SEVERITY = {"syslog_critical": (0, 1, 2), "syslog_errors": (3,), "syslog_warnings": (4,),
            "syslog_notices": (5,), "syslog_info": (6,), "syslog_debug": (7,)}
FACILITY = {"syslog_facility_auth": ("auth", "authpriv"), "syslog_facility_kern": ("kern",),
            "syslog_facility_daemon": ("daemon",)}
# What `logger` sends after the OpenSSH log: (priority, tag, message).
LOGGER_LINES = [
    ("daemon.err", "cron", "job 42 failed with status 1"),
    ("local3.warning", "app", "queue depth high"),
    ("user.debug", "app", "cache miss for key 7"),
    ("auth.info", "sshd", "Accepted publickey for carol from 127.0.0.1 port 40022 ssh2"),
    ("authpriv.notice", "sshd", "Failed password for root from 127.0.0.1 port 40023 ssh2"),
    ("authpriv.notice", "sudo", "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id"),
    ("authpriv.alert", "sudo",
     "bob : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/home/bob ; USER=root ; COMMAND=/bin/sh"),
    ("local7.emerg", "app", "disk /dev/sda1 failing"),
    ("authpriv.notice", "sudo",
     "carol : user NOT in sudoers ; TTY=pts/2 ; PWD=/home/carol ; USER=root ; COMMAND=/bin/sh"),
    ("auth.info", "sshd", "User bin from 127.0.0.1 not allowed because not listed in AllowUsers"),
    ("auth.info", "sshd", "Invalid user x from 10.9.9.9 port 1 from 127.0.0.1 port 40024"),
]


def template(app, message):
    words = message.split()
    return (app or "", " ".join("<*>" if any(c in "0123456789" for c in w) else w for w in words))


def entropy(counts):
    n = sum(counts)
    if not n:
        return None
    return max(0.0, -sum(c / n * math.log2(c / n) for c in counts if c))


def ip(text):
    """The address in `text`, or None for a host name (entities are addresses)."""
    try:
        return str(ipaddress.ip_address(text)) if text else None
    except ValueError:
        return None


def expected(events):
    """{(entity, window_start_us): {feature: value}} from the events rows."""
    obs = defaultdict(list)  # (entity, window) -> [(role, event)]
    templates_by_pane = defaultdict(set)  # (entity, pane) -> templates it logged
    for e in events:
        pane = e["ts"] // HOP_US
        targets = [(e["entity"], "self")]
        if e["auth_remote"]:
            # An address, or the host name the log gave.
            targets.append((ip(e["auth_remote"]) or e["auth_remote"].lower(), "remote"))
        templates_by_pane[(e["entity"], pane)].add(template(e["appname"], e["message"]))
        for w in (pane - 1, pane):
            for entity, role in targets:
                obs[(entity, w)].append((role, e))
    out = {}
    for (entity, w), lst in obs.items():
        own = [e for role, e in lst if role == "self"]
        remote = [e for role, e in lst if role == "remote"]
        f = {"syslog_messages": len(own), "syslog_messages_per_s": len(own) / 60}
        for name, sev in SEVERITY.items():
            f[name] = sum(e["severity"] in sev for e in own)
        for name, fac in FACILITY.items():
            f[name] = sum(e["facility"] in fac for e in own)
        f["syslog_facility_local"] = sum((e["facility"] or "").startswith("local") for e in own)
        f["syslog_distinct_apps"] = len({e["appname"] for e in own if e["appname"] is not None})
        tcount = defaultdict(int)
        for e in own:
            tcount[template(e["appname"], e["message"])] += 1
        before = set().union(*(templates_by_pane.get((entity, q), set()) for q in range(w - 4, w)))
        f["syslog_templates"] = len(tcount) if own else None
        f["syslog_template_entropy"] = entropy(list(tcount.values())) if own else None
        f["syslog_new_templates"] = len(set(tcount) - before) if own else None

        def total(es, *kinds):
            return sum(e["auth_count"] or 1 for e in es if e["auth_kind"] in kinds)

        def failures(es):
            """Per service (SSH, FTP, other), the most any one writer logged: the
            service's own line, sshd relaying PAM, PAM itself, or the audit trail."""
            slots = defaultdict(int)
            for e in es:
                k, form = e["auth_kind"], e["auth_form"]
                if k in ("failure", "pam_failure") and (form or "").startswith("auditd"):
                    writer = 3
                elif k == "failure" and form != "sshd_failed_none":
                    writer = 0
                elif k == "pam_failure":
                    writer = 1 if form == "sshd_pam_error" else 2
                else:
                    continue
                svc = e["auth_service"] or ""
                service = 0 if svc.startswith("ssh") or svc == "dropbear" else 1 if "ftp" in svc else 2
                slots[(service, writer)] += e["auth_count"] or 1
            return sum(max(slots[(s, w)] for w in range(4)) for s in range(3))

        f.update(auth_failures=failures(own), auth_pam_failures=total(own, "pam_failure"),
                 auth_successes=total(own, "success"), auth_invalid_users=total(own, "invalid_user"),
                 sudo_failures=total(own, "sudo_failure"), sudo_refusals=total(own, "sudo_refused"),
                 sudo_commands=total(own, "sudo"),
                 auth_injection_lines=sum(1 for e in own if e["auth_injection"]))
        f["auth_distinct_users"] = len({e["auth_user"] for e in own if e["auth_kind"] and e["auth_user"]})
        f["auth_distinct_remotes"] = len({ip(e["auth_remote"]) for e in own if ip(e["auth_remote"])})
        d = f["auth_failures"] + f["auth_successes"]
        f["auth_failure_ratio"] = f["auth_failures"] / d if d else None
        f.update(auth_failures_as_remote=failures(remote),
                 auth_pam_failures_as_remote=total(remote, "pam_failure"),
                 auth_successes_as_remote=total(remote, "success"),
                 auth_invalid_users_as_remote=total(remote, "invalid_user"),
                 auth_refusals_as_remote=total(remote, "not_allowed", "root_refused", "max_attempts"),
                 auth_preauth_drops_as_remote=total(remote, "preauth_closed", "no_ident",
                                                    "negotiation_failed"),
                 auth_distinct_users_as_remote=len({e["auth_user"] for e in remote if e["auth_user"]}),
                 auth_distinct_targets_as_remote=len({e["entity"] for e in remote}))
        out[(entity, w * HOP_US)] = f
    return out


def test_every_syslog_feature_equals_its_definition_recomputed_from_events(tmp_path):
    port = free_port()
    src = syslog_source(port, udp=True)
    lines = (DATA / "syslog" / "loghub" / "OpenSSH_2k.log").read_bytes()
    with Job(tmp_path, src) as job:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(lines)
        job.wait_metric("amoskys_events_sent_total", 2000)
        for prio, tag, msg in LOGGER_LINES:
            subprocess.run([need("logger"), "-n", "127.0.0.1", "-P", str(port), "-T", "--rfc5424",
                            "-p", prio, "-t", tag, msg], check=True, timeout=10)
        # logger will not send the kern facility: a datagram of our own does.
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(f"<2>1 {now} host kernel - - - CPU 3 temperature above threshold".encode(),
                     ("127.0.0.1", port))
        job.wait_metric("amoskys_events_sent_total", 2001 + len(LOGGER_LINES))
    assert "(0 behind the watermark)" in job.summary, job.summary
    cols = ["ts", "entity", "facility", "severity", "appname", "message", "auth_kind", "auth_form",
            "auth_service", "auth_user", "auth_remote", "auth_count", "auth_injection"]
    events = [dict(zip(cols, r)) for r in job.rows(
        f"select epoch_us(ts), {', '.join(cols[1:])} from {job.table('events')} order by ts")]
    assert len(events) == 2001 + len(LOGGER_LINES)
    want = expected(events)
    names = list(next(iter(want.values())))
    got = job.rows(f"select entity, epoch_us(window_start), {', '.join(names)} "
                   f"from {job.table('features')} where syslog_messages is not null")
    assert {(r[0], r[1]) for r in got} == set(want)
    for r in got:
        exp = want[(r[0], r[1])]
        for name, v in zip(names, r[2:]):
            assert close(v, exp[name]), f"{name} of {r[0]} at window {r[1]}: got {v}, want {exp[name]}"
    # The data exercises every feature: each takes at least two values.
    for i, name in enumerate(names):
        assert len({r[2 + i] for r in got} - {None}) >= 2, f"{name} is constant over the test's data"
