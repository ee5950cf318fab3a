//! Typed records shared by every crate of amoskys-pipeline, and their Arrow schemas.
//!
//! Inside the dataflow, records are plain `Copy`/`Clone` structs ([`Packet`],
//! [`FlowRecord`], [`FeatureRow`]); Arrow starts at the sinks, through the
//! `*_schema()` and `*_to_batch()` functions here. Column names are `pub const`s so
//! that sinks, tests and readers never spell them twice.

mod addr;
mod alert;
pub mod app;
mod error;
mod event;
mod feature;
mod flow;
mod hash;
pub mod interned;
mod packet;
mod score;
mod snmp;
mod time;
pub mod values;

pub use addr::Addr;
pub use alert::{Alert, Severity, alerts_schema, alerts_to_batch};
pub use error::SchemaError;
pub use event::{
    AuthEvent, AuthKind, DeviceKind, DeviceRecord, EventField, EventRow, Record, Sample,
    SyslogRecord, events_schema, events_to_batch,
};
pub use feature::{
    ColumnStats, Entity, FeatureDef, FeatureDtype, FeatureRow, FeatureStats, features_schema,
    features_to_batch, features_to_batch_with_stats, metadata_json, metadata_json_with_stats,
};
pub use flow::{EndReason, FlowRecord, Summary, flows_schema, flows_to_batch};
pub use hash::{stable_hash, stable_hasher};
pub use packet::{
    DhcpInfo, DnsInfo, EchoInfo, Packet, Proto, TcpFlags, byte_entropy, domain_key, domain_keys,
};
pub use score::{ScoreRow, scores_schema, scores_to_batch};
pub use time::{
    HOP_NS, HOP_SECONDS, NS_PER_SEC, WINDOW_NS, WINDOW_SECONDS, pane_of, pane_start_ns,
};

/// Names of the columns every table shares.
pub mod cols {
    pub const ENTITY: &str = "entity";
    pub const WINDOW_START: &str = "window_start";
    pub const WINDOW_END: &str = "window_end";
    pub const COMMUNITY_ID: &str = "community_id";
    pub const FIRST_TS: &str = "first_ts";
    pub const LAST_TS: &str = "last_ts";
}
