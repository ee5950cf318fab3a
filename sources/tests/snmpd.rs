//! The SNMP source against a real net-snmp `snmpd` on loopback, for SNMPv2c and
//! SNMPv3 authPriv (SHA + AES): what the source reports is compared with what
//! net-snmp's own `snmpget` reads from the same agent.
//!
//! (Over 600 lines: every comparison with net-snmp shares the agents this file
//! starts.)

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amoskys_schemas::{DeviceKind, DeviceRecord, Entity, Record, Sample};
use amoskys_sources::snmp::{METRICS, SnmpCounters, SnmpSourceConfig};
use tokio::sync::{mpsc, watch};

const USER: &str = "amoskys";
const AUTH_PASS: &str = "authpass123";
const PRIV_PASS: &str = "privpass123";

fn find_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} (net-snmp) is not installed: run scripts/setup.sh --test")
        })
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .expect("clock")
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port()
}

/// A net-snmp agent on 127.0.0.1, with its own configuration and persistent
/// directory, killed when dropped.
struct Snmpd {
    child: Mutex<Child>,
    port: u16,
    dir: tempfile::TempDir,
    snmpd: PathBuf,
    snmpget: PathBuf,
}

/// `snmpget`'s values, in order, as numbers (`None`: absent or not a number);
/// `None` when snmpget fails.
fn query(
    snmpget: &Path,
    port: u16,
    dir: &Path,
    v3: bool,
    oids: &[&str],
) -> Option<Vec<Option<f64>>> {
    let mut cmd = Command::new(snmpget);
    if v3 {
        cmd.args([
            "-v3", "-l", "authPriv", "-u", USER, "-a", "SHA", "-A", AUTH_PASS,
        ])
        .args(["-x", "AES", "-X", PRIV_PASS]);
    } else {
        cmd.args(["-v2c", "-c", "public"]);
    }
    let out = cmd
        .args(["-On", "-Oqv", "-Ot", "-Oe", "-t", "2", "-r", "1"])
        .arg(format!("127.0.0.1:{port}"))
        .args(oids)
        .env("SNMP_PERSISTENT_DIR", dir.join("persist-client"))
        .env("MIBS", "")
        .stdin(Stdio::null())
        .output()
        .expect("run snmpget");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let values: Vec<Option<f64>> = text
        .lines()
        .map(|l| l.trim().trim_matches('"').parse::<f64>().ok())
        .collect();
    (values.len() == oids.len()).then_some(values)
}

fn spawn_snmpd(snmpd: &Path, dir: &Path, port: u16) -> Child {
    let log = std::fs::File::create(dir.join("snmpd.log")).expect("log");
    Command::new(snmpd)
        .args(["-f", "-Lo", "-C", "-c"])
        .arg(dir.join("snmpd.conf"))
        .arg("-p")
        .arg(dir.join("snmpd.pid"))
        .arg(format!("udp:127.0.0.1:{port}"))
        .env("SNMP_PERSISTENT_DIR", dir.join("persist"))
        .env("MIBS", "")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn snmpd")
}

