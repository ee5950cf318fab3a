//! `[sinks.webhook]` of flows.toml: the receiver as the file writes it, and the
//! settings it resolves to (the signing key and certificates read).

use std::path::{Path, PathBuf};
use std::time::Duration;

use amoskys_schemas::values::{Bounded, PositiveSecs, Secs};
use serde::Deserialize;

use super::WebhookSettings;

/// `[sinks.webhook]`: alerts POSTed as JSON (docs/WEBHOOK.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` receiver.
    pub url: String,
    /// Extra request headers, e.g. `{ Authorization = "Bearer …" }`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Per request.
    #[serde(default = "webhook_timeout")]
    pub timeout: PositiveSecs,
    /// Alerts per request: 1 posts each alert as an object; more posts arrays.
    #[serde(default = "webhook_batch")]
    pub batch: Bounded<1, 10_000>,
    /// First retry delay; doubles per failure up to `backoff_max` (full jitter).
    #[serde(default = "webhook_backoff_initial")]
    pub backoff_initial: PositiveSecs,
    #[serde(default = "webhook_backoff_max")]
    pub backoff_max: PositiveSecs,
    /// Statuses not worth retrying: the alerts are set aside in the spool's
    /// rejected.jsonl instead.
    #[serde(default = "webhook_non_retryable")]
    pub non_retryable: Vec<u16>,
    /// Where undelivered alerts wait, across restarts. Default: `_webhook_spool`
    /// under the Parquet path.
    pub spool: Option<PathBuf>,
    /// Ed25519 key (from `amoskys-pipeline keygen`): each body is signed.
    pub signing_key: Option<PathBuf>,
    /// PEM CA certificate(s) to trust instead of the system's.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key, for receivers that require mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// How long to keep delivering after the pipeline stops.
    #[serde(default = "webhook_drain")]
    pub drain: Secs,
}

fn webhook_timeout() -> PositiveSecs {
    PositiveSecs(Secs::from_secs(10))
}
fn webhook_batch() -> Bounded<1, 10_000> {
    Bounded(1)
}
fn webhook_backoff_initial() -> PositiveSecs {
    PositiveSecs(Secs(Duration::from_millis(500)))
}
fn webhook_backoff_max() -> PositiveSecs {
    PositiveSecs(Secs::from_secs(60))
}
fn webhook_non_retryable() -> Vec<u16> {
    vec![400, 401, 403, 404, 405, 410, 413, 422]
}
fn webhook_drain() -> Secs {
    Secs::from_secs(10)
}

impl WebhookConfig {
    /// The sink's settings, reading the key and certificate files.
    pub fn settings(&self, parquet_root: &Path) -> Result<WebhookSettings, String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "[sinks.webhook] url {:?}: write http://… or https://…",
                self.url
            ));
        }
        let read = |what: &str, p: &Path| {
            std::fs::read(p).map_err(|e| format!("[sinks.webhook] {what} {}: {e}", p.display()))
        };
        let signing_key = match &self.signing_key {
            None => None,
            Some(p) => Some(
                crate::keys::read_signing_key(p)
                    .map_err(|e| format!("[sinks.webhook] signing_key {e}"))?,
            ),
        };
        let ca_pem = self.ca.as_deref().map(|p| read("ca", p)).transpose()?;
        let client_identity_pem = match (&self.client_cert, &self.client_key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let mut pem = read("client_cert", c)?;
                pem.push(b'\n');
                pem.extend(read("client_key", k)?);
                Some(pem)
            }
            _ => return Err("[sinks.webhook] client_cert and client_key go together".into()),
        };
        Ok(WebhookSettings {
            url: self.url.clone(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            timeout: self.timeout.0.0,
            batch: self.batch.0 as usize,
            backoff_initial: self.backoff_initial.0.0,
            backoff_max: self.backoff_max.0.0.max(self.backoff_initial.0.0),
            non_retryable: self.non_retryable.clone(),
            spool_dir: self
                .spool
                .clone()
                .unwrap_or_else(|| parquet_root.join("_webhook_spool")),
            signing_key,
            ca_pem,
            client_identity_pem,
            drain: self.drain.0,
            committed_cut: None,
            progress: None,
        })
    }
}
