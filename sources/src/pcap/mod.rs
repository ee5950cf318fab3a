//! Packet captures: decoding link layers into [`Packet`](amoskys_schemas::Packet)
//! records, and reading recorded files in time order, capturing live from an interface.

mod decode;
mod file;
mod live;

pub use decode::{DecodeStats, PayloadArena, Skip, decode, linktype};

/// Payload bytes of each direction of a flow read for application metadata,
/// unless `[flows] application_bytes` says otherwise: enough for an HTTP
/// request's headers, a TLS handshake with its certificate chain, an SSH
/// banner and key exchange.
pub const DEFAULT_APPLICATION_BYTES: usize = 8192;
pub use file::{
    CaptureFile, FileReader, ReadProgress, ReadSummary, RecordedCaptures, SummarySlot,
    check_readable, expand_inputs,
};
pub use live::{CaptureCounters, LiveCapture, LiveCaptureConfig};