/// Waits until snmpd answers; false if it exited or stayed silent.
fn wait_ready(child: &mut Child, snmpget: &Path, dir: &Path, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if child.try_wait().expect("try_wait").is_some() {
            return false;
        }
        if query(snmpget, port, dir, false, &["1.3.6.1.2.1.1.3.0"]).is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

impl Snmpd {
    fn start() -> Snmpd {
        let snmpd = find_tool("snmpd");
        let snmpget = find_tool("snmpget");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("snmpd.conf"),
            format!(
                "rocommunity public 127.0.0.1\n\
                 createUser {USER} SHA \"{AUTH_PASS}\" AES \"{PRIV_PASS}\"\n\
                 rouser {USER} authpriv\n"
            ),
        )
        .expect("write snmpd.conf");
        for _ in 0..5 {
            let port = free_udp_port();
            let mut child = spawn_snmpd(&snmpd, dir.path(), port);
            if wait_ready(&mut child, &snmpget, dir.path(), port) {
                return Snmpd {
                    child: Mutex::new(child),
                    port,
                    dir,
                    snmpd,
                    snmpget,
                };
            }
            // The port was taken meanwhile, most likely: try another.
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("snmpd.log")).unwrap_or_default();
            eprintln!("snmpd on port {port} did not answer; its log:\n{log}");
        }
        panic!("snmpd did not start (see its log above)");
    }

    /// Stops the agent (SIGTERM, so it saves its state) and starts it again on
    /// the same port with the same engine ID: what a reboot looks like.
    fn restart(&self) {
        let mut child = self.child.lock().expect("lock");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        child.wait().expect("wait");
        *child = spawn_snmpd(&self.snmpd, self.dir.path(), self.port);
        assert!(
            wait_ready(&mut child, &self.snmpget, self.dir.path(), self.port),
            "snmpd did not come back"
        );
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn get(&self, v3: bool, oids: &[&str]) -> Vec<Option<f64>> {
        query(&self.snmpget, self.port, self.dir.path(), v3, oids)
            .unwrap_or_else(|| panic!("snmpget {oids:?} failed"))
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `snmpget` off the async workers.
async fn snmpget(agent: &Arc<Snmpd>, v3: bool, oids: Vec<String>) -> Vec<Option<f64>> {
    let a = agent.clone();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = oids.iter().map(String::as_str).collect();
        a.get(v3, &refs)
    })
    .await
    .expect("snmpget task")
}

struct Running {
    rx: mpsc::Receiver<Vec<Record>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    counters: Arc<SnmpCounters>,
}

async fn run_source(toml_text: &str) -> Running {
    let cfg: SnmpSourceConfig = toml::from_str(toml_text).expect("config");
    let src = cfg.start().await.expect("start");
    let counters = src.counters();
    let (tx, rx) = mpsc::channel(64);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        src.run(tx, stop_rx).await.expect("run");
    });
    Running {
        rx,
        stop,
        task,
        counters,
    }
}

impl Running {
    async fn next(&mut self) -> DeviceRecord {
        let batch = tokio::time::timeout(Duration::from_secs(20), self.rx.recv())
            .await
            .expect("a poll within 20 s")
            .expect("source still running");
        assert_eq!(batch.len(), 1, "one record per poll");
        match batch.into_iter().next() {
            Some(Record::Device(d)) => d,
            other => panic!("not a device record: {other:?}"),
        }
    }

    /// Stops the source and checks that it returns promptly.
    async fn stop_within(self, limit: Duration) {
        let t = Instant::now();
        self.stop.send(true).expect("stop");
        tokio::time::timeout(limit, self.task)
            .await
            .expect("run returns once stopped")
            .expect("run task");
        assert!(t.elapsed() <= limit);
    }
}

fn v2c_config(agents: &[String], extra: &str) -> String {
    let list = agents
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "name = \"core\"\nagents = [{list}]\nversion = \"2c\"\ncommunity = \"public\"\ninterval = \"1s\"\n{extra}"
    )
}

fn v3_config(agent: &str) -> String {
    format!(
        "name = \"secure\"\nagents = [{agent:?}]\nversion = \"3\"\ninterval = \"1s\"\n\
         username = \"{USER}\"\nsecurity_level = \"authPriv\"\nauth_protocol = \"SHA\"\n\
         auth_password = \"{AUTH_PASS}\"\npriv_protocol = \"AES\"\npriv_password = \"{PRIV_PASS}\"\n"
    )
}

fn samples<'a>(r: &'a DeviceRecord, metric: &str) -> Vec<&'a Sample> {
    r.samples.iter().filter(|s| s.metric == metric).collect()
}

fn oid(s: &Sample) -> String {
    s.oid.clone().expect("every SNMP sample names its OID")
}

fn is_counter(metric: &str) -> bool {
    METRICS
        .iter()
        .find(|m| m.name == metric)
        .unwrap_or_else(|| panic!("{metric} is not in the catalogue"))
        .counter
}

