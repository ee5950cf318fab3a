//! SNMP polling: how many polls per second the SNMP source sustains against real
//! net-snmp agents on loopback, with the interval so short that polls run back to
//! back, against snmp2 sending the same requests in the same run.
//!
//!     cargo bench -p amoskys-benches --bench snmp
//!
//! The benchmark starts four `snmpd` (SNMPv2c, `rocommunity public`) on free
//! loopback ports and kills them at the end. In interleaved rounds it measures
//! for ~3 s each:
//!
//! 1. the reference: one snmp2 `AsyncSession` replaying the requests of one poll
//!    (the GET of the scalars, then the GETBULK walk of the table columns, with
//!    the same max-repetitions) over and over against the first agent, counting
//!    the varbinds of each response and nothing else;
//! 2. the SNMP source polling the first agent (requests, conversion of every
//!    value, samples and rates, one record per poll on a channel drained here);
//! 3. the SNMP source polling all four agents (one task per agent).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use amoskys_benches::median;
use amoskys_sources::snmp::{SnmpCounters, SnmpSourceConfig};
use snmp2::{AsyncSession, Oid};

/// GETBULK max-repetitions of the source (its default) and of the reference.
const MAX_REP: u32 = 25;
/// The source's interval: far shorter than a poll, so that polls run back to back
/// (with 1 ms, a poll of a loopback agent is quicker than the interval).
const INTERVAL: &str = "1us";
/// The length of one measurement.
const MEASURE: Duration = Duration::from_secs(3);
const AGENTS: usize = 4;
/// One request's time limit in the reference (the source uses its own `timeout`).
const TIMEOUT: Duration = Duration::from_secs(1);

// ---- the agents ----------------------------------------------------------------

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port()
}

