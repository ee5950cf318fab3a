//! Publishes a run's counters to the `metrics` facade (a Prometheus exporter
//! when the binary installs one): once a second, and a last time at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use amoskys_operators::correlate::IntelShared;
use amoskys_sinks::webhook::WebhookCounters;
use amoskys_sources::{Counters, Meaning};
use tokio::sync::watch;

use crate::graph::GraphCounters;
use crate::ingest::Ingested;

/// A source's channel depth, in batches.
pub enum Depth {
    Records(tokio::sync::mpsc::WeakSender<amoskys_sources::wal::Batch>),
    Packets(tokio::sync::mpsc::WeakSender<Vec<amoskys_schemas::Packet>>),
}

impl Depth {
    fn get(&self) -> usize {
        match self {
            Depth::Records(t) => t.upgrade().map_or(0, |t| t.max_capacity() - t.capacity()),
            Depth::Packets(t) => t.upgrade().map_or(0, |t| t.max_capacity() - t.capacity()),
        }
    }
}

/// One source, as the metrics see it.
pub struct SourceMetrics {
    pub name: String,
    pub kind: &'static str,
    pub counters: Arc<dyn Counters>,
    pub depth: Depth,
}

/// Everything published.
pub struct Published {
    pub sources: Vec<SourceMetrics>,
    pub ingested: Arc<Ingested>,
    pub graph: GraphCounters,
    pub webhook: Option<Arc<WebhookCounters>>,
    pub intel: Option<Arc<IntelShared>>,
}

fn publish_source(s: &SourceMetrics) {
    let (id, kind) = (s.name.clone(), s.kind);
    let labels = [
        ("component_kind", "source".to_string()),
        ("component_type", kind.to_string()),
        ("component_id", id.clone()),
    ];
    for c in s.counters.snapshot() {
        let v = c.value;
        match c.meaning {
            Meaning::Received => {
                metrics::counter!("amoskys_component_received_events_total", &labels).absolute(v)
            }
            Meaning::Bytes => {
                metrics::counter!("amoskys_component_received_bytes_total", &labels).absolute(v)
            }
            Meaning::Discarded(reason) => {
                metrics::counter!("amoskys_component_discarded_events_total",
                "component_id" => id.clone(), "component_type" => kind,
                "reason" => reason, "intentional" => "false")
                .absolute(v)
            }
            Meaning::Error => metrics::counter!("amoskys_component_errors_total",
                "component_id" => id.clone(), "component_type" => kind, "error_type" => c.name)
            .absolute(v),
            Meaning::Gauge(name) => metrics::gauge!(name, &labels).set(v as f64),
            Meaning::Named(name) => metrics::counter!(name, &labels).absolute(v),
            Meaning::Count => {
                metrics::counter!(format!("amoskys_{kind}_{}_total", c.name), &labels).absolute(v)
            }
        }
    }
    metrics::gauge!("amoskys_channel_depth_batches", "component_id" => id)
        .set(s.depth.get() as f64);
}

impl Published {
    fn publish(&self) {
        for s in &self.sources {
            publish_source(s);
        }
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (i, c) = (&self.ingested, &self.graph);
        metrics::counter!("amoskys_events_sent_total").absolute(g(&i.events));
        metrics::counter!("amoskys_packets_sent_total").absolute(g(&i.packets));
        metrics::counter!("amoskys_late_events_total").absolute(g(&i.late));
        metrics::counter!("amoskys_late_packets_total").absolute(g(&i.late_packets));
        metrics::counter!("amoskys_flows_evicted_total").absolute(g(&c.flows.evicted));
        metrics::counter!("amoskys_flows_app_skipped_total").absolute(g(&c.flows.app_skipped));
        metrics::counter!("amoskys_window_late_observations_total").absolute(g(&c.windows.late));
        metrics::counter!("amoskys_window_overflow_observations_total")
            .absolute(g(&c.windows.overflow) + g(&c.event_windows.overflow));
        metrics::counter!("amoskys_feature_rows_total").absolute(g(&c.windows.rows));
        metrics::counter!("amoskys_alerts_total").absolute(g(&c.detect.alerts));
        metrics::counter!("amoskys_model_scores_total").absolute(g(&c.models.scored));
        metrics::counter!("amoskys_model_reloads_total").absolute(g(&c.models.reloads));
        metrics::counter!("amoskys_model_reload_failures_total")
            .absolute(g(&c.models.reload_failures));
        if let Some(w) = &self.webhook {
            metrics::counter!("amoskys_webhook_spooled_total").absolute(g(&w.spooled));
            metrics::counter!("amoskys_webhook_delivered_total").absolute(g(&w.delivered));
            metrics::counter!("amoskys_webhook_requests_total").absolute(g(&w.requests));
            metrics::counter!("amoskys_webhook_retries_total").absolute(g(&w.retries));
            metrics::counter!("amoskys_webhook_rejected_total").absolute(g(&w.rejected));
            metrics::counter!("amoskys_webhook_repeated_total").absolute(g(&w.repeated));
        }
        if let Some(t) = &self.intel {
            metrics::gauge!("amoskys_threat_intel_indicators").set(g(&t.indicators) as f64);
            metrics::gauge!("amoskys_threat_intel_bad_lines").set(g(&t.bad_lines) as f64);
            metrics::counter!("amoskys_threat_intel_loads_total").absolute(g(&t.loads));
            metrics::counter!("amoskys_threat_intel_alerts_total").absolute(g(&t.alerts));
        }
        metrics::counter!("amoskys_history_evicted_total").absolute(g(&c.history.evicted));
        metrics::gauge!("amoskys_history_entities").set(g(&c.history.entities) as f64);
        let wm = i.watermark_pane.load(Ordering::Relaxed);
        if wm > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let lag = now - (wm * amoskys_schemas::HOP_SECONDS as u64) as f64;
            metrics::gauge!("amoskys_watermark_lag_seconds").set(lag.max(0.0));
        }
    }

    /// Publishes once a second until `done` fires, then once more.
    pub async fn run(self, mut done: watch::Receiver<bool>) {
        loop {
            self.publish();
            if *done.borrow() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                r = done.changed() => if r.is_err() { return },
            }
        }
    }
}
