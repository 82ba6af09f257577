//! A typed client of the Nimbus API. It speaks the same Lambda REST API boto3 does, plus
//! Nimbus's own `/nimbus/v1` endpoints, and turns every failure into one clear sentence.

pub mod archive;

use base64::Engine;
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// Characters left as they are in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached at all.
    #[error(
        "cannot reach the Nimbus server at {endpoint}: {detail}. Is `nimbus up` running there?"
    )]
    Unreachable { endpoint: String, detail: String },
    /// The server answered with an error in Lambda's shape.
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// The result of a synchronous invoke.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub status: u16,
    pub payload: Bytes,
    pub function_error: Option<String>,
    pub executed_version: Option<String>,
    pub log_tail: Option<String>,
    pub request_id: Option<String>,
}

#[derive(Clone)]
pub struct Client {
    endpoint: String,
    http: reqwest::Client,
    /// When set, every request is signed with SigV4 (for servers started with credentials).
    credentials: Option<nimbus_sigv4::Credentials>,
}

impl Client {
    pub fn new(endpoint: &str) -> Client {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let endpoint = if endpoint.contains("://") {
            endpoint
        } else {
            format!("http://{endpoint}")
        };
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Client {
            endpoint,
            http,
            credentials: None,
        }
    }

    /// Signs every request with these credentials (AWS Signature Version 4).
    pub fn with_credentials(mut self, access_key_id: &str, secret_access_key: &str) -> Client {
        self.credentials = Some(nimbus_sigv4::Credentials {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
        });
        self
    }

    fn sign(&self, req: &mut reqwest::Request) {
        self.sign_for(req, "lambda")
    }

