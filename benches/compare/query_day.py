"""Times queries over one output directory with DataFusion (amoskys-pipeline
sql) and DuckDB (its Python package), each as a fresh process per query, as an
analyst at a shell would run them. Called by query_day.sh."""
import csv
import io
import statistics
import subprocess
import sys
import time

BIN, DATA, ROUNDS = sys.argv[1], sys.argv[2], int(sys.argv[3])

QUERIES = {
    "start-up (SELECT 1)": "SELECT 1 AS one",
    "busiest hosts of the day": (
        "SELECT entity, sum(bytes_out) AS bytes, max(distinct_peers_out) AS peers, "
        "sum(conn_attempts_out) AS conns FROM features GROUP BY entity ORDER BY bytes DESC, entity LIMIT 10"),
    "one hour, filtered": (
        "SELECT entity, avg(packets_out) AS p, max(dns_queries_out) AS q FROM features "
        "WHERE hour = '12' AND packets_out > 0 GROUP BY entity ORDER BY p DESC, entity LIMIT 10"),
    "per-host hourly trend (window function)": (
        "SELECT entity, hour, b, b - lag(b) OVER (PARTITION BY entity ORDER BY hour) AS change FROM "
        "(SELECT entity, hour, CAST(sum(bytes_out) AS BIGINT) AS b FROM features GROUP BY entity, hour) "
        "ORDER BY entity, hour LIMIT 50"),
}

DUCK = """
import duckdb, sys, csv
con = duckdb.connect()
con.execute("CREATE VIEW features AS SELECT * FROM read_parquet('{data}/features/**/*.parquet', "
            "hive_partitioning=true, hive_types_autocast=false)")
r = con.execute(sys.argv[1])
w = csv.writer(sys.stdout, lineterminator="\\n")
w.writerow([d[0] for d in r.description])
w.writerows(r.fetchall())
"""


def run(cmd):
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - t, out


def rows(text):
    out = []
    for r in list(csv.reader(io.StringIO(text)))[1:]:
        out.append(tuple(f"{float(v):.6g}" if v.replace(".", "", 1).replace("-", "", 1).isdigit() else v
                         for v in r))
    return out


def main():
    duck = DUCK.format(data=DATA)
    print(f"{'query':42} {'DataFusion':>12} {'DuckDB':>12} {'DF/DuckDB':>10}")
    for name, q in QUERIES.items():
        df_t, dk_t = [], []
        for _ in range(ROUNDS):
            t1, a = run([BIN, "sql", "--data", DATA, "--format", "csv", q])
            t2, b = run([sys.executable, "-c", duck, q])
            df_t.append(t1)
            dk_t.append(t2)
        assert rows(a) == rows(b), f"{name}: results differ\n{a[:500]}\n{b[:500]}"
        m1, m2 = statistics.median(df_t), statistics.median(dk_t)
        print(f"{name:42} {m1 * 1000:10.1f}ms {m2 * 1000:10.1f}ms {m1 / m2:10.2f}")
    n = subprocess.run([BIN, "sql", "--data", DATA, "--format", "csv",
                        "SELECT count(*) AS n FROM features"], capture_output=True, text=True,
                       check=True).stdout.split()[1]
    print(f"(features rows: {n}; medians of {ROUNDS} rounds, each query a fresh process)")


main()
