//! The dataflow, built the same way for the long-running job and for replay.
//!
//! Two inputs: packets (timestamped with their pane) and records (timestamped
//! with the watermark when they arrived). What is built depends only on the
//! [`GraphSpec`]: which feature set, whether any source carries records, which
//! rules and joins are configured.

use std::sync::Arc;

use amoskys_operators::correlate::{Correlation, IntelFeed, IntelShared};
use amoskys_operators::count_rules::{CountRuleSpec, CountRules};
use amoskys_operators::detect::{
    Detect, DetectCounters, DetectionSettings, Detector, GroupRules, UserRule, detect_events,
    detect_groups,
};
use amoskys_operators::device_watch::{DeviceWatch, LearnRule};
use amoskys_operators::model::{ModelCounters, ModelSet, ModelSpec, ScoreModels};
use amoskys_operators::{
    AssembleFlows, DhcpObservations, EventWindows, Featurize, FeaturizeEvents, FlowConfig,
    FlowCounters, HistoryConfig, HistoryCounters, MergeRows, PacketFeaturesOnly, RareFingerprints,
    WindowCounters, WithHistory, features,
};
use amoskys_schemas::{EventRow, FeatureDef, Packet};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::UnorderedInput;
use timely::dataflow::operators::core::unordered_input::UnorderedHandle;
use timely::dataflow::operators::{ActivateCapability, Concat};

use crate::bridge::channel_sink;
use crate::config::Config;
use crate::error::PipelineError;
use crate::outputs::Senders;

/// Which features a run computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FeatureSet {
    /// The whole catalogue (docs/FEATURES.md).
    #[default]
    All,
    /// Only the per-host packet features (the first family set): no event
    /// families (always null in a replay), no DHCP rows per hardware address and
    /// no history features; smaller output.
    Packet,
}

impl FeatureSet {
    pub fn defs(self) -> Vec<FeatureDef> {
        match self {
            FeatureSet::All => features::defs(),
            FeatureSet::Packet => features::catalogue().iter().map(|s| s.def).collect(),
        }
    }
}

/// What the dataflow computes; the same on every worker.
#[derive(Clone)]
pub struct GraphSpec {
    pub flows: FlowConfig,
    pub feature_set: FeatureSet,
    pub history: HistoryConfig,
    /// Entities a window keeps apart on each worker (the rest under `100::<worker>`).
    pub window_entities: usize,
    pub detections: Vec<(String, DetectionSettings)>,
    pub user_rules: Vec<UserRule>,
    pub count_rules: Vec<CountRuleSpec>,
    pub learn_rules: Vec<LearnRule>,
    /// The joins: incidents across sources, indicator matches.
    pub correlation: Option<Arc<Correlation>>,
    /// The anomaly models rows are scored with, when any.
    pub models: Option<Arc<ModelSet>>,
    /// Whether any source carries records: without, the record-only parts
    /// (event windows, the merge of packet and event rows, device learning,
    /// count rules) are left out, having nothing to do.
    pub records: bool,
}

