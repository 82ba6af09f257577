//! Schedules: EventBridge `rate(...)`/`cron(...)` expressions in a time zone, each firing a
//! function asynchronously with EventBridge's "Scheduled Event" (or a fixed input).
//!
//! Each schedule stores the period it fires next. Firing a period moves the schedule on and
//! stores the asynchronous event in one transaction, so a period fires once, across restarts
//! too. Periods missed while the server was down are caught up with one firing (for the latest
//! missed period), then the schedule goes on from now.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::schedule::{parse_time_zone, ScheduleExpression, Timestamp};
use nimbus_store::{now_ms, NewAsyncEvent, ScheduleRecord, Store};
use serde_json::json;
use tokio::sync::Notify;

/// Why a schedule is refused (the message names the field and the problem).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct ScheduleInputError(pub String);

/// Checks a schedule's name, expression, zone and input, as EventBridge would.
pub fn check(
    name: &str,
    expression: &str,
    timezone: &str,
    input: Option<&str>,
) -> Result<ScheduleExpression, ScheduleInputError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(ScheduleInputError(format!(
            "schedule name {name:?} must be 1 to 64 letters, digits, '.', '_' or '-'"
        )));
    }
    let expr: ScheduleExpression = expression
        .parse()
        .map_err(|e| ScheduleInputError(format!("expression: {e}")))?;
    parse_time_zone(timezone).map_err(|e| ScheduleInputError(format!("timezone: {e}")))?;
    if let Some(i) = input {
        if i.len() > 8192 {
            return Err(ScheduleInputError(format!(
                "input is {} characters long; the limit is 8192",
                i.len()
            )));
        }
        serde_json::from_str::<serde::de::IgnoredAny>(i)
            .map_err(|e| ScheduleInputError(format!("input is not valid JSON: {e}")))?;
    }
    Ok(expr)
}

/// The next period of `s` strictly after `after_ms` (rates are anchored at creation).
pub fn next_fire(s: &ScheduleRecord, after_ms: i64) -> Option<i64> {
    let expr: ScheduleExpression = s.expression.parse().ok()?;
    let tz = parse_time_zone(&s.timezone).ok()?;
    let after = Timestamp::from_millisecond(after_ms).ok()?;
    let anchor = Timestamp::from_millisecond(s.created_ms).ok()?;
    expr.next_after(after, &tz, anchor)
        .map(|t| t.as_millisecond())
}

/// EventBridge's Scheduled Event for a period of schedule `name`.
pub fn scheduled_event(name: &str, period_ms: i64) -> Vec<u8> {
    let time = Timestamp::from_millisecond(period_ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    serde_json::to_vec(&json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": time,
        "region": "us-east-1",
        "resources": [format!("arn:aws:events:us-east-1:000000000000:rule/{name}")],
        "detail": {},
    }))
    .unwrap_or_default()
}

/// The scheduler task's handle: `changed` wakes it after the API changed a schedule.
#[derive(Clone)]
pub struct Scheduler {
    wake: Arc<Notify>,
}

impl Scheduler {
    pub fn start(store: Arc<dyn Store>, async_events: crate::AsyncEvents) -> Scheduler {
        let wake = Arc::new(Notify::new());
        tokio::spawn(run(store, async_events, wake.clone()));
        Scheduler { wake }
    }

    pub fn changed(&self) {
        self.wake.notify_one();
    }
}

