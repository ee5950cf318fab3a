//! Sources of amoskys-pipeline.
//!
//! Today: recorded packet captures (pcap and pcapng files, directories, globs) read
//! through libpcap and decoded into [`amoskys_schemas::Packet`] records.

mod error;
pub mod pcap;

pub use error::SourceError;