impl GraphSpec {
    /// The dataflow `cfg` asks for, on `workers` workers, with its counters
    /// and, when an indicator file is configured, the indicators' state. The
    /// rules are checked here, once, before any worker builds them.
    pub fn from_config(
        cfg: &Config,
        workers: usize,
        feature_set: FeatureSet,
        records: bool,
    ) -> Result<(GraphSpec, GraphCounters, Option<Arc<IntelShared>>), PipelineError> {
        let counters = GraphCounters::default();
        if let Some(t) = &cfg.threat_intel {
            std::fs::metadata(&t.file).map_err(|source| PipelineError::Io {
                context: format!("read the indicator file {}", t.file.display()),
                source,
            })?;
        }
        let intel = cfg
            .threat_intel
            .as_ref()
            .map(|_| Arc::new(IntelShared::default()));
        // Incidents join logs with packets: without logs there are none.
        let mut settings = cfg.correlation.clone();
        settings.enabled &= records;
        let correlation = (settings.enabled || intel.is_some()).then(|| {
            Arc::new(Correlation {
                settings,
                intel: cfg
                    .threat_intel
                    .as_ref()
                    .zip(intel.clone())
                    .map(|(t, sh)| (t.clone(), sh)),
                counters: counters.detect.clone(),
            })
        });
        let spec = GraphSpec {
            flows: cfg.flows.settings(workers),
            feature_set,
            history: cfg.features.history(workers),
            window_entities: cfg.window.entities_per_worker(workers),
            detections: cfg.detections.conditions.clone(),
            user_rules: cfg.condition_rules(),
            count_rules: cfg.counting_rules(),
            learn_rules: cfg.learning_rules(),
            correlation,
            models: None,
            records,
        };
        spec.check().map_err(PipelineError::Dataflow)?;
        let spec = GraphSpec {
            models: match (&cfg.models[..], feature_set) {
                ([], _) => None,
                (_, FeatureSet::Packet) => {
                    return Err(PipelineError::Model(
                        "models score the whole catalogue: --features packet leaves most of it out"
                            .into(),
                    ));
                }
                (specs, FeatureSet::All) => {
                    ModelSpec::check_all(specs).map_err(PipelineError::Model)?;
                    Some(Arc::new(
                        ModelSet::load(specs, counters.models.clone())
                            .map_err(PipelineError::Model)?,
                    ))
                }
            },
            ..spec
        };
        Ok((spec, counters, intel))
    }

    fn check(&self) -> Result<(), String> {
        let defs = features::defs();
        Detector::new(&defs, &self.detections, &self.user_rules)?;
        GroupRules::new(&defs, &self.user_rules)?;
        for r in &self.count_rules {
            r.check()?;
        }
        for r in &self.learn_rules {
            r.check()?;
        }
        Ok(())
    }
}

/// The counters the operators keep, shared by every worker.
#[derive(Clone, Default)]
pub struct GraphCounters {
    pub flows: Arc<FlowCounters>,
    pub windows: Arc<WindowCounters>,
    pub event_windows: Arc<WindowCounters>,
    pub history: Arc<HistoryCounters>,
    pub detect: Arc<DetectCounters>,
    pub models: Arc<ModelCounters>,
}

pub type RecordInput = UnorderedHandle<u64, CapacityContainerBuilder<Vec<EventRow>>>;
pub type PacketInput = UnorderedHandle<u64, CapacityContainerBuilder<Vec<Packet>>>;

/// A worker's ends of the dataflow.
pub struct Inputs {
    pub records: RecordInput,
    pub records_cap: ActivateCapability<u64>,
    pub packets: PacketInput,
    pub packets_cap: ActivateCapability<u64>,
    /// The indicator file's input, when threat intelligence is configured.
    pub intel: Option<IntelFeed>,
}

