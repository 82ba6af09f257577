//! The SQS-compatible API: Amazon SQS's AWS JSON 1.0 protocol as current botocore speaks it
//! (`POST /` with `X-Amz-Target: AmazonSQS.<Operation>`), over the engine in
//! `nimbus_events::queues`. Errors carry the JSON `__type` and the `x-amzn-query-error` header
//! (`<query code>;Sender`), which botocore turns into the codes and exception classes SQS
//! clients expect. Queue URLs are `http://<host>/<account>/<queue name>`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_core::sqs::{self, MessageAttributeValue, SqsError};
use nimbus_events::queues::{ReceiveOptions, Received, SendEntry};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::ApiState;

const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
/// SendMessageBatch's limit on the sum of its messages' sizes.
const MAX_BATCH_BYTES: usize = sqs::MAX_MESSAGE_SIZE as usize;

struct SqsReply(Result<Value, SqsError>);

impl IntoResponse for SqsReply {
    fn into_response(self) -> Response {
        match self.0 {
            // `to_vec` writes bytes directly; `to_string` would go through `fmt`.
            Ok(v) => match serde_json::to_vec(&v) {
                Ok(body) => (
                    StatusCode::OK,
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    body,
                )
                    .into_response(),
                Err(e) => error_response(&SqsError::internal_error(format!(
                    "encoding the answer failed: {e}"
                ))),
            },
            Err(e) => error_response(&e),
        }
    }
}

fn error_response(e: &SqsError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = json!({ "__type": e.json_type(), "message": e.message });
    let mut resp = (
        status,
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&e.query_error_header()) {
        resp.headers_mut().insert("x-amzn-query-error", v);
    }
    resp
}

/// Whether a request is for the SQS API (its errors then take SQS's shape).
pub(crate) fn is_sqs_request(headers: &HeaderMap) -> bool {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("AmazonSQS."))
}

/// A refused signature in SQS's words (403; the query codes SQS answers with).
pub(crate) fn auth_error(e: &crate::sigv4::SigV4Error) -> Response {
    use crate::sigv4::SigV4Error as E;
    let code = match e {
        E::Missing => "MissingAuthenticationToken",
        E::Malformed(_) => "IncompleteSignature",
        E::UnknownAccessKey(_) => "InvalidClientTokenId",
        E::SignatureMismatch | E::PayloadHashMismatch | E::Expired(_) => "SignatureDoesNotMatch",
    };
    let mut resp = error_response(&SqsError {
        code,
        query_code: code,
        sender_fault: true,
        message: e.to_string(),
    });
    *resp.status_mut() = StatusCode::FORBIDDEN;
    resp
}

fn serialization(msg: impl Into<String>) -> SqsError {
    SqsError {
        code: "SerializationException",
        query_code: "SerializationException",
        sender_fault: true,
        message: msg.into(),
    }
}

/// `POST /`: one SQS operation named by `X-Amz-Target`.
pub async fn handle(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) else {
        let form = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let msg = if form {
            "Nimbus's queues speak SQS's AWS JSON 1.0 protocol (X-Amz-Target: AmazonSQS.<Operation>); the older query protocol (Action=...) is not supported: use botocore ≥ 1.34 or an SDK that sends JSON"
        } else {
            "the request has no X-Amz-Target header naming an operation (AmazonSQS.<Operation>)"
        };
        return error_response(&SqsError::invalid_action(msg));
    };
    let Some(op) = target.strip_prefix("AmazonSQS.") else {
        return error_response(&SqsError::invalid_action(target));
    };
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let api = Sqs {
        state: &state,
        host,
    };
    SqsReply(api.dispatch(op, &body).await).into_response()
}

struct Sqs<'a> {
    state: &'a ApiState,
    host: String,
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, SqsError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            serialization(format!("the request body is not valid JSON: {}", e.inner()))
        } else {
            serialization(format!("field {path}: {}", e.inner()))
        }
    })
}

