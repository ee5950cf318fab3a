//! Packet captures: decoding link layers into [`Packet`](amoskys_schemas::Packet)
//! records, and reading recorded files in time order, capturing live from an interface.

mod decode;
mod file;
mod live;

pub use decode::{DecodeStats, Skip, decode, linktype};
pub use file::{
    CaptureFile, FileReader, ReadProgress, ReadSummary, RecordedCaptures, SummarySlot,
    check_readable, expand_inputs,
};
pub use live::{CaptureCounters, LiveCapture, LiveCaptureConfig};