async fn run(store: Arc<dyn Store>, events: crate::AsyncEvents, wake: Arc<Notify>) {
    loop {
        let now = now_ms();
        let mut soonest: Option<i64> = None;
        let mut retry_soon = false;
        match store.list_schedules().await {
            Ok(all) => {
                for s in all.into_iter().filter(|s| s.enabled) {
                    let Some(due) = s.next_fire_ms else { continue };
                    if due > now {
                        soonest = Some(soonest.map_or(due, |x| x.min(due)));
                        continue;
                    }
                    // Missed periods collapse into this one firing; the next is after now.
                    let next = next_fire(&s, now);
                    let (function, qualifier) = match s.function.split_once(':') {
                        Some((f, q)) => (f.to_string(), Some(q.to_string())),
                        None => (s.function.clone(), None),
                    };
                    let payload = match &s.input {
                        Some(i) => i.clone().into_bytes(),
                        None => scheduled_event(&s.name, due),
                    };
                    let event = NewAsyncEvent {
                        request_id: nimbus_runtime::new_request_id(),
                        function: function.clone(),
                        qualifier,
                        payload,
                        received_ms: now,
                        not_before_ms: None,
                        held: false,
                        leased_until_ms: None,
                    };
                    match store.fire_schedule(&s.name, due, next, event).await {
                        Ok(true) => {
                            tracing::debug!(schedule = %s.name, period_ms = due, "schedule fired");
                            events.stored(&function);
                        }
                        Ok(false) => {}
                        Err(e) => {
                            retry_soon = true;
                            tracing::error!(schedule = %s.name, error = %e, "firing a schedule failed; it is tried again")
                        }
                    }
                    if let Some(n) = next {
                        soonest = Some(soonest.map_or(n, |x| x.min(n)));
                    }
                }
            }
            Err(e) => {
                retry_soon = true;
                tracing::error!(error = %e, "reading schedules failed");
            }
        }
        // Schedules change only through the API, which wakes this task, or by firing here: it
        // sleeps until the next fire (a minute at most, a second after a store failure).
        let wait = match (soonest, retry_soon) {
            (_, true) => 1000,
            (Some(t), false) => (t - now_ms()).clamp(1, 60_000),
            (None, false) => 60_000,
        } as u64;
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_checked() {
        assert!(check("nightly", "cron(0 3 * * ? *)", "Europe/Berlin", None).is_ok());
        assert!(check("every-5", "rate(5 minutes)", "UTC", Some("{\"a\":1}")).is_ok());
        for (name, expr, tz, input, want) in [
            ("bad name!", "rate(1 minute)", "UTC", None, "name"),
            ("", "rate(1 minute)", "UTC", None, "name"),
            ("x", "rate(1 minutes)", "UTC", None, "expression"),
            ("x", "cron(* * * * * *)", "UTC", None, "expression"),
            ("x", "rate(1 minute)", "Mars/Olympus", None, "timezone"),
            ("x", "rate(1 minute)", "UTC", Some("{nope"), "JSON"),
        ] {
            let e = check(name, expr, tz, input).unwrap_err();
            assert!(e.0.contains(want), "{name} {expr} {tz}: {e}");
        }
    }

    #[test]
    fn scheduled_events_have_eventbridges_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&scheduled_event("nightly", 1_796_000_000_000)).unwrap();
        assert_eq!(v["detail-type"], "Scheduled Event");
        assert_eq!(v["source"], "aws.events");
        assert_eq!(v["version"], "0");
        assert_eq!(v["time"], "2026-11-30T00:53:20Z");
        assert_eq!(
            v["resources"][0],
            "arn:aws:events:us-east-1:000000000000:rule/nightly"
        );
        assert_eq!(v["detail"], json!({}));
    }

    #[test]
    fn rates_are_anchored_at_creation_and_crons_at_the_clock() {
        let s = |expr: &str| ScheduleRecord {
            name: "s".into(),
            expression: expr.into(),
            timezone: "UTC".into(),
            function: "f".into(),
            input: None,
            enabled: true,
            created_ms: 1_000_000,
            next_fire_ms: None,
            last_fire_ms: None,
        };
        assert_eq!(next_fire(&s("rate(1 minute)"), 1_000_000), Some(1_060_000));
        assert_eq!(next_fire(&s("rate(1 minute)"), 1_090_000), Some(1_120_000));
        assert_eq!(
            next_fire(&s("cron(* * * * ? *)"), 1_000_000),
            Some(1_020_000)
        );
    }
}
