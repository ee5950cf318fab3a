//! The alert webhook: alerts POSTed as JSON to a receiver, in the order they were
//! raised, through a durable spool.
//!
//! Every alert is appended to `spool/alerts.jsonl` (and synced) before any attempt
//! to deliver it; `spool/acked` holds the byte offset up to which alerts were
//! accepted. A restart delivers what the spool still holds, first. Failures are
//! retried with capped exponential backoff and full jitter; a status listed as
//! non-retryable drops the request's alerts into `spool/rejected.jsonl` (counted)
//! so one bad alert cannot block the rest. Each request carries the alerts' ids in
//! `Idempotency-Key` and, with a signing key, an Ed25519 signature over the exact
//! body in `Amoskys-Signature`.
//!
//! Written by hand around reqwest: no maintained crate spools webhooks to disk.

mod config;
mod seen;

pub use config::WebhookConfig;
use seen::{Seen, id_of};

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use amoskys_schemas::Alert;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};

use crate::SinkError;

/// Where and how alerts are delivered.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub url: String,
    /// Extra request headers (e.g. an authorization token).
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// Alerts per request: 1 sends each alert as a JSON object; more sends up to
    /// that many as a JSON array.
    pub batch: usize,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Statuses that retrying cannot fix: the request's alerts are set aside.
    pub non_retryable: Vec<u16>,
    pub spool_dir: PathBuf,
    /// Signs each body when set.
    pub signing_key: Option<SigningKey>,
    /// PEM CA certificate(s) to trust instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key, for receivers that require mutual TLS.
    pub client_identity_pem: Option<Vec<u8>>,
    /// How long to keep trying after the pipeline stops; what is left stays
    /// spooled for the next start.
    pub drain: Duration,
    /// Alerts of windows before this cut (window `w` with `w + 2 <= cut`) are
    /// in the `alerts` table's commits already: raised again by a restart
    /// that computes those windows for their context, they are not sent.
    pub committed_cut: Option<u64>,
    /// The alerts stream's frontier at the webhook's channel (every alert
    /// raised before it is in the channel) and where the webhook publishes the
    /// frontier it has spooled through: the `alerts` table commits a window
    /// cut only once the webhook has spooled the alerts before it, so that
    /// the alerts a restart does not send again were spooled.
    pub progress: Option<SpoolProgress>,
}

/// [`WebhookSettings::progress`].
#[derive(Clone)]
pub struct SpoolProgress {
    pub frontier: crate::parquet::commit::Frontier,
    pub spooled: Arc<AtomicU64>,
}

impl std::fmt::Debug for SpoolProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolProgress")
            .field("spooled", &self.spooled)
            .finish()
    }
}

/// What the webhook did.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    pub spooled: AtomicU64,
    pub delivered: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rejected: AtomicU64,
    /// Alerts raised again with an id already spooled (a window computed
    /// again after a restart): not sent twice.
    pub repeated: AtomicU64,
}

/// The header carrying the alert ids.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// The header carrying the body's signature: `ed25519=<base64>`.
pub const SIGNATURE_HEADER: &str = "Amoskys-Signature";

/// The on-disk queue: an append-only log of alerts and the offset delivered.
struct Spool {
    log: File,
    log_path: PathBuf,
    acked_path: PathBuf,
    rejected_path: PathBuf,
    /// Alerts not yet delivered, oldest first, with the log offset after each.
    pending: std::collections::VecDeque<(String, u64)>,
    acked: u64,
    /// Ids of the alerts spooled most recently, oldest first (`spooled-ids`).
    seen: Seen,
    /// [`WebhookSettings::committed_cut`].
    committed_cut: Option<u64>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError {
    let path = path.to_path_buf();
    move |source| SinkError::Io { path, source }
}

impl Spool {
    fn open(dir: &Path) -> Result<Spool, SinkError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let log_path = dir.join("alerts.jsonl");
        let acked_path = dir.join("acked");
        let log = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        let len = log.metadata().map_err(io(&log_path))?.len();
        let mut acked = std::fs::read_to_string(&acked_path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if acked > len {
            // The log was emptied after everything was delivered, and the stop
            // came before the offset was reset.
            acked = 0;
        }
        let mut pending = std::collections::VecDeque::new();
        let mut reader = BufReader::new(&log);
        reader.seek(SeekFrom::Start(acked)).map_err(io(&log_path))?;
        let mut offset = acked;
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(io(&log_path))?;
            if n == 0 || !line.ends_with('\n') {
                // A torn last line (a stop mid-write) was never acknowledged to
                // anyone; the next append starts a new line after it.
                break;
            }
            offset += n as u64;
            let text = line.trim_end();
            if serde_json::from_str::<serde_json::Value>(text).is_err() {
                // A line torn by a stop mid-write, terminated at the next start.
                tracing::warn!(path = %log_path.display(), "webhook spool: skipping a torn line");
                continue;
            }
            pending.push_back((text.to_string(), offset));
        }
        let mut seen = Seen::open(dir.join("spooled-ids"))?;
        // Alerts spooled before their ids were recorded (a stop in between).
        for (line, _) in &pending {
            if let Some(id) = id_of(line) {
                seen.remember(id);
            }
        }
        let mut s = Spool {
            log,
            log_path,
            acked_path,
            rejected_path: dir.join("rejected.jsonl"),
            pending,
            acked,
            seen,
            committed_cut: None,
        };
        if offset < len {
            // Terminate the torn line so appended alerts start clean.
            s.log.write_all(b"\n").map_err(io(&s.log_path))?;
        }
        Ok(s)
    }

