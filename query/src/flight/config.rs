//! `[sinks.flight]` of flows.toml: the endpoint as the file writes it, and the
//! settings it resolves to (tokens from the environment, certificate files
//! checked).

use std::path::PathBuf;

use serde::Deserialize;

use super::FlightSettings;

/// `[sinks.flight]`: the output, and the rows not yet in a finished file, over
/// Arrow Flight and Flight SQL while the job runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlightConfig {
    pub listen: std::net::SocketAddr,
    /// Bearer tokens clients may send; none means no authentication.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// An environment variable holding one more token (kept out of the file).
    pub token_env: Option<String>,
    /// Server certificate and key (PEM): TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) client certificates must chain to: mutual TLS.
    pub tls_client_ca: Option<PathBuf>,
}

impl FlightConfig {
    /// The endpoint's settings over the output root `data`.
    pub fn settings(&self, data: PathBuf) -> Result<FlightSettings, String> {
        let mut tokens = self.tokens.clone();
        if let Some(v) = &self.token_env {
            tokens.push(std::env::var(v).map_err(|_| {
                format!("[sinks.flight] token_env: the environment variable {v} is not set")
            })?);
        }
        if tokens
            .iter()
            .any(|t| t.is_empty() || t.chars().any(char::is_whitespace))
        {
            return Err("[sinks.flight] tokens: a token is empty or holds white space".into());
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) if self.tls_client_ca.is_some() => {
                return Err("[sinks.flight] tls_client_ca needs tls_cert and tls_key".into());
            }
            (None, None) => None,
            _ => return Err("[sinks.flight] tls_cert and tls_key go together".into()),
        };
        for f in [&self.tls_cert, &self.tls_key, &self.tls_client_ca]
            .into_iter()
            .flatten()
        {
            std::fs::metadata(f).map_err(|e| format!("[sinks.flight] {}: {e}", f.display()))?;
        }
        Ok(FlightSettings {
            data,
            listen: self.listen,
            tokens,
            tls,
            client_ca: self.tls_client_ca.clone(),
        })
    }
}
