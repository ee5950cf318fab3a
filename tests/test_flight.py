"""`amoskys-pipeline serve`: the Parquet output over Arrow Flight and Flight SQL,
read with pyarrow.flight and ADBC's Flight SQL driver (PyPI), checked against
DuckDB over the same files; authentication with bearer tokens, TLS and mutual
TLS; a large read streams."""
import math
import signal
import socket
import subprocess

import adbc_driver_flightsql.dbapi as fsql
import duckdb
import pyarrow as pa
import pyarrow.flight as fl
import pyarrow.parquet as pq
import pytest

from conftest import BIN, DATA, require, run_bin, wait_until
from livejob import free_port, make_pki

TOKEN = "s3cret-token"
AUTH = fl.FlightCallOptions(headers=[(b"authorization", f"Bearer {TOKEN}".encode())])


class Server:
    def __init__(self, data, *extra, token=TOKEN):
        self.port = free_port()
        args = [str(require(BIN)), "serve", "--data", str(data), "--listen", f"127.0.0.1:{self.port}",
                *map(str, extra)]
        if token:
            args += ["--token", token]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        assert "serving" in line, line + (self.proc.stderr.read() if self.proc.poll() is not None else "")
        wait_until(self.accepts, 10, f"the server to accept connections on port {self.port}")

    def accepts(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0
        assert "panicked" not in self.proc.stderr.read()

    def peak_rss_kib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def data(generated, tmp_path_factory):
    out = tmp_path_factory.mktemp("flight") / "data"
    for c in [DATA / "pcap/ndpi/synscan.pcap", DATA / "pcap/zeek/attacks/ftp-bruteforce.pcap", generated]:
        run_bin("replay", c, "--out", out, "--no-progress")
    return out


@pytest.fixture(scope="module")
def server(data):
    s = Server(data)
    yield s
    s.stop()


def duck(data):
    con = duckdb.connect()
    for t in ("flows", "features", "alerts"):
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data}/{t}/**/*.parquet', "
                    f"hive_partitioning=true, hive_types_autocast=false)")
    return con


def rows_equal(got: pa.Table, want: list):
    def norm(v):
        if isinstance(v, float) and math.isnan(v):
            return "nan"
        return v if not isinstance(v, float) else round(v, 9)

    g = sorted((tuple(norm(v) for v in r.values()) for r in got.to_pylist()), key=repr)
    w = sorted((tuple(norm(v) for v in r) for r in want), key=repr)
    assert len(g) == len(w), (len(g), len(w))
    assert g == w


def test_flights_list_the_tables_and_read_them_as_duckdb_does(server, data):
    c = fl.FlightClient(f"grpc://127.0.0.1:{server.port}")
    flights = {f.descriptor.path[0].decode(): f for f in c.list_flights(options=AUTH)}
    assert set(flights) == {"flows", "features", "alerts"}
    con = duck(data)
    for name, f in flights.items():
        cols = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
        assert f.schema.names == cols, name
        got = c.do_get(f.endpoints[0].ticket, AUTH).read_all()
        assert got.schema.names == cols
        rows_equal(got, con.execute(f"SELECT * FROM {name}").fetchall())
        # GetSchema of the same path gives the same schema.
        assert c.get_schema(fl.FlightDescriptor.for_path(name), AUTH).schema == f.schema
    # Only the windows after a time.
    info = c.get_flight_info(fl.FlightDescriptor.for_path("features", "2024-01-15T09:01:00Z"), AUTH)
    got = c.do_get(info.endpoints[0].ticket, AUTH).read_all()
    rows_equal(got, con.execute("SELECT * FROM features WHERE window_start > "
                                "TIMESTAMPTZ '2024-01-15 09:01:00+00'").fetchall())
    assert 0 < got.num_rows < con.execute("SELECT count(*) FROM features").fetchone()[0]


SQL = [
    "SELECT entity, sum(packets_out) AS p FROM features GROUP BY entity",
    "SELECT a.rule, a.entity, f.distinct_dst_ports_out FROM alerts a JOIN features f "
    "ON a.entity = f.entity AND a.window_start = f.window_start",
    "SELECT dst_port, count(*) AS n FROM flows WHERE date = '2024-01-15' GROUP BY dst_port",
]