    fn end(&self) -> Result<u64, SinkError> {
        Ok(self.log.metadata().map_err(io(&self.log_path))?.len())
    }

    /// Appends the alerts not spooled before (synced before they count as
    /// spooled); returns how many were.
    fn push(&mut self, alerts: &[Alert]) -> Result<usize, SinkError> {
        let mut offset = self.end()?;
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        let mut ids = Vec::new();
        for a in alerts {
            if self.seen.ids.contains(&a.id)
                || ids.contains(&a.id)
                || self.committed_cut.is_some_and(|c| a.window + 2 <= c)
            {
                continue;
            }
            ids.push(a.id.clone());
            let line = alert_json(a).to_string();
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            offset += line.len() as u64 + 1;
            lines.push((line, offset));
        }
        self.log
            .write_all(&buf)
            .and_then(|()| self.log.sync_data())
            .map_err(io(&self.log_path))?;
        let n = lines.len();
        self.pending.extend(lines);
        self.seen.add(ids)?;
        Ok(n)
    }

    /// Marks the first `n` pending alerts done.
    fn ack(&mut self, n: usize) -> Result<(), SinkError> {
        let mut upto = self.acked;
        for _ in 0..n {
            if let Some((_, off)) = self.pending.pop_front() {
                upto = off;
            }
        }
        if self.pending.is_empty() && upto == self.end()? {
            // All delivered: empty the log, then reset the offset.
            self.log
                .set_len(0)
                .and_then(|()| self.log.sync_all())
                .map_err(io(&self.log_path))?;
            upto = 0;
        }
        let tmp = self.acked_path.with_extension("tmp");
        std::fs::write(&tmp, format!("{upto}\n"))
            .and_then(|()| File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &self.acked_path))
            .map_err(io(&self.acked_path))?;
        self.acked = upto;
        Ok(())
    }

    /// Sets the first `n` pending alerts aside in rejected.jsonl.
    fn reject(&mut self, n: usize, status: u16) -> Result<(), SinkError> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.rejected_path)
            .map_err(io(&self.rejected_path))?;
        for (line, _) in self.pending.iter().take(n) {
            writeln!(f, "{{\"status\":{status},\"alert\":{line}}}")
                .map_err(io(&self.rejected_path))?;
        }
        f.sync_data().map_err(io(&self.rejected_path))?;
        self.ack(n)
    }
}

/// An alert as the receiver gets it.
pub fn alert_json(a: &Alert) -> serde_json::Value {
    serde_json::json!({
        "id": a.id,
        "rule": a.rule,
        "severity": a.severity,
        "entity": a.entity.to_string(),
        "window_start_us": a.window_start_us(),
        "window_seconds": amoskys_schemas::WINDOW_SECONDS,
        "sources": a.sources,
        "evidence": a.evidence_json(),
        "summary": a.summary,
    })
}

/// The signature header value for `body`.
pub fn signature(key: &SigningKey, body: &[u8]) -> String {
    let sig = key.sign(body);
    format!(
        "ed25519={}",
        base64::engine::general_purpose::STANDARD.encode(sig.to_bytes())
    )
}

/// What one delivery attempt came to.
enum Outcome {
    Delivered,
    Rejected(u16),
    Retry(String),
}

