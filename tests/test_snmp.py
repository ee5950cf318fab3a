"""The SNMP source end to end, through the long-running job (`amoskys-pipeline
--config FILE`), against real agents on loopback that the tests start and stop:

- net-snmp `snmpd` on a free UDP port, with a v2c community and an SNMPv3
  authPriv (SHA/AES) user; what the job wrote to the `events` and `features`
  tables (read with DuckDB) is compared with what net-snmp's own `snmpget` and
  `snmpwalk` read from the same agent;
- `snmpsim-command-responder` (PyPI snmpsim) serving recorded walks of real
  devices (../shared/data/snmp/snmpsim-data/*.snmprec, copied to a temporary
  data directory); the values in `events` are compared with what the recordings
  say, parsed here;
- a live agent polled beside one where nothing listens and one that drops every
  request, with the job's Prometheus metrics read while it runs.

Nothing is mocked: the job polls the agents over UDP, and stops on SIGTERM.
"""
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import DATA, require, wait_until
from livejob import Job, free_port, need

USER, AUTH_PASS, PRIV_PASS = "amoskys", "authpass123", "privpass123"
WINDOW_TOML = '[window]\nlateness = "0s"\nidle_timeout = "1s"'

# OIDs (numeric, no leading dot, as the `oid` column has them).
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
HR_MEMORY_SIZE = "1.3.6.1.2.1.25.2.2.0"
HR_STORAGE = "1.3.6.1.2.1.25.2.3.1"        # .2 type .3 descr .4 units .5 size .6 used
HR_STORAGE_TYPES = "1.3.6.1.2.1.25.2.1"    # .2 ram .3 virtual memory .4 fixed disk
HR_PROCESSOR_LOAD = "1.3.6.1.2.1.25.3.3.1.2"
IF_ENTRY = "1.3.6.1.2.1.2.2.1"
IFX_ENTRY = "1.3.6.1.2.1.31.1.1.1"
LA_LOAD = "1.3.6.1.4.1.2021.10.1.3"
UCD_MEMORY = "1.3.6.1.4.1.2021.4"
UCD_SYSTEM_STATS = "1.3.6.1.4.1.2021.11"
DISK_IO = "1.3.6.1.4.1.2021.13.15.1.1"

# Counters whose `value` is a rate per second of `raw` (ss_cpu_* are shares).
RATE_METRICS = {"disk_io_reads", "disk_io_writes", "disk_io_read_bytes", "disk_io_written_bytes",
                "if_in_octets", "if_out_octets", "if_in_ucast_pkts", "if_out_ucast_pkts",
                "if_in_errors", "if_out_errors", "if_in_discards", "if_out_discards"}
CPU_METRICS = ("ss_cpu_user", "ss_cpu_system", "ss_cpu_idle")
COUNTER_METRICS = RATE_METRICS | set(CPU_METRICS)


# ---- helpers -------------------------------------------------------------------------

def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def answers_while_running(proc, probe, timeout, what) -> bool:
    """Waits until `probe()` succeeds while `proc` runs: True then; False once
    `proc` has exited or `timeout` has passed without an answer (the callers then
    try another port)."""
    try:
        return wait_until(lambda: "exited" if proc.poll() is not None else ("up" if probe() else None),
                          timeout, what, interval=0.1) == "up"
    except AssertionError:
        return False


def snmp_env(home: Path) -> dict:
    """No MIB loading (numeric OIDs only), and a private persistent directory."""
    return {**os.environ, "MIBS": "", "SNMP_PERSISTENT_DIR": str(home)}


def snmp_auth(v3: bool, community="public") -> list[str]:
    if v3:
        return ["-v3", "-l", "authPriv", "-u", USER, "-a", "SHA", "-A", AUTH_PASS,
                "-x", "AES", "-X", PRIV_PASS]
    return ["-v2c", "-c", community]


def parse_net_snmp(text: str) -> dict:
    """`-On -Oq -Ot -Oe -OU` output (`.OID value`, one a line) as {oid: text}."""
    out = {}
    for line in text.splitlines():
        if not line.startswith("."):
            continue
        oid, _, value = line[1:].partition(" ")
        out[oid] = value.strip().strip('"')
    return out


def net_snmp(tool: str, port: int, home: Path, oids, v3=False, community="public") -> dict:
    cmd = [need(tool), *snmp_auth(v3, community), "-On", "-Oq", "-Ot", "-Oe", "-OU",
           "-t", "2", "-r", "1", f"127.0.0.1:{port}", *oids]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=snmp_env(home),
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr}"
    return parse_net_snmp(r.stdout)


def num(text: str) -> float:
    return float(text)


def close(a, b, rel=1e-9) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


