//! Destinations of asynchronous invocations: which ARNs can be one, and the record Lambda sends
//! there (`requestContext`, `requestPayload`, `responseContext`, `responsePayload`).

use serde_json::{json, Value};

/// Where a destination ARN points.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    /// `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`: invoked asynchronously with
    /// the record as its event.
    Function {
        name: String,
        qualifier: Option<String>,
    },
    /// `arn:aws:sqs:REGION:ACCOUNT:NAME`: a built-in queue, sent the record as a message body.
    Queue { name: String },
}

/// Why an ARN cannot be a destination (the message names the ARN and the reason).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct DestinationError(pub String);

impl Destination {
    pub fn parse(arn: &str) -> Result<Destination, DestinationError> {
        if arn.starts_with("arn:aws:sqs:") {
            return match nimbus_core::sqs::queue_name_from_arn(arn) {
                Some(name) if nimbus_core::sqs::validate_queue_name(name).is_ok() => {
                    Ok(Destination::Queue {
                        name: name.to_string(),
                    })
                }
                _ => Err(DestinationError(format!(
                    "destination {arn:?} is not a queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME)"
                ))),
            };
        }
        if arn.starts_with("arn:aws:sns:") || arn.starts_with("arn:aws:events:") {
            return Err(DestinationError(format!(
                "destination {arn}: SNS topics and EventBridge buses are not supported; use a function or a queue"
            )));
        }
        let r = nimbus_core::FunctionRef::parse(arn).map_err(|e| {
            DestinationError(format!("destination {arn:?} is not a function ARN: {e}"))
        })?;
        if !arn.starts_with("arn:") {
            return Err(DestinationError(format!(
                "destination {arn:?} must be an ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME)"
            )));
        }
        Ok(Destination::Function {
            name: r.name,
            qualifier: r.qualifier.map(|q| q.to_string()),
        })
    }
}

/// Why the record is being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Success => "Success",
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// What the last attempt returned, when there was one.
pub struct Response<'a> {
    pub executed_version: &'a str,
    pub function_error: bool,
    pub payload: &'a [u8],
}

/// The invocation record, as Lambda documents it for destinations.
pub fn record(
    request_id: &str,
    function_arn: &str,
    condition: Condition,
    invoke_count: u32,
    request_payload: &[u8],
    response: Option<Response<'_>>,
    now: time::OffsetDateTime,
) -> Vec<u8> {
    let parse = |b: &[u8]| {
        serde_json::from_slice::<Value>(b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned()))
    };
    let timestamp = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut v = json!({
        "version": "1.0",
        "timestamp": timestamp,
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition.as_str(),
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": parse(request_payload),
    });
    if let Some(r) = response {
        let mut ctx = json!({ "statusCode": 200, "executedVersion": r.executed_version });
        if r.function_error {
            ctx["functionError"] = json!("Unhandled");
        }
        v["responseContext"] = ctx;
        v["responsePayload"] = parse(r.payload);
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_arns() {
        assert_eq!(
            Destination::parse("arn:aws:lambda:us-east-1:000000000000:function:sink"),
            Ok(Destination::Function {
                name: "sink".into(),
                qualifier: None
            })
        );
        assert_eq!(
            Destination::parse("arn:aws:lambda:us-east-1:000000000000:function:sink:live"),
            Ok(Destination::Function {
                name: "sink".into(),
                qualifier: Some("live".into())
            })
        );
        assert_eq!(
            Destination::parse("arn:aws:sqs:us-east-1:000000000000:failures"),
            Ok(Destination::Queue {
                name: "failures".into()
            })
        );
        for bad in [
            "sink",
            "arn:aws:sqs:us-east-1:000000000000:",
            "arn:aws:sqs:us-east-1:000000000000:bad name",
            "arn:aws:sns:us-east-1:000000000000:t",
            "arn:aws:lambda:us-east-1:0:layer:x",
            "",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn records_have_lambdas_shape() {
        let now = time::macros::datetime!(2019-11-14 18:16:05.568 UTC);
        let failure = record(
            "r-1",
            "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
            Condition::RetriesExhausted,
            3,
            br#"{"a":1}"#,
            Some(Response {
                executed_version: "$LATEST",
                function_error: true,
                payload: br#"{"errorMessage":"boom","errorType":"Exception"}"#,
            }),
            now,
        );
        let v: Value = serde_json::from_slice(&failure).unwrap();
        assert_eq!(
            v,
            json!({
                "version": "1.0",
                "timestamp": "2019-11-14T18:16:05.568Z",
                "requestContext": {
                    "requestId": "r-1",
                    "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
                    "condition": "RetriesExhausted",
                    "approximateInvokeCount": 3
                },
                "requestPayload": {"a": 1},
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                "responsePayload": {"errorMessage": "boom", "errorType": "Exception"}
            })
        );
        let aged: Value = serde_json::from_slice(&record(
            "r-2",
            "arn",
            Condition::EventAgeExceeded,
            0,
            b"{}",
            None,
            now,
        ))
        .unwrap();
        assert_eq!(aged["requestContext"]["condition"], "EventAgeExceeded");
        assert!(aged.get("responseContext").is_none());
    }
}
