//! Dataflow operators of amoskys-pipeline.
//!
//! Each operator is an extension trait over timely streams ([`AssembleFlows`],
//! [`Featurize`]) around a core that knows nothing of timely ([`FlowTable`],
//! [`features::PaneAcc`]) and is tested on its own.

pub mod community_id;
pub mod features;
mod flow;
mod stats;
mod window;

pub use flow::{AssembleFlows, FlowConfig, FlowCounters, FlowKey, FlowTable};
pub use stats::Moments;
pub use window::{Featurize, Obs, WindowCounters};

/// Fast, randomly seeded hasher for state keyed by data an attacker may choose.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
pub(crate) type Set<K> = std::collections::HashSet<K, ahash::RandomState>;