fn required<T>(v: Option<T>, name: &str) -> Result<T, SqsError> {
    v.ok_or_else(|| SqsError::missing_parameter(name))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateQueue {
    queue_name: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default, rename = "tags")]
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QueueNameOnly {
    queue_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListQueues {
    queue_name_prefix: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QueueUrlOnly {
    queue_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetAttributes {
    queue_url: Option<String>,
    #[serde(default)]
    attribute_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SetAttributes {
    queue_url: Option<String>,
    attributes: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct MessageFields {
    message_body: Option<String>,
    delay_seconds: Option<i64>,
    #[serde(default)]
    message_attributes: BTreeMap<String, MessageAttributeValue>,
    #[serde(default)]
    message_system_attributes: BTreeMap<String, MessageAttributeValue>,
    message_deduplication_id: Option<String>,
    message_group_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendMessage {
    queue_url: Option<String>,
    #[serde(flatten)]
    message: MessageFields,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchEntry {
    id: Option<String>,
    #[serde(flatten)]
    message: MessageFields,
    receipt_handle: Option<String>,
    visibility_timeout: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Batch {
    queue_url: Option<String>,
    entries: Option<Vec<BatchEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveMessage {
    queue_url: Option<String>,
    #[serde(default)]
    attribute_names: Vec<String>,
    #[serde(default)]
    message_system_attribute_names: Vec<String>,
    #[serde(default)]
    message_attribute_names: Vec<String>,
    max_number_of_messages: Option<i64>,
    visibility_timeout: Option<i64>,
    wait_time_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Handle {
    queue_url: Option<String>,
    receipt_handle: Option<String>,
    visibility_timeout: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagQueue {
    queue_url: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    tag_keys: Option<Vec<String>>,
}

/// A send's entry in the engine's terms; the body's presence is checked here.
fn send_entry(m: MessageFields) -> Result<SendEntry, SqsError> {
    let body = required(m.message_body, "MessageBody")?;
    let delay_seconds = match m.delay_seconds {
        Some(d) => {
            sqs::check_range("DelaySeconds", d, 0, 900)?;
            Some(d as u32)
        }
        None => None,
    };
    Ok(SendEntry {
        body,
        attributes: m.message_attributes,
        system_attributes: m.message_system_attributes,
        delay_seconds,
        group_id: m.message_group_id,
        dedup_id: m.message_deduplication_id,
    })
}

fn send_result_json(r: &nimbus_events::queues::SendResult, id: Option<&str>) -> Value {
    let mut o = Map::new();
    if let Some(id) = id {
        o.insert("Id".into(), id.into());
    }
    o.insert("MessageId".into(), r.message_id.clone().into());
    o.insert("MD5OfMessageBody".into(), r.md5_body.clone().into());
    if let Some(m) = &r.md5_attributes {
        o.insert("MD5OfMessageAttributes".into(), m.clone().into());
    }
    if let Some(m) = &r.md5_system_attributes {
        o.insert("MD5OfMessageSystemAttributes".into(), m.clone().into());
    }
    if let Some(s) = &r.sequence_number {
        o.insert("SequenceNumber".into(), s.clone().into());
    }
    Value::Object(o)
}

fn failed_json(id: &str, e: &SqsError) -> Value {
    json!({"Id": id, "SenderFault": e.sender_fault, "Code": e.code, "Message": e.message})
}

/// Batch entries: 1–10 of them with valid, distinct ids.
fn check_batch(entries: &Option<Vec<BatchEntry>>) -> Result<Vec<String>, SqsError> {
    let Some(entries) = entries else {
        return Err(SqsError::missing_parameter("Entries"));
    };
    if entries.is_empty() {
        return Err(SqsError::empty_batch_request());
    }
    if entries.len() > 10 {
        return Err(SqsError::too_many_entries_in_batch_request(entries.len()));
    }
    let ids = entries
        .iter()
        .map(|e| required(e.id.clone(), "Id"))
        .collect::<Result<Vec<_>, _>>()?;
    sqs::validate_batch_ids(ids.iter().map(String::as_str))?;
    Ok(ids)
}

/// Whether a message attribute named `name` was asked for (`All`, `.*`, a name, or `prefix.*`).
fn wanted(names: &[String], name: &str) -> bool {
    names.iter().any(|n| {
        n == "All"
            || n == ".*"
            || n == name
            || n.strip_suffix(".*").is_some_and(|prefix| {
                name.starts_with(prefix) && name[prefix.len()..].starts_with('.')
            })
    })
}

fn message_json(m: Received, system_names: &[String], attr_names: &[String]) -> Value {
    let mut o = Map::new();
    o.insert("MessageId".into(), m.message_id.into());
    o.insert("ReceiptHandle".into(), m.receipt_handle.into());
    o.insert("MD5OfBody".into(), m.md5_body.into());
    o.insert("Body".into(), m.body.into());
    let all = system_names.iter().any(|n| n == "All");
    let system: Map<String, Value> = m
        .system
        .into_iter()
        .filter(|(k, _)| all || system_names.iter().any(|n| n == k))
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    if !system.is_empty() {
        o.insert("Attributes".into(), Value::Object(system));
    }
    let attrs: BTreeMap<String, MessageAttributeValue> = m
        .attributes
        .into_iter()
        .filter(|(k, _)| wanted(attr_names, k))
        .collect();
    if !attrs.is_empty() {
        // The digest covers exactly the attributes returned (botocore checks it).
        o.insert(
            "MD5OfMessageAttributes".into(),
            sqs::md5_of_attributes(&attrs).into(),
        );
        o.insert(
            "MessageAttributes".into(),
            serde_json::to_value(&attrs).unwrap_or(Value::Null),
        );
    }
    Value::Object(o)
}

impl Sqs<'_> {
    fn url(&self, name: &str) -> String {
        format!("http://{}/{}/{name}", self.host, nimbus_core::ACCOUNT_ID)
    }

    /// The queue a QueueUrl names (its last path segment); the queue must exist.
    async fn queue_name(&self, url: Option<String>) -> Result<String, SqsError> {
        let url = required(url, "QueueUrl")?;
        let path = url
            .split_once("://")
            .map(|(_, rest)| rest.split_once('/').map(|(_, p)| p).unwrap_or(""))
            .unwrap_or(url.as_str());
        let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        if name.is_empty() || sqs::validate_queue_name(name).is_err() {
            return Err(SqsError {
                message: format!("The specified queue does not exist: {url:?} does not name a queue (expected http://<host>/<account>/<queue name>)"),
                ..SqsError::queue_does_not_exist()
            });
        }
        self.state.queues.queue(name).await?;
        Ok(name.to_string())
    }

    async fn dispatch(&self, op: &str, body: &[u8]) -> Result<Value, SqsError> {
        let q = &self.state.queues;
        match op {
            "CreateQueue" => {
                let r: CreateQueue = parse(body)?;
                let name = required(r.queue_name, "QueueName")?;
                q.create_queue(&name, &r.attributes, r.tags).await?;
                Ok(json!({"QueueUrl": self.url(&name)}))
            }
            "GetQueueUrl" => {
                let r: QueueNameOnly = parse(body)?;
                let name = required(r.queue_name, "QueueName")?;
                q.queue(&name).await?;
                Ok(json!({"QueueUrl": self.url(&name)}))
            }
            "ListQueues" => {
                let r: ListQueues = parse(body)?;
                if let Some(m) = r.max_results {
                    sqs::check_range("MaxResults", m, 1, 1000)?;
                }
                let names = q.list(r.queue_name_prefix.as_deref().unwrap_or("")).await?;
                // The token is the last name returned; names are listed in order.
                let start = match &r.next_token {
                    Some(t) => names.partition_point(|n| n.as_str() <= t.as_str()),
                    None => 0,
                };
                let limit = r.max_results.map(|m| m as usize).unwrap_or(1000);
                let page: Vec<&String> = names[start..].iter().take(limit).collect();
                let mut out = Map::new();
                if !page.is_empty() {
                    out.insert(
                        "QueueUrls".into(),
                        page.iter().map(|n| Value::String(self.url(n))).collect(),
                    );
                }
                if r.max_results.is_some() && start + page.len() < names.len() {
                    if let Some(last) = page.last() {
                        out.insert("NextToken".into(), (*last).clone().into());
                    }
                }
                Ok(Value::Object(out))
            }
            "GetQueueAttributes" => {
                let r: GetAttributes = parse(body)?;
                let name = self.queue_name(r.queue_url).await?;
                for n in &r.attribute_names {
                    if n != "All" && !sqs::is_known_attribute_name(n) {
                        return Err(SqsError::invalid_attribute_name(n));
                    }
                }
                if r.attribute_names.is_empty() {
                    return Ok(json!({}));
                }
                let all = q.attributes(&name).await?;
                let everything = r.attribute_names.iter().any(|n| n == "All");
                let picked: Map<String, Value> = all
                    .into_iter()
                    .filter(|(k, _)| everything || r.attribute_names.contains(k))
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                Ok(json!({"Attributes": picked}))
            }
            "SetQueueAttributes" => {
                let r: SetAttributes = parse(body)?;
                let name = self.queue_name(r.queue_url).await?;
                let attrs = required(r.attributes, "Attributes")?;
                q.set_attributes(&name, &attrs).await?;
                Ok(json!({}))
            }
            "SendMessage" => {
                let r: SendMessage = parse(body)?;
                let name = self.queue_name(r.queue_url).await?;
                let entry = send_entry(r.message)?;
                let mut out = q.send(&name, vec![entry]).await?;
                match out.pop() {
                    Some(Ok(sent)) => Ok(send_result_json(&sent, None)),
                    Some(Err(e)) => Err(e),
                    None => Err(SqsError::invalid_parameter_value("nothing was sent")),
                }
            }
            "SendMessageBatch" => {
                let r: Batch = parse(body)?;
                let name = self.queue_name(r.queue_url).await?;
                let ids = check_batch(&r.entries)?;
                let entries = r.entries.unwrap_or_default();
                let total: usize = entries
                    .iter()
                    .map(|e| {
                        sqs::message_size(
                            e.message.message_body.as_deref().unwrap_or(""),
                            &e.message.message_attributes,
                        )
                    })
                    .sum();
                if total > MAX_BATCH_BYTES {
                    return Err(SqsError::batch_request_too_long(total));
                }
                let mut failed = Vec::new();
                let mut good_ids = Vec::new();
                let mut good = Vec::new();
                for (id, e) in ids.iter().zip(entries) {
                    match send_entry(e.message) {
                        Ok(entry) => {
                            good_ids.push(id.clone());
                            good.push(entry);
                        }
                        Err(err) => failed.push(failed_json(id, &err)),
                    }
                }
                let results = q.send(&name, good).await?;
                let mut successful = Vec::new();
                for (id, r) in good_ids.iter().zip(results) {
                    match r {
                        Ok(sent) => successful.push(send_result_json(&sent, Some(id))),
                        Err(err) => failed.push(failed_json(id, &err)),
                    }
                }
                Ok(json!({"Successful": successful, "Failed": failed}))
            }
            "ReceiveMessage" => {
                let r: ReceiveMessage = parse(body)?;
                let name = self.queue_name(r.queue_url).await?;
                let max = r.max_number_of_messages.unwrap_or(1);
                sqs::check_range("MaxNumberOfMessages", max, 1, 10)?;
                if let Some(v) = r.visibility_timeout {
                    sqs::check_range("VisibilityTimeout", v, 0, 43_200)?;
                }
                if let Some(w) = r.wait_time_seconds {
                    sqs::check_range("WaitTimeSeconds", w, 0, 20)?;
                }
                let opts = ReceiveOptions {
                    max: max as usize,
                    wait_seconds: r.wait_time_seconds.map(|w| w as u32),
                    visibility_timeout: r.visibility_timeout.map(|v| v as u32),
                };
                let got = q.receive(&name, opts).await?;
                let mut system_names = r.attribute_names;
                system_names.extend(r.message_system_attribute_names);
                if system_names.iter().any(|n| n == "All") {
                    system_names = vec!["All".into()];
                }
                if got.is_empty() {
                    return Ok(json!({}));
                }
                let messages: Vec<Value> = got
                    .into_iter()
                    .map(|m| message_json(m, &system_names, &r.message_attribute_names))
                    .collect();
                Ok(json!({"Messages": messages}))
            }
            "DeleteMessage" => {
                let r: Handle = parse(body)?;
                let name = self.queue_name(r.queue_url).await?;
                let handle = required(r.receipt_handle, "ReceiptHandle")?;
                let mut out = q.delete(&name, &[handle]).await?;
                out.pop().unwrap_or(Ok(()))?;
                Ok(json!({}))
            }
            "DeleteMessageBatch" => {
                let r: Batch = parse(body)?;
                let name = self.queue_name(r.queue_url).await?;
                let ids = check_batch(&r.entries)?;
                let entries = r.entries.unwrap_or_default();
                let mut failed = Vec::new();
                let mut handle_ids = Vec::new();
                let mut handles = Vec::new();
                for (id, e) in ids.iter().zip(entries) {
                    match e.receipt_handle {
                        Some(h) => {
                            handle_ids.push(id.clone());
                            handles.push(h);
                        }
                        None => failed.push(failed_json(
                            id,
                            &SqsError::missing_parameter("ReceiptHandle"),
                        )),
                    }
                }
                let results = q.delete(&name, &handles).await?;
                let mut successful = Vec::new();
                for (id, r) in handle_ids.iter().zip(results) {
                    match r {
                        Ok(()) => successful.push(json!({"Id": id})),
                        Err(err) => failed.push(failed_json(id, &err)),
                    }
                }
                Ok(json!({"Successful": successful, "Failed": failed}))
            }
            "ChangeMessageVisibility" => {
                let r: Handle = parse(body)?;
                let name = self.queue_name(r.queue_url).await?;
                let handle = required(r.receipt_handle, "ReceiptHandle")?;
                let v = required(r.visibility_timeout, "VisibilityTimeout")?;
                sqs::check_range("VisibilityTimeout", v, 0, 43_200)?;
                let mut out = q.change_visibility(&name, &[(handle, v as u32)]).await?;
                out.pop().unwrap_or(Ok(()))?;
                Ok(json!({}))
            }
            "ChangeMessageVisibilityBatch" => {
                let r: Batch = parse(body)?;
                let name = self.queue_name(r.queue_url).await?;
                let ids = check_batch(&r.entries)?;
                let entries = r.entries.unwrap_or_default();
                let mut failed = Vec::new();
                let mut ok_ids = Vec::new();
                let mut changes = Vec::new();
                for (id, e) in ids.iter().zip(entries) {
                    let checked = required(e.receipt_handle, "ReceiptHandle").and_then(|h| {
                        let v = required(e.visibility_timeout, "VisibilityTimeout")?;
                        sqs::check_range("VisibilityTimeout", v, 0, 43_200)?;
                        Ok((h, v as u32))
                    });
                    match checked {
                        Ok(c) => {
                            ok_ids.push(id.clone());
                            changes.push(c);
                        }
                        Err(err) => failed.push(failed_json(id, &err)),
                    }
                }
                let results = q.change_visibility(&name, &changes).await?;
                let mut successful = Vec::new();
                for (id, r) in ok_ids.iter().zip(results) {
                    match r {
                        Ok(()) => successful.push(json!({"Id": id})),
                        Err(err) => failed.push(failed_json(id, &err)),
                    }
                }
                Ok(json!({"Successful": successful, "Failed": failed}))
            }
            "PurgeQueue" => {
                let r: QueueUrlOnly = parse(body)?;
                let name = self.queue_name(r.queue_url).await?;
                q.purge(&name).await?;
                Ok(json!({}))
            }
            "DeleteQueue" => {
                let r: QueueUrlOnly = parse(body)?;
                let name = self.queue_name(r.queue_url).await?;
                q.delete_queue(&name).await?;
                Ok(json!({}))
            }
            "TagQueue" | "UntagQueue" | "ListQueueTags" => {
                let r: TagQueue = parse(body)?;
                let name = self.queue_name(r.queue_url).await?;
                let mut tags = q.queue(&name).await?.tags.clone();
                match op {
                    "TagQueue" => {
                        tags.extend(required(r.tags, "Tags")?);
                        if tags.len() > 50 {
                            return Err(SqsError::invalid_parameter_value(
                                "Too many tags: a queue has at most 50",
                            ));
                        }
                        q.set_tags(&name, tags).await?;
                        Ok(json!({}))
                    }
                    "UntagQueue" => {
                        for k in required(r.tag_keys, "TagKeys")? {
                            tags.remove(&k);
                        }
                        q.set_tags(&name, tags).await?;
                        Ok(json!({}))
                    }
                    _ if tags.is_empty() => Ok(json!({})),
                    _ => Ok(json!({"Tags": tags})),
                }
            }
            "ListDeadLetterSourceQueues" => {
                let r: QueueUrlOnly = parse(body)?;
                let name = self.queue_name(r.queue_url).await?;
                let arn = sqs::queue_arn(&name);
                let mut urls = Vec::new();
                for n in q.list("").await? {
                    let info = q.queue(&n).await?;
                    if info
                        .attributes
                        .redrive_policy
                        .as_ref()
                        .is_some_and(|p| p.dead_letter_target_arn == arn)
                    {
                        urls.push(Value::String(self.url(&n)));
                    }
                }
                Ok(json!({"queueUrls": urls}))
            }
            other => Err(SqsError::invalid_action(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_attribute_names_select_by_name_prefix_or_all() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for (asked, name, want) in [
            (names(&["All"]), "a", true),
            (names(&[".*"]), "a", true),
            (names(&["a"]), "a", true),
            (names(&["a"]), "ab", false),
            (names(&["bar.*"]), "bar.x", true),
            (names(&["bar.*"]), "barx", false),
            (names(&[]), "a", false),
        ] {
            assert_eq!(wanted(&asked, name), want, "{asked:?} {name}");
        }
    }
}
