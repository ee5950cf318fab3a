"""Sigma-style counting rules over events (`[[rules]]` of kind "count", and the
older `[[count_rules]]` spelling): loghub's
OpenSSH_2k log sent over syslog, with a value_count rule (distinct user names an
address tried) and an event_count rule (failed passwords a host logged), each
checked against what loghub's own structured parse of the log gives."""
import datetime
import re
import socket

from conftest import DATA, run_bin
from livejob import Job, free_port, syslog_source
from test_correlation import log_year

RULES = '''
[detections.login_bruteforce_logs]
enabled = false

[[rules]]
name = "user_enumeration"
kind = "count"
filter = { appname = "sshd", message = "Invalid user * from *" }
group_by = ["auth_remote"]
count = "value_count"
value = "auth_user"
timespan = "10m"
threshold = 5
severity = "high"

[[count_rules]]
name = "failed_password_burst"
filter = { appname = "sshd", message = ["Failed password *", "Failed none *"] }
group_by = ["hostname"]
timespan = "5m"
threshold = 40
summary = "{group}: {count} failed logins in {timespan}"
'''


def loghub_events(year):
    """(epoch seconds, event id, content) per line of the log, from loghub's CSV."""
    out = []
    for line in (DATA / "syslog" / "loghub" / "OpenSSH_2k.log_structured.csv").read_text().splitlines()[1:]:
        _, _, day, clock, _, _, rest = line.split(",", 6)
        eid = re.search(r",(E\d+),", line).group(1)
        content = rest.rsplit(",", 2)[0]
        h, m, s = map(int, clock.split(":"))
        t = datetime.datetime(year, 12, int(day), h, m, s, tzinfo=datetime.timezone.utc).timestamp()
        out.append((int(t), eid, content))
    return out


def expect(events, span, threshold, distinct):
    """Alerts (group, pane) of a sliding count over `events` = [(t, group, value)]
    in log order: the count over (t - span, t] reaching `threshold` fires, at most
    once per `span` per group."""
    seen, fired, out = {}, {}, set()
    for t, group, value in events:
        seen.setdefault(group, []).append((t, value))
        recent = [(u, v) for u, v in seen[group] if u > t - span]
        n = len({v for _, v in recent}) if distinct else len(recent)
        if n >= threshold and (group not in fired or fired[group] <= t - span):
            fired[group] = t
            out.add((group, t // 30))
    return out


def test_counting_rules_fire_where_loghubs_parse_says(tmp_path):
    year = log_year(datetime.datetime.now(datetime.timezone.utc))
    ev = loghub_events(year)
    invalid = [(t, c.split(" from ")[1].strip(), c.split()[2]) for t, e, c in ev if e == "E13"]
    failed = [(t, "LabSZ", None) for t, e, c in ev if e in ("E8", "E9", "E10")]
    want_enum = expect(invalid, 600, 5, True)
    want_burst = expect(failed, 300, 40, False)
    assert len(want_enum) >= 2 and len(want_burst) >= 2, (want_enum, want_burst)
    cfg = tmp_path / "rules.toml"
    cfg.write_text(RULES)
    assert run_bin("validate", "--config", cfg, "--replay").returncode == 0
    port = free_port()
    with Job(tmp_path, syslog_source(port), RULES) as job:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall((DATA / "syslog" / "loghub" / "OpenSSH_2k.log").read_bytes())
        job.wait_metric("amoskys_events_sent_total", 2000)
    rows = job.rows(f"select rule, entity, epoch(window_start)::bigint, summary, evidence, severity "
                    f"from {job.table('alerts')}")
    got_enum = {(e, w // 30) for r, e, w, *_ in rows if r == "user_enumeration"}
    got_burst = {(e, w // 30) for r, e, w, *_ in rows if r == "failed_password_burst"}
    assert got_enum == want_enum
    assert got_burst == want_burst
    # Besides them only the built-in log detections (tests/test_detections.py).
    assert {"user_enumeration", "failed_password_burst"} <= {r[0] for r in rows} <= {
        "user_enumeration", "failed_password_burst", "login_bruteforce_logs", "login_guessing_logs"}, rows
    for r, e, _, summary, evidence, severity in rows:
        if r == "failed_password_burst":
            assert e == "LabSZ" and severity == "medium", (e, severity)
            assert re.fullmatch(r"hostname=LabSZ: 40 failed logins in 5m", summary), summary
        elif r == "user_enumeration":
            assert severity == "high" and summary == f"auth_remote={e}: 5 distinct auth_user within 10m", summary


def test_a_bad_counting_rule_is_refused_with_its_name_and_reason(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[count_rules]]\nname = "spray"\ncount = "value_count"\ntimespan = "5m"\nthreshold = 3\n')
    r = run_bin("validate", "--config", bad, check=False)
    assert r.returncode == 1
    assert "[[count_rules]] spray" in r.stderr and "needs value" in r.stderr, r.stderr
