//! Asynchronous invocation metrics, per function, as Lambda names them: AsyncEventsReceived,
//! AsyncEventAge, AsyncEventsDropped, DestinationDeliveryFailures. Exported at `/metrics`
//! through the telemetry registry.

use std::collections::BTreeMap;
use std::sync::Mutex;

use std::time::Duration;

use nimbus_telemetry::metrics::{Collector, Exposition, Histogram, Kind, DURATION_BOUNDS_S};

#[derive(Default, Clone)]
struct Counts {
    received: u64,
    dropped_retries: u64,
    dropped_age: u64,
    dropped_gone: u64,
    destination_failures: u64,
    delivered_to_destinations: u64,
    age: Histogram,
}

/// Why an event was dropped.
#[derive(Debug, Clone, Copy)]
pub enum Dropped {
    RetriesExhausted,
    EventAgeExceeded,
    /// The function (or the qualifier) no longer exists.
    FunctionGone,
}

#[derive(Default)]
pub struct AsyncMetrics {
    by_function: Mutex<BTreeMap<String, Counts>>,
}

impl AsyncMetrics {
    fn with(&self, function: &str, f: impl FnOnce(&mut Counts)) {
        let mut m = self.by_function.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(function) {
            Some(c) => f(c),
            None => f(m.entry(function.to_string()).or_default()),
        }
    }

    pub fn received(&self, function: &str, n: u64) {
        self.with(function, |c| c.received += n);
    }

    /// The age of an event when it is taken up for an attempt.
    pub fn age(&self, function: &str, age: Duration) {
        self.with(function, |c| c.age.record(age));
    }

    pub fn dropped(&self, function: &str, why: Dropped) {
        self.with(function, |c| match why {
            Dropped::RetriesExhausted => c.dropped_retries += 1,
            Dropped::EventAgeExceeded => c.dropped_age += 1,
            Dropped::FunctionGone => c.dropped_gone += 1,
        });
    }

    pub fn destination(&self, function: &str, delivered: bool) {
        self.with(function, |c| {
            if delivered {
                c.delivered_to_destinations += 1
            } else {
                c.destination_failures += 1
            }
        });
    }
}

impl Collector for AsyncMetrics {
    fn collect(&self, out: &mut Exposition) {
        let m = self
            .by_function
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        out.family(
            "nimbus_async_events_received_total",
            "Asynchronous invocations accepted and stored (Lambda's AsyncEventsReceived).",
            Kind::Counter,
        );
        for (f, c) in &m {
            out.sample(
                "nimbus_async_events_received_total",
                &[("function", f)],
                c.received as f64,
            );
        }
        out.family(
            "nimbus_async_events_dropped_total",
            "Asynchronous invocations dropped without success (Lambda's AsyncEventsDropped), by reason.",
            Kind::Counter,
        );
        for (f, c) in &m {
            for (reason, n) in [
                ("RetriesExhausted", c.dropped_retries),
                ("EventAgeExceeded", c.dropped_age),
                ("FunctionGone", c.dropped_gone),
            ] {
                out.sample(
                    "nimbus_async_events_dropped_total",
                    &[("function", f), ("reason", reason)],
                    n as f64,
                );
            }
        }
        out.family(
            "nimbus_async_destination_delivery_failures_total",
            "Records that could not be sent to a destination (Lambda's DestinationDeliveryFailures).",
            Kind::Counter,
        );
        for (f, c) in &m {
            out.sample(
                "nimbus_async_destination_delivery_failures_total",
                &[("function", f)],
                c.destination_failures as f64,
            );
        }
        out.family(
            "nimbus_async_destination_deliveries_total",
            "Records sent to an on-success or on-failure destination.",
            Kind::Counter,
        );
        for (f, c) in &m {
            out.sample(
                "nimbus_async_destination_deliveries_total",
                &[("function", f)],
                c.delivered_to_destinations as f64,
            );
        }
        out.family(
            "nimbus_async_event_age_seconds",
            "Time from accepting an event to each attempt to run it (Lambda's AsyncEventAge).",
            Kind::Histogram,
        );
        for (f, c) in &m {
            out.histogram(
                "nimbus_async_event_age_seconds",
                &[("function", f)],
                &c.age,
                &DURATION_BOUNDS_S,
            );
        }
    }
}

/// Queue metrics, per queue, as SQS's CloudWatch metrics name them: NumberOfMessagesSent,
/// NumberOfMessagesReceived, NumberOfMessagesDeleted, NumberOfEmptyReceives, and messages moved
/// to a dead-letter queue.
#[derive(Default)]
pub struct QueueMetrics {
    by_queue: Mutex<BTreeMap<String, [u64; 5]>>,
}

const SENT: usize = 0;
const RECEIVED: usize = 1;
const DELETED: usize = 2;
const EMPTY_RECEIVES: usize = 3;
const DEAD_LETTERED: usize = 4;

impl QueueMetrics {
    fn add(&self, queue: &str, which: usize, n: u64) {
        if n == 0 && which != EMPTY_RECEIVES {
            return;
        }
        let mut m = self.by_queue.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(queue) {
            Some(c) => c[which] += n,
            None => m.entry(queue.to_string()).or_default()[which] += n,
        }
    }

    pub fn sent(&self, queue: &str, n: u64) {
        self.add(queue, SENT, n);
    }

    /// A receive that handed out `n` messages (0: an empty receive) and moved `dead_lettered`
    /// to the dead-letter queue.
    pub fn received(&self, queue: &str, n: u64, dead_lettered: u64) {
        if n == 0 {
            self.add(queue, EMPTY_RECEIVES, 1);
        } else {
            self.add(queue, RECEIVED, n);
        }
        self.add(queue, DEAD_LETTERED, dead_lettered);
    }

    pub fn deleted(&self, queue: &str, n: u64) {
        self.add(queue, DELETED, n);
    }

    /// The queue was deleted: its series go too.
    pub fn forget(&self, queue: &str) {
        self.by_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(queue);
    }
}

impl Collector for QueueMetrics {
    fn collect(&self, out: &mut Exposition) {
        let m = self
            .by_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (name, help, which) in [
            (
                "nimbus_queue_messages_sent_total",
                "Messages stored by SendMessage(Batch) (SQS's NumberOfMessagesSent; FIFO duplicates not counted).",
                SENT,
            ),
            (
                "nimbus_queue_messages_received_total",
                "Messages handed out by receives, event source mappings' included (SQS's NumberOfMessagesReceived).",
                RECEIVED,
            ),
            (
                "nimbus_queue_messages_deleted_total",
                "Messages deleted with their latest receipt (SQS's NumberOfMessagesDeleted).",
                DELETED,
            ),
            (
                "nimbus_queue_empty_receives_total",
                "Receives that found no message (SQS's NumberOfEmptyReceives).",
                EMPTY_RECEIVES,
            ),
            (
                "nimbus_queue_messages_dead_lettered_total",
                "Messages moved to the queue's dead-letter queue after maxReceiveCount receives.",
                DEAD_LETTERED,
            ),
        ] {
            out.family(name, help, Kind::Counter);
            for (q, c) in &m {
                out.sample(name, &[("queue", q)], c[which] as f64);
            }
        }
    }
}
