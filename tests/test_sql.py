"""`amoskys-pipeline sql`: DataFusion over the Parquet output, checked against
DuckDB running the same queries over the same files, and partition pruning shown
by the files DataFusion opens."""
import json
import math
import subprocess
from pathlib import Path

import duckdb
import pytest

from conftest import BIN, DATA, require, run_bin

CAPTURES = ["pcap/ndpi/synscan.pcap", "pcap/zeek/attacks/ftp-bruteforce.pcap",
            "pcap/zeek/attacks/dhcp_flood.pcap"]

# Filters on time, group-bys, joins of features and alerts, window functions.
QUERIES = [
    "SELECT count(*) AS n FROM flows",
    "SELECT date, hour, count(*) AS n, sum(packets_out) AS p FROM features GROUP BY date, hour",
    "SELECT entity, sum(packets_out) AS p, max(bytes_in) AS b FROM features "
    "WHERE date = '2024-01-15' GROUP BY entity",
    "SELECT proto, count(*) AS n, sum(bytes_fwd + bytes_bwd) AS bytes, avg(duration_s) AS d "
    "FROM flows GROUP BY proto",
    "SELECT dst_port, count(*) AS n FROM flows WHERE first_ts >= TIMESTAMP '2024-01-15 09:01:00' "
    "AND first_ts < TIMESTAMP '2024-01-15 09:03:00' GROUP BY dst_port HAVING count(*) > 2",
    "SELECT a.rule, a.entity, a.severity, f.conn_attempts_out, f.distinct_dst_ports_out "
    "FROM alerts a JOIN features f ON a.entity = f.entity AND a.window_start = f.window_start",
    "SELECT f.entity, count(*) AS windows, count(a.id) AS alerted FROM features f "
    "LEFT JOIN alerts a ON a.entity = f.entity AND a.window_start = f.window_start "
    "WHERE f.date >= '2014-01-01' GROUP BY f.entity",
    "SELECT entity, window_start, bytes_out, sum(bytes_out) OVER (PARTITION BY entity ORDER BY window_start "
    "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running FROM features WHERE date = '2024-01-15'",
    "SELECT entity, window_start, CAST(packets_out AS BIGINT) - lag(CAST(packets_out AS BIGINT)) "
    "OVER (PARTITION BY entity ORDER BY window_start) AS delta FROM features WHERE hour = '09'",
    "SELECT entity, bytes_out, rank() OVER (ORDER BY bytes_out DESC, entity) AS r FROM features "
    "WHERE date = '2024-01-15' AND window_start = TIMESTAMP '2024-01-15 09:01:00'",
    "SELECT count(DISTINCT entity) AS hosts, min(window_start) AS first, max(window_end) AS last FROM features",
    "SELECT src_ip, dst_ip, count(*) AS n FROM flows WHERE date BETWEEN '2010-01-01' AND '2014-12-31' "
    "GROUP BY src_ip, dst_ip HAVING count(*) >= 10",
    "SELECT CASE WHEN dst_port < 1024 THEN 'system' ELSE 'other' END AS kind, count(*) AS n "
    "FROM flows GROUP BY 1",
]


@pytest.fixture(scope="module")
def data(generated, tmp_path_factory):
    """Four replays into one directory: four dates, several hours."""
    out = tmp_path_factory.mktemp("sql") / "data"
    for c in [DATA / c for c in CAPTURES] + [generated]:
        run_bin("replay", c, "--out", out, "--no-progress")
    return out


def duck(data: Path):
    con = duckdb.connect()
    for t in ("flows", "features", "alerts"):
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data}/{t}/**/*.parquet', "
                    f"hive_partitioning=true, hive_types_autocast=false)")
    return con


def ours(data: Path, query: str, tmp: Path):
    out = tmp / "result.parquet"
    run_bin("sql", "--data", data, "--format", "parquet", "--output", out, query)
    return duckdb.sql(f"SELECT * FROM read_parquet('{out}')").fetchall()


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def key(row):
    return tuple((v is None, str(v)) for v in row)


@pytest.mark.parametrize("query", QUERIES)
def test_sql_results_equal_duckdbs(data, query, tmp_path):
    want = duck(data).execute(query).fetchall()
    got = ours(data, query, tmp_path)
    assert len(got) == len(want), (len(got), len(want))
    assert want, "the query should return rows"
    for g, w in zip(sorted(got, key=key), sorted(want, key=key)):
        assert len(g) == len(w) and all(same(x, y) for x, y in zip(g, w)), (g, w)


def files_opened(data: Path, query: str) -> int:
    r = run_bin("sql", "--data", data, "--format", "jsonl", f"EXPLAIN ANALYZE {query}")
    plans = "\n".join(json.loads(line)["plan"] for line in r.stdout.splitlines())
    scans = [line for line in plans.splitlines() if "DataSourceExec" in line]
    assert len(scans) == 1, plans
    return int(scans[0].split("files_opened=")[1].split(",")[0])


def test_a_filter_on_the_partitions_reads_only_their_files(data):
    every = len(list((data / "features").rglob("*.parquet")))
    one_day = len(list((data / "features" / "date=2024-01-15").rglob("*.parquet")))
    one_hour = len(list((data / "features" / "date=2024-01-15" / "hour=09").rglob("*.parquet")))
    assert every > one_day > one_hour >= 1
    q = "SELECT sum(packets_out) FROM features"
    assert files_opened(data, q) == every
    assert files_opened(data, q + " WHERE date = '2024-01-15'") == one_day
    assert files_opened(data, q + " WHERE date = '2024-01-15' AND hour = '09'") == one_hour
    assert files_opened(data, q + " WHERE date < '2011-01-01'") == 1


def test_formats_stdin_and_errors(data, tmp_path):
    q = "SELECT entity, packets_out FROM features WHERE date = '2010-07-04' ORDER BY entity, packets_out"
    want = duck(data).execute(q).fetchall()
    csv = run_bin("sql", "--data", data, "--format", "csv", q).stdout.splitlines()
    assert csv[0] == "entity,packets_out" and len(csv) == len(want) + 1
    assert [tuple(line.split(",")) for line in csv[1:]] == [(e, str(p)) for e, p in want]
    lines = run_bin("sql", "--data", data, "--format", "jsonl", q).stdout.splitlines()
    assert [(j["entity"], j["packets_out"]) for j in map(json.loads, lines)] == want
    table = run_bin("sql", "--data", data, q).stdout
    assert table.splitlines()[1].split("|")[1].strip() == "entity" and f"({len(want)} rows)" in table
    # Several queries on standard input, `;`-separated or one per line.
    for text in ("SELECT 1 AS a; SELECT 2 AS b;", "SELECT 1 AS a\nSELECT 2 AS b\n"):
        r = subprocess.run([str(require(BIN)), "sql", "--data", str(data), "--format", "csv"],
                           input=text, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.split() == ["a", "1", "b", "2"], r
    # A bad query: DataFusion's message, exit 1, no panic.
    for bad, says in [("SELECT nope FROM flows", "No field named nope"),
                      ("SELECT * FROM nowhere", "nowhere"),
                      ("SELEC 1", "SELEC")]:
        r = run_bin("sql", "--data", data, bad, check=False)
        assert r.returncode == 1 and says in r.stderr and "panicked" not in r.stderr, r.stderr
