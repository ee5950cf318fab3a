//! Packet captures: decoding link layers into [`Packet`](amoskys_schemas::Packet)
//! records, and reading recorded files in time order.

mod decode;
mod file;

pub use decode::{DecodeStats, Skip, decode, linktype};
pub use file::{CaptureFile, FileReader, ReadProgress, ReadSummary, expand_inputs};