@pytest.mark.parametrize("query", SQL)
def test_sql_tickets_and_commands_stream_what_duckdb_computes(server, data, query):
    c = fl.FlightClient(f"grpc://127.0.0.1:{server.port}")
    want = duck(data).execute(query).fetchall()
    rows_equal(c.do_get(fl.Ticket(query.encode()), AUTH).read_all(), want)
    info = c.get_flight_info(fl.FlightDescriptor.for_command(query.encode()), AUTH)
    rows_equal(c.do_get(info.endpoints[0].ticket, AUTH).read_all(), want)


def test_adbc_flight_sql_connects_lists_tables_and_queries(server, data):
    conn = fsql.connect(f"grpc://127.0.0.1:{server.port}",
                        db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {TOKEN}"},
                        autocommit=True)
    try:
        objs = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = {(c["catalog_name"], s["db_schema_name"], t["table_name"])
                  for c in objs for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]}
        assert tables == {("amoskys", "public", t) for t in ("flows", "features", "alerts")}
        con = duck(data)
        assert conn.adbc_get_table_schema("alerts").names == [
            r[0] for r in con.execute("DESCRIBE alerts").fetchall()]
        cur = conn.cursor()
        for q in SQL:
            cur.execute(q)
            rows_equal(cur.fetch_arrow_table(), con.execute(q).fetchall())
        cur.close()
        with pytest.raises(Exception, match="No field named nope"):
            c2 = conn.cursor()
            c2.execute("SELECT nope FROM flows")
    finally:
        conn.close()