fn client(s: &WebhookSettings) -> Result<reqwest::blocking::Client, SinkError> {
    // rustls with ring, as everywhere in the process; installing fails only if a
    // provider is already there, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::blocking::Client::builder().timeout(s.timeout);
    let bad = |what: &str, e: reqwest::Error| SinkError::Webhook(format!("{what}: {e}"));
    if let Some(pem) = &s.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| bad("webhook CA certificate", e))?;
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let Some(pem) = &s.client_identity_pem {
        b = b.identity(
            reqwest::Identity::from_pem(pem).map_err(|e| bad("webhook client certificate", e))?,
        );
    }
    b.build().map_err(|e| bad("webhook client", e))
}

fn attempt(
    http: &reqwest::blocking::Client,
    s: &WebhookSettings,
    lines: &[&str],
    ids: &str,
) -> Outcome {
    let body = if s.batch <= 1 {
        lines.first().copied().unwrap_or("{}").to_string()
    } else {
        format!("[{}]", lines.join(","))
    };
    let mut req = http
        .post(&s.url)
        .header("Content-Type", "application/json")
        .header(IDEMPOTENCY_HEADER, ids);
    for (k, v) in &s.headers {
        req = req.header(k, v);
    }
    if let Some(key) = &s.signing_key {
        req = req.header(SIGNATURE_HEADER, signature(key, body.as_bytes()));
    }
    match req.body(body).send() {
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) if s.non_retryable.contains(&r.status().as_u16()) => {
            Outcome::Rejected(r.status().as_u16())
        }
        Ok(r) => Outcome::Retry(format!("status {}", r.status())),
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

/// Runs the webhook until `rx` closes and the spool is empty or the drain time
/// has passed. Alerts arrive in batches, in the order they were raised.
pub fn run_webhook(
    s: WebhookSettings,
    rx: Receiver<Vec<Alert>>,
    counters: Arc<WebhookCounters>,
) -> Result<(), SinkError> {
    let mut spool = Spool::open(&s.spool_dir)?;
    spool.committed_cut = s.committed_cut;
    let http = client(&s)?;
    let mut backoff = s.backoff_initial;
    let mut next_try = Instant::now();
    let mut open = true;
    let mut drain_until: Option<Instant> = None;
    let mut failing = false;
    loop {
        // Take what has been raised; wait for it only when nothing is pending.
        let wait = if spool.pending.is_empty() {
            Duration::from_millis(200)
        } else {
            next_try.saturating_duration_since(Instant::now())
        };
        if open {
            // The frontier first, then every batch sent before it moved.
            let frontier = s.progress.as_ref().map(|p| (p.frontier)());
            match rx.recv_timeout(wait) {
                Ok(batch) => {
                    for b in std::iter::once(batch).chain(std::iter::from_fn(|| rx.try_recv().ok()))
                    {
                        let n = spool.push(&b)?;
                        counters.spooled.fetch_add(n as u64, Ordering::Relaxed);
                        counters
                            .repeated
                            .fetch_add((b.len() - n) as u64, Ordering::Relaxed);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if let Some(p) = &s.progress {
                        p.spooled.store(u64::MAX, Ordering::Release);
                    }
                    open = false;
                    drain_until = Some(Instant::now() + s.drain);
                }
            }
            if let (Some(f), Some(p), true) = (frontier, &s.progress, open) {
                p.spooled.fetch_max(f, Ordering::Release);
            }
        } else {
            std::thread::sleep(wait.min(Duration::from_millis(200)));
        }
        if !open && (spool.pending.is_empty() || drain_until.is_some_and(|d| Instant::now() >= d)) {
            if !spool.pending.is_empty() {
                tracing::warn!(
                    left = spool.pending.len(),
                    "webhook: alerts left in the spool, delivered at the next start"
                );
            }
            return Ok(());
        }
        if spool.pending.is_empty() || Instant::now() < next_try {
            continue;
        }
        let n = spool.pending.len().min(s.batch.max(1));
        let lines: Vec<&str> = spool
            .pending
            .iter()
            .take(n)
            .map(|(l, _)| l.as_str())
            .collect();
        let ids: Vec<String> = lines
            .iter()
            .filter_map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_string))
            })
            .collect();
        counters.requests.fetch_add(1, Ordering::Relaxed);
        match attempt(&http, &s, &lines, &ids.join(",")) {
            Outcome::Delivered => {
                spool.ack(n)?;
                counters.delivered.fetch_add(n as u64, Ordering::Relaxed);
                if failing {
                    tracing::info!("webhook: receiver reachable again");
                    failing = false;
                }
                backoff = s.backoff_initial;
            }
            Outcome::Rejected(status) => {
                tracing::warn!(
                    status,
                    alerts = n,
                    "webhook: receiver refused alerts; set aside in rejected.jsonl"
                );
                spool.reject(n, status)?;
                counters.rejected.fetch_add(n as u64, Ordering::Relaxed);
            }
            Outcome::Retry(why) => {
                if !failing {
                    tracing::warn!(error = %why, "webhook: delivery failed; retrying with backoff");
                    failing = true;
                }
                counters.retries.fetch_add(1, Ordering::Relaxed);
                // Full jitter: anywhere up to the current step, which doubles to
                // the cap.
                let jitter = rand::random::<f64>();
                next_try = Instant::now() + backoff.mul_f64(jitter);
                backoff = (backoff * 2).min(s.backoff_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amoskys_schemas::{Entity, Severity};

    fn alert(i: u64) -> Alert {
        Alert {
            id: format!("{i:032x}"),
            rule: "vertical_scan".into(),
            severity: Severity::High,
            entity: Entity::Name(format!("h{i}").into()),
            window: i,
            sources: vec!["pcap".into()],
            evidence: vec![("distinct_dst_ports_out".into(), 500.0)],
            summary: format!("h{i} scanned"),
        }
    }

    #[test]
    fn an_alert_raised_again_after_a_restart_is_spooled_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(dir.path()).expect("open");
        assert_eq!(s.push(&[alert(1), alert(2), alert(1)]).expect("push"), 2);
        s.ack(2).expect("delivered");
        drop(s);
        // A window computed again after a stop raises alerts 1 and 2 again.
        let mut s = Spool::open(dir.path()).expect("reopen");
        assert_eq!(s.push(&[alert(2), alert(3), alert(1)]).expect("push"), 1);
        assert_eq!(s.pending.len(), 1);
        drop(s);
        // Spooled but its id not recorded (a stop in between): known from the spool.
        std::fs::write(dir.path().join("spooled-ids"), "").expect("truncate ids");
        let mut s = Spool::open(dir.path()).expect("reopen");
        assert_eq!(s.push(&[alert(3)]).expect("push"), 0);
    }

    #[test]
    fn the_spool_keeps_order_across_reopen_and_empties_when_all_is_delivered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(dir.path()).expect("open");
        s.push(&[alert(1), alert(2), alert(3)]).expect("push");
        s.ack(1).expect("ack");
        drop(s);
        let mut s = Spool::open(dir.path()).expect("reopen");
        let ids: Vec<String> = s
            .pending
            .iter()
            .map(|(l, _)| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["id"].to_string()
            })
            .collect();
        assert_eq!(ids, [format!("\"{:032x}\"", 2), format!("\"{:032x}\"", 3)]);
        s.reject(1, 422).expect("reject");
        s.ack(1).expect("ack");
        assert!(s.pending.is_empty());
        assert_eq!(s.end().expect("len"), 0, "emptied once all is delivered");
        drop(s);
        let rejected =
            std::fs::read_to_string(dir.path().join("rejected.jsonl")).expect("rejected");
        assert!(rejected.contains("\"status\":422") && rejected.contains(&format!("{:032x}", 2)));
        let s = Spool::open(dir.path()).expect("reopen");
        assert!(s.pending.is_empty());
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_later_alerts_start_clean() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(dir.path()).expect("open");
        s.push(&[alert(1)]).expect("push");
        drop(s);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("alerts.jsonl"))
            .expect("log");
        f.write_all(b"{\"id\":\"torn").expect("write");
        drop(f);
        let mut s = Spool::open(dir.path()).expect("reopen");
        assert_eq!(s.pending.len(), 1);
        s.push(&[alert(2)]).expect("push");
        drop(s);
        let s = Spool::open(dir.path()).expect("reopen");
        assert_eq!(s.pending.len(), 2, "{:?}", s.pending);
    }

    #[test]
    fn signatures_verify_with_the_public_key() {
        use ed25519_dalek::Verifier;
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let h = signature(&key, b"{\"a\":1}");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(h.trim_start_matches("ed25519="))
            .expect("base64");
        let sig = ed25519_dalek::Signature::from_slice(&raw).expect("signature");
        assert!(key.verifying_key().verify(b"{\"a\":1}", &sig).is_ok());
        assert!(key.verifying_key().verify(b"{\"a\":2}", &sig).is_err());
    }
}
