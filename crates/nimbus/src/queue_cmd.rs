//! `nimbus queue ...`: the built-in queues through SQS's JSON protocol, and the event source
//! mappings that feed them to functions through the Lambda API.

use anyhow::{anyhow, bail};
use nimbus_client::{Client, ClientError};
use serde_json::{json, Map, Value};
use tokio::io::AsyncReadExt;

use crate::cli::{Global, QueueAttachArgs, QueueCommand, QueueReceiveArgs, QueueSendArgs};
use crate::commands::{key_values, print_json, s};
use crate::table;

/// SQS's query error code for a queue that does not exist.
const NON_EXISTENT_QUEUE: &str = "AWS.SimpleQueueService.NonExistentQueue";

/// A failed SQS call as a sentence: "queue X does not exist" for SQS's NonExistentQueue.
fn queue_error(name: &str) -> impl FnOnce(ClientError) -> anyhow::Error + '_ {
    move |e| match e {
        ClientError::Api { code, .. } if code == NON_EXISTENT_QUEUE => {
            anyhow!("queue {name} does not exist (`nimbus queue ls` lists the queues)")
        }
        other => other.into(),
    }
}

/// One SQS operation on queue `name`, whose URL goes in as `QueueUrl`.
async fn on_queue(
    client: &Client,
    name: &str,
    url: &str,
    op: &str,
    mut input: Value,
) -> anyhow::Result<Value> {
    input["QueueUrl"] = json!(url);
    client.sqs(op, &input).await.map_err(queue_error(name))
}

async fn url_of(client: &Client, name: &str) -> anyhow::Result<String> {
    client.queue_url(name).await.map_err(queue_error(name))
}

/// Every attribute of a queue (GetQueueAttributes with `All`).
async fn attributes(client: &Client, name: &str, url: &str) -> anyhow::Result<Map<String, Value>> {
    let v = on_queue(
        client,
        name,
        url,
        "GetQueueAttributes",
        json!({ "AttributeNames": ["All"] }),
    )
    .await?;
    Ok(v["Attributes"].as_object().cloned().unwrap_or_default())
}