class Snmpd:
    """net-snmp's agent on 127.0.0.1 (a free UDP port), community `public` and
    the SNMPv3 user USER (authPriv, SHA + AES), its files in `dir`."""

    def __init__(self, tmp: Path):
        self.dir = tmp / "snmpd"
        self.dir.mkdir(exist_ok=True)
        self.home = self.dir / "client"
        (self.dir / "snmpd.conf").write_text(
            "rocommunity public 127.0.0.1\n"
            f'createUser {USER} SHA "{AUTH_PASS}" AES "{PRIV_PASS}"\n'
            f"rouser {USER} authpriv\n")
        self.proc = None
        self.port = None

    def start(self):
        need("snmpget")
        log = self.dir / "snmpd.log"
        for _ in range(5):
            port = free_udp_port()
            with open(log, "w") as f:
                self.proc = subprocess.Popen(
                    [need("snmpd"), "-f", "-Lo", "-C", "-c", str(self.dir / "snmpd.conf"),
                     "-p", str(self.dir / "snmpd.pid"), f"udp:127.0.0.1:{port}"],
                    stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=snmp_env(self.dir / "persist"))
            probe = lambda: subprocess.run([need("snmpget"), "-v2c", "-c", "public", "-t", "0.3", "-r", "0",
                                            f"127.0.0.1:{port}", SYS_UPTIME], capture_output=True,
                                           env=snmp_env(self.home), stdin=subprocess.DEVNULL).returncode == 0
            if answers_while_running(self.proc, probe, 15, f"snmpd on port {port}"):
                self.port = port
                return self
            self.stop()  # the port was taken meanwhile, most likely: another one
        raise AssertionError("snmpd did not start: " + log.read_text())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def get(self, oids, v3=False) -> dict:
        return net_snmp("snmpget", self.port, self.home, oids, v3)

    def walk(self, oid, v3=False) -> dict:
        return net_snmp("snmpwalk", self.port, self.home, [oid], v3)


@pytest.fixture
def snmpd(tmp_path):
    agent = Snmpd(tmp_path).start()
    yield agent
    agent.stop()


def snmp_source(agents, v3=False, name="core", community="public", extra="") -> str:
    """A `[[sources.snmp]]` section as users write it, at a 1 s interval."""
    text = f"""
[[sources.snmp]]
name = "{name}"
agents = [{", ".join(f'"{a}"' for a in agents)}]
interval = "1s"
"""
    if v3:
        text += f"""version = "3"
username = "{USER}"
security_level = "authPriv"
auth_protocol = "SHA"
auth_password = "{AUTH_PASS}"
priv_protocol = "AES"
priv_password = "{PRIV_PASS}"
"""
    else:
        text += f'version = "2c"\ncommunity = "{community}"\n'
    return text + extra


EVENT_COLUMNS = ["ts_us", "source_kind", "source", "entity", "protocol", "metric", "instance",
                 "value", "raw", "oid", "payload_bytes"]


def snmp_events(job, where="true") -> list[dict]:
    t = job.table("events", f"source_kind = 'snmp' and ({where})")
    rows = job.rows(f"select epoch_us(ts), source_kind, source, entity, protocol, metric, "
                    f"instance, value, raw, oid, payload_bytes from {t} order by ts, oid")
    return [dict(zip(EVENT_COLUMNS, r)) for r in rows]


def polls(rows) -> dict:
    """{(source, entity, ts_us): [rows of that poll]}"""
    out = defaultdict(list)
    for r in rows:
        out[(r["source"], r["entity"], r["ts_us"])].append(r)
    return out


def check_rates(rows) -> tuple[int, int]:
    """Per OID, over consecutive polls: value == Δraw / Δts for the rate counters,
    null only on the first reading (or after a decrease: wrap or reset). Returns
    (rates checked, rates of counters that moved)."""
    by_oid = defaultdict(list)
    for r in rows:
        if r["metric"] in COUNTER_METRICS:
            assert r["raw"] is not None, f"{r}: a counter without its raw reading"
            by_oid[(r["source"], r["entity"], r["oid"])].append(r)
        else:
            assert r["raw"] is None, f"{r}: a gauge with a raw reading"
    checked = moving = 0
    for key, seq in by_oid.items():
        seq.sort(key=lambda r: r["ts_us"])
        assert len({r["metric"] for r in seq}) == 1, seq
        if seq[0]["metric"] in RATE_METRICS:
            assert seq[0]["value"] is None, f"{key}: a rate on the first poll: {seq[0]}"
        for prev, cur in zip(seq, seq[1:]):
            if cur["metric"] not in RATE_METRICS:
                continue
            dt = (cur["ts_us"] - prev["ts_us"]) / 1e6
            assert dt > 0.5, f"{key}: polls {dt} s apart at a 1 s interval"
            d = cur["raw"] - prev["raw"]
            if d < 0:
                continue  # a wrap or a reset: not expected here in a few seconds
            want = d / dt
            assert cur["value"] is not None, f"{key}: no rate after {prev}"
            assert abs(cur["value"] - want) <= want * 1e-3 + 1e-6, \
                f"{key} {cur['metric']} {cur['instance']}: rate {cur['value']}, Δraw/Δts {want}"
            checked += 1
            moving += d > 0
    return checked, moving