/// Builds the dataflow on `worker`.
pub fn build(
    worker: &mut timely::worker::Worker,
    spec: &GraphSpec,
    c: &GraphCounters,
    out: &Senders,
) -> Inputs {
    worker.dataflow::<u64, _, _>(|scope| {
        let ((records_in, records_cap), records) =
            scope.new_unordered_input::<CapacityContainerBuilder<Vec<EventRow>>>();
        let ((packets_in, packets_cap), packets) =
            scope.new_unordered_input::<CapacityContainerBuilder<Vec<Packet>>>();
        if let Some(tx) = &out.events {
            channel_sink(
                records.clone(),
                "EventsToParquet",
                tx.clone(),
                Some(out.events_delivered.clone()),
                None,
            );
        }
        let (flows, app_obs) = packets.clone().assemble_flows(spec.flows, c.flows.clone());
        channel_sink(flows, "FlowsToParquet", out.flows.clone(), None, None);
        let packet_rows = packets
            .clone()
            .featurize(c.windows.clone(), spec.window_entities);
        let mut intel = None;
        let rows = match spec.feature_set {
            FeatureSet::Packet => packet_rows.packet_features_only(),
            FeatureSet::All => {
                let defs = features::defs();
                // DHCP messages are windowed per client hardware address,
                // entities of their own beside the IP addresses.
                let dhcp = packets.clone().dhcp_observations();
                // What the flows' payloads said, and which ClientHellos carried
                // a fingerprint no other host uses: windowed together.
                let app_windowed = app_obs.clone().concat(app_obs.clone().rare_fingerprints());
                let rows = if spec.records {
                    let events = records
                        .clone()
                        .observe_events()
                        .concat(dhcp)
                        .concat(app_windowed);
                    packet_rows
                        .concat(events.event_windows(c.event_windows.clone(), spec.window_entities))
                        .merge_rows()
                } else if spec.flows.application_bytes > 0 {
                    // The application family is keyed by address, as the
                    // packet rows are: merged with them.
                    packet_rows
                        .concat(
                            dhcp.concat(app_windowed)
                                .event_windows(c.event_windows.clone(), spec.window_entities),
                        )
                        .merge_rows()
                } else {
                    // Packet rows are keyed by address, DHCP rows by hardware
                    // address: nothing to merge.
                    packet_rows
                        .concat(dhcp.event_windows(c.event_windows.clone(), spec.window_entities))
                };
                let rows = rows.with_history(defs.clone(), spec.history, c.history.clone());
                let detector = Detector::new(&defs, &spec.detections, &spec.user_rules)
                    .expect("checked before the dataflow");
                let (mut rows, mut alerts) = rows.detect(detector, c.detect.clone());
                let groups =
                    GroupRules::new(&defs, &spec.user_rules).expect("checked before the dataflow");
                if !groups.is_empty() {
                    alerts = alerts.concat(detect_groups(rows.clone(), groups, c.detect.clone()));
                }
                if let Some(corr) = &spec.correlation {
                    let logs = spec.records.then(|| records.clone());
                    let (joined, feed) =
                        corr.build(&defs, rows.clone(), packets.clone(), logs, app_obs);
                    alerts = alerts.concat(joined);
                    intel = feed;
                }
                if spec.records {
                    let watch = DeviceWatch::new(&spec.learn_rules);
                    if watch.is_enabled() {
                        alerts = alerts.concat(detect_events(
                            records.clone(),
                            "DeviceWatch",
                            watch,
                            c.detect.clone(),
                        ));
                    }
                    if !spec.count_rules.is_empty() {
                        let rules = spec
                            .count_rules
                            .iter()
                            .map(|s| s.check())
                            .collect::<Result<Vec<_>, _>>()
                            .expect("checked before the dataflow");
                        alerts = alerts.concat(detect_events(
                            records.clone(),
                            "CountRules",
                            CountRules::new(rules),
                            c.detect.clone(),
                        ));
                    }
                }
                if let Some(models) = &spec.models {
                    let (passed, scores, anomalies) =
                        rows.score_models(models.clone(), c.detect.clone());
                    rows = passed;
                    alerts = alerts.concat(anomalies);
                    if let Some(tx) = &out.scores {
                        channel_sink(
                            scores,
                            "ScoresToParquet",
                            tx.clone(),
                            None,
                            out.progress.scores.clone(),
                        );
                    }
                }
                if let Some(tx) = &out.webhook {
                    channel_sink(
                        alerts.clone(),
                        "AlertsToWebhook",
                        tx.clone(),
                        None,
                        out.progress.webhook.clone(),
                    );
                }
                channel_sink(
                    alerts,
                    "AlertsToParquet",
                    out.alerts.clone(),
                    None,
                    out.progress.alerts.clone(),
                );
                rows
            }
        };
        channel_sink(
            rows,
            "FeaturesToParquet",
            out.features.clone(),
            None,
            out.progress.features.clone(),
        );
        Inputs {
            records: records_in,
            records_cap,
            packets: packets_in,
            packets_cap,
            intel,
        }
    })
}