/// The last `/`- or `:`-separated part of a queue URL or ARN: the queue's name.
fn last_part(s: &str, sep: char) -> String {
    s.trim_end_matches(sep)
        .rsplit(sep)
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The DLQ column: the dead-letter queue a RedrivePolicy names and after how many receives.
fn dead_letter(attrs: &Map<String, Value>) -> String {
    let Some(policy) = attrs
        .get("RedrivePolicy")
        .and_then(Value::as_str)
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
    else {
        return "-".into();
    };
    let target = last_part(&s(&policy, "deadLetterTargetArn"), ':');
    format!("{target} after {} receives", s(&policy, "maxReceiveCount"))
}

/// The function a mapping's FunctionArn names, with its qualifier if it has one.
fn function_of(arn: &str) -> String {
    arn.split_once(":function:")
        .map(|(_, f)| f.to_string())
        .unwrap_or_else(|| arn.to_string())
}

/// A body as one table cell: as it is, or quoted and escaped when it holds line breaks or
/// other control characters (`--json` shows it exactly).
fn body_cell(body: &str) -> String {
    if body.chars().any(char::is_control) {
        Value::String(body.to_string()).to_string()
    } else {
        body.to_string()
    }
}

pub async fn run(client: &Client, global: &Global, cmd: QueueCommand) -> anyhow::Result<()> {
    match cmd {
        QueueCommand::Create { name, attrs, tags } => {
            let mut attrs = key_values("attr", &attrs)?;
            let tags = key_values("tag", &tags)?;
            if nimbus_core::sqs::is_fifo_name(&name) && !attrs.contains_key("FifoQueue") {
                attrs.insert("FifoQueue".into(), json!("true"));
            }
            let mut input = json!({ "QueueName": name });
            if !attrs.is_empty() {
                input["Attributes"] = Value::Object(attrs);
            }
            if !tags.is_empty() {
                input["tags"] = Value::Object(tags);
            }
            let v = client.sqs("CreateQueue", &input).await?;
            if global.json {
                print_json(&v);
            } else {
                outln!("created queue {name}: {}", s(&v, "QueueUrl"));
            }
            Ok(())
        }
        QueueCommand::Ls { prefix } => ls(client, global, prefix.as_deref()).await,
        QueueCommand::Attrs { name, set } => {
            let set = key_values("set", &set)?;
            let url = url_of(client, &name).await?;
            if !set.is_empty() {
                on_queue(
                    client,
                    &name,
                    &url,
                    "SetQueueAttributes",
                    json!({ "Attributes": set }),
                )
                .await?;
            }
            let attrs = attributes(client, &name, &url).await?;
            if global.json {
                print_json(&Value::Object(attrs));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = attrs
                .iter()
                .map(|(k, v)| {
                    let mut shown = v.as_str().unwrap_or_default().to_string();
                    // Epoch seconds, which SQS returns, also as a time a reader can take in.
                    if k.ends_with("Timestamp") {
                        if let Ok(secs) = shown.parse::<i64>() {
                            shown = format!(
                                "{shown} ({})",
                                nimbus_telemetry::utc_timestamp(secs * 1000, "Z")
                            );
                        }
                    }
                    vec![k.clone(), shown]
                })
                .collect();
            table::print(&["ATTRIBUTE", "VALUE"], &rows);
            Ok(())
        }
        QueueCommand::Rm { name } => {
            let url = url_of(client, &name).await?;
            on_queue(client, &name, &url, "DeleteQueue", json!({})).await?;
            outln!("deleted queue {name}");
            // Mappings outlive their queue (as in Lambda); say which ones now read nothing.
            let arn = nimbus_core::sqs::queue_arn(&name);
            if let Ok(left) = client.list_event_source_mappings(Some(&arn)).await {
                for m in left {
                    eprintln!(
                        "note: event source mapping {} still reads {name}; `nimbus queue detach {}` removes it",
                        s(&m, "UUID"),
                        s(&m, "UUID")
                    );
                }
            }
            Ok(())
        }
        QueueCommand::Purge { name } => {
            let url = url_of(client, &name).await?;
            on_queue(client, &name, &url, "PurgeQueue", json!({})).await?;
            outln!("purged queue {name}");
            Ok(())
        }
        QueueCommand::Send(a) => send(client, global, a).await,
        QueueCommand::Receive(a) => receive(client, global, a).await,
        QueueCommand::Attach(a) => attach(client, global, a).await,
        QueueCommand::Mappings { name } => mappings(client, global, name.as_deref()).await,
        QueueCommand::Detach { uuid } => {
            let m = client
                .delete_event_source_mapping(&uuid)
                .await
                .map_err(|e| match e {
                    ClientError::Api { status: 404, .. } => anyhow!(
                        "no event source mapping has the UUID {uuid} (`nimbus queue mappings` lists them)"
                    ),
                    other => other.into(),
                })?;
            if global.json {
                print_json(&m);
            } else {
                outln!(
                    "detached {uuid}: queue {} no longer feeds {}",
                    last_part(&s(&m, "EventSourceArn"), ':'),
                    function_of(&s(&m, "FunctionArn"))
                );
            }
            Ok(())
        }
    }
}

async fn ls(client: &Client, global: &Global, prefix: Option<&str>) -> anyhow::Result<()> {
    let mut urls = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut input = json!({ "MaxResults": 1000 });
        if let Some(p) = prefix {
            input["QueueNamePrefix"] = json!(p);
        }
        if let Some(t) = &token {
            input["NextToken"] = json!(t);
        }
        let page = client.sqs("ListQueues", &input).await?;
        if let Some(list) = page["QueueUrls"].as_array() {
            urls.extend(list.iter().filter_map(Value::as_str).map(str::to_string));
        }
        match page["NextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    let mut queues = Vec::new();
    for url in urls {
        let name = last_part(&url, '/');
        let input = json!({ "QueueUrl": url, "AttributeNames": ["All"] });
        match client.sqs("GetQueueAttributes", &input).await {
            Ok(v) => queues.push(json!({
                "QueueName": name,
                "QueueUrl": url,
                "Attributes": v.get("Attributes").cloned().unwrap_or_else(|| json!({})),
            })),
            // Deleted since it was listed.
            Err(ClientError::Api { code, .. }) if code == NON_EXISTENT_QUEUE => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if global.json {
        print_json(&Value::Array(queues));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            let a = &q["Attributes"];
            vec![
                s(q, "QueueName"),
                s(a, "ApproximateNumberOfMessages"),
                s(a, "ApproximateNumberOfMessagesNotVisible"),
                s(a, "ApproximateNumberOfMessagesDelayed"),
                dead_letter(a.as_object().unwrap_or(&Map::new())),
                s(q, "QueueUrl"),
            ]
        })
        .collect();
    table::print(
        &["NAME", "MESSAGES", "IN FLIGHT", "DELAYED", "DLQ", "URL"],
        &rows,
    );
    Ok(())
}

async fn send(client: &Client, global: &Global, a: QueueSendArgs) -> anyhow::Result<()> {
    if nimbus_core::sqs::is_fifo_name(&a.name) && a.group.is_none() {
        bail!(
            "{} is a FIFO queue: give the message a group with --group GROUP",
            a.name
        );
    }
    let attrs: Map<String, Value> = key_values("attr", &a.attrs)?
        .into_iter()
        .map(|(k, v)| (k, json!({ "DataType": "String", "StringValue": v })))
        .collect();
    let body = if a.body == "-" {
        let mut bytes = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| anyhow!("reading the message body from standard input: {e}"))?;
        String::from_utf8(bytes)
            .map_err(|_| anyhow!("the message body on standard input is not UTF-8 text"))?
    } else {
        a.body
    };
    let url = url_of(client, &a.name).await?;
    let mut input = json!({ "MessageBody": body });
    if let Some(g) = a.group {
        input["MessageGroupId"] = json!(g);
    }
    if let Some(d) = a.dedup {
        input["MessageDeduplicationId"] = json!(d);
    }
    if let Some(d) = a.delay {
        input["DelaySeconds"] = json!(d);
    }
    if !attrs.is_empty() {
        input["MessageAttributes"] = Value::Object(attrs);
    }
    let v = on_queue(client, &a.name, &url, "SendMessage", input).await?;
    if global.json {
        print_json(&v);
    } else {
        outln!("{}", s(&v, "MessageId"));
    }
    Ok(())
}

async fn receive(client: &Client, global: &Global, a: QueueReceiveArgs) -> anyhow::Result<()> {
    let url = url_of(client, &a.name).await?;
    let mut input = json!({
        "MaxNumberOfMessages": a.max,
        "MessageSystemAttributeNames": ["All"],
        "MessageAttributeNames": ["All"],
    });
    if let Some(w) = a.wait {
        input["WaitTimeSeconds"] = json!(w);
    }
    if let Some(v) = a.visibility {
        input["VisibilityTimeout"] = json!(v);
    }
    let got = on_queue(client, &a.name, &url, "ReceiveMessage", input).await?;
    let messages = got["Messages"].as_array().cloned().unwrap_or_default();
    if global.json {
        print_json(&Value::Array(messages.clone()));
    } else if messages.is_empty() {
        outln!("no messages in {}", a.name);
    } else {
        let rows: Vec<Vec<String>> = messages
            .iter()
            .map(|m| {
                vec![
                    s(m, "MessageId"),
                    s(&m["Attributes"], "ApproximateReceiveCount"),
                    body_cell(&s(m, "Body")),
                ]
            })
            .collect();
        table::print(&["ID", "RECEIVES", "BODY"], &rows);
    }
    if !a.delete || messages.is_empty() {
        return Ok(());
    }
    let entries: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| json!({ "Id": i.to_string(), "ReceiptHandle": s(m, "ReceiptHandle") }))
        .collect();
    let done = on_queue(
        client,
        &a.name,
        &url,
        "DeleteMessageBatch",
        json!({ "Entries": entries }),
    )
    .await?;
    let failed = done["Failed"].as_array().cloned().unwrap_or_default();
    if let Some(f) = failed.first() {
        let id = s(f, "Id")
            .parse::<usize>()
            .ok()
            .and_then(|i| messages.get(i))
            .map(|m| s(m, "MessageId"))
            .unwrap_or_default();
        bail!(
            "{} of the {} messages were not deleted; message {id}: {}: {}",
            failed.len(),
            messages.len(),
            s(f, "Code"),
            s(f, "Message")
        );
    }
    if !global.json {
        outln!(
            "deleted {} message{}",
            messages.len(),
            if messages.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

async fn attach(client: &Client, global: &Global, a: QueueAttachArgs) -> anyhow::Result<()> {
    let url = url_of(client, &a.name).await?;
    let on = on_queue(
        client,
        &a.name,
        &url,
        "GetQueueAttributes",
        json!({ "AttributeNames": ["QueueArn"] }),
    )
    .await?;
    let mut body = json!({
        "EventSourceArn": s(&on["Attributes"], "QueueArn"),
        "FunctionName": a.function,
        "Enabled": !a.disabled,
    });
    if let Some(n) = a.batch_size {
        body["BatchSize"] = json!(n);
    }
    if let Some(w) = a.window {
        body["MaximumBatchingWindowInSeconds"] = json!(w);
    }
    if let Some(c) = a.concurrency {
        body["ScalingConfig"] = json!({ "MaximumConcurrency": c });
    }
    if a.report_failures {
        body["FunctionResponseTypes"] = json!(["ReportBatchItemFailures"]);
    }
    let m = client.create_event_source_mapping(&body).await?;
    if global.json {
        print_json(&m);
    } else {
        outln!("{}", s(&m, "UUID"));
    }
    Ok(())
}

async fn mappings(client: &Client, global: &Global, name: Option<&str>) -> anyhow::Result<()> {
    let arn = name.map(nimbus_core::sqs::queue_arn);
    let list = client.list_event_source_mappings(arn.as_deref()).await?;
    if let (Some(name), true) = (name, list.is_empty()) {
        // No mappings: say so plainly when the reason is that the queue does not exist.
        url_of(client, name).await?;
    }
    if global.json {
        print_json(&Value::Array(list));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|m| {
            vec![
                s(m, "UUID"),
                last_part(&s(m, "EventSourceArn"), ':'),
                function_of(&s(m, "FunctionArn")),
                s(m, "BatchSize"),
                format!("{} s", s(m, "MaximumBatchingWindowInSeconds")),
                s(m, "State"),
                s(m, "LastProcessingResult"),
            ]
        })
        .collect();
    table::print(
        &[
            "UUID",
            "QUEUE",
            "FUNCTION",
            "BATCH",
            "WINDOW",
            "STATE",
            "LAST RESULT",
        ],
        &rows,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_urls_arns_and_function_arns() {
        assert_eq!(
            last_part("http://127.0.0.1:9070/000000000000/jobs.fifo", '/'),
            "jobs.fifo"
        );
        assert_eq!(
            last_part("arn:aws:sqs:us-east-1:000000000000:jobs", ':'),
            "jobs"
        );
        assert_eq!(
            function_of("arn:aws:lambda:us-east-1:000000000000:function:f:live"),
            "f:live"
        );
        assert_eq!(
            function_of("arn:aws:lambda:us-east-1:000000000000:function:f"),
            "f"
        );
    }

    #[test]
    fn the_dlq_column_names_the_target_and_its_receive_count() {
        let mut attrs = Map::new();
        assert_eq!(dead_letter(&attrs), "-");
        attrs.insert(
            "RedrivePolicy".into(),
            json!(r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dead","maxReceiveCount":3}"#),
        );
        assert_eq!(dead_letter(&attrs), "dead after 3 receives");
    }

    #[test]
    fn bodies_with_line_breaks_are_escaped_in_the_table() {
        assert_eq!(body_cell("plain text"), "plain text");
        assert_eq!(body_cell("a\nb"), r#""a\nb""#);
    }
}