def check_cpu_shares(rows):
    for poll in polls(rows).values():
        shares = [r["value"] for r in poll if r["metric"] in CPU_METRICS and r["value"] is not None]
        assert all(0 <= v <= 100 for v in shares), shares
        assert sum(shares) <= 100 + 1e-6, shares


# How docs/FEATURES.md says a poll's instances combine into one value.
FEATURE_COMBINE = {"mem_total_real": "sum", "hr_memory_size": "sum", "sys_uptime": "mean",
                   "mem_avail_real": "sum", "hr_storage_disk_used": "sum",
                   "hr_storage_ram_used": "sum", "hr_storage_ram_size": "sum",
                   "hr_storage_disk_size": "sum", "hr_processor_load": "mean",
                   "if_oper_status": "count_ones", "if_in_octets": "sum", "if_out_octets": "sum",
                   "la_load_1": "mean"}


def pearson(pairs):
    if len(pairs) < 2:
        return None
    n = len(pairs)
    mx, my = sum(x for x, _ in pairs) / n, sum(y for _, y in pairs) / n
    cxy = sum((x - mx) * (y - my) for x, y in pairs)
    cxx, cyy = sum((x - mx) ** 2 for x, _ in pairs), sum((y - my) ** 2 for _, y in pairs)
    return None if cxx == 0 or cyy == 0 else max(-1.0, min(1.0, cxy / math.sqrt(cxx * cyy)))


def check_features(job, rows, entity) -> list[dict]:
    """The SNMP family of the features table for `entity`: snmp_polls per window
    and snmp_<metric>_mean/_max for FEATURE_COMBINE, against what `events` holds
    (a poll counts for a metric when one of its instances has a value)."""
    ratios = {"snmp_mem_used_ratio": ("mem_avail_real", "mem_total_real", True),
              "snmp_ram_used_ratio": ("hr_storage_ram_used", "hr_storage_ram_size", False),
              "snmp_disk_used_ratio": ("hr_storage_disk_used", "hr_storage_disk_size", False)}
    cols = (["snmp_polls"] + [f"snmp_{m}_{k}" for m in FEATURE_COMBINE for k in ("mean", "max")]
            + list(ratios) + ["snmp_cpu_net_corr", "snmp_load_net_corr", "snmp_agent_restarts",
                              "snmp_links_down"])
    t = job.table("features", f"entity = '{entity}'")
    got = job.rows(f"select epoch_us(window_start), epoch_us(window_end), {', '.join(cols)} from {t}")
    assert got, f"no features row for {entity}"
    by_poll = polls(rows)
    per_poll = {}  # ts -> {metric: combined value}
    for (_, _, ts), poll in by_poll.items():
        vals = defaultdict(list)
        for r in poll:
            if r["metric"] in FEATURE_COMBINE and r["value"] is not None:
                vals[r["metric"]].append(r["value"])
        comb = {}
        for m, vs in vals.items():
            how = FEATURE_COMBINE[m]
            comb[m] = (sum(vs) if how == "sum" else sum(vs) / len(vs) if how == "mean"
                       else float(sum(v == 1 for v in vs)))
        per_poll[ts] = comb
    out = []
    for start, end, *values in got:
        f = dict(zip(cols, values))
        inside = [c for ts, c in per_poll.items() if start <= ts < end]
        assert (f["snmp_polls"] or 0) == len(inside), \
            f"window {start}: snmp_polls {f['snmp_polls']}, {len(inside)} polls in events"
        means = {}
        for m in FEATURE_COMBINE:
            series = [c[m] for c in inside if m in c]
            want_mean = sum(series) / len(series) if series else None
            means[m] = want_mean
            want_max = max(series) if series else None
            for k, want in (("mean", want_mean), ("max", want_max)):
                v = f[f"snmp_{m}_{k}"]
                assert (v is None and want is None) or close(v, want), \
                    f"window {start}: snmp_{m}_{k} {v}, from events {want} ({series})"
        for name, (num, den, subtract) in ratios.items():
            n, d = means[num], means[den]
            want = None if n is None or d is None or d <= 0 else ((d - n) if subtract else n) / d
            v = f[name]
            assert (v is None and want is None) or close(v, want), f"window {start}: {name} {v} vs {want}"
        # Restarts and links down: changes between consecutive polls, in time order.
        seq = [per_poll[ts] for ts in sorted(per_poll) if start <= ts < end]
        restarts = sum(1 for a, b in zip(seq, seq[1:])
                       if "sys_uptime" in a and "sys_uptime" in b and b["sys_uptime"] < a["sys_uptime"])
        down = sum(a["if_oper_status"] - b["if_oper_status"] for a, b in zip(seq, seq[1:])
                   if "if_oper_status" in a and "if_oper_status" in b
                   and b["if_oper_status"] < a["if_oper_status"])
        for name, want in (("snmp_agent_restarts", restarts), ("snmp_links_down", down)):
            want = want if seq else None
            assert (f[name] is None and want is None) or close(f[name], want), \
                f"window {start}: {name} {f[name]} vs {want}"
        # Processor load against interface traffic, over the polls that had both.
        for name, load in (("snmp_cpu_net_corr", "hr_processor_load"), ("snmp_load_net_corr", "la_load_1")):
            pairs = [(c[load], c["if_in_octets"] + c["if_out_octets"]) for c in inside
                     if all(k in c for k in (load, "if_in_octets", "if_out_octets"))]
            want = pearson(pairs)
            v = f[name]
            assert (v is None and want is None) or close(v, want, 1e-6), \
                f"window {start}: {name} {v} vs {want} ({pairs})"
        out.append(f)
    assert any(f["snmp_polls"] for f in out), f"no snmp_polls for {entity}: {out}"
    return out


