"""What a new user meets first: the README's own commands, help that matches the
tables, errors said once and clearly, `validate` refusing what the job would
refuse, no colour codes in logs that are not a terminal, a stripped release."""
import re
import shlex
import socket
import subprocess
import tomllib

from conftest import BIN, DATA, ROOT, query, replay, require, run_bin
from livejob import Job, free_port, syslog_source

ANSI = "\x1b["


def test_a_replay_of_a_file_that_is_not_a_capture_creates_nothing(tmp_path):
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture")
    out = tmp_path / "never"
    r = run_bin("replay", junk, "--out", out, "--no-progress", check=False)
    assert r.returncode == 2, r.stderr
    assert "no capture could be read" in r.stderr and "junk.pcap" in r.stderr
    assert not out.exists()


def test_errors_say_their_cause_once(tmp_path):
    r = run_bin("replay", tmp_path / "nope.pcap", "--out", tmp_path / "o", check=False)
    assert r.returncode == 2 and "nope.pcap" in r.stderr
    for line in r.stderr.splitlines():
        assert len(re.findall(r"no such file", line, re.I)) <= 1, line
    # A port that is taken: the job refuses to start, saying why once.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        job = Job(tmp_path, syslog_source(port))
        p = subprocess.run([str(require(BIN)), "--config", str(job.cfg)], capture_output=True,
                           text=True, timeout=60)
    assert p.returncode != 0
    said = [line for line in p.stderr.splitlines() if "in use" in line.lower()]
    assert said and all(line.lower().count("address already in use") == 1 for line in said), p.stderr
    assert ANSI not in p.stderr, p.stderr


def test_validate_refuses_what_the_job_refuses(tmp_path):
    none = tmp_path / "none.toml"
    none.write_text('[window]\nlateness = "10s"\n')
    r = run_bin("validate", "--config", none, check=False)
    assert r.returncode == 1 and "no sources" in r.stderr, r.stderr
    # The same file is fine for a replay.
    r = run_bin("validate", "--config", none, "--replay", check=False)
    assert r.returncode == 0, r.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    port = free_port()
    unwritable = tmp_path / "unwritable.toml"
    unwritable.write_text(syslog_source(port) + f'\n[sinks.parquet]\npath = "{blocker}/data"\n')
    r = run_bin("validate", "--config", unwritable, check=False)
    assert r.returncode == 1 and "[sinks.parquet] path" in r.stderr, r.stderr
    p = subprocess.run([str(require(BIN)), "--config", str(unwritable)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode != 0 and "[sinks.parquet] path" in p.stderr, p.stderr


def test_a_number_for_a_duration_says_how_to_write_one(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[window]\nlateness = 10\n')
    r = run_bin("validate", "--config", bad, "--replay", check=False)
    assert r.returncode == 1
    assert 'write a duration such as "10s"' in r.stderr and f"{bad}:2:" in r.stderr, r.stderr


def test_configuration_errors_come_in_file_order(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[sources.syslog]]\nname = "a"\nlisten = "udp://127.0.0.1:5514"\nmax_message_bytes = 10\n'
        '\n[flows]\nidle_timeout = "10m"\nactive_timeout = "1m"\n'
        '\n[[rules]]\nname = "r"\ncondition = "no_such_feature >= 1"\n')
    r = run_bin("validate", "--config", bad, check=False)
    assert r.returncode == 1
    text = r.stderr
    at = [text.find("[[sources.syslog]] a"), text.find("[flows]"), text.find("[[rules]] r")]
    assert all(i >= 0 for i in at) and at == sorted(at), text
    assert f"{bad}:1:" in text and f"{bad}:6:" in text and f"{bad}:10:" in text, text


def test_sql_help_uses_real_columns_and_absent_tables_are_empty(tmp_path):
    helptext = run_bin("sql", "--help").stdout
    out = tmp_path / "out"
    replay(DATA / "pcap" / "esnet" / "nmap_80_vanilla.pcap", out)
    flows = {r[0] for r in query(f"describe select * from read_parquet('{out}/flows/**/*.parquet')")}
    for q in re.findall(r'"(SELECT [^"]*FROM flows[^"]*)"', helptext):
        for col in re.findall(r"WHERE (\w+)", q):
            assert col in flows, (col, q)
    assert not list(out.glob("alerts/**/*.parquet"))
    r = run_bin("sql", "--data", out, "--format", "csv", "SELECT count(*) AS n FROM alerts")
    assert r.stdout.split() == ["n", "0"], r.stdout
    r = run_bin("sql", "--data", out, "--format", "csv",
                "SELECT count(*) AS n FROM events WHERE auth_kind IS NOT NULL")
    assert r.stdout.split() == ["n", "0"], r.stdout


def test_sql_on_a_running_job_says_where_open_files_are_served(tmp_path):
    port = free_port()
    with Job(tmp_path, syslog_source(port)) as job:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"<38>Jan 15 09:00:00 gw sshd[7]: Accepted password for bob from 10.0.0.9 port 5555 ssh2\n")
        job.wait_metric("amoskys_events_sent_total", 1)
        r = run_bin("sql", "--data", job.data, "SELECT count(*) FROM events")
        assert "Flight" in r.stderr and "roll_interval" in r.stderr, r.stderr


def test_the_readmes_queries_run_as_written(tmp_path):
    """The README's `sql` and `.venv/bin/duckdb` lines, run on a job's output."""
    readme = (ROOT / "README.md").read_text()
    lines = [line for line in readme.splitlines()
             if line.startswith(("target/release/amoskys-pipeline sql", ".venv/bin/duckdb"))]
    assert any("duckdb" in line for line in lines) and any(" sql " in line for line in lines)
    port = free_port()
    with Job(tmp_path, syslog_source(port)) as job:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"<38>Jan 15 09:00:00 gw sshd[7]: Failed password for root from 203.0.113.9 port 4242 ssh2\n")
        job.wait_metric("amoskys_events_sent_total", 1)
    for line in lines:
        argv = shlex.split(line)
        if argv[0].startswith("target/"):
            argv[0] = str(BIN)
        else:
            argv[0] = str(require(ROOT / argv[0]))
        r = subprocess.run(argv, cwd=job.dir, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (line, r.stderr)
        assert "203.0.113.9" in r.stdout, (line, r.stdout)


def test_logs_carry_no_colour_codes_when_not_at_a_terminal(tmp_path):
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture")
    good = DATA / "pcap" / "esnet" / "nmap_80_vanilla.pcap"
    r = run_bin("replay", good, junk, "--out", tmp_path / "o", "--no-progress", "--log", "info")
    assert "junk.pcap" in r.stderr
    assert ANSI not in r.stderr, r.stderr


def test_the_release_build_ships_stripped():
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    release = cargo["profile"]["release"]
    assert release.get("debug") in (False, 0, "none") and release.get("strip") in (True, "debuginfo", "symbols")
    split = (ROOT / "scripts" / "release-with-debug.sh").read_text()
    assert "--only-keep-debug" in split and "--add-gnu-debuglink" in split