    fn sign_for(&self, req: &mut reqwest::Request, service: &str) {
        let Some(creds) = &self.credentials else {
            return;
        };
        let url = req.url().clone();
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => return,
        };
        if let Ok(v) = reqwest::header::HeaderValue::from_str(&host) {
            req.headers_mut().insert(reqwest::header::HOST, v);
        }
        let body = req
            .body()
            .and_then(|b| b.as_bytes())
            .unwrap_or_default()
            .to_vec();
        let method = req.method().as_str().to_string();
        nimbus_sigv4::sign(
            &method,
            url.path(),
            url.query().unwrap_or(""),
            req.headers_mut(),
            &body,
            creds,
            "us-east-1",
            service,
            std::time::SystemTime::now(),
        );
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        let detail = if e.is_connect() {
            "connection refused".to_string()
        } else if e.is_timeout() {
            "timed out".to_string()
        } else {
            e.to_string()
        };
        ClientError::Unreachable {
            endpoint: self.endpoint.clone(),
            detail,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let mut req = req
            .build()
            .map_err(|e| ClientError::Other(format!("could not build the request: {e}")))?;
        self.sign(&mut req);
        let resp = self
            .http
            .execute(req)
            .await
            .map_err(|e| self.unreachable(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let code = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("Error")
            .to_string();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("Message")
                    .or_else(|| v.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or(text);
        Err(ClientError::Api {
            status,
            code,
            message,
        })
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let resp = self.send(req).await?;
        if resp.status().as_u16() == 204 {
            return Ok(Value::Null);
        }
        let text = resp.text().await.map_err(|e| self.unreachable(e))?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            ClientError::Other(format!("the server sent a reply that is not JSON: {e}"))
        })
    }

    pub async fn health(&self) -> Result<()> {
        self.send(self.http.get(self.url("/healthz")))
            .await
            .map(|_| ())
    }

    /// CreateFunction with a zip archive. `config` holds Runtime, Handler, MemorySize, ... in
    /// Lambda's spelling.
    pub async fn create_function(
        &self,
        name: &str,
        zip: &[u8],
        mut config: Value,
    ) -> Result<Value> {
        config["FunctionName"] = name.into();
        config["Code"] =
            serde_json::json!({ "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) });
        if config.get("Role").is_none() {
            config["Role"] = "arn:aws:iam::000000000000:role/nimbus".into();
        }
        self.json(
            self.http
                .post(self.url("/2015-03-31/functions"))
                .json(&config),
        )
        .await
    }

    pub async fn update_code(&self, name: &str, zip: &[u8]) -> Result<Value> {
        let body =
            serde_json::json!({ "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) });
        self.json(
            self.http
                .put(self.url(&format!("/2015-03-31/functions/{}/code", seg(name))))
                .json(&body),
        )
        .await
    }

    pub async fn update_configuration(&self, name: &str, config: &Value) -> Result<Value> {
        self.json(
            self.http
                .put(self.url(&format!(
                    "/2015-03-31/functions/{}/configuration",
                    seg(name)
                )))
                .json(config),
        )
        .await
    }

    pub async fn get_function(&self, name: &str, qualifier: Option<&str>) -> Result<Value> {
        let mut req = self
            .http
            .get(self.url(&format!("/2015-03-31/functions/{}", seg(name))));
        if let Some(q) = qualifier {
            req = req.query(&[("Qualifier", q)]);
        }
        self.json(req).await
    }

    /// Every item under `key` of a Lambda listing at `path` with `query`, following
    /// `NextMarker` page by page.
    async fn all_pages(&self, path: &str, query: &[(&str, &str)], key: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut req = self.http.get(self.url(path)).query(query);
            if let Some(m) = &marker {
                req = req.query(&[("Marker", m)]);
            }
            let page = self.json(req).await?;
            if let Some(items) = page.get(key).and_then(Value::as_array) {
                out.extend(items.iter().cloned());
            }
            match page.get("NextMarker").and_then(Value::as_str) {
                Some(m) if !m.is_empty() => marker = Some(m.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// Every function.
    pub async fn list_functions(&self) -> Result<Vec<Value>> {
        self.all_pages(
            "/2015-03-31/functions/",
            &[("MaxItems", "1000")],
            "Functions",
        )
        .await
    }

    pub async fn delete_function(&self, name: &str) -> Result<()> {
        self.json(
            self.http
                .delete(self.url(&format!("/2015-03-31/functions/{}", seg(name)))),
        )
        .await
        .map(|_| ())
    }

    pub async fn publish_version(&self, name: &str, description: Option<&str>) -> Result<Value> {
        let mut body = serde_json::json!({});
        if let Some(d) = description {
            body["Description"] = d.into();
        }
        self.json(
            self.http
                .post(self.url(&format!("/2015-03-31/functions/{}/versions", seg(name))))
                .json(&body),
        )
        .await
    }

    pub async fn list_versions(&self, name: &str) -> Result<Vec<Value>> {
        let v = self
            .json(
                self.http
                    .get(self.url(&format!("/2015-03-31/functions/{}/versions", seg(name))))
                    .query(&[("MaxItems", "10000")]),
            )
            .await?;
        Ok(v.get("Versions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    pub async fn create_alias(&self, name: &str, body: &Value) -> Result<Value> {
        self.json(
            self.http
                .post(self.url(&format!("/2015-03-31/functions/{}/aliases", seg(name))))
                .json(body),
        )
        .await
    }

    pub async fn update_alias(&self, name: &str, alias: &str, body: &Value) -> Result<Value> {
        self.json(
            self.http
                .put(self.url(&format!(
                    "/2015-03-31/functions/{}/aliases/{}",
                    seg(name),
                    seg(alias)
                )))
                .json(body),
        )
        .await
    }

    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        self.json(self.http.delete(self.url(&format!(
            "/2015-03-31/functions/{}/aliases/{}",
            seg(name),
            seg(alias)
        ))))
        .await
        .map(|_| ())
    }

    /// PutFunctionConcurrency (`Some`) or DeleteFunctionConcurrency (`None`).
    pub async fn set_reserved_concurrency(&self, name: &str, n: Option<u32>) -> Result<()> {
        let url = self.url(&format!("/2017-10-31/functions/{}/concurrency", seg(name)));
        let req = match n {
            Some(n) => self
                .http
                .put(url)
                .json(&serde_json::json!({ "ReservedConcurrentExecutions": n })),
            None => self.http.delete(url),
        };
        self.json(req).await.map(|_| ())
    }

    /// GetFunctionConcurrency.
    pub async fn reserved_concurrency(&self, name: &str) -> Result<Option<u64>> {
        let v = self
            .json(
                self.http
                    .get(self.url(&format!("/2019-09-30/functions/{}/concurrency", seg(name)))),
            )
            .await?;
        Ok(v["ReservedConcurrentExecutions"].as_u64())
    }

    /// PutProvisionedConcurrencyConfig (`Some`) or DeleteProvisionedConcurrencyConfig (`None`).
    pub async fn set_provisioned_concurrency(
        &self,
        name: &str,
        qualifier: &str,
        n: Option<u32>,
    ) -> Result<Value> {
        let url = self.url(&format!(
            "/2019-09-30/functions/{}/provisioned-concurrency",
            seg(name)
        ));
        let req = match n {
            Some(n) => self
                .http
                .put(url)
                .query(&[("Qualifier", qualifier)])
                .json(&serde_json::json!({ "ProvisionedConcurrentExecutions": n })),
            None => self.http.delete(url).query(&[("Qualifier", qualifier)]),
        };
        self.json(req).await
    }

    /// ListProvisionedConcurrencyConfigs.
    pub async fn list_provisioned_concurrency(&self, name: &str) -> Result<Vec<Value>> {
        let v = self
            .json(
                self.http
                    .get(self.url(&format!(
                        "/2019-09-30/functions/{}/provisioned-concurrency",
                        seg(name)
                    )))
                    .query(&[("List", "ALL")]),
            )
            .await?;
        Ok(v["ProvisionedConcurrencyConfigs"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    pub async fn list_aliases(&self, name: &str) -> Result<Vec<Value>> {
        let v = self
            .json(
                self.http
                    .get(self.url(&format!("/2015-03-31/functions/{}/aliases", seg(name))))
                    .query(&[("MaxItems", "10000")]),
            )
            .await?;
        Ok(v.get("Aliases")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Invoke. `invocation_type` is RequestResponse, Event or DryRun.
    pub async fn invoke(
        &self,
        name: &str,
        payload: Bytes,
        qualifier: Option<&str>,
        invocation_type: &str,
        tail: bool,
    ) -> Result<Invocation> {
        let mut req = self
            .http
            .post(self.url(&format!("/2015-03-31/functions/{}/invocations", seg(name))))
            .header("x-amz-invocation-type", invocation_type)
            .body(payload);
        if tail {
            req = req.header("x-amz-log-type", "Tail");
        }
        if let Some(q) = qualifier {
            req = req.query(&[("Qualifier", q)]);
        }
        let resp = self.send(req).await?;
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = resp.status().as_u16();
        let function_error = header("x-amz-function-error");
        let executed_version = header("x-amz-executed-version");
        let request_id = header("x-amzn-requestid");
        let log_tail = header("x-amz-log-result").and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .ok()
                .map(|d| String::from_utf8_lossy(&d).into_owned())
        });
        let payload = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        Ok(Invocation {
            status,
            payload,
            function_error,
            executed_version,
            log_tail,
            request_id,
        })
    }

    /// Log events after `after_id`, at or after `since_ms`, containing `filter`.
    pub async fn logs(
        &self,
        name: &str,
        since_ms: Option<i64>,
        after_id: Option<i64>,
        filter: Option<&str>,
    ) -> Result<Value> {
        let mut q: Vec<(&str, String)> = vec![("limit", "5000".into())];
        if let Some(s) = since_ms {
            q.push(("since_ms", s.to_string()));
        }
        if let Some(a) = after_id {
            q.push(("after_id", a.to_string()));
        }
        if let Some(f) = filter {
            q.push(("filter", f.to_string()));
        }
        self.json(
            self.http
                .get(self.url(&format!("/nimbus/v1/functions/{}/logs", seg(name))))
                .query(&q),
        )
        .await
    }

    /// Per-minute metrics of a function for the minutes in `[since_ms, until_ms)` (ms since
    /// the Unix epoch), one series per version, or only `version`'s.
    pub async fn metrics(
        &self,
        name: &str,
        since_ms: i64,
        until_ms: i64,
        version: Option<&str>,
    ) -> Result<Value> {
        let mut q: Vec<(&str, String)> = vec![
            ("since", since_ms.to_string()),
            ("until", until_ms.to_string()),
        ];
        if let Some(v) = version {
            q.push(("version", v.to_string()));
        }
        self.json(
            self.http
                .get(self.url(&format!("/nimbus/v1/functions/{}/metrics", seg(name))))
                .query(&q),
        )
        .await
    }

    pub async fn status(&self) -> Result<Value> {
        self.json(self.http.get(self.url("/nimbus/v1/status")))
            .await
    }

    // ---- API gateway (API Gateway v2's management API) ----

    /// `GET /v2/...` items of a listing.
    async fn v2_items(&self, path: &str) -> Result<Vec<Value>> {
        let v = self.json(self.http.get(self.url(path))).await?;
        Ok(v.get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    pub async fn list_apis(&self) -> Result<Vec<Value>> {
        self.v2_items("/v2/apis").await
    }

    pub async fn create_api(&self, body: &Value) -> Result<Value> {
        self.json(self.http.post(self.url("/v2/apis")).json(body))
            .await
    }

    pub async fn update_api(&self, api_id: &str, body: &Value) -> Result<Value> {
        self.json(
            self.http
                .patch(self.url(&format!("/v2/apis/{}", seg(api_id))))
                .json(body),
        )
        .await
    }

    pub async fn delete_api(&self, api_id: &str) -> Result<()> {
        self.json(
            self.http
                .delete(self.url(&format!("/v2/apis/{}", seg(api_id)))),
        )
        .await
        .map(|_| ())
    }

    pub async fn create_integration(&self, api_id: &str, body: &Value) -> Result<Value> {
        self.json(
            self.http
                .post(self.url(&format!("/v2/apis/{}/integrations", seg(api_id))))
                .json(body),
        )
        .await
    }

    pub async fn delete_integration(&self, api_id: &str, integration_id: &str) -> Result<()> {
        self.json(self.http.delete(self.url(&format!(
            "/v2/apis/{}/integrations/{}",
            seg(api_id),
            seg(integration_id)
        ))))
        .await
        .map(|_| ())
    }

    pub async fn list_integrations(&self, api_id: &str) -> Result<Vec<Value>> {
        self.v2_items(&format!("/v2/apis/{}/integrations", seg(api_id)))
            .await
    }

    pub async fn create_route(&self, api_id: &str, body: &Value) -> Result<Value> {
        self.json(
            self.http
                .post(self.url(&format!("/v2/apis/{}/routes", seg(api_id))))
                .json(body),
        )
        .await
    }

    pub async fn list_routes(&self, api_id: &str) -> Result<Vec<Value>> {
        self.v2_items(&format!("/v2/apis/{}/routes", seg(api_id)))
            .await
    }

    pub async fn delete_route(&self, api_id: &str, route_id: &str) -> Result<()> {
        self.json(self.http.delete(self.url(&format!(
            "/v2/apis/{}/routes/{}",
            seg(api_id),
            seg(route_id)
        ))))
        .await
        .map(|_| ())
    }

    pub async fn list_stages(&self, api_id: &str) -> Result<Vec<Value>> {
        self.v2_items(&format!("/v2/apis/{}/stages", seg(api_id)))
            .await
    }

    pub async fn create_stage(&self, api_id: &str, body: &Value) -> Result<Value> {
        self.json(
            self.http
                .post(self.url(&format!("/v2/apis/{}/stages", seg(api_id))))
                .json(body),
        )
        .await
    }

    pub async fn update_stage(&self, api_id: &str, stage: &str, body: &Value) -> Result<Value> {
        self.json(
            self.http
                .patch(self.url(&format!("/v2/apis/{}/stages/{}", seg(api_id), seg(stage))))
                .json(body),
        )
        .await
    }

    pub async fn create_deployment(&self, api_id: &str, body: &Value) -> Result<Value> {
        self.json(
            self.http
                .post(self.url(&format!("/v2/apis/{}/deployments", seg(api_id))))
                .json(body),
        )
        .await
    }

    pub async fn list_deployments(&self, api_id: &str) -> Result<Vec<Value>> {
        self.v2_items(&format!("/v2/apis/{}/deployments", seg(api_id)))
            .await
    }

    // ---- schedules ----

    pub async fn create_schedule(&self, body: &Value) -> Result<Value> {
        self.json(self.http.post(self.url("/nimbus/v1/schedules")).json(body))
            .await
    }

    pub async fn list_schedules(&self) -> Result<Vec<Value>> {
        let v = self
            .json(self.http.get(self.url("/nimbus/v1/schedules")))
            .await?;
        Ok(v.get("schedules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        self.json(
            self.http
                .delete(self.url(&format!("/nimbus/v1/schedules/{}", seg(name)))),
        )
        .await
        .map(|_| ())
    }

    /// Enables (`true`) or disables a schedule.
    pub async fn set_schedule_enabled(&self, name: &str, enabled: bool) -> Result<Value> {
        let verb = if enabled { "enable" } else { "disable" };
        self.json(
            self.http
                .post(self.url(&format!("/nimbus/v1/schedules/{}/{verb}", seg(name)))),
        )
        .await
    }

    // ---- queues (SQS's JSON protocol) and event source mappings ----

    /// One SQS operation (`AmazonSQS.<op>`) with its JSON input; errors carry SQS's code.
    pub async fn sqs(&self, op: &str, input: &Value) -> Result<Value> {
        let mut req = self
            .http
            .post(self.url("/"))
            .header("x-amz-target", format!("AmazonSQS.{op}"))
            .header(reqwest::header::CONTENT_TYPE, "application/x-amz-json-1.0")
            .body(input.to_string())
            .build()
            .map_err(|e| ClientError::Other(format!("could not build the request: {e}")))?;
        self.sign_for(&mut req, "sqs");
        let resp = self
            .http
            .execute(req)
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let query_code = resp
            .headers()
            .get("x-amzn-query-error")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_string);
        let text = resp.text().await.map_err(|e| self.unreachable(e))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let code = query_code
            .or_else(|| {
                body.get("__type")
                    .and_then(Value::as_str)
                    .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            })
            .unwrap_or_else(|| "Error".into());
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(text);
        Err(ClientError::Api {
            status,
            code,
            message,
        })
    }

    /// The URL of queue `name` (GetQueueUrl).
    pub async fn queue_url(&self, name: &str) -> Result<String> {
        let v = self
            .sqs("GetQueueUrl", &serde_json::json!({ "QueueName": name }))
            .await?;
        Ok(v.get("QueueUrl")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    pub async fn create_event_source_mapping(&self, body: &Value) -> Result<Value> {
        self.json(
            self.http
                .post(self.url("/2015-03-31/event-source-mappings/"))
                .json(body),
        )
        .await
    }

    /// Every mapping, optionally of one queue.
    pub async fn list_event_source_mappings(&self, source_arn: Option<&str>) -> Result<Vec<Value>> {
        let query: Vec<(&str, &str)> = source_arn
            .map(|arn| ("EventSourceArn", arn))
            .into_iter()
            .collect();
        self.all_pages(
            "/2015-03-31/event-source-mappings/",
            &query,
            "EventSourceMappings",
        )
        .await
    }

    pub async fn delete_event_source_mapping(&self, uuid: &str) -> Result<Value> {
        self.json(
            self.http
                .delete(self.url(&format!("/2015-03-31/event-source-mappings/{}", seg(uuid)))),
        )
        .await
    }
}