# ---- 1. net-snmp snmpd ------------------------------------------------------------------

@pytest.mark.parametrize("version", ["2c", "3"])
def test_snmpd_values_match_snmpget(tmp_path, snmpd, version):
    v3 = version == "3"
    # Counters to bracket: the loopback interface's (its traffic includes the polls).
    descr = snmpd.walk(f"{IF_ENTRY}.2", v3)
    lo = [oid.rsplit(".", 1)[1] for oid, d in descr.items() if d == "lo"]
    assert lo, f"no loopback interface in ifDescr: {descr}"
    lo_counters = [f"{IFX_ENTRY}.{c}.{lo[0]}" for c in (6, 7, 10, 11)] + \
                  [f"{IF_ENTRY}.{c}.{lo[0]}" for c in (10, 11, 16, 17)]
    before = {o: num(v) for o, v in snmpd.get(lo_counters, v3).items() if v.isdigit()}
    assert before, "snmpget read no counter of lo"

    with Job(tmp_path, snmp_source([snmpd.addr], v3), WINDOW_TOML) as job:
        # 5 polls span 4 s: longer than net-snmp caches interface counters (3 s).
        job.wait_metric("amoskys_component_received_events_total", 5, timeout=30,
                        component_id="core")
        assert job.metric("amoskys_component_errors_total", component_id="core",
                          error_type="poll_failures") == 0
    after = {o: num(v) for o, v in snmpd.get(lo_counters, v3).items() if v.isdigit()}
    up_at = time.time()
    uptime_now = num(snmpd.get([SYS_UPTIME], v3)[SYS_UPTIME]) / 100

    rows = snmp_events(job)
    by_poll = polls(rows)
    assert len(by_poll) >= 5, f"{len(by_poll)} polls written"
    for r in rows:
        assert (r["source"], r["entity"], r["protocol"]) == \
            ("core", snmpd.addr, "snmpv3" if v3 else "snmpv2c"), r
        assert r["oid"] and not r["oid"].startswith("."), r
    for poll in by_poll.values():
        assert poll[0]["payload_bytes"] >= len(poll), "varbinds received < samples"

    # Stable gauges: snmpget of the same OIDs, scaled the same way.
    gauges = [r for r in rows if r["metric"] in ("hr_memory_size", "mem_total_real")]
    assert {r["metric"] for r in gauges} == {"hr_memory_size", "mem_total_real"}
    got = snmpd.get(sorted({r["oid"] for r in gauges}), v3)
    for r in gauges:
        assert r["value"] == num(got[r["oid"]]) * 1024, r
    storage = [r for r in rows if r["metric"].startswith("hr_storage_") and r["metric"].endswith("_size")]
    assert {r["metric"] for r in storage} == {"hr_storage_ram_size", "hr_storage_swap_size",
                                              "hr_storage_disk_size"}, \
        "net-snmp on Linux has RAM, virtual memory and file systems"
    size_oids = sorted({r["oid"] for r in storage})
    for o in size_oids:
        assert o.startswith(f"{HR_STORAGE}.5."), f"{o} is not hrStorageSize"
    idx = [o.rsplit(".", 1)[1] for o in size_oids]
    got = snmpd.get(size_oids + [f"{HR_STORAGE}.4.{i}" for i in idx] +
                    [f"{HR_STORAGE}.3.{i}" for i in idx], v3)
    for r in storage:
        i = r["oid"].rsplit(".", 1)[1]
        assert r["value"] == num(got[r["oid"]]) * num(got[f"{HR_STORAGE}.4.{i}"]), r
        assert r["instance"] == got[f"{HR_STORAGE}.3.{i}"], r

    # sysUpTime: each poll's, against snmpget's now less the time since the poll.
    uptimes = [r for r in rows if r["metric"] == "sys_uptime"]
    assert len(uptimes) == len(by_poll)
    for r in uptimes:
        want = uptime_now - (up_at - r["ts_us"] / 1e6)
        assert abs(r["value"] - want) < 1.5, f"sys_uptime {r['value']} vs {want}"

    # Counters: rates follow the raw readings; lo's lie between snmpget's.
    checked, moving = check_rates(rows)
    assert checked > 0 and moving > 0, f"{checked} rates checked, {moving} moving"
    check_cpu_shares(rows)
    bracketed = [r for r in rows if r["oid"] in before and r["oid"] in after]
    assert bracketed, f"no counter of lo among {lo_counters} was written"
    for r in bracketed:
        assert before[r["oid"]] <= r["raw"] <= after[r["oid"]], \
            f"{r['metric']} {r['oid']}: {before[r['oid']]} <= {r['raw']} <= {after[r['oid']]}"
    assert any(before[r["oid"]] < r["raw"] for r in bracketed), "lo's counters did not move"

    # The features table: polls per window, and per-window mean/max of per-poll
    # combinations of the metrics, recomputed from `events`.
    mem = {r["value"] for r in rows if r["metric"] == "mem_total_real"}
    assert len(mem) == 1, mem
    (mem,) = mem
    feats = check_features(job, rows, snmpd.addr)
    assert all(f["snmp_mem_total_real_mean"] == mem for f in feats if f["snmp_polls"]), \
        f"snmp_mem_total_real_mean vs the gauge {mem}: {feats}"


