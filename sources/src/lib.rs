//! Sources of amoskys-pipeline.
//!
//! Recorded packet captures (pcap and pcapng files, directories, globs) read
//! through libpcap and decoded into [`amoskys_schemas::Packet`] records; the syslog
//! parsing and framing the syslog listeners build on.

pub mod duration;
mod error;
pub mod mqtt;
pub mod pcap;
pub mod snmp;
mod source;
pub mod syslog;

pub use error::SourceError;
pub use source::{
    Carries, Clock, Counter, Counters, Meaning, Output, Running, Source, SourceConfig,
    SourcesConfig, Stop,
};