/// A net-snmp agent on 127.0.0.1 with its own configuration and persistent
/// directory, killed when dropped.
struct Snmpd {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Snmpd {
    fn start(snmpd: &Path, snmpget: &Path) -> Snmpd {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("snmpd.conf"),
            "rocommunity public 127.0.0.1\n",
        )
        .expect("write snmpd.conf");
        for _ in 0..5 {
            let port = free_udp_port();
            let log = std::fs::File::create(dir.path().join("snmpd.log")).expect("log");
            let mut child = Command::new(snmpd)
                .args(["-f", "-Lo", "-C", "-c"])
                .arg(dir.path().join("snmpd.conf"))
                .arg("-p")
                .arg(dir.path().join("snmpd.pid"))
                .arg(format!("udp:127.0.0.1:{port}"))
                .env("SNMP_PERSISTENT_DIR", dir.path().join("persist"))
                .env("MIBS", "")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn snmpd");
            if wait_ready(&mut child, snmpget, dir.path(), port) {
                return Snmpd {
                    child,
                    port,
                    _dir: dir,
                };
            }
            // Most likely the port was taken meanwhile: try another.
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("snmpd.log")).unwrap_or_default();
            eprintln!("snmpd on port {port} did not answer; its log:\n{log}");
        }
        panic!("snmpd did not start (see its log above)");
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `snmpget` reads sysUpTime.0; false if snmpd exited or stayed silent.
fn wait_ready(child: &mut Child, snmpget: &Path, dir: &Path, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if child.try_wait().expect("try_wait").is_some() {
            return false;
        }
        let ok = Command::new(snmpget)
            .args(["-v2c", "-c", "public", "-t", "1", "-r", "0", "-On"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("1.3.6.1.2.1.1.3.0")
            .env("SNMP_PERSISTENT_DIR", dir.join("persist-client"))
            .env("MIBS", "")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

// ---- what one poll asks ----------------------------------------------------------

type Arcs = Vec<u64>;

/// The scalars a poll GETs, as the source asks for them.
fn scalar_oids() -> Vec<Arcs> {
    widen(amoskys_sources::snmp::scalar_oids())
}

/// The table columns a poll walks, as the source walks them.
fn table_columns() -> Vec<Arcs> {
    widen(amoskys_sources::snmp::table_columns())
}

fn widen(v: Vec<Vec<u32>>) -> Vec<Arcs> {
    v.into_iter()
        .map(|o| o.into_iter().map(u64::from).collect())
        .collect()
}

fn to_oid(a: &[u64]) -> Oid<'static> {
    Oid::from(a).expect("valid OID")
}

/// One request of a poll.
enum Request {
    Get(Vec<Oid<'static>>),
    Bulk(Vec<Oid<'static>>),
}

/// The requests of one poll of this agent: the GET of the scalars, then the
/// GETBULK requests of the walk, found by walking once as the source does (all
/// columns in each request, each column from its last OID until it leaves its
/// subtree).
async fn poll_plan(addr: SocketAddr) -> Vec<Request> {
    let mut s = AsyncSession::new_v2c(addr, b"public", 1)
        .await
        .expect("session");
    let mut plan = vec![Request::Get(
        scalar_oids().iter().map(|o| to_oid(o)).collect(),
    )];
    let columns = table_columns();
    let mut last = columns.clone();
    let mut done = vec![false; columns.len()];
    while plan.len() < 64 {
        let active: Vec<usize> = (0..columns.len()).filter(|&i| !done[i]).collect();
        if active.is_empty() {
            break;
        }
        let ask: Vec<Oid<'static>> = active.iter().map(|&i| to_oid(&last[i])).collect();
        let refs: Vec<&Oid<'_>> = ask.iter().collect();
        let pdu = tokio::time::timeout(TIMEOUT, s.getbulk(&refs, 0, MAX_REP))
            .await
            .expect("agent answers")
            .expect("GETBULK");
        let n = active.len();
        let mut progressed = false;
        for (k, (oid, v)) in pdu.varbinds.enumerate() {
            let col = active[k % n];
            if done[col] {
                continue;
            }
            let arcs: Arcs = oid.iter().map(|i| i.collect()).unwrap_or_default();
            if matches!(v, snmp2::Value::EndOfMibView)
                || !arcs.starts_with(&columns[col])
                || arcs <= last[col]
            {
                done[col] = true;
                continue;
            }
            last[col] = arcs;
            progressed = true;
        }
        plan.push(Request::Bulk(ask));
        if !progressed {
            break;
        }
    }
    plan
}

// ---- measurements ------------------------------------------------------------------

/// Rates over one measurement.
#[derive(Default)]
struct Rates {
    polls: f64,
    requests: f64,
    varbinds: f64,
    samples: f64,
    failures: u64,
}

/// The reference: the requests of one poll, replayed with snmp2 as fast as the
/// agent answers; only the varbinds are counted (snmp2 decodes them lazily).
async fn reference(addr: SocketAddr, plan: &[Request]) -> Rates {
    let new_session = || AsyncSession::new_v2c(addr, b"public", 1);
    let mut s = new_session().await.expect("session");
    let (mut polls, mut requests, mut varbinds, mut failures) = (0u64, 0u64, 0u64, 0u64);
    let t = Instant::now();
    'poll: while t.elapsed() < MEASURE {
        for r in plan {
            let got = match r {
                Request::Get(oids) => {
                    let refs: Vec<&Oid<'_>> = oids.iter().collect();
                    tokio::time::timeout(TIMEOUT, s.get_many(&refs))
                        .await
                        .map(|r| r.map(|pdu| pdu.varbinds.count()))
                }
                Request::Bulk(oids) => {
                    let refs: Vec<&Oid<'_>> = oids.iter().collect();
                    tokio::time::timeout(TIMEOUT, s.getbulk(&refs, 0, MAX_REP))
                        .await
                        .map(|r| r.map(|pdu| pdu.varbinds.count()))
                }
            };
            match got {
                Ok(Ok(n)) => {
                    requests += 1;
                    varbinds += n as u64;
                }
                // A late reply would be read by the next request: start over on
                // a new socket, as the source does.
                _ => {
                    failures += 1;
                    s = new_session().await.expect("session");
                    continue 'poll;
                }
            }
        }
        polls += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    Rates {
        polls: polls as f64 / secs,
        requests: requests as f64 / secs,
        varbinds: varbinds as f64 / secs,
        samples: f64::NAN,
        failures,
    }
}

struct Snapshot {
    polls: u64,
    requests: u64,
    varbinds: u64,
    samples: u64,
    failures: u64,
}

fn snapshot(c: &SnmpCounters) -> Snapshot {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    Snapshot {
        polls: get(&c.polls),
        requests: get(&c.requests),
        varbinds: get(&c.varbinds),
        samples: get(&c.samples),
        failures: get(&c.poll_failures),
    }
}

/// The SNMP source polling `agents` back to back (`INTERVAL`), its records
/// drained from the channel; rates from its counters after every agent's first
/// poll.
async fn source(agents: &[String]) -> Rates {
    let list: Vec<String> = agents.iter().map(|a| format!("\"{a}\"")).collect();
    let cfg: SnmpSourceConfig = toml::from_str(&format!(
        "name = \"bench\"\nagents = [{}]\ninterval = \"{INTERVAL}\"\ntimeout = \"1s\"\n\
         retries = 1\nmax_repetitions = {MAX_REP}\n",
        list.join(", ")
    ))
    .expect("config");
    let src = cfg.start().await.expect("start");
    let counters: Arc<SnmpCounters> = src.counters();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<amoskys_schemas::Record>>(64);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(src.run(tx, shutdown));
    let drain = tokio::spawn(async move {
        let mut records = 0usize;
        while let Some(b) = rx.recv().await {
            records += b.len();
        }
        records
    });
    // Warm-up: every agent's first poll opens its socket and has no rates yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counters.polls.load(Ordering::Relaxed) < 2 * agents.len() as u64 {
        assert!(Instant::now() < deadline, "the source does not poll");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (a, t) = (snapshot(&counters), Instant::now());
    tokio::time::sleep(MEASURE).await;
    let (b, secs) = (snapshot(&counters), t.elapsed().as_secs_f64());
    stop.send(true).ok();
    run.await.expect("run").expect("source");
    let records = drain.await.expect("drain");
    assert!(records as u64 >= b.polls - a.polls, "records went missing");
    let rate = |x: u64, y: u64| (y - x) as f64 / secs;
    Rates {
        polls: rate(a.polls, b.polls),
        requests: rate(a.requests, b.requests),
        varbinds: rate(a.varbinds, b.varbinds),
        samples: rate(a.samples, b.samples),
        failures: b.failures - a.failures,
    }
}

/// The median of each rate over the rounds, and the failures summed.
fn medians(rounds: &[Rates]) -> Rates {
    let m = |f: fn(&Rates) -> f64| median(rounds.iter().map(f).collect());
    Rates {
        polls: m(|r| r.polls),
        requests: m(|r| r.requests),
        varbinds: m(|r| r.varbinds),
        samples: m(|r| r.samples),
        failures: rounds.iter().map(|r| r.failures).sum(),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (Some(snmpd), Some(snmpget)) = (find_tool("snmpd"), find_tool("snmpget")) else {
        eprintln!("snmpd and snmpget (net-snmp) are not installed: run scripts/setup.sh --test");
        std::process::exit(1);
    };
    let rounds: usize = std::env::var("AMOSKYS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let agents: Vec<Snmpd> = (0..AGENTS)
        .map(|_| Snmpd::start(&snmpd, &snmpget))
        .collect();
    let addrs: Vec<String> = agents.iter().map(Snmpd::addr).collect();
    let first: SocketAddr = addrs[0].parse().expect("agent address");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (mut refs, mut one, mut four) = (Vec::new(), Vec::new(), Vec::new());
    let plan = rt.block_on(async {
        let plan = poll_plan(first).await;
        for _ in 0..rounds {
            refs.push(reference(first, &plan).await);
            one.push(source(&addrs[..1]).await);
            four.push(source(&addrs).await);
        }
        plan
    });
    drop(agents);
    let (r, o, f) = (medians(&refs), medians(&one), medians(&four));

    println!(
        "SNMPv2c polls of net-snmp snmpd on loopback, max-repetitions {MAX_REP}, interval {INTERVAL} \
         (back to back);\nmedian of {rounds} interleaved rounds of {} s; \
         one poll = {} requests (1 GET + {} GETBULK), {:.0} varbinds, {:.0} samples",
        MEASURE.as_secs(),
        plan.len(),
        plan.len() - 1,
        o.varbinds / o.polls,
        o.samples / o.polls,
    );
    println!(
        "{:<36}{:>10} {:>12} {:>12} {:>12} {:>10}",
        "", "polls/s", "requests/s", "varbinds/s", "samples/s", "requests"
    );
    let line = |name: &str, x: &Rates, share: String| {
        let samples = if x.samples.is_nan() {
            "-".to_string()
        } else {
            format!("{:.0}", x.samples)
        };
        println!(
            "{name:<36}{:>10.0} {:>12.0} {:>12.0} {:>12} {:>10}",
            x.polls, x.requests, x.varbinds, samples, share
        );
    };
    line("snmp2 replay of a poll, 1 agent", &r, "100.0 %".into());
    line(
        "SNMP source, 1 agent",
        &o,
        format!("{:.1} %", 100.0 * o.requests / r.requests),
    );
    line(
        &format!("SNMP source, {AGENTS} agents"),
        &f,
        format!("{:.1} %", 100.0 * f.requests / r.requests),
    );
    println!(
        "{AGENTS} agents / 1 agent: {:.2}x polls/s (the agents are polled in parallel; \
         {} cores shared with the agents)",
        f.polls / o.polls,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let failures = r.failures + o.failures + f.failures;
    if failures > 0 {
        println!(
            "failed polls: reference {}, 1 agent {}, {AGENTS} agents {}",
            r.failures, o.failures, f.failures
        );
    }
}
