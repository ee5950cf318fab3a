//! Where the dataflow hands rows to sink threads.

use std::collections::VecDeque;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

/// Sends each batch of `stream` into a bounded channel. A full channel never blocks
/// the worker: the batch waits here, the operator stops reading its input and asks
/// to be scheduled again shortly, which holds the frontier back upstream.
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
            let mut tx = Some(tx);
            move |(input, frontier), _output| {
                let Some(sender) = tx.as_ref() else {
                    input.for_each(|_, _| {});
                    return;
                };
                let send =
                    |batch: Vec<R>, pending: &mut VecDeque<Vec<R>>| match sender.try_send(batch) {
                        Ok(()) => true,
                        Err(TrySendError::Full(b)) => {
                            pending.push_back(b);
                            false
                        }
                        // The sink thread is gone (it failed and reported why); nothing to keep.
                        Err(TrySendError::Disconnected(_)) => true,
                    };
                while let Some(b) = pending.pop_front() {
                    if !send(b, &mut pending) {
                        // `send` put it back at the end; restore the order.
                        if let Some(b) = pending.pop_back() {
                            pending.push_front(b);
                        }
                        break;
                    }
                }
                if pending.is_empty() {
                    input.for_each(|_, data| {
                        let batch = std::mem::take(data);
                        if !batch.is_empty() {
                            if pending.is_empty() {
                                send(batch, &mut pending);
                            } else {
                                pending.push_back(batch);
                            }
                        }
                    });
                }
                if !pending.is_empty() {
                    activator.activate_after(Duration::from_millis(1));
                } else if frontier.frontier().is_empty() {
                    tx = None;
                }
            }
        },
    );
}
