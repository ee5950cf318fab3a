//! `[sinks]`: the outputs' sections, each deserialized by the crate that owns
//! the output — `[sinks.parquet]` and `[sinks.webhook]` by the sinks crate,
//! `[sinks.flight]` by the query crate.

use serde::Deserialize;

pub use amoskys_query::flight::FlightConfig;
pub use amoskys_sinks::parquet::ParquetConfig;
pub use amoskys_sinks::webhook::WebhookConfig;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    pub parquet: ParquetConfig,
    /// Off unless a `[sinks.webhook]` section names a `url`.
    pub webhook: Option<WebhookConfig>,
    /// The tables over Arrow Flight from the long-running job (docs/QUERY.md).
    pub flight: Option<FlightConfig>,
}
