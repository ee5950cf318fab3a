//! Feature rows held until their window is complete, for the operators that
//! need a whole window at once (the merge of families, history).

use std::collections::BTreeMap;

use amoskys_schemas::FeatureRow;
use timely::dataflow::operators::Capability;

/// Feature rows held by window until the whole window is in. Rows of window `w`
/// carry time `w` or `w + 1` (the window operators send a window at its first
/// pane that exists), so window `w` is complete once the frontier has passed
/// `w + 1`; windows come out in order, each with the earliest capability its
/// rows came with.
#[derive(Default)]
pub(crate) struct WindowHold {
    held: BTreeMap<u64, (Capability<u64>, Vec<FeatureRow>)>,
}

impl WindowHold {
    /// Holds `row`, which arrived at `time`; `cap` makes a capability for `time`.
    pub(crate) fn push(&mut self, row: FeatureRow, time: u64, cap: impl Fn() -> Capability<u64>) {
        let slot = self
            .held
            .entry(row.window)
            .or_insert_with(|| (cap(), Vec::new()));
        if time < *slot.0.time() {
            slot.0 = cap();
        }
        slot.1.push(row);
    }

    /// The earliest window that is complete under `frontier` (all, if `None`).
    pub(crate) fn pop_complete(
        &mut self,
        frontier: Option<u64>,
    ) -> Option<(u64, Capability<u64>, Vec<FeatureRow>)> {
        let (&w, _) = self.held.first_key_value()?;
        if frontier.is_some_and(|f| w + 1 >= f) {
            return None;
        }
        self.held.pop_first().map(|(w, (cap, rows))| (w, cap, rows))
    }
}
