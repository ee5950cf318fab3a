"""Running the long-running job (`amoskys-pipeline --config FILE`) from tests:
start it on a generated flows.toml, read its Prometheus metrics, stop it with
SIGTERM, and read what it wrote with DuckDB."""
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, query, require, wait_until


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def syslog_source(port: int, name="edge", udp=False) -> str:
    """A `[[sources.syslog]]` section listening on 127.0.0.1:`port` (TCP, and UDP
    on the same port when `udp`)."""
    listen = f'["udp://127.0.0.1:{port}", "tcp://127.0.0.1:{port}"]' if udp else f'"tcp://127.0.0.1:{port}"'
    return f'\n[[sources.syslog]]\nname = "{name}"\nlisten = {listen}\n'


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if path is None:
        pytest.fail(f"{tool} is not installed: run scripts/setup.sh --test")
    return path


class Job:
    """One run of the long-running job with `sources` (TOML text) as its sources."""

    def __init__(self, tmp_path: Path, sources: str, extra_toml: str = "", name="job"):
        self.dir = tmp_path
        self.data = tmp_path / "data"
        self.metrics_port = free_port()
        self.cfg = tmp_path / f"{name}.toml"
        self.cfg.write_text(f"""{sources}

{extra_toml}

[runtime]
metrics_listen = "127.0.0.1:{self.metrics_port}"

[sinks.parquet]
path = "{self.data}"
""")
        self.proc = None
        self.summary = None

    def start(self, timeout=30):
        """Starts the job and returns once it says it is writing, which it says only
        after every source is bound or open (listeners bound, captures open with
        their filters): `self.listening` maps each source to what its line said."""
        self.proc = subprocess.Popen([str(require(BIN)), "--config", str(self.cfg)],
                                     stderr=subprocess.PIPE, text=True)
        seen = []
        self.listening = {}
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            seen.append(line)
            if line.startswith("listening: "):
                name, _, what = line.removeprefix("listening: ").strip().partition(" ")
                self.listening[name] = what
            if line.startswith("writing to"):
                return self
            if not line and self.proc.poll() is not None:
                break
        self.proc.kill()
        raise AssertionError("the job did not start: " + "".join(seen))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, name: str, **labels) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def metric_or_0(self, name, **labels) -> float:
        """metric(), or 0 while the endpoint does not answer yet."""
        try:
            return self.metric(name, **labels)
        except OSError:
            return 0

    def wait_metric(self, name, at_least, timeout=60, **labels):
        """Waits until metric `name` (summed over `labels`) reaches `at_least`;
        returns its value then."""
        last = [0]

        def reached():
            last[0] = self.metric_or_0(name, **labels)
            return last[0] >= at_least

        wait_until(reached, timeout, lambda: f"{name}{labels} >= {at_least} (stayed at {last[0]})",
                   interval=0.2)
        return last[0]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rest = self.proc.stderr.read()
        assert self.proc.wait(timeout=90) == 0, rest
        assert "panicked" not in rest, rest
        self.summary = rest
        return rest

    def table(self, name: str, where="true") -> str:
        return (f"(select * from read_parquet('{self.data}/{name}/**/*.parquet', "
                f"hive_partitioning=true, union_by_name=true) where {where})")

    def rows(self, sql: str):
        return query(sql)

    def alert_rows(self, columns="rule, entity, summary", where="true"):
        """The alerts table's rows (after stop), checked against the job's own
        count of alerts in its final summary: a job that raised alerts must have
        written them, and "no table" only means "no alerts" when it says so."""
        m = re.search(r"^stopped: .*, (\d+) alerts$", self.summary or "", re.M)
        assert m, f"no final summary line: {self.summary}"
        raised = int(m.group(1))
        if not list(self.data.glob("alerts/**/*.parquet")):
            assert raised == 0, f"the job raised {raised} alerts but wrote no alerts table"
            return []
        assert self.rows(f"select count(*) from {self.table('alerts')}")[0][0] == raised
        return self.rows(f"select {columns} from {self.table('alerts', where)} order by all")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            if exc[0] is None:
                self.stop()
            else:
                self.proc.kill()
                self.proc.wait()


def summary_counter(summary: str, source: str, key: str) -> int:
    m = re.search(rf"^  {re.escape(source)} \(\w+\):.*\b{key}=(\d+)", summary, re.M)
    assert m, summary
    return int(m.group(1))


def make_pki(d):
    """A CA, a server certificate for 127.0.0.1, and a client certificate."""
    openssl = need("openssl")

    def run(*args):
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        (d / f"{name}.ext").write_text(ext + "\n")
        run("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))