def test_tokens_tls_and_client_certificates(data, tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    other = tmp_path / "other"
    other.mkdir()
    make_pki(other)  # a second CA: its client certificate is not trusted
    s = Server(data, "--tls-cert", pki / "server.pem", "--tls-key", pki / "server.key",
               "--tls-client-ca", pki / "ca.pem")
    try:
        loc = f"grpc+tls://127.0.0.1:{s.port}"
        ca = (pki / "ca.pem").read_bytes()

        def client(certs=pki):
            return fl.FlightClient(loc, tls_root_certs=ca, cert_chain=(certs / "client.pem").read_bytes(),
                                   private_key=(certs / "client.key").read_bytes())

        q = fl.Ticket(b"SELECT count(*) AS n FROM flows")
        assert client().do_get(q, AUTH).read_all().to_pylist()[0]["n"] > 0
        with pytest.raises(fl.FlightUnauthenticatedError):
            client().do_get(q).read_all()
        wrong = fl.FlightCallOptions(headers=[(b"authorization", b"Bearer not-the-token")])
        with pytest.raises(fl.FlightUnauthenticatedError):
            client().do_get(q, wrong).read_all()
        with pytest.raises(fl.FlightUnauthenticatedError):
            list(client().list_flights(options=wrong))
        # A client certificate from another CA: the handshake is refused.
        with pytest.raises(fl.FlightUnavailableError):
            client(other).do_get(q, AUTH).read_all()
        # No client certificate at all.
        with pytest.raises(fl.FlightUnavailableError):
            fl.FlightClient(loc, tls_root_certs=ca).do_get(q, AUTH).read_all()
        # ADBC over mutual TLS with the token.
        conn = fsql.connect(loc, db_kwargs={
            "adbc.flight.sql.authorization_header": f"Bearer {TOKEN}",
            "adbc.flight.sql.client_option.tls_root_certs": ca.decode(),
            "adbc.flight.sql.client_option.mtls_cert_chain": (pki / "client.pem").read_text(),
            "adbc.flight.sql.client_option.mtls_private_key": (pki / "client.key").read_text(),
        }, autocommit=True)
        cur = conn.cursor()
        cur.execute("SELECT count(*) AS n FROM features")
        assert cur.fetchone()[0] > 0
        cur.close()
        conn.close()
    finally:
        s.stop()


def test_a_large_read_streams_without_holding_the_table(tmp_path):
    """A table of 12 million rows (8 float columns: 732 MiB in Arrow) read with one
    DoGet: past a first small query (which starts DataFusion's and tonic's
    machinery), the server's peak resident memory grows by a small part of the
    table (measured: about 75 MiB, a few row groups in flight)."""
    d = tmp_path / "big"
    (d / "bulk").mkdir(parents=True)
    rows, cols, chunk = 12_000_000, 8, 500_000
    w = pq.ParquetWriter(d / "bulk" / "part-0.parquet",
                         pa.schema([(f"c{i}", pa.float64()) for i in range(cols)]))
    for k in range(rows // chunk):
        base = pa.compute.cast(pa.array(range(k * chunk, (k + 1) * chunk)), pa.float64())
        w.write_table(pa.table({f"c{i}": base for i in range(cols)}), row_group_size=chunk // 8)
    w.close()
    s = Server(d, token=None)
    try:
        c = fl.FlightClient(f"grpc://127.0.0.1:{s.port}")
        assert c.do_get(fl.Ticket(b"SELECT c0 FROM bulk LIMIT 10")).read_all().num_rows == 10
        before = s.peak_rss_kib()
        n, total = 0, 0.0
        for part in c.do_get(fl.Ticket(b'{"table": "bulk"}')):
            n += part.data.num_rows
            total += pa.compute.sum(part.data.column("c0")).as_py()
        assert n == rows and total == rows * (rows - 1) / 2
        growth_mib = (s.peak_rss_kib() - before) / 1024
        in_memory_mib = rows * cols * 8 / 2**20
        print(f"peak RSS growth {growth_mib:.1f} MiB for a {in_memory_mib:.0f} MiB table")
        assert growth_mib < in_memory_mib / 4, (growth_mib, in_memory_mib)
    finally:
        s.stop()


def test_the_running_job_serves_rows_not_yet_in_a_finished_file(tmp_path):
    """The long-running job with [sinks.flight]: syslog messages are read over
    Flight while their file is still open (so only in memory), then again once
    the 3 s roll has finished the file — the same rows, none twice."""
    import datetime
    import socket as so
    from livejob import Job, syslog_source
    port, fport = free_port(), free_port()
    job = Job(tmp_path, syslog_source(port),
              f'[sinks.flight]\nlisten = "127.0.0.1:{fport}"\ntokens = ["{TOKEN}"]\n')
    # The helper's file ends in [sinks.parquet]: roll its files every 3 s.
    job.cfg.write_text(job.cfg.read_text() + 'roll_interval = "3s"\n')
    with job:
        now = datetime.datetime.now(datetime.timezone.utc)
        lines = [f"<14>1 {now.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} web app 1 - - message {k}\n"
                 for k in range(30)]
        with so.create_connection(("127.0.0.1", port)) as s:
            s.sendall("".join(lines).encode())
        job.wait_metric("amoskys_events_sent_total", 30)
        c = fl.FlightClient(f"grpc://127.0.0.1:{fport}")
        finished = lambda: list((job.data / "events").glob("date=*/hour=*/*.parquet"))
        last = [None]

        def all_rows():
            last[0] = c.do_get(fl.Ticket(b'{"table": "events"}'), AUTH).read_all()
            return last[0].num_rows == 30

        wait_until(all_rows, 5, lambda: f"30 rows over Flight (got {last[0] and last[0].num_rows})")
        got = last[0]
        assert got.num_rows == 30 and not finished(), (got.num_rows, finished())
        assert sorted(got.column("message").to_pylist()) == sorted(f"message {k}" for k in range(30))
        wait_until(finished, 10, "the 3 s roll to finish the file")
        again = c.do_get(fl.Ticket(b"SELECT count(*) AS n, count(DISTINCT message) AS d FROM events"),
                         AUTH).read_all().to_pylist()
        assert again == [{"n": 30, "d": 30}], again
        with pytest.raises(fl.FlightUnauthenticatedError):
            c.do_get(fl.Ticket(b"SELECT 1")).read_all()
    assert job.rows(f"select count(*) from {job.table('events')}") == [(30,)]