# ---- 2. snmpsim recordings --------------------------------------------------------------

def read_snmprec(path: Path) -> dict:
    """{oid: (type, value)}: INTEGER/counters/gauges as int, OCTET STRING as bytes
    (4x hex-decoded), OBJECT IDENTIFIER as text; variation tags (`2:numeric`)
    are kept in the type."""
    rec = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        oid, typ, value = line.split("|", 2)
        if typ in ("2", "65", "66", "67", "70"):
            rec[oid] = (typ, int(value))
        elif typ == "4":
            rec[oid] = (typ, value.encode("utf-8"))
        elif typ == "4x":
            rec[oid] = ("4", bytes.fromhex(value))
        else:
            rec[oid] = (typ, value)
    return rec


def expected_from_recording(rec: dict) -> dict:
    """What one poll of an agent serving `rec` yields, per the metric catalogue
    (docs and MIBs): {oid: (metric, instance, value, raw)}, counters with value
    None (`raw` is the counter read)."""
    out = {}

    def gauge_int(oid):
        t = rec.get(oid)
        return t[1] if t and t[0] in ("2", "66") and t[1] >= 0 else None

    def counter(oid):
        t = rec.get(oid)
        return t[1] if t and t[0] in ("65", "70") else None

    def text(oid):
        t = rec.get(oid)
        if not t or t[0] != "4":
            return None
        s = t[1].decode("utf-8", errors="replace").strip().strip("\0").strip()
        return s or None

    def rows(col):
        pre = col + "."
        return {o[len(pre):] for o in rec if o.startswith(pre)}

    def g(metric, inst, oid, scale):
        v = gauge_int(oid)
        if v is not None:
            out[oid] = (metric, inst, v * scale, None)

    def c(metric, inst, oid):
        v = counter(oid)
        if v is not None:
            out[oid] = (metric, inst, None, v)

    if rec.get(SYS_UPTIME, ("",))[0] == "67":
        out[SYS_UPTIME] = ("sys_uptime", None, rec[SYS_UPTIME][1] / 100, None)
    g("hr_memory_size", None, HR_MEMORY_SIZE, 1024)
    for i, name in ((1, "la_load_1"), (2, "la_load_5"), (3, "la_load_15")):
        s = text(f"{LA_LOAD}.{i}")
        if s is not None:
            out[f"{LA_LOAD}.{i}"] = (name, None, float(s), None)
    for arc, name in ((5, "mem_total_real"), (6, "mem_avail_real"), (14, "mem_buffer"),
                      (15, "mem_cached")):
        g(name, None, f"{UCD_MEMORY}.{arc}.0", 1024)
    # CPU: the raw tick counters when user, system and idle are there, else the
    # agent's percentages.
    raw = {name: f"{UCD_SYSTEM_STATS}.{arc}.0" for name, arc in
           (("ss_cpu_user", 50), ("ss_cpu_system", 52), ("ss_cpu_idle", 53))}
    if all(counter(o) is not None for o in raw.values()):
        for name, o in raw.items():
            c(name, None, o)
    else:
        for name, arc in (("ss_cpu_user", 9), ("ss_cpu_system", 10), ("ss_cpu_idle", 11)):
            g(name, None, f"{UCD_SYSTEM_STATS}.{arc}.0", 1)
    for i in rows(HR_PROCESSOR_LOAD):
        g("hr_processor_load", i, f"{HR_PROCESSOR_LOAD}.{i}", 1)
    kinds = {f"{HR_STORAGE_TYPES}.2": "ram", f"{HR_STORAGE_TYPES}.3": "swap",
             f"{HR_STORAGE_TYPES}.4": "disk"}
    for i in rows(f"{HR_STORAGE}.2"):
        t = rec[f"{HR_STORAGE}.2.{i}"]
        kind = kinds.get(t[1]) if t[0] == "6" else None
        units = gauge_int(f"{HR_STORAGE}.4.{i}")
        if kind is None or not units:
            continue
        inst = text(f"{HR_STORAGE}.3.{i}") or i
        g(f"hr_storage_{kind}_used", inst, f"{HR_STORAGE}.6.{i}", units)
        g(f"hr_storage_{kind}_size", inst, f"{HR_STORAGE}.5.{i}", units)
    cols = (2, 3, 4, 5, 6, 12, 13)
    for i in set().union(*(rows(f"{DISK_IO}.{k}") for k in cols)):
        inst = text(f"{DISK_IO}.2.{i}") or i
        c("disk_io_reads", inst, f"{DISK_IO}.5.{i}")
        c("disk_io_writes", inst, f"{DISK_IO}.6.{i}")
        for name, hc, low in (("disk_io_read_bytes", 12, 3), ("disk_io_written_bytes", 13, 4)):
            o = f"{DISK_IO}.{hc}.{i}" if counter(f"{DISK_IO}.{hc}.{i}") is not None \
                else f"{DISK_IO}.{low}.{i}"
            c(name, inst, o)
    cols = (2, 8, 10, 11, 13, 14, 16, 17, 19, 20)
    for i in set().union(*(rows(f"{IF_ENTRY}.{k}") for k in cols)):
        inst = text(f"{IF_ENTRY}.2.{i}") or i
        for name, hc, low in (("if_in_octets", 6, 10), ("if_out_octets", 10, 16),
                              ("if_in_ucast_pkts", 7, 11), ("if_out_ucast_pkts", 11, 17)):
            o = f"{IFX_ENTRY}.{hc}.{i}" if counter(f"{IFX_ENTRY}.{hc}.{i}") is not None \
                else f"{IF_ENTRY}.{low}.{i}"
            c(name, inst, o)
        for name, col in (("if_in_errors", 14), ("if_out_errors", 20), ("if_in_discards", 13),
                          ("if_out_discards", 19)):
            c(name, inst, f"{IF_ENTRY}.{col}.{i}")
        g("if_oper_status", inst, f"{IF_ENTRY}.8.{i}", 1)
    return out


