//! Sources of amoskys-pipeline.
//!
//! Recorded packet captures (pcap and pcapng files, directories, globs) read
//! through libpcap and decoded into [`amoskys_schemas::Packet`] records; the syslog
//! parsing and framing the syslog listeners build on.

mod error;
pub mod pcap;
pub mod syslog;

pub use error::SourceError;
