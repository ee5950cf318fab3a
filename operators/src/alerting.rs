//! What every detector shares, whatever its kind: the alert's id, the
//! counters of a detection operator, and the operator that runs a detector over
//! events as they arrive. Rules of each kind (crate::detect, crate::count_rules,
//! crate::device_watch) and the joins (crate::correlate) build on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use amoskys_schemas::{Alert, Entity};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;

/// Counters of the detection operator.
#[derive(Debug, Default)]
pub struct DetectCounters {
    pub alerts: AtomicU64,
}

impl DetectCounters {
    /// Counts `alerts`, if any, and hands them to `give`.
    pub fn emit(&self, alerts: &mut Vec<Alert>, give: impl FnOnce(&mut Vec<Alert>)) {
        if !alerts.is_empty() {
            self.alerts
                .fetch_add(alerts.len() as u64, Ordering::Relaxed);
            give(alerts);
        }
    }
}

/// A value as alert summaries write it: whole numbers without decimals,
/// others with three, null as `null`.
pub fn summary_number(v: f64) -> String {
    if v.is_nan() {
        "null".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// 128 bits of FNV-1a (two 64-bit passes with different offsets) over the
/// detection, the entity and the window: stable across runs, workers and builds.
pub fn alert_id(rule: &str, entity: &Entity, window: u64) -> String {
    let text = format!("{rule}\u{0}{entity}\u{0}{window}");
    let fnv = |offset: u64| {
        text.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

/// A detection over events as they arrive, one at a time.
pub trait EventDetector: 'static {
    /// Appends the alerts `row` raises.
    fn observe(&mut self, row: &amoskys_schemas::EventRow, out: &mut Vec<Alert>);
}

/// Runs `detector` over the events stream, on the worker that holds them (the
/// events come in on worker 0, in arrival order).
pub fn detect_events<'s, D: EventDetector>(
    events: Stream<'s, u64, Vec<amoskys_schemas::EventRow>>,
    name: &str,
    mut detector: D,
    counters: Arc<DetectCounters>,
) -> Stream<'s, u64, Vec<Alert>> {
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::operators::Operator;
    events.unary::<CapacityContainerBuilder<Vec<Alert>>, _, _, _>(
        Pipeline,
        name,
        move |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut out = Vec::new();
                    for e in data.iter() {
                        detector.observe(e, &mut out);
                    }
                    counters.emit(&mut out, |v| output.session(&cap).give_container(v));
                });
            }
        },
    )
}