def snmprec_files() -> list[Path]:
    """The recordings with the objects the pipeline reads: host resources, UCD and
    interfaces (Linux), interfaces only (a switch), host resources without UCD
    (Windows). Those with variation modules (values that change) are left out."""
    base = require(DATA / "snmp" / "snmpsim-data")
    names = ["os_linux_unknown-006", "os_linux_unknown-003", "os_linux_slackware",
             "network_switch_cisco-c3560", "os_windows_XP"]
    files = [require(base / f"{n}.snmprec") for n in names]
    return files


class Snmpsim:
    """snmpsim-command-responder on a free UDP port, serving copies of `files`
    (community = file stem)."""

    def __init__(self, tmp: Path, files):
        self.dir = tmp / "snmpsim"
        self.data = self.dir / "data"
        self.data.mkdir(parents=True)
        for f in files:
            shutil.copyfile(f, self.data / f.name)
        self.files = files
        self.proc = None
        self.port = None

    def start(self, port=None):
        exe = Path(sys.executable).with_name("snmpsim-command-responder")
        if not exe.exists():
            pytest.fail(f"{exe} is missing: run scripts/setup.sh --test "
                        f"(tests/requirements.txt has snmpsim)")
        # Running as root, snmpsim insists on switching users unless told not to.
        env = {**os.environ, "SNMPSIM_ALLOW_ROOT": "true"}
        log = self.dir / "snmpsim.log"
        probe = self.files[0].stem
        fixed = port
        for _ in range(3):
            port = fixed or free_udp_port()
            with open(log, "w") as f:
                self.proc = subprocess.Popen(
                    [str(exe), f"--data-dir={self.data}", f"--cache-dir={self.dir / 'cache'}",
                     f"--agent-udpv4-endpoint=127.0.0.1:{port}", "--log-level=error"],
                    stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            answer = lambda: subprocess.run([need("snmpget"), "-v2c", "-c", probe, "-t", "0.5", "-r", "0",
                                             f"127.0.0.1:{port}", SYS_UPTIME], capture_output=True,
                                            env=snmp_env(self.dir / "client"),
                                            stdin=subprocess.DEVNULL).returncode == 0
            # Indexing the recordings takes a while.
            if answers_while_running(self.proc, answer, 90, f"snmpsim on port {port}"):
                self.port = port
                return self
            self.stop()
        raise AssertionError("snmpsim-command-responder did not start (scripts/setup.sh --test "
                             "installs it and its dependencies): " + log.read_text())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()



@pytest.fixture
def snmpsim(tmp_path):
    sim = Snmpsim(tmp_path, snmprec_files()).start()
    yield sim
    sim.stop()


def test_snmpsim_recordings_land_in_events_as_recorded(tmp_path, snmpsim):
    sources = "".join(snmp_source([f"127.0.0.1:{snmpsim.port}"], name=f.stem, community=f.stem,
                                  extra='timeout = "5s"\n')
                      for f in snmpsim.files)
    with Job(tmp_path, sources) as job:
        for f in snmpsim.files:
            job.wait_metric("amoskys_component_received_events_total", 2, timeout=60,
                            component_id=f.stem)
    rows = snmp_events(job)
    # Five agents (one per community) on one address are one entity, but each is
    # compared only with its own previous poll: the recordings never change, so
    # no restart and no link going down, whatever order their polls came in.
    entity = f"127.0.0.1:{snmpsim.port}"
    health = job.rows(f"select max(snmp_polls), coalesce(max(snmp_agent_restarts), 0), "
                      f"coalesce(max(snmp_links_down), 0) "
                      f"from {job.table('features')} where entity = '{entity}'")
    assert health[0][0] and health[0][0] >= len(snmpsim.files) and health[0][1:] == (0, 0), health
    wrong = job.alert_rows("rule, entity", "rule in ('device_restart', 'device_link_down')")
    assert wrong == [], wrong
    summary = []
    for f in snmpsim.files:
        want = expected_from_recording(read_snmprec(f))
        mine = [r for r in rows if r["source"] == f.stem]
        by_poll = polls(mine)
        assert len(by_poll) >= 2, f"{f.stem}: {len(by_poll)} polls"
        for (_, entity, ts), poll in sorted(by_poll.items()):
            assert entity == f"127.0.0.1:{snmpsim.port}"
            got = {r["oid"]: r for r in poll}
            assert len(got) == len(poll), f"{f.stem}: an OID twice in one poll"
            missing = sorted(set(want) - set(got))
            extra = sorted(set(got) - set(want))
            assert not missing and not extra, \
                f"{f.stem} poll {ts}: {len(missing)} expected OIDs missing (first " \
                f"{[(o, want[o][:2]) for o in missing[:5]]}), {len(extra)} not expected " \
                f"(first {[(o, got[o]['metric']) for o in extra[:5]]})"
            for oid, (metric, inst, value, raw) in want.items():
                r = got[oid]
                assert (r["metric"], r["instance"]) == (metric, inst), (f.stem, oid, r)
                assert r["protocol"] == "snmpv2c"
                if metric in COUNTER_METRICS:
                    assert r["raw"] == raw, (f.stem, oid, r, raw)
                else:
                    assert r["raw"] is None and close(r["value"], value), (f.stem, oid, r, value)
        # The recordings do not change: every rate after the first poll is 0, and
        # CPU shares of ticks that did not move are null.
        check_rates(mine)
        for r in mine:
            if r["metric"] in CPU_METRICS and r["raw"] is not None:
                assert r["value"] is None, r
        summary.append((f.stem, len(want)))
    assert all(n > 0 for _, n in summary), summary
    metrics_seen = {r["metric"] for r in rows}
    for m in ("hr_memory_size", "hr_storage_disk_size", "if_oper_status", "if_in_octets",
              "la_load_1", "mem_total_real", "sys_uptime", "disk_io_reads"):
        assert m in metrics_seen, f"no recording gave {m}"


# ---- 3. a dead agent beside a live one ---------------------------------------------------

def test_unreachable_agents_do_not_delay_the_live_one(tmp_path, snmpd):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # takes requests, never answers
    silent.bind(("127.0.0.1", 0))
    silent_addr = f"127.0.0.1:{silent.getsockname()[1]}"
    refused_addr = f"127.0.0.1:{free_udp_port()}"            # nothing listens
    interval = 1.0
    src = snmp_source([snmpd.addr, refused_addr, silent_addr],
                      extra='timeout = "1s"\nretries = 1\n')
    try:
        job = Job(tmp_path, src).start()
        t0 = time.time()
        try:
            failures = job.wait_metric("amoskys_component_errors_total", 1, timeout=10,
                                       component_id="core", error_type="poll_failures")
            down = job.wait_metric("amoskys_snmp_agents_down", 2, timeout=10, component_id="core")
            # Must be a sleep: the live agent's poll rate is measured over a fixed
            # 8 s of wall-clock time beside the dead agents.
            time.sleep(max(0.0, 8 - (time.time() - t0)))
            assert job.metric("amoskys_snmp_agents_down", component_id="core") == 2
            later = job.metric("amoskys_component_errors_total", component_id="core",
                               error_type="poll_failures")
            assert later > failures, "poll failures stopped being counted"
        except BaseException:
            job.proc.kill()
            job.proc.wait()
            raise
        elapsed = time.time() - t0
        t_stop = time.time()
        job.stop()
        stop_s = time.time() - t_stop
    finally:
        silent.close()
    assert stop_s < 5, f"the job took {stop_s:.1f} s to stop"
    rows = snmp_events(job)
    entities = {r["entity"] for r in rows}
    assert entities == {snmpd.addr}, entities
    n = len(polls(rows))
    # The silent agent's polls take timeout x (retries + 1) = 2 s each: had they
    # held the live agent back, it would have been polled about elapsed / 3 times.
    assert n >= elapsed / interval / 2, \
        f"live agent polled {n} times in {elapsed:.1f} s at a {interval} s interval"
    print(f"live polls {n} in {elapsed:.1f} s, failures {later}, agents down {down}, "
          f"stopped in {stop_s:.2f} s")


def device_recording(path: Path, uptime: int, oper: int, in_errors: int, cpu=(97, 95),
                     mem=(1_000_000, 10_000)):
    """A small agent of our own in snmpsim's format (OID|type|value, in OID order):
    uptime, one interface, two processors, UCD memory."""
    rows = {
        "1.3.6.1.2.1.1.3.0": (67, uptime),
        "1.3.6.1.2.1.2.2.1.1.1": (2, 1),
        "1.3.6.1.2.1.2.2.1.2.1": (4, "eth0"),
        "1.3.6.1.2.1.2.2.1.8.1": (2, oper),
        "1.3.6.1.2.1.2.2.1.10.1": (65, 1000),
        "1.3.6.1.2.1.2.2.1.14.1": (65, in_errors),
        "1.3.6.1.2.1.2.2.1.16.1": (65, 2000),
        "1.3.6.1.2.1.25.3.3.1.2.1": (2, cpu[0]),
        "1.3.6.1.2.1.25.3.3.1.2.2": (2, cpu[1]),
        "1.3.6.1.4.1.2021.4.5.0": (2, mem[0]),
        "1.3.6.1.4.1.2021.4.6.0": (2, mem[1]),
    }
    key = lambda o: tuple(int(x) for x in o.split("."))
    path.write_text("".join(f"{o}|{t}|{v}\n" for o, (t, v) in sorted(rows.items(), key=lambda r: key(r[0]))))


def test_device_health_detections_fire_on_an_agent_that_saturates_restarts_and_loses_a_link(tmp_path):
    """One agent (snmpsim serving recordings written here) seen in three states:
    saturated (97/95 % CPU, 99 % of memory used); restarted (uptime back to 2 s)
    with its interface down; then its input errors jumping by 499,000. Each
    device detection fires once, naming the agent."""
    rec = tmp_path / "dev.snmprec"
    device_recording(rec, uptime=10_000_000, oper=1, in_errors=1000)
    sim = Snmpsim(tmp_path, [rec]).start()
    agent = f"127.0.0.1:{sim.port}"

    def become(**state):
        sim.stop()
        device_recording(sim.data / "dev.snmprec", **state)
        shutil.rmtree(sim.dir / "cache", ignore_errors=True)
        sim.start(port=int(agent.rsplit(":", 1)[1]))

    try:
        with Job(tmp_path, snmp_source([agent], name="dev", community="dev",
                                       extra='timeout = "2s"\nretries = 0\n')) as job:
            job.wait_metric("amoskys_component_received_events_total", 2, component_id="dev")
            n = job.metric("amoskys_component_received_events_total", component_id="dev")
            become(uptime=200, oper=2, in_errors=1000)
            n = job.wait_metric("amoskys_component_received_events_total", n + 2, component_id="dev")
            become(uptime=400, oper=2, in_errors=500_000)
            job.wait_metric("amoskys_component_received_events_total", n + 2, component_id="dev")
    finally:
        sim.stop()
    rows = job.rows(f"select rule, entity, severity, summary from {job.table('alerts')} order by rule")
    assert {r[0] for r in rows} == {"device_cpu_saturation", "device_memory_saturation",
                                    "device_restart", "device_link_down",
                                    "device_interface_errors"}, rows
    assert len(rows) == 5 and all(r[1] == agent for r in rows), rows

