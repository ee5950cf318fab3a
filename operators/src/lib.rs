//! Dataflow operators of amoskys-pipeline.
//!
//! Each operator is an extension trait over timely streams ([`AssembleFlows`],
//! [`Featurize`]) around a core that knows nothing of timely ([`FlowAssembler`],
//! [`features::PaneAcc`]) and is tested on its own.

pub mod alerting;
mod app;
pub mod community_id;
pub mod correlate;
pub mod count_rules;
pub mod detect;
pub mod device_watch;
pub mod features;
mod fingerprints;
mod flow;
mod histogram;
mod history;
mod hold;
pub mod model;
pub mod occurrence;
mod stats;
mod window;

pub use fingerprints::RareFingerprints;
pub use flow::{AssembleFlows, FlowAssembler, FlowConfig, FlowCounters, FlowKey};
pub use history::{
    EWMA_ALPHA, HISTORY_BASES, HISTORY_DEFS, HORIZON_BASES, HORIZON_DEFS, HORIZON_WINDOWS, History,
    HistoryConfig, HistoryCounters, WithHistory, ZSCORE_MIN_HISTORY,
};
pub use stats::Moments;
pub use window::{
    DhcpObservations, EventWindows, Featurize, FeaturizeEvents, MergeRows, Obs, PacketFeaturesOnly,
    WindowCounters,
};

/// Hash maps and sets of state keyed by data an attacker may choose: a fast hash
/// with random keys, drawn once per process (drawing them per map costs more than
/// filling the small maps of a window).
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, Seeded>;
pub(crate) type Set<K> = std::collections::HashSet<K, Seeded>;

/// `ahash` keyed with random seeds drawn once per process. Zero-sized, so the
/// many small maps of window state do not each carry a copy of the keys.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seeded;

impl std::hash::BuildHasher for Seeded {
    type Hasher = ahash::AHasher;
    #[inline]
    fn build_hasher(&self) -> ahash::AHasher {
        static STATE: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
        STATE.get_or_init(ahash::RandomState::new).build_hasher()
    }
}

/// Fails when the generated doc at `path` (relative to the workspace) differs
/// from `want`; with `UPDATE_DOCS` set, rewrites it first.
#[cfg(test)]
pub(crate) fn assert_doc_fresh(path: &str, want: &str, test: &str) {
    let full = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&full, want).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
    let got = std::fs::read_to_string(&full).unwrap_or_default();
    assert!(
        got == want,
        "{path} is stale: run UPDATE_DOCS=1 cargo test -p amoskys-operators {test}"
    );
}
