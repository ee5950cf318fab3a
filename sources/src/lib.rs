//! Sources of amoskys-pipeline.
//!
//! Recorded packet captures (pcap and pcapng files, directories, globs) read
//! through libpcap and decoded into [`amoskys_schemas::Packet`] records; the syslog
//! parsing and framing the syslog listeners build on.

mod error;
pub mod mqtt;
pub mod pcap;
pub mod snmp;
mod source;
pub mod syslog;
pub mod wal;

pub use error::SourceError;
pub use source::{
    Carries, Clock, Counter, Counters, Meaning, Output, Running, Source, SourceConfig,
    SourcesConfig, Stop,
};

/// Installs rustls' ring provider for the process, once (TLS clients and servers).
pub(crate) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
