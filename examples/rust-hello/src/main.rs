//! A Rust function for Nimbus's `provided` runtime, written against AWS's own `lambda_runtime`
//! crate unchanged: zip `target/debug/bootstrap` (or the release build) and deploy it with
//! runtime `provided`. It greets the event's `name`, echoes the context, and fails on demand
//! (`{"fail": "message"}`) so the error path can be seen too.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    fail: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    message: String,
    runtime: &'static str,
    request_id: String,
    function_arn: String,
    deadline_ms: u64,
}

async fn handler(event: LambdaEvent<Request>) -> Result<Response, Error> {
    let (req, ctx) = event.into_parts();
    if let Some(message) = req.fail {
        return Err(message.into());
    }
    let name = req.name.unwrap_or_else(|| "world".to_string());
    println!("hello from rust, {name}");
    Ok(Response {
        message: format!("Hello, {name}!"),
        runtime: "rust",
        request_id: ctx.request_id,
        function_arn: ctx.invoked_function_arn,
        deadline_ms: ctx.deadline,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