/// The record's shape, and its stable gauges against snmpget's readings.
async fn check_record_against_snmpget(agent: &Arc<Snmpd>, r: &DeviceRecord, v3: bool) {
    assert_eq!(r.kind, DeviceKind::Snmp);
    assert_eq!(r.protocol, if v3 { "snmpv3" } else { "snmpv2c" });
    assert_eq!(r.entity, Entity::Name(Arc::from(agent.addr().as_str())));
    assert_eq!(r.topic, None);
    let varbinds = r.payload_bytes.expect("varbind count") as usize;
    assert!(
        varbinds >= r.samples.len(),
        "{varbinds} varbinds, {} samples",
        r.samples.len()
    );
    assert!(r.received_ns >= r.ts_ns);
    for s in &r.samples {
        assert!(
            !oid(s).starts_with('.'),
            "OIDs are written without a leading dot"
        );
        let _ = is_counter(&s.metric);
    }

    // Scalars in KB: the source reports bytes.
    for metric in ["hr_memory_size", "mem_total_real"] {
        let got = samples(r, metric);
        assert_eq!(got.len(), 1, "{metric} once");
        let want = snmpget(agent, v3, vec![oid(got[0])]).await[0].expect(metric);
        assert_eq!(got[0].value, Some(want * 1024.0), "{metric}");
        assert_eq!(got[0].raw, None, "gauges have no raw reading");
    }

    // Storage sizes: hrStorageSize x hrStorageAllocationUnits of the same row.
    let mut kinds = 0;
    for metric in [
        "hr_storage_ram_size",
        "hr_storage_swap_size",
        "hr_storage_disk_size",
    ] {
        let got = samples(r, metric);
        kinds += usize::from(!got.is_empty());
        for s in got {
            let size_oid = oid(s);
            let (column, index) = size_oid
                .strip_prefix("1.3.6.1.2.1.25.2.3.1.")
                .and_then(|t| t.split_once('.'))
                .expect("an hrStorageEntry OID");
            assert_eq!(column, "5", "{metric} reads hrStorageSize");
            let units_oid = format!("1.3.6.1.2.1.25.2.3.1.4.{index}");
            let descr_ok = s.instance.as_deref().is_some_and(|i| !i.is_empty());
            assert!(descr_ok, "{metric} names its storage");
            let v = snmpget(agent, v3, vec![size_oid.clone(), units_oid]).await;
            let want = v[0].expect("size") * v[1].expect("units");
            assert_eq!(s.value, Some(want), "{metric} {:?}", s.instance);
        }
    }
    assert_eq!(
        kinds, 3,
        "net-snmp on Linux has RAM, virtual memory and file systems"
    );

    // Uptime: the poll began before this snmpget, by at most a few seconds.
    let up = samples(r, "sys_uptime");
    assert_eq!(up.len(), 1);
    let later =
        snmpget(agent, v3, vec!["1.3.6.1.2.1.1.3.0".into()]).await[0].expect("uptime") / 100.0;
    let at_poll = up[0].value.expect("uptime");
    assert!(
        at_poll <= later + 0.011 && at_poll >= later - 3.0,
        "{at_poll} vs {later}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2c_matches_snmpget_and_rates_follow_the_raw_counters() {
    let agent = Arc::new(
        tokio::task::spawn_blocking(Snmpd::start)
            .await
            .expect("snmpd"),
    );
    let mut run = run_source(&v2c_config(&[agent.addr()], "")).await;

    let first = run.next().await;
    check_record_against_snmpget(&agent, &first, false).await;
    for s in &first.samples {
        if is_counter(&s.metric) {
            assert_eq!(s.value, None, "{} has no rate on the first poll", s.metric);
            assert!(s.raw.is_some(), "{}", s.metric);
        } else {
            assert!(s.value.is_some(), "{}", s.metric);
        }
    }
    assert!(
        !samples(&first, "if_in_octets").is_empty(),
        "loopback at least has interface counters"
    );

    // Counters whose raw reading must lie between snmpget readings taken just
    // before and just after the poll that read them.
    let probe: Vec<String> = first
        .samples
        .iter()
        .filter(|s| {
            [
                "if_in_octets",
                "if_out_octets",
                "if_in_ucast_pkts",
                "disk_io_reads",
                "ss_cpu_idle",
            ]
            .contains(&s.metric.as_str())
        })
        .map(oid)
        .take(24)
        .collect();
    assert!(!probe.is_empty());

    let mut prev = first;
    let mut bracketed = 0;
    let mut rates_checked = 0;
    let mut moving_rates = 0;
    for _ in 0..6 {
        let before_start = now_ns();
        let before = snmpget(&agent, false, probe.clone()).await;
        let before_end = now_ns();
        let cur = run.next().await;
        let after = snmpget(&agent, false, probe.clone()).await;
        let raw_now: BTreeMap<String, f64> = cur
            .samples
            .iter()
            .filter_map(|s| Some((oid(s), s.raw?)))
            .collect();
        // Only a poll that began after the first snmpget ended is bracketed.
        if cur.ts_ns > before_end {
            for (i, o) in probe.iter().enumerate() {
                let (Some(lo), Some(hi)) = (before[i], after[i]) else {
                    continue;
                };
                let raw = raw_now[o];
                assert!(
                    lo <= raw && raw <= hi,
                    "{o}: {lo} <= {raw} <= {hi} (snmpget at {before_start})"
                );
            }
            bracketed += 1;
        }

        // rate == Δraw / Δt over consecutive polls, Δt from the records' times.
        let dt = (cur.ts_ns - prev.ts_ns) as f64 / 1e9;
        assert!(dt > 0.5, "polls {dt} s apart at a 1 s interval");
        let raw_prev: BTreeMap<String, f64> = prev
            .samples
            .iter()
            .filter_map(|s| Some((oid(s), s.raw?)))
            .collect();
        for s in &cur.samples {
            if !is_counter(&s.metric) || s.metric.starts_with("ss_cpu") {
                continue;
            }
            let (Some(r1), Some(&r0)) = (s.raw, raw_prev.get(&oid(s))) else {
                continue;
            };
            if r1 < r0 {
                continue; // a wrap: not expected on loopback in a few seconds
            }
            let rate = s
                .value
                .unwrap_or_else(|| panic!("{} {:?}: no rate", s.metric, s.instance));
            let want = (r1 - r0) / dt;
            assert!(
                (rate - want).abs() <= want.abs() * 1e-3 + 1e-9,
                "{} {:?}: rate {rate}, Δraw/Δt {want}",
                s.metric,
                s.instance
            );
            rates_checked += 1;
            moving_rates += usize::from(r1 > r0);
        }
        // CPU shares, when there are, are shares.
        let shares: f64 = ["ss_cpu_user", "ss_cpu_system", "ss_cpu_idle"]
            .iter()
            .filter_map(|m| samples(&cur, m).first().and_then(|s| s.value))
            .inspect(|v| assert!((0.0..=100.0).contains(v), "{v}"))
            .sum();
        assert!(shares <= 100.0 + 1e-6, "{shares}");
        prev = cur;
    }
    assert!(
        bracketed >= 2,
        "only {bracketed} polls could be bracketed by snmpget"
    );
    assert!(
        rates_checked > 0 && moving_rates > 0,
        "{rates_checked} rates, {moving_rates} moving"
    );

    let c = &run.counters;
    assert!(c.get(&c.polls) >= 7);
    assert_eq!(c.get(&c.poll_failures), 0);
    assert_eq!(c.get(&c.agents_down), 0);
    assert_eq!(c.get(&c.bad_values), 0);
    assert!(c.get(&c.samples) >= 7 * probe.len() as u64);
    run.stop_within(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_auth_priv_matches_snmpget() {
    let agent = Arc::new(
        tokio::task::spawn_blocking(Snmpd::start)
            .await
            .expect("snmpd"),
    );
    let mut run = run_source(&v3_config(&agent.addr())).await;
    let first = run.next().await;
    check_record_against_snmpget(&agent, &first, true).await;
    let second = run.next().await;
    check_record_against_snmpget(&agent, &second, true).await;
    // Rates appear from the second poll on.
    let rated = second
        .samples
        .iter()
        .filter(|s| s.metric == "if_in_octets" && s.value.is_some())
        .count();
    assert!(rated > 0, "no interface rate on the second SNMPv3 poll");
    let c = run.counters.clone();
    assert_eq!(c.get(&c.poll_failures), 0);
    assert_eq!(c.get(&c.reboots), 0);

    // The agent restarts: sysUpTime starts over and the SNMPv3 engine boots
    // again. The source follows without being restarted, notices the restart
    // and starts its rates over.
    let uptime = |r: &DeviceRecord| samples(r, "sys_uptime")[0].value.expect("uptime");
    let up_before = uptime(&second);
    let a = agent.clone();
    tokio::task::spawn_blocking(move || a.restart())
        .await
        .expect("restart");
    let mut after = run.next().await;
    for _ in 0..5 {
        if uptime(&after) < up_before {
            break;
        }
        after = run.next().await; // polled before the restart
    }
    assert!(uptime(&after) < up_before, "no poll of the restarted agent");
    assert_eq!(c.get(&c.reboots), 1);
    for s in after.samples.iter().filter(|s| is_counter(&s.metric)) {
        assert_eq!(
            s.value, None,
            "{} {:?} right after the restart",
            s.metric, s.instance
        );
    }
    check_record_against_snmpget(&agent, &after, true).await;
    let next = run.next().await;
    assert!(
        samples(&next, "if_in_octets")
            .iter()
            .any(|s| s.value.is_some())
    );
    run.stop_within(Duration::from_secs(2)).await;

    // Wrong privacy pass phrase: every poll fails, and is counted.
    let wrong = v3_config(&agent.addr()).replace(PRIV_PASS, "not-the-pass");
    let wrong = format!("{wrong}timeout = \"500ms\"\nretries = 0\n");
    let mut bad = run_source(&wrong).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        bad.rx.try_recv().is_err(),
        "no record with wrong credentials"
    );
    let c = &bad.counters;
    assert!(c.get(&c.poll_failures) >= 1);
    assert_eq!(c.get(&c.agents_down), 1);
    bad.stop_within(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agent_does_not_hold_back_a_live_one() {
    let agent = Arc::new(
        tokio::task::spawn_blocking(Snmpd::start)
            .await
            .expect("snmpd"),
    );
    // A socket that takes requests and never answers (a slow or firewalled
    // agent), and a port nobody listens on (refused).
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    let refused = format!("127.0.0.1:{}", free_udp_port());
    let interval = 1.0;
    let cfg = v2c_config(
        &[agent.addr(), silent_addr.clone(), refused],
        "timeout = \"2s\"\nretries = 1\n",
    );
    let mut run = run_source(&cfg).await;
    let window = Duration::from_secs(8);
    let t = Instant::now();
    let live = Entity::Name(Arc::from(agent.addr().as_str()));
    let mut live_polls: u32 = 0;
    while t.elapsed() < window {
        match tokio::time::timeout(window.saturating_sub(t.elapsed()), run.rx.recv()).await {
            Ok(Some(batch)) => {
                for r in batch {
                    let Record::Device(d) = r else {
                        panic!("not a device record")
                    };
                    assert_eq!(d.entity, live, "only the live agent answers");
                    live_polls += 1;
                }
            }
            Ok(None) => panic!("source ended"),
            Err(_) => break,
        }
    }
    // The silent agent's polls take timeout × (retries + 1) = 4 s each; had they
    // held the live agent back, it would have polled about twice in 8 s.
    let expected = window.as_secs_f64() / interval;
    assert!(
        f64::from(live_polls) >= expected / 2.0,
        "live agent polled {live_polls} times in {window:?} at a {interval} s interval"
    );
    let c = &run.counters;
    let failures = c.get(&c.poll_failures);
    // The silent agent fails at least once (4 s) and the refused one every
    // interval.
    assert!(failures >= 3, "{failures} failures counted");
    assert_eq!(c.get(&c.agents_down), 2);
    assert!(c.get(&c.polls) >= u64::from(live_polls));
    drop(silent);
    // Stopping does not wait for the silent agent's pending request.
    run.stop_within(Duration::from_secs(2)).await;
}
