//! Where the dataflow hands rows to sink threads.

use std::collections::VecDeque;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

/// Sends each batch of `stream` into a bounded channel. A full channel never blocks
/// the worker: the batch waits here, the operator stops reading its input and asks
/// to be scheduled again shortly, which holds the frontier back upstream. While
/// batches wait, the operator holds a capability, so the dataflow cannot count as
/// finished (and be torn down) with rows still undelivered.
pub fn channel_sink<R: 'static>(
    stream: Stream<'_, u64, Vec<R>>,
    name: &str,
    tx: SyncSender<Vec<R>>,
) {
    let scope = stream.scope();
    stream.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Pipeline,
        name,
        move |cap, info| {
            drop(cap);
            let activator = scope.activator_for(info.address);
            let mut pending: VecDeque<Vec<R>> = VecDeque::new();
            let mut held: Option<Capability<u64>> = None;
            let mut tx = Some(tx);
            move |(input, frontier), output| {
                let Some(sender) = tx.as_ref() else {
                    input.for_each(|_, _| {});
                    return;
                };
                // Oldest first; stop at the first batch the channel cannot take.
                while let Some(b) = pending.pop_front() {
                    match sender.try_send(b) {
                        Ok(()) => {}
                        Err(TrySendError::Full(b)) => {
                            pending.push_front(b);
                            break;
                        }
                        // The sink thread is gone (it failed and reported why).
                        Err(TrySendError::Disconnected(_)) => pending.clear(),
                    }
                }
                if pending.is_empty() {
                    let out_idx = output.output_index();
                    input.for_each(|cap, data| {
                        let batch = std::mem::take(data);
                        if batch.is_empty() {
                            return;
                        }
                        if !pending.is_empty() {
                            pending.push_back(batch);
                            return;
                        }
                        match sender.try_send(batch) {
                            Ok(()) => {}
                            Err(TrySendError::Full(b)) => {
                                pending.push_back(b);
                                if held.is_none() {
                                    held = cap.retain_least(out_idx);
                                }
                            }
                            Err(TrySendError::Disconnected(_)) => {}
                        }
                    });
                }
                if pending.is_empty() {
                    held = None;
                    if frontier.frontier().is_empty() {
                        tx = None;
                    }
                } else {
                    activator.activate_after(Duration::from_millis(1));
                }
            }
        },
    );
}
