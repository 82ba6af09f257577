//! The HTTP proxy integration (`HTTP_PROXY`) of API Gateway HTTP APIs: a route integrated with an
//! HTTP backend URL forwards the request to it and streams the backend's answer back.
//!
//! What API Gateway documents for HTTP APIs, and this module does:
//! - "Create HTTP proxy integrations": the integration URI may name the route's path variables
//!   (`/pets/extendedpath/{petID}`, `/petstore/{proxy}` for a greedy `{proxy+}` route); stage
//!   variables (`${stageVariables.name}`) may appear in it too.
//! - "Transform API requests" (parameter mapping): `append|overwrite|remove:header.NAME`,
//!   `append|overwrite|remove:querystring.NAME` and `overwrite:path`, whose values mix static
//!   text with `$request.header.NAME`, `$request.querystring.NAME`, `$request.path`,
//!   `$request.path.NAME`, `$context.NAME` and `$stageVariables.NAME` (or the `${...}` forms).
//!   Multiple header or query values are combined with commas. Reserved headers (the documented
//!   list) cannot be mapped.
//! - `timeoutInMillis`: 50 to 30,000 ms, 30 s by default.
//!
//! What HTTP APIs are seen to do, which AWS's pages do not spell out: the `$default` route sends
//! the full request path (appended to the integration URI's path); the query string is passed
//! through; the backend gets a `Forwarded` header naming the client. A missed timeout is
//! answered 504 `{"message":"Endpoint request timed out"}` like a function integration's.
//!
//! Only `http://` backends: TLS to backends needs a TLS client, which the workspace lacks, so
//! [`validate_backend`] refuses `https://` by name rather than fail at request time.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::{
    percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC,
};

/// The integration timeout when none is configured (HTTP APIs' default and maximum).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(MAX_TIMEOUT_MS);
/// The shortest `timeoutInMillis` an HTTP API accepts.
pub const MIN_TIMEOUT_MS: u64 = 50;
/// The longest `timeoutInMillis` an HTTP API accepts.
pub const MAX_TIMEOUT_MS: u64 = 30_000;

/// How long an idle pooled connection to a backend is kept for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Characters escaped when a decoded value goes back into a URL path: everything that is not a
/// path character (RFC 3986 `pchar`), `%` included so a decoded `%` stays literal. `/` is kept
/// because a greedy `{proxy+}` value is several segments.
const PATH_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Characters escaped in a query-string name or value: all but the unreserved ones, so `&`, `=`
/// and `+` inside a value cannot change the query's structure.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why an HTTP backend integration was refused at configuration time, or why forwarding one
/// request failed. [`ProxyError::status`] and [`ProxyError::client_message`] give what the
/// client sees; the `Display` text is for the operator (logs, management API errors).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("The integration URI `{uri}` is not a valid URL: {reason}.")]
    InvalidUri { uri: String, reason: String },
    #[error(
        "The integration URI `{uri}` uses the {scheme}:// scheme, but this gateway calls only \
         http:// backends (https:// needs a TLS client, which it does not have yet)."
    )]
    UnsupportedScheme { uri: String, scheme: String },
    #[error(
        "The integration method `{method}` is not one of GET, POST, PUT, PATCH, DELETE, HEAD, \
         OPTIONS or ANY."
    )]
    InvalidMethod { method: String },
    #[error(
        "The integration timeout of {timeout_ms} ms is outside the allowed range of 50 to 30000 ms."
    )]
    TimeoutOutOfRange { timeout_ms: u64 },
    #[error("The request parameter key `{key}` is not valid: {reason}.")]
    InvalidParameterKey { key: String, reason: String },
    #[error(
        "The request parameter key `{key}` maps the reserved header `{header}`, which a \
         parameter mapping may not change."
    )]
    ReservedHeader { key: String, header: String },
    #[error("The value `{value}` of request parameter `{key}` is not valid: {reason}.")]
    InvalidParameterValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error(
        "The integration URI refers to stage variable `{name}`, which the stage does not define."
    )]
    MissingStageVariable { name: String },
    #[error(
        "The integration URI refers to path variable `{name}`, which the matched route does not \
         capture."
    )]
    MissingPathParameter { name: String },
    #[error("The backend URL `{uri}` built from the integration URI is not a valid URL.")]
    InvalidTargetUri { uri: String },
    #[error(
        "The value that request parameter `{key}` maps from this request is not a valid {what}."
    )]
    InvalidMappedValue { key: String, what: &'static str },
    #[error(
        "The backend at {authority} did not send a response within the integration timeout of \
         {timeout_ms} ms."
    )]
    Timeout { authority: String, timeout_ms: u128 },
    #[error("The backend at {authority} could not be reached: {reason}.")]
    Unreachable { authority: String, reason: String },
    #[error("The backend at {authority} closed the connection before responding: {reason}.")]
    NoResponse { authority: String, reason: String },
    #[error("The backend at {authority} sent a response that is not valid HTTP: {reason}.")]
    InvalidResponse { authority: String, reason: String },
    #[error("The request body is larger than the gateway accepts.")]
    RequestBodyTooLarge,
    #[error("The request body could not be read from the client: {reason}.")]
    RequestBody { reason: String },
}

impl ProxyError {
    /// The status the client gets.
    ///
    /// A missed integration timeout is 504 `{"message":"Endpoint request timed out"}`, the same
    /// answer as a function integration's (users' reports show HTTP APIs answering 503 there;
    /// Nimbus keeps one answer for both kinds). A backend that cannot be reached or drops the
    /// connection is "Service Unavailable". A response
    /// that is not HTTP at all is a 502 (AWS documents nothing for that case). A misconfigured
    /// integration that slipped past [`validate_backend`] is a 500, like any gateway fault.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Unreachable { .. } | ProxyError::NoResponse { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::InvalidResponse { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::RequestBodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RequestBody { .. } | ProxyError::InvalidMappedValue { .. } => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::InvalidUri { .. }
            | ProxyError::UnsupportedScheme { .. }
            | ProxyError::InvalidMethod { .. }
            | ProxyError::TimeoutOutOfRange { .. }
            | ProxyError::InvalidParameterKey { .. }
            | ProxyError::ReservedHeader { .. }
            | ProxyError::InvalidParameterValue { .. }
            | ProxyError::MissingStageVariable { .. }
            | ProxyError::MissingPathParameter { .. }
            | ProxyError::InvalidTargetUri { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `message` of the JSON body the client gets; it never leaks backend details.
    pub fn client_message(&self) -> &'static str {
        match self.status() {
            StatusCode::GATEWAY_TIMEOUT => "Endpoint request timed out",
            StatusCode::SERVICE_UNAVAILABLE => "Service Unavailable",
            StatusCode::BAD_GATEWAY => "Bad Gateway",
            StatusCode::PAYLOAD_TOO_LARGE => "Request Entity Too Large",
            StatusCode::BAD_REQUEST => "Bad Request",
            _ => "Internal Server Error",
        }
    }

    /// The response the client gets: [`Self::status`] with `{"message":"..."}`, as API Gateway
    /// shapes its own error responses.
    pub fn response(&self) -> Response<Body> {
        let body = format!("{{\"message\":\"{}\"}}", self.client_message());
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// Checks an HTTP integration as the management API receives it (`integrationUri`,
/// `integrationMethod`, `timeoutInMillis`, `requestParameters`), so a bad one is refused at
/// creation with the problem named instead of failing every request.
pub fn validate_backend(
    uri: &str,
    method: Option<&str>,
    timeout_ms: Option<u64>,
    request_parameters: &BTreeMap<String, String>,
) -> Result<(), ProxyError> {
    HttpBackend::new(uri, method, timeout_ms, request_parameters).map(|_| ())
}

/// One HTTP proxy integration, parsed and checked once (at deployment) so a request only
/// substitutes values into ready templates.
#[derive(Debug, Clone)]
pub struct HttpBackend {
    uri: String,
    uri_template: Vec<UriPart>,
    method: Option<Method>,
    timeout: Duration,
    mappings: Vec<Mapping>,
    /// Whether any mapping reads or writes the query string, so it is parsed only then.
    uses_query: bool,
}

impl HttpBackend {
    /// Parses and checks an integration; see [`validate_backend`]. `method` `None` or `"ANY"`
    /// forwards the request's own method; `timeout_ms` `None` is the 30 s default.
    pub fn new(
        uri: &str,
        method: Option<&str>,
        timeout_ms: Option<u64>,
        request_parameters: &BTreeMap<String, String>,
    ) -> Result<HttpBackend, ProxyError> {
        let uri_template = parse_uri_template(uri)?;
        let method = parse_method(method)?;
        let timeout = match timeout_ms {
            None => DEFAULT_TIMEOUT,
            Some(ms) if (MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&ms) => {
                Duration::from_millis(ms)
            }
            Some(ms) => return Err(ProxyError::TimeoutOutOfRange { timeout_ms: ms }),
        };
        let mappings = request_parameters
            .iter()
            .map(|(key, value)| parse_mapping(key, value))
            .collect::<Result<Vec<_>, _>>()?;
        let uses_query = mappings.iter().any(|m| {
            matches!(m.target, Target::QueryString(_))
                || m.value
                    .iter()
                    .any(|part| matches!(part, ValuePart::Var(Var::QueryString(_))))
        });
        Ok(HttpBackend {
            uri: uri.to_owned(),
            uri_template,
            method,
            timeout,
            mappings,
            uses_query,
        })
    }

    /// The integration URI as configured.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The method sent to the backend, or `None` for the request's own (`ANY`).
    pub fn method(&self) -> Option<&Method> {
        self.method.as_ref()
    }

    /// The integration timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Everything about the outgoing request but its body: method, URL and headers. Pure, so
    /// URL building and parameter mapping are testable without sockets. `headers` are the
    /// client's, taken out of `req`.
    fn prepare(
        &self,
        req: &ForwardRequest<'_>,
        mut headers: HeaderMap,
    ) -> Result<Outgoing, ProxyError> {
        let query = if self.uses_query {
            parse_query(req.raw_query)
        } else {
            Vec::new()
        };
        // Every value is computed from the request as the client sent it, before any mapping
        // changes it, so the order of the mappings does not matter.
        let rendered = {
            let input = MappingInput {
                headers: &headers,
                query: &query,
                path: req.path,
                path_parameters: req.path_parameters,
                stage_variables: req.stage_variables,
                context: req.context,
            };
            self.mappings
                .iter()
                .map(|m| m.render(&input))
                .collect::<Vec<_>>()
        };

        let base =
            render_uri_template(&self.uri_template, req.path_parameters, req.stage_variables)?;
        let (before_query, template_query) = match base.split_once('?') {
            Some((before, query)) => (before, query),
            None => (base.as_str(), ""),
        };
        let path_start = before_query
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| before_query[start..].find('/').map(|i| start + i))
            .unwrap_or(before_query.len());
        let (origin, template_path) = before_query.split_at(path_start);
        let mut path: Cow<'_, str> = if req.is_default_route {
            Cow::Owned(join_paths(template_path, req.path))
        } else if template_path.is_empty() {
            Cow::Borrowed("/")
        } else {
            Cow::Borrowed(template_path)
        };

        let mut request_query = Cow::Borrowed(req.raw_query);
        let mut query_entries: Option<Vec<Cow<'_, str>>> = None;
        for (mapping, value) in self.ordered(&rendered) {
            match &mapping.target {
                Target::Path => {
                    if let Some(value) = value {
                        path = Cow::Owned(if value.starts_with('/') {
                            value.to_owned()
                        } else {
                            format!("/{value}")
                        });
                    }
                }
                Target::QueryString(name) => {
                    let entries = query_entries.get_or_insert_with(|| {
                        query.iter().map(|p| Cow::Borrowed(p.raw)).collect()
                    });
                    apply_query_mapping(entries, &query, mapping.action, name, value);
                }
                Target::Header(_) => {}
            }
        }
        if let Some(entries) = query_entries {
            request_query = Cow::Owned(entries.join("&"));
        }

        let mut target = String::with_capacity(
            origin.len() + path.len() + template_query.len() + request_query.len() + 2,
        );
        target.push_str(origin);
        target.push_str(&path);
        for (i, part) in [template_query, &request_query]
            .into_iter()
            .filter(|q| !q.is_empty())
            .enumerate()
        {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str(part);
        }
        let uri = Uri::try_from(target.as_str()).map_err(|_| ProxyError::InvalidTargetUri {
            uri: target.clone(),
        })?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| ProxyError::InvalidTargetUri {
                uri: target.clone(),
            })?;

        strip_hop_by_hop(&mut headers);
        for (mapping, value) in self.ordered(&rendered) {
            let Target::Header(name) = &mapping.target else {
                continue;
            };
            match (mapping.action, value) {
                (Action::Remove, _) => {
                    headers.remove(name);
                }
                (_, None) => {}
                (action, Some(value)) => {
                    let value = HeaderValue::from_str(value).map_err(|_| {
                        ProxyError::InvalidMappedValue {
                            key: mapping.key.clone(),
                            what: "header value",
                        }
                    })?;
                    if action == Action::Overwrite {
                        headers.insert(name.clone(), value);
                    } else {
                        headers.append(name.clone(), value);
                    }
                }
            }
        }
        // The backend is addressed by its own name, as API Gateway does; the name the client
        // used travels in the forwarding headers.
        let host = HeaderValue::from_str(&authority).map_err(|_| ProxyError::InvalidTargetUri {
            uri: target.clone(),
        })?;
        headers.insert(header::HOST, host);
        add_forwarding_headers(&mut headers, req.client_ip, req.host, req.https);

        Ok(Outgoing {
            method: self.method.clone().unwrap_or_else(|| req.method.clone()),
            uri,
            authority,
            headers,
        })
    }

    /// The mappings with their rendered values, removals first, then overwrites, then appends,
    /// so `remove` plus `append` of one name replaces it rather than deleting the new value.
    fn ordered<'s>(
        &'s self,
        rendered: &'s [Option<String>],
    ) -> impl Iterator<Item = (&'s Mapping, Option<&'s str>)> + 's {
        [Action::Remove, Action::Overwrite, Action::Append]
            .into_iter()
            .flat_map(move |action| {
                self.mappings
                    .iter()
                    .zip(rendered)
                    .filter(move |(m, _)| m.action == action)
                    .map(|(m, v)| (m, v.as_deref()))
            })
    }
}

/// One request to forward. The caller has matched the route and already limits the body to
/// the gateway's 10 MB.
pub struct ForwardRequest<'a> {
    pub method: Method,
    /// The request path after the stage prefix, percent-encoded as received.
    pub path: &'a str,
    /// The query string as received, without `?`.
    pub raw_query: &'a str,
    pub headers: HeaderMap,
    pub body: Body,
    /// The matched route's path parameters, decoded.
    pub path_parameters: &'a [(String, String)],
    /// Whether the `$default` route matched: the full request path then goes to the backend.
    pub is_default_route: bool,
    pub stage_variables: &'a BTreeMap<String, String>,
    /// `$context` variables parameter mapping may read (`requestId`, `stage`, ...).
    pub context: &'a BTreeMap<&'static str, String>,
    pub client_ip: IpAddr,
    /// The `Host` the client addressed.
    pub host: &'a str,
    /// Whether the client came over TLS.
    pub https: bool,
}

/// The HTTP client of all HTTP integrations: one connection pool shared by every backend.
#[derive(Debug, Clone)]
pub struct Proxy {
    client: Client<HttpConnector, Body>,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy::new()
    }
}

impl Proxy {
    pub fn new() -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Proxy { client }
    }

    /// Forwards `req` to `backend` and returns the backend's response with its body still
    /// streaming. The timeout covers everything up to the response head (connecting, sending
    /// the request and its body, waiting); the body then flows at the backend's pace.
    pub async fn forward(
        &self,
        backend: &HttpBackend,
        mut req: ForwardRequest<'_>,
    ) -> Result<Response<Body>, ProxyError> {
        let headers = std::mem::take(&mut req.headers);
        let body = std::mem::take(&mut req.body);
        let outgoing = backend.prepare(&req, headers)?;

        let mut request = Request::new(body);
        *request.method_mut() = outgoing.method;
        *request.uri_mut() = outgoing.uri;
        // The client may have spoken HTTP/2 to us; the backend connection is HTTP/1.1.
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = outgoing.headers;

        let response =
            match tokio::time::timeout(backend.timeout, self.client.request(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => return Err(classify_client_error(&error, outgoing.authority)),
                Err(_) => {
                    return Err(ProxyError::Timeout {
                        authority: outgoing.authority,
                        timeout_ms: backend.timeout.as_millis(),
                    })
                }
            };
        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(incoming)))
    }
}

/// The outgoing request but its body.
#[derive(Debug)]
struct Outgoing {
    method: Method,
    uri: Uri,
    authority: String,
    headers: HeaderMap,
}

/// Sorts a failed exchange into what the client is told: our own request body failing (too
/// large, or the client went away), the backend unreachable, gone before answering, or
/// answering something that is not HTTP.
fn classify_client_error(
    error: &hyper_util::client::legacy::Error,
    authority: String,
) -> ProxyError {
    let reason = error_chain(error);
    if find_in_chain::<http_body_util::LengthLimitError>(error).is_some() {
        return ProxyError::RequestBodyTooLarge;
    }
    // Our request body's errors are axum's; a failure there is the client's side breaking.
    if find_in_chain::<axum::Error>(error).is_some() {
        return ProxyError::RequestBody { reason };
    }
    if error.is_connect() {
        return ProxyError::Unreachable { authority, reason };
    }
    match find_in_chain::<hyper::Error>(error) {
        Some(e) if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() => {
            ProxyError::InvalidResponse { authority, reason }
        }
        _ => ProxyError::NoResponse { authority, reason },
    }
}

fn find_in_chain<'e, T: StdError + 'static>(error: &'e (dyn StdError + 'static)) -> Option<&'e T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// `outer: inner: innermost`, since hyper's own messages ("client error (Connect)") say little
/// without their causes.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Integration URI templates.

#[derive(Debug, Clone, PartialEq, Eq)]
enum UriPart {
    Literal(String),
    /// `{name}` (or `{name+}`): a path parameter of the matched route.
    PathVariable {
        name: String,
        in_query: bool,
    },
    /// `${stageVariables.name}`.
    StageVariable(String),
}

fn parse_uri_template(uri: &str) -> Result<Vec<UriPart>, ProxyError> {
    let invalid = |reason: &str| ProxyError::InvalidUri {
        uri: uri.to_owned(),
        reason: reason.to_owned(),
    };
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(invalid(
            "it must be an absolute URL such as http://host:port/path",
        ));
    };
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(ProxyError::UnsupportedScheme {
            uri: uri.to_owned(),
            scheme: scheme.to_owned(),
        });
    }
    if uri.contains('#') {
        return Err(invalid("a fragment (#...) is never sent to a server"));
    }
    let authority_end = scheme.len() + 3 + rest.find(['/', '?']).unwrap_or(rest.len());
    let query_start = uri.find('?').unwrap_or(uri.len());

    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut i = 0;
    while i < uri.len() {
        let rest = &uri[i..];
        if let Some(after) = rest.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| invalid("a `${` has no closing `}`"))?;
            let inner = &after[..end];
            let name = inner
                .strip_prefix("stageVariables.")
                .filter(|name| is_stage_variable_name(name))
                .ok_or_else(|| {
                    invalid(&format!(
                        "`${{{inner}}}` is not a stage variable reference like \
                         ${{stageVariables.name}} (letters, digits and _)"
                    ))
                })?;
            flush_literal(&mut parts, &mut literal);
            parts.push(UriPart::StageVariable(name.to_owned()));
            i += 2 + end + 1;
        } else if let Some(after) = rest.strip_prefix('{') {
            let end = after
                .find('}')
                .ok_or_else(|| invalid("a `{` has no closing `}`"))?;
            let inner = &after[..end];
            let name = inner.strip_suffix('+').unwrap_or(inner);
            if !is_parameter_name(name) {
                return Err(invalid(&format!(
                    "`{{{inner}}}` is not a path variable name (letters, digits, `_`, `-`, `.`)"
                )));
            }
            if i < authority_end {
                return Err(invalid(&format!(
                    "the path variable `{{{inner}}}` is in the host; path variables may only be \
                     used in the path or query"
                )));
            }
            flush_literal(&mut parts, &mut literal);
            parts.push(UriPart::PathVariable {
                name: name.to_owned(),
                in_query: i > query_start,
            });
            i += 1 + end + 1;
        } else if rest.starts_with('}') {
            return Err(invalid("a `}` has no opening `{`"));
        } else {
            let c = rest.chars().next().unwrap_or_default();
            literal.push(c);
            i += c.len_utf8();
        }
    }
    flush_literal(&mut parts, &mut literal);

    // With every variable given a plain value the URL must parse and name a host.
    let mut sample = String::with_capacity(uri.len());
    for part in &parts {
        match part {
            UriPart::Literal(text) => sample.push_str(text),
            UriPart::PathVariable { .. } | UriPart::StageVariable(_) => sample.push('x'),
        }
    }
    let parsed =
        Uri::try_from(sample.as_str()).map_err(|e| invalid(&e.to_string().to_lowercase()))?;
    match parsed.authority() {
        Some(a) if !a.host().is_empty() => {}
        _ => return Err(invalid("it names no host")),
    }
    if parsed.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid("credentials in the URL are not supported"));
    }
    Ok(parts)
}

fn flush_literal(parts: &mut Vec<UriPart>, literal: &mut String) {
    if !literal.is_empty() {
        parts.push(UriPart::Literal(std::mem::take(literal)));
    }
}

fn render_uri_template(
    parts: &[UriPart],
    path_parameters: &[(String, String)],
    stage_variables: &BTreeMap<String, String>,
) -> Result<String, ProxyError> {
    let mut out = String::new();
    for part in parts {
        match part {
            UriPart::Literal(text) => out.push_str(text),
            UriPart::StageVariable(name) => {
                let value = stage_variables
                    .get(name)
                    .ok_or_else(|| ProxyError::MissingStageVariable { name: name.clone() })?;
                // A stage variable may hold a host or a path piece, so it goes in verbatim.
                out.push_str(value);
            }
            UriPart::PathVariable { name, in_query } => {
                let value = lookup_path_parameter(path_parameters, name)
                    .ok_or_else(|| ProxyError::MissingPathParameter { name: name.clone() })?;
                let set = if *in_query { QUERY_VALUE } else { PATH_VALUE };
                out.extend(utf8_percent_encode(value, set));
            }
        }
    }
    Ok(out)
}

fn lookup_path_parameter<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The `$default` route's URL: the integration URI's path, then the full request path.
fn join_paths(base: &str, request_path: &str) -> String {
    let base = base.trim_end_matches('/');
    let request_path = if request_path.is_empty() {
        "/"
    } else {
        request_path
    };
    let mut path = String::with_capacity(base.len() + request_path.len() + 1);
    path.push_str(base);
    if !request_path.starts_with('/') {
        path.push('/');
    }
    path.push_str(request_path);
    path
}

fn parse_method(method: Option<&str>) -> Result<Option<Method>, ProxyError> {
    let Some(text) = method else {
        return Ok(None);
    };
    let upper = text.to_ascii_uppercase();
    let method = match upper.as_str() {
        "ANY" => return Ok(None),
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        "HEAD" => Method::HEAD,
        "OPTIONS" => Method::OPTIONS,
        _ => {
            return Err(ProxyError::InvalidMethod {
                method: text.to_owned(),
            })
        }
    };
    Ok(Some(method))
}

fn is_stage_variable_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_parameter_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

// ---------------------------------------------------------------------------------------------
// Parameter mapping.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Append,
    Overwrite,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Header(HeaderName),
    QueryString(String),
    Path,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Header(HeaderName),
    QueryString(String),
    PathParameter(String),
    Path,
    Context(String),
    StageVariable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ValuePart {
    Literal(String),
    Var(Var),
}

#[derive(Debug, Clone)]
struct Mapping {
    key: String,
    action: Action,
    target: Target,
    value: Vec<ValuePart>,
}

/// What mapping values read: the request as the client sent it.
struct MappingInput<'a> {
    headers: &'a HeaderMap,
    query: &'a [QueryPair<'a>],
    path: &'a str,
    path_parameters: &'a [(String, String)],
    stage_variables: &'a BTreeMap<String, String>,
    context: &'a BTreeMap<&'static str, String>,
}

impl Mapping {
    /// The value to write, encoded for where it goes; `None` when a variable it names is absent
    /// from this request, in which case the mapping is skipped rather than writing a value with
    /// a hole in it.
    fn render(&self, input: &MappingInput<'_>) -> Option<String> {
        if self.action == Action::Remove {
            return None;
        }
        let mut out = String::new();
        for part in &self.value {
            match (part, &self.target) {
                (ValuePart::Literal(text), Target::QueryString(_)) => {
                    out.extend(utf8_percent_encode(text, QUERY_VALUE));
                }
                (ValuePart::Literal(text), _) => out.push_str(text),
                (ValuePart::Var(var), target) => {
                    let value = var.lookup(input)?;
                    match target {
                        Target::Header(_) => out.push_str(&value),
                        Target::QueryString(_) => {
                            out.extend(utf8_percent_encode(&value, QUERY_VALUE))
                        }
                        // `$request.path` is still percent-encoded as received.
                        Target::Path if *var == Var::Path => out.push_str(&value),
                        Target::Path => out.extend(utf8_percent_encode(&value, PATH_VALUE)),
                    }
                }
            }
        }
        Some(out)
    }
}

impl Var {
    fn lookup<'i>(&self, input: &MappingInput<'i>) -> Option<Cow<'i, str>> {
        match self {
            // API Gateway combines multiple values with commas: "value1,value2".
            Var::Header(name) => join_values(
                input
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes())),
            ),
            Var::QueryString(name) => join_values(
                input
                    .query
                    .iter()
                    .filter(|p| p.name == *name)
                    .map(|p| Cow::Borrowed(p.value.as_ref())),
            )
            .map(|v| Cow::Owned(v.into_owned())),
            Var::PathParameter(name) => {
                lookup_path_parameter(input.path_parameters, name).map(Cow::Borrowed)
            }
            Var::Path => Some(Cow::Borrowed(input.path)),
            Var::Context(name) => input
                .context
                .get(name.as_str())
                .map(|v| Cow::Borrowed(v.as_str())),
            Var::StageVariable(name) => input
                .stage_variables
                .get(name)
                .map(|v| Cow::Borrowed(v.as_str())),
        }
    }
}

fn join_values<'v>(mut values: impl Iterator<Item = Cow<'v, str>>) -> Option<Cow<'v, str>> {
    let first = values.next()?;
    match values.next() {
        None => Some(first),
        Some(second) => {
            let mut joined = first.into_owned();
            for value in std::iter::once(second).chain(values) {
                joined.push(',');
                joined.push_str(&value);
            }
            Some(Cow::Owned(joined))
        }
    }
}

/// Headers a mapping may not touch: the list API Gateway documents as reserved for HTTP APIs,
/// plus `Host` (always the backend's own name here), `Trailer` and the other `Proxy-*` headers
/// (hop-by-hop, removed before the request leaves).
fn is_reserved_header(name: &str) -> bool {
    const PREFIXES: [&str; 5] = ["access-control-", "apigw-", "x-amz-", "x-amzn-", "proxy-"];
    const NAMES: [&str; 19] = [
        "authorization",
        "connection",
        "content-encoding",
        "content-length",
        "content-location",
        "forwarded",
        "keep-alive",
        "origin",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "via",
        "host",
        "x-forwarded-port",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

fn parse_mapping(key: &str, value: &str) -> Result<Mapping, ProxyError> {
    let bad_key = |reason: &str| ProxyError::InvalidParameterKey {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let Some((action, location)) = key.split_once(':') else {
        return Err(bad_key(
            "it must look like append|overwrite|remove:header.NAME, \
             append|overwrite|remove:querystring.NAME or overwrite:path",
        ));
    };
    let action = match action {
        "append" => Action::Append,
        "overwrite" => Action::Overwrite,
        "remove" => Action::Remove,
        _ => {
            return Err(bad_key(&format!(
                "`{action}` is not an action; use append, overwrite or remove"
            )))
        }
    };
    let target = if let Some(name) = location.strip_prefix("header.") {
        let lower = name.to_ascii_lowercase();
        let header = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| bad_key(&format!("`{name}` is not a valid header name")))?;
        if is_reserved_header(&lower) {
            return Err(ProxyError::ReservedHeader {
                key: key.to_owned(),
                header: name.to_owned(),
            });
        }
        Target::Header(header)
    } else if let Some(name) = location.strip_prefix("querystring.") {
        if name.is_empty() || name.contains(['&', '=', '#']) || name.chars().any(char::is_control) {
            return Err(bad_key(&format!(
                "`{name}` is not a valid query string name"
            )));
        }
        Target::QueryString(name.to_owned())
    } else if location == "path" {
        if action != Action::Overwrite {
            return Err(bad_key("the path can only be overwritten (overwrite:path)"));
        }
        Target::Path
    } else {
        return Err(bad_key(&format!(
            "`{location}` is not a mapping target; use header.NAME, querystring.NAME or path"
        )));
    };

    // A removal's value is ignored, as API Gateway's own examples pass "''" there.
    let parts = if action == Action::Remove {
        Vec::new()
    } else {
        parse_value(key, value)?
    };
    let bad_value = |reason: &str| ProxyError::InvalidParameterValue {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    for part in &parts {
        let ValuePart::Literal(text) = part else {
            continue;
        };
        match &target {
            Target::Header(_) if HeaderValue::from_str(text).is_err() => {
                return Err(bad_value("its static text is not a valid header value"));
            }
            Target::Path
                if text.contains(['?', '#', ' ']) || text.chars().any(char::is_control) =>
            {
                return Err(bad_value("its static text cannot be part of a URL path"));
            }
            _ => {}
        }
    }
    Ok(Mapping {
        key: key.to_owned(),
        action,
        target,
        value: parts,
    })
}

fn parse_value(key: &str, value: &str) -> Result<Vec<ValuePart>, ProxyError> {
    let bad = |reason: String| ProxyError::InvalidParameterValue {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    };
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut i = 0;
    while i < value.len() {
        let rest = &value[i..];
        let after_dollar = rest.strip_prefix('$');
        if let Some(inner_start) = after_dollar.and_then(|r| r.strip_prefix('{')) {
            let end = inner_start
                .find('}')
                .ok_or_else(|| bad("a `${` has no closing `}`".to_owned()))?;
            let var = parse_variable(&inner_start[..end]).map_err(bad)?;
            if !literal.is_empty() {
                parts.push(ValuePart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(ValuePart::Var(var));
            i += 2 + end + 1;
        } else if let Some(ident_start) =
            after_dollar.filter(|r| r.starts_with(|c: char| c.is_ascii_alphabetic()))
        {
            // `$name.name...`: the variable runs over name characters; a trailing `.` is text
            // (a value like "id=$context.requestId." ends a sentence).
            let len = ident_start
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
                .unwrap_or(ident_start.len());
            let ident = ident_start[..len].trim_end_matches('.');
            let var = parse_variable(ident).map_err(bad)?;
            if !literal.is_empty() {
                parts.push(ValuePart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(ValuePart::Var(var));
            i += 1 + ident.len();
        } else {
            let c = rest.chars().next().unwrap_or_default();
            literal.push(c);
            i += c.len_utf8();
        }
    }
    if !literal.is_empty() {
        parts.push(ValuePart::Literal(literal));
    }
    Ok(parts)
}

/// One `request.header.NAME`, `context.NAME`, ... reference, without its `$` or braces.
fn parse_variable(text: &str) -> Result<Var, String> {
    let named = |rest: &str, what: &str| -> Result<String, String> {
        if rest.is_empty() {
            Err(format!("`${text}` names no {what}"))
        } else {
            Ok(rest.to_owned())
        }
    };
    if text == "request.path" {
        return Ok(Var::Path);
    }
    // A prefix without its name (`$request.header.` once its sentence-ending dot is text).
    for (prefix, what) in [
        ("request.header", "header"),
        ("request.querystring", "query string parameter"),
        ("context", "context variable"),
        ("stageVariables", "stage variable"),
    ] {
        if text == prefix {
            return Err(format!("`${text}` names no {what}"));
        }
    }
    if let Some(name) = text.strip_prefix("request.path.") {
        return named(name, "path parameter").map(Var::PathParameter);
    }
    if let Some(name) = text.strip_prefix("request.header.") {
        let name = named(name, "header")?;
        return HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map(Var::Header)
            .map_err(|_| format!("`{name}` is not a valid header name"));
    }
    if let Some(name) = text.strip_prefix("request.querystring.") {
        return named(name, "query string parameter").map(Var::QueryString);
    }
    if text == "request.body" || text.starts_with("request.body.") {
        return Err(
            "request body values ($request.body) are not supported for HTTP proxy integrations"
                .to_owned(),
        );
    }
    if let Some(name) = text.strip_prefix("context.") {
        // As API Gateway notes, context variable names use only letters, digits, `.` and `_`.
        if name
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || b == b'.' || b == b'_'))
        {
            return Err(format!("`{name}` is not a context variable name"));
        }
        return named(name, "context variable").map(Var::Context);
    }
    if let Some(name) = text.strip_prefix("stageVariables.") {
        if !name.is_empty() && !is_stage_variable_name(name) {
            return Err(format!("`{name}` is not a stage variable name"));
        }
        return named(name, "stage variable").map(Var::StageVariable);
    }
    Err(format!(
        "`${text}` is not a supported variable; use $request.header.NAME, \
         $request.querystring.NAME, $request.path, $request.path.NAME, $context.NAME or \
         $stageVariables.NAME"
    ))
}

// ---------------------------------------------------------------------------------------------
// Query strings.

/// One `name=value` of a query string: decoded for lookups, raw for passing on untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QueryPair<'q> {
    name: Cow<'q, str>,
    value: Cow<'q, str>,
    raw: &'q str,
}

fn parse_query(raw: &str) -> Vec<QueryPair<'_>> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            QueryPair {
                name: decode_query_component(name),
                value: decode_query_component(value),
                raw: pair,
            }
        })
        .collect()
}

/// Form decoding (`+` is a space) so a value re-encoded for the backend means the same thing.
fn decode_query_component(text: &str) -> Cow<'_, str> {
    if text.contains('+') {
        let spaced = text.replace('+', " ");
        Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
    } else {
        percent_decode_str(text).decode_utf8_lossy()
    }
}

fn apply_query_mapping<'q>(
    entries: &mut Vec<Cow<'q, str>>,
    original: &[QueryPair<'q>],
    action: Action,
    name: &str,
    value: Option<&str>,
) {
    let named = |entry: &Cow<'q, str>| {
        let entry_name = entry.split_once('=').map_or(entry.as_ref(), |(n, _)| n);
        // Untouched entries are raw; compare them decoded, as the client meant them.
        let decoded = original
            .iter()
            .find(|p| p.raw == entry.as_ref())
            .map(|p| p.name.clone())
            .unwrap_or_else(|| decode_query_component(entry_name));
        decoded == name
    };
    match (action, value) {
        (Action::Remove, _) => entries.retain(|e| !named(e)),
        (_, None) => {}
        (action, Some(value)) => {
            if action == Action::Overwrite {
                entries.retain(|e| !named(e));
            }
            let mut entry: String = utf8_percent_encode(name, QUERY_VALUE).collect();
            entry.push('=');
            entry.push_str(value);
            entries.push(Cow::Owned(entry));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Headers.

/// Removes the hop-by-hop headers (RFC 9110 section 7.6.1): `Connection` and every header it
/// names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`. They
/// describe one connection, and each side of the proxy has its own.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// Tells the backend who the client was: the standard `Forwarded` element, which HTTP APIs
/// send (`for=...;host=...;proto=...`), plus the `X-Forwarded-For`/`-Proto`/`-Port` trio that
/// most frameworks read. Both are reserved from mapping, so the gateway alone writes them; a
/// client's earlier `Forwarded` and `X-Forwarded-For` entries are kept and ours appended, as
/// each proxy in a chain does.
fn add_forwarding_headers(headers: &mut HeaderMap, client_ip: IpAddr, host: &str, https: bool) {
    let proto = if https { "https" } else { "http" };

    let mut element = String::with_capacity(64);
    element.push_str("for=");
    match client_ip {
        IpAddr::V4(ip) => element.push_str(&ip.to_string()),
        // An IPv6 node must be bracketed and so quoted (RFC 7239 section 6).
        IpAddr::V6(ip) => element.push_str(&format!("\"[{ip}]\"")),
    }
    if !host.is_empty() {
        element.push_str(";host=");
        push_forwarded_value(&mut element, host);
    }
    element.push_str(";proto=");
    element.push_str(proto);
    append_list_header(headers, header::FORWARDED, &element);
    append_list_header(
        headers,
        HeaderName::from_static("x-forwarded-for"),
        &client_ip.to_string(),
    );
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
    let port = host_port(host).unwrap_or(if https { "443" } else { "80" });
    if let Ok(port) = HeaderValue::from_str(port) {
        headers.insert(HeaderName::from_static("x-forwarded-port"), port);
    }
}

/// A `Forwarded` parameter value: a token as is, anything else (a `host:port`) quoted.
fn push_forwarded_value(out: &mut String, value: &str) {
    let is_token = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if is_token {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Adds `item` to a comma-separated list header as one line, since some backends read only
/// the first line of a repeated header.
fn append_list_header(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    let mut combined: Vec<u8> = Vec::new();
    for value in headers.get_all(&name) {
        combined.extend_from_slice(value.as_bytes());
        combined.extend_from_slice(b", ");
    }
    combined.extend_from_slice(item.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&combined) {
        headers.insert(name, value);
    }
}

fn host_port(host: &str) -> Option<&str> {
    let after_ipv6 = host.rfind(']').map_or(host, |i| &host[i + 1..]);
    after_ipv6
        .rsplit_once(':')
        .map(|(_, port)| port)
        .filter(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use axum::extract::{Request as AxumRequest, State};
    use axum::routing::any;
    use axum::Router;
    use bytes::Bytes;
    use http_body_util::channel::{Channel, Sender};
    use http_body_util::{BodyExt, Full, Limited};

    /// A table row's parameter mappings, `(key, value)`.
    type Mappings<'a> = &'a [(&'a str, &'a str)];

    // -- fixtures ------------------------------------------------------------------------------

    struct Fixture {
        method: Method,
        path: String,
        query: String,
        headers: HeaderMap,
        params: Vec<(String, String)>,
        default_route: bool,
        stage: BTreeMap<String, String>,
        context: BTreeMap<&'static str, String>,
    }

    impl Fixture {
        fn new(path: &str, query: &str) -> Fixture {
            Fixture {
                method: Method::GET,
                path: path.to_owned(),
                query: query.to_owned(),
                headers: HeaderMap::new(),
                params: Vec::new(),
                default_route: false,
                stage: BTreeMap::from([
                    ("env".to_owned(), "prod".to_owned()),
                    ("host".to_owned(), "127.0.0.1:7000".to_owned()),
                    ("prefix".to_owned(), "v2".to_owned()),
                ]),
                context: BTreeMap::from([
                    ("requestId", "req-1".to_owned()),
                    ("stage", "prod".to_owned()),
                ]),
            }
        }

        fn header(mut self, name: &'static str, value: &str) -> Fixture {
            self.headers.append(
                name,
                HeaderValue::from_str(value).expect("test header value"),
            );
            self
        }

        fn param(mut self, name: &str, value: &str) -> Fixture {
            self.params.push((name.to_owned(), value.to_owned()));
            self
        }

        fn default_route(mut self) -> Fixture {
            self.default_route = true;
            self
        }

        fn method(mut self, method: Method) -> Fixture {
            self.method = method;
            self
        }

        fn request(&self, body: Body) -> ForwardRequest<'_> {
            ForwardRequest {
                method: self.method.clone(),
                path: &self.path,
                raw_query: &self.query,
                headers: self.headers.clone(),
                body,
                path_parameters: &self.params,
                is_default_route: self.default_route,
                stage_variables: &self.stage,
                context: &self.context,
                client_ip: IpAddr::from([203, 0, 113, 9]),
                host: "api.example.com",
                https: true,
            }
        }
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn backend(uri: &str, mappings: &[(&str, &str)]) -> HttpBackend {
        HttpBackend::new(uri, None, None, &params(mappings)).expect("valid test backend")
    }

    fn prepare(backend: &HttpBackend, fixture: &Fixture) -> Result<Outgoing, ProxyError> {
        let mut req = fixture.request(Body::empty());
        let headers = std::mem::take(&mut req.headers);
        backend.prepare(&req, headers)
    }

    fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    // -- validation ----------------------------------------------------------------------------

    #[test]
    fn validate_accepts_documented_forms() {
        let cases: &[(&str, Option<&str>, Option<u64>, Mappings<'_>)] = &[
            ("http://127.0.0.1:9000/items/{id}", None, None, &[]),
            (
                "http://backend/petstore/{proxy}",
                Some("ANY"),
                Some(50),
                &[],
            ),
            (
                "http://${stageVariables.host}/v1/{proxy+}",
                Some("post"),
                Some(30_000),
                &[],
            ),
            (
                "http://backend/search?source=gw&id={id}",
                Some("GET"),
                None,
                &[],
            ),
            (
                "http://backend",
                None,
                None,
                &[
                    ("append:header.x-request-id", "$context.requestId"),
                    ("overwrite:header.x-env", "env-${stageVariables.env}"),
                    ("remove:header.x-debug", "''"),
                    ("append:querystring.page", "${request.querystring.p}"),
                    ("overwrite:querystring.sort", "name"),
                    ("remove:querystring.secret", ""),
                    ("overwrite:path", "/v2/users/$request.path.id"),
                    ("append:header.x-price", "$5"),
                ],
            ),
        ];
        for (uri, method, timeout, mappings) in cases {
            let result = validate_backend(uri, *method, *timeout, &params(mappings));
            assert!(result.is_ok(), "{uri} {method:?} {timeout:?}: {result:?}");
        }
        let parsed = HttpBackend::new("http://b/x", Some("delete"), Some(200), &BTreeMap::new())
            .expect("valid");
        assert_eq!(parsed.method(), Some(&Method::DELETE));
        assert_eq!(parsed.timeout(), Duration::from_millis(200));
        assert_eq!(parsed.uri(), "http://b/x");
        let default =
            HttpBackend::new("http://b/x", Some("ANY"), None, &BTreeMap::new()).expect("valid");
        assert_eq!(default.method(), None);
        assert_eq!(default.timeout(), Duration::from_secs(30));
    }

    #[test]
    fn validate_refuses_bad_integrations_naming_the_problem() {
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<u64>,
            &'a [(&'a str, &'a str)],
            &'a str,
        );
        let cases: &[Case<'_>] = &[
            (
                "https://example.com/x",
                None,
                None,
                &[],
                "uses the https:// scheme",
            ),
            (
                "ftp://example.com/x",
                None,
                None,
                &[],
                "uses the ftp:// scheme",
            ),
            ("example.com/x", None, None, &[], "must be an absolute URL"),
            ("http:///x", None, None, &[], "not a valid URL"),
            (
                "http://{id}.example.com/",
                None,
                None,
                &[],
                "is in the host",
            ),
            ("http://example.com/{id", None, None, &[], "no closing `}`"),
            ("http://example.com/id}", None, None, &[], "no opening `{`"),
            (
                "http://example.com/{a b}",
                None,
                None,
                &[],
                "not a path variable name",
            ),
            (
                "http://example.com/${stageVariables.}",
                None,
                None,
                &[],
                "not a stage variable",
            ),
            (
                "http://example.com/${env}",
                None,
                None,
                &[],
                "not a stage variable",
            ),
            ("http://example.com/x#frag", None, None, &[], "fragment"),
            (
                "http://user:pw@example.com/",
                None,
                None,
                &[],
                "credentials",
            ),
            ("http://b/", Some("TRACE"), None, &[], "method `TRACE`"),
            ("http://b/", None, Some(49), &[], "timeout of 49 ms"),
            ("http://b/", None, Some(30_001), &[], "timeout of 30001 ms"),
            (
                "http://b/",
                None,
                None,
                &[("append:header.Authorization", "x")],
                "reserved header `Authorization`",
            ),
            (
                "http://b/",
                None,
                None,
                &[("overwrite:header.X-Amzn-Trace-Id", "x")],
                "reserved header",
            ),
            (
                "http://b/",
                None,
                None,
                &[("append:header.access-control-allow-origin", "*")],
                "reserved header",
            ),
            (
                "http://b/",
                None,
                None,
                &[("remove:header.connection", "")],
                "reserved header",
            ),
            (
                "http://b/",
                None,
                None,
                &[("overwrite:header.x-forwarded-for", "1.2.3.4")],
                "reserved header",
            ),
            (
                "http://b/",
                None,
                None,
                &[("overwrite:header.host", "other")],
                "reserved header",
            ),
            (
                "http://b/",
                None,
                None,
                &[("insert:header.a", "x")],
                "`insert` is not an action",
            ),
            (
                "http://b/",
                None,
                None,
                &[("append:path", "/x")],
                "can only be overwritten",
            ),
            (
                "http://b/",
                None,
                None,
                &[("overwrite:body", "x")],
                "`body` is not a mapping target",
            ),
            (
                "http://b/",
                None,
                None,
                &[("header.a", "x")],
                "must look like",
            ),
            (
                "http://b/",
                None,
                None,
                &[("append:header.bad name", "x")],
                "not a valid header name",
            ),
            (
                "http://b/",
                None,
                None,
                &[("append:querystring.", "x")],
                "not a valid query string name",
            ),
            (
                "http://b/",
                None,
                None,
                &[("append:header.a", "$request.body.name")],
                "$request.body",
            ),
            (
                "http://b/",
                None,
                None,
                &[("append:header.a", "$requets.header.b")],
                "not a supported variable",
            ),
            (
                "http://b/",
                None,
                None,
                &[("append:header.a", "${request.header.b")],
                "no closing `}`",
            ),
            (
                "http://b/",
                None,
                None,
                &[("append:header.a", "$request.header.")],
                "names no header",
            ),
            (
                "http://b/",
                None,
                None,
                &[("append:header.a", "${context.a-b}")],
                "not a context variable name",
            ),
            (
                "http://b/",
                None,
                None,
                &[("append:header.a", "line\nbreak")],
                "not a valid header value",
            ),
            (
                "http://b/",
                None,
                None,
                &[("overwrite:path", "/a b")],
                "cannot be part of a URL path",
            ),
        ];
        for (uri, method, timeout, mappings, expected) in cases {
            let error = validate_backend(uri, *method, *timeout, &params(mappings))
                .expect_err(&format!("{uri} {mappings:?} should be refused"));
            let message = error.to_string();
            assert!(
                message.contains(expected),
                "{uri} {mappings:?}: `{message}` lacks `{expected}`"
            );
            assert!(message.ends_with('.'), "not a sentence: {message}");
            assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
    }

    // -- URL building --------------------------------------------------------------------------

    #[test]
    fn builds_the_backend_url() {
        let cases: &[(&str, Fixture, &str)] = &[
            (
                "http://b:9000/items/{id}",
                Fixture::new("/items/42", "").param("id", "42"),
                "http://b:9000/items/42",
            ),
            (
                "http://b:9000/items/{id}",
                Fixture::new("/items/x", "").param("id", "a b/ü?%"),
                "http://b:9000/items/a%20b/%C3%BC%3F%25",
            ),
            (
                "http://b/petstore/{proxy}",
                Fixture::new("/parent/dogs/1/toys", "x=1&y=%20").param("proxy", "dogs/1/toys"),
                "http://b/petstore/dogs/1/toys?x=1&y=%20",
            ),
            (
                "http://b/petstore/{proxy+}",
                Fixture::new("/p/a", "").param("proxy", "a"),
                "http://b/petstore/a",
            ),
            (
                "http://b:9000",
                Fixture::new("/any/thing", "q=1").default_route(),
                "http://b:9000/any/thing?q=1",
            ),
            (
                "http://b:9000/base/",
                Fixture::new("/x/y%2Fz", "").default_route(),
                "http://b:9000/base/x/y%2Fz",
            ),
            (
                "http://b:9000/base",
                Fixture::new("", "").default_route(),
                "http://b:9000/base/",
            ),
            (
                "http://b:9000/fixed",
                Fixture::new("/whatever", "a=b"),
                "http://b:9000/fixed?a=b",
            ),
            ("http://b", Fixture::new("/x", ""), "http://b/"),
            (
                "http://${stageVariables.host}/${stageVariables.prefix}/{id}",
                Fixture::new("/i/7", "").param("id", "7"),
                "http://127.0.0.1:7000/v2/7",
            ),
            (
                "http://b/search?source=gw&id={id}",
                Fixture::new("/s", "q=1").param("id", "a&b"),
                "http://b/search?source=gw&id=a%26b&q=1",
            ),
        ];
        for (uri, fixture, expected) in cases {
            let outgoing =
                prepare(&backend(uri, &[]), fixture).unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert_eq!(outgoing.uri.to_string(), *expected, "{uri}");
            let host = outgoing.uri.authority().map(|a| a.as_str()).unwrap_or("");
            assert_eq!(
                header_values(&outgoing.headers, "host"),
                vec![host],
                "{uri}"
            );
        }
    }

    #[test]
    fn url_building_names_what_is_missing() {
        let missing_stage = prepare(
            &backend("http://${stageVariables.nope}/x", &[]),
            &Fixture::new("/", ""),
        );
        assert!(matches!(
            missing_stage,
            Err(ProxyError::MissingStageVariable { ref name }) if name == "nope"
        ));
        let missing_param = prepare(&backend("http://b/{id}", &[]), &Fixture::new("/", ""));
        assert!(matches!(
            missing_param,
            Err(ProxyError::MissingPathParameter { ref name }) if name == "id"
        ));
        let bad_host = prepare(&backend("http://${stageVariables.host}/x", &[]), &{
            let mut f = Fixture::new("/", "");
            f.stage.insert("host".to_owned(), "bad host".to_owned());
            f
        });
        assert!(matches!(bad_host, Err(ProxyError::InvalidTargetUri { .. })));
    }

    // -- parameter mapping ---------------------------------------------------------------------

    #[test]
    fn parameter_mapping_changes_headers() {
        // (mappings, request, header, expected values)
        let cases: &[(Mappings<'_>, Fixture, &str, &[&str])] = &[
            (
                &[("append:header.x-request-id", "$context.requestId")],
                Fixture::new("/", ""),
                "x-request-id",
                &["req-1"],
            ),
            (
                &[("append:header.x-request-id", "id=${context.requestId}.")],
                Fixture::new("/", ""),
                "x-request-id",
                &["id=req-1."],
            ),
            (
                &[
                    ("append:header.header2", "$request.header.header1"),
                    ("remove:header.header1", "''"),
                ],
                Fixture::new("/", "").header("header1", "v1"),
                "header2",
                &["v1"],
            ),
            (
                &[
                    ("append:header.header2", "$request.header.header1"),
                    ("remove:header.header1", "''"),
                ],
                Fixture::new("/", "").header("header1", "v1"),
                "header1",
                &[],
            ),
            (
                &[("append:header.x-all", "$request.header.X-Multi")],
                Fixture::new("/", "")
                    .header("x-multi", "a")
                    .header("x-multi", "b"),
                "x-all",
                &["a,b"],
            ),
            (
                &[("append:header.x-tag", "new")],
                Fixture::new("/", "").header("x-tag", "old"),
                "x-tag",
                &["old", "new"],
            ),
            (
                &[("overwrite:header.x-env", "env-$stageVariables.env")],
                Fixture::new("/", "")
                    .header("x-env", "a")
                    .header("x-env", "b"),
                "x-env",
                &["env-prod"],
            ),
            (
                &[("overwrite:header.x-env", "$request.header.absent")],
                Fixture::new("/", "").header("x-env", "kept"),
                "x-env",
                &["kept"],
            ),
            (
                &[("append:header.x-id", "user-${request.path.id}")],
                Fixture::new("/u/7", "").param("id", "7"),
                "x-id",
                &["user-7"],
            ),
            (
                &[("append:header.x-path", "$request.path")],
                Fixture::new("/a%20b/c", ""),
                "x-path",
                &["/a%20b/c"],
            ),
            (
                &[("append:header.x-name", "$request.querystring.name")],
                Fixture::new("/", "name=a+b&name=c%2Cd&Name=no"),
                "x-name",
                &["a b,c,d"],
            ),
            (
                &[("append:header.x-price", "$5 ${stageVariables.env}")],
                Fixture::new("/", ""),
                "x-price",
                &["$5 prod"],
            ),
        ];
        for (mappings, fixture, name, expected) in cases {
            let outgoing = prepare(&backend("http://b/", mappings), fixture)
                .unwrap_or_else(|e| panic!("{mappings:?}: {e}"));
            assert_eq!(
                header_values(&outgoing.headers, name),
                expected.to_vec(),
                "{mappings:?}"
            );
        }
    }

    #[test]
    fn parameter_mapping_changes_query_and_path() {
        let cases: &[(&str, Mappings<'_>, Fixture, &str)] = &[
            (
                "http://b/x",
                &[("append:querystring.page", "$request.querystring.p")],
                Fixture::new("/", "p=2&keep=a%20b"),
                "http://b/x?p=2&keep=a%20b&page=2",
            ),
            (
                "http://b/x",
                &[("overwrite:querystring.sort", "name asc")],
                Fixture::new("/", "sort=x&z=1&sort=y"),
                "http://b/x?z=1&sort=name%20asc",
            ),
            (
                "http://b/x",
                &[("remove:querystring.secret", "''")],
                Fixture::new("/", "a=1&secret=s&b=2&secr%65t=t"),
                "http://b/x?a=1&b=2",
            ),
            (
                "http://b/x",
                &[("append:querystring.q", "${request.header.x-q}")],
                Fixture::new("/", "").header("x-q", "a&b=c"),
                "http://b/x?q=a%26b%3Dc",
            ),
            (
                "http://b/x",
                &[("append:querystring.q", "$request.header.absent")],
                Fixture::new("/", "keep=1"),
                "http://b/x?keep=1",
            ),
            (
                "http://b/old/{id}",
                &[("overwrite:path", "/v2/users/$request.path.id")],
                Fixture::new("/users/a b", "q=1").param("id", "a b"),
                "http://b/v2/users/a%20b?q=1",
            ),
            (
                "http://b/ignored",
                &[("overwrite:path", "$request.path")],
                Fixture::new("/raw%2Fpath/x", ""),
                "http://b/raw%2Fpath/x",
            ),
            (
                "http://b/x",
                &[("overwrite:path", "${stageVariables.prefix}/$context.stage")],
                Fixture::new("/", ""),
                "http://b/v2/prod",
            ),
        ];
        for (uri, mappings, fixture, expected) in cases {
            let outgoing = prepare(&backend(uri, mappings), fixture)
                .unwrap_or_else(|e| panic!("{mappings:?}: {e}"));
            assert_eq!(outgoing.uri.to_string(), *expected, "{mappings:?}");
        }
    }

    #[test]
    fn a_mapped_value_that_is_no_header_value_is_a_bad_request() {
        // %0A decodes to a line break, which no header value may hold.
        let error = prepare(
            &backend(
                "http://b/",
                &[("append:header.x-q", "$request.querystring.q")],
            ),
            &Fixture::new("/", "q=a%0Ab"),
        )
        .expect_err("a line break cannot go into a header");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert!(error.to_string().contains("append:header.x-q"), "{error}");
    }

    // -- headers -------------------------------------------------------------------------------

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("x-secret", "s"),
            ("x-other", "o"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "1"),
            ("content-type", "text/plain"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["content-type", "x-kept"]);
    }

    #[test]
    fn forwarding_headers_name_the_client() {
        // (client ip, host, https, earlier Forwarded, earlier X-Forwarded-For,
        //  Forwarded, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Port)
        type Case<'a> = (
            IpAddr,
            &'a str,
            bool,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
            &'a str,
            &'a str,
            &'a str,
        );
        let cases: &[Case<'_>] = &[
            (
                IpAddr::from([203, 0, 113, 9]),
                "api.example.com",
                true,
                None,
                None,
                "for=203.0.113.9;host=api.example.com;proto=https",
                "203.0.113.9",
                "https",
                "443",
            ),
            (
                "::1".parse().expect("ipv6"),
                "localhost:8080",
                false,
                Some("for=198.51.100.1"),
                Some("198.51.100.1"),
                "for=198.51.100.1, for=\"[::1]\";host=\"localhost:8080\";proto=http",
                "198.51.100.1, ::1",
                "http",
                "8080",
            ),
            (
                IpAddr::from([10, 0, 0, 1]),
                "[::1]:9443",
                true,
                None,
                None,
                "for=10.0.0.1;host=\"[::1]:9443\";proto=https",
                "10.0.0.1",
                "https",
                "9443",
            ),
            (
                IpAddr::from([10, 0, 0, 1]),
                "",
                false,
                None,
                None,
                "for=10.0.0.1;proto=http",
                "10.0.0.1",
                "http",
                "80",
            ),
        ];
        for (ip, host, https, forwarded, xff, want_fwd, want_xff, want_proto, want_port) in cases {
            let mut headers = HeaderMap::new();
            if let Some(v) = forwarded {
                headers.insert(header::FORWARDED, HeaderValue::from_static(v));
            }
            if let Some(v) = xff {
                headers.insert("x-forwarded-for", HeaderValue::from_static(v));
            }
            headers.insert("x-forwarded-proto", HeaderValue::from_static("spoofed"));
            add_forwarding_headers(&mut headers, *ip, host, *https);
            assert_eq!(
                header_values(&headers, "forwarded"),
                vec![*want_fwd],
                "{host}"
            );
            assert_eq!(
                header_values(&headers, "x-forwarded-for"),
                vec![*want_xff],
                "{host}"
            );
            assert_eq!(
                header_values(&headers, "x-forwarded-proto"),
                vec![*want_proto],
                "{host}"
            );
            assert_eq!(
                header_values(&headers, "x-forwarded-port"),
                vec![*want_port],
                "{host}"
            );
        }
    }

    #[test]
    fn errors_map_to_what_api_gateway_answers() {
        let cases: &[(ProxyError, StatusCode, &str)] = &[
            (
                ProxyError::Timeout {
                    authority: "b".into(),
                    timeout_ms: 200,
                },
                StatusCode::GATEWAY_TIMEOUT,
                "Endpoint request timed out",
            ),
            (
                ProxyError::Unreachable {
                    authority: "b".into(),
                    reason: "refused".into(),
                },
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
            ),
            (
                ProxyError::NoResponse {
                    authority: "b".into(),
                    reason: "closed".into(),
                },
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
            ),
            (
                ProxyError::InvalidResponse {
                    authority: "b".into(),
                    reason: "parse".into(),
                },
                StatusCode::BAD_GATEWAY,
                "Bad Gateway",
            ),
            (
                ProxyError::RequestBodyTooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request Entity Too Large",
            ),
            (
                ProxyError::RequestBody {
                    reason: "reset".into(),
                },
                StatusCode::BAD_REQUEST,
                "Bad Request",
            ),
            (
                ProxyError::MissingStageVariable { name: "x".into() },
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
            ),
        ];
        for (error, status, message) in cases {
            assert_eq!(error.status(), *status, "{error}");
            assert_eq!(error.client_message(), *message, "{error}");
            let response = error.response();
            assert_eq!(response.status(), *status);
            assert_eq!(
                header_values(response.headers(), "content-type"),
                vec!["application/json"]
            );
        }
    }

    // -- real sockets --------------------------------------------------------------------------

    /// Every network test gives up after this, so a proxy that hangs fails instead of stalling.
    const TEST_LIMIT: Duration = Duration::from_secs(10);

    type Drip = Arc<Mutex<Option<Sender<Bytes>>>>;

    /// A backend on 127.0.0.1: `/echo-body` streams the request body back as it arrives,
    /// `/count` answers the body's length once it has read it all, `/first-chunk` answers the
    /// length of the first chunk without waiting for the rest, `/drip` answers one chunk and
    /// holds the rest until the test releases it, `/slow` answers after 2 s, `/hop` answers
    /// with hop-by-hop headers, and anything else echoes method, URI and headers as JSON.
    async fn spawn_backend() -> (SocketAddr, Drip) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let drip: Drip = Arc::new(Mutex::new(None));
        let app = Router::new()
            .route(
                "/echo-body",
                any(|req: AxumRequest| async move { Body::new(req.into_body()) }),
            )
            .route(
                "/count",
                any(|req: AxumRequest| async move {
                    match req.into_body().collect().await {
                        Ok(body) => body.to_bytes().len().to_string(),
                        Err(e) => format!("error: {e}"),
                    }
                }),
            )
            .route(
                "/first-chunk",
                any(|req: AxumRequest| async move {
                    let mut body = req.into_body();
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            frame.into_data().map(|d| d.len()).unwrap_or(0).to_string()
                        }
                        _ => "none".to_owned(),
                    }
                }),
            )
            .route(
                "/drip",
                any(|State(drip): State<Drip>| async move {
                    let (mut tx, body) = Channel::<Bytes>::new(4);
                    let _ = tx.try_send(hyper::body::Frame::data(Bytes::from_static(b"first")));
                    if let Ok(mut slot) = drip.lock() {
                        *slot = Some(tx);
                    }
                    Body::new(body)
                }),
            )
            .route(
                "/slow",
                any(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route(
                "/hop",
                any(|| async {
                    (
                        [
                            ("x-kept", "1"),
                            ("keep-alive", "timeout=5"),
                            ("proxy-authenticate", "Basic"),
                            ("x-secret", "s"),
                            ("connection", "x-secret"),
                        ],
                        "hop",
                    )
                }),
            )
            .fallback(|req: AxumRequest| async move {
                let headers: Vec<(String, String)> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                axum::Json(serde_json::json!({
                    "method": req.method().as_str(),
                    "uri": req.uri().to_string(),
                    "headers": headers,
                }))
            })
            .with_state(drip.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr, drip)
    }

    async fn forward(
        proxy: &Proxy,
        backend: &HttpBackend,
        fixture: &Fixture,
        body: Body,
    ) -> Result<Response<Body>, ProxyError> {
        tokio::time::timeout(TEST_LIMIT, proxy.forward(backend, fixture.request(body)))
            .await
            .expect("the proxy answered within the test limit")
    }

    async fn body_bytes(response: Response<Body>) -> Bytes {
        tokio::time::timeout(TEST_LIMIT, response.into_body().collect())
            .await
            .expect("body within the test limit")
            .expect("body read")
            .to_bytes()
    }

    async fn echo(response: Response<Body>) -> serde_json::Value {
        serde_json::from_slice(&body_bytes(response).await).expect("echo JSON")
    }

    fn echoed_header(echo: &serde_json::Value, name: &str) -> Vec<String> {
        echo["headers"]
            .as_array()
            .map(|headers| {
                headers
                    .iter()
                    .filter(|pair| pair[0] == name)
                    .filter_map(|pair| pair[1].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn forwards_method_url_and_headers_to_a_real_backend() {
        let (addr, _) = spawn_backend().await;
        let proxy = Proxy::new();
        let backend = backend(
            &format!("http://{addr}/items/{{id}}"),
            &[
                ("append:header.x-request-id", "$context.requestId"),
                ("overwrite:querystring.page", "${request.header.x-page}"),
            ],
        );
        let fixture = Fixture::new("/things/a b", "x=1&page=9")
            .method(Method::PATCH)
            .param("id", "a b")
            .header("host", "api.example.com")
            .header("x-client", "yes")
            .header("x-page", "3")
            .header("connection", "x-secret")
            .header("x-secret", "s")
            .header("x-forwarded-for", "198.51.100.1");
        let response = forward(&proxy, &backend, &fixture, Body::empty())
            .await
            .expect("forwarded");
        assert_eq!(response.status(), StatusCode::OK);
        let echo = echo(response).await;
        assert_eq!(echo["method"], "PATCH");
        assert_eq!(echo["uri"], "/items/a%20b?x=1&page=3");
        assert_eq!(echoed_header(&echo, "host"), vec![addr.to_string()]);
        assert_eq!(echoed_header(&echo, "x-client"), vec!["yes"]);
        assert_eq!(echoed_header(&echo, "x-request-id"), vec!["req-1"]);
        assert!(echoed_header(&echo, "x-secret").is_empty());
        assert!(echoed_header(&echo, "connection")
            .iter()
            .all(|v| !v.contains("x-secret")));
        assert_eq!(
            echoed_header(&echo, "forwarded"),
            vec!["for=203.0.113.9;host=api.example.com;proto=https"]
        );
        assert_eq!(
            echoed_header(&echo, "x-forwarded-for"),
            vec!["198.51.100.1, 203.0.113.9"]
        );
        assert_eq!(echoed_header(&echo, "x-forwarded-proto"), vec!["https"]);
        assert_eq!(echoed_header(&echo, "x-forwarded-port"), vec!["443"]);
    }

    #[tokio::test]
    async fn integration_method_and_default_route_path() {
        let (addr, _) = spawn_backend().await;
        let proxy = Proxy::new();
        let post = HttpBackend::new(
            &format!("http://{addr}/base"),
            Some("POST"),
            None,
            &BTreeMap::new(),
        )
        .expect("valid");
        let fixture = Fixture::new("/any/deep/path", "q=a%2Bb").default_route();
        let echo = echo(
            forward(&proxy, &post, &fixture, Body::empty())
                .await
                .expect("forwarded"),
        )
        .await;
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["uri"], "/base/any/deep/path?q=a%2Bb");
    }

    #[tokio::test]
    async fn hop_by_hop_headers_do_not_come_back() {
        let (addr, _) = spawn_backend().await;
        let response = forward(
            &Proxy::new(),
            &backend(&format!("http://{addr}/hop"), &[]),
            &Fixture::new("/hop", ""),
            Body::empty(),
        )
        .await
        .expect("forwarded");
        let headers = response.headers();
        assert_eq!(header_values(headers, "x-kept"), vec!["1"]);
        for gone in ["keep-alive", "proxy-authenticate", "x-secret", "connection"] {
            assert!(headers.get(gone).is_none(), "{gone} came back");
        }
        assert_eq!(body_bytes(response).await, Bytes::from_static(b"hop"));
    }

    #[tokio::test]
    async fn five_megabytes_stream_both_ways_intact() {
        const CHUNK: usize = 64 * 1024;
        const CHUNKS: usize = 80; // 5 MiB
        let (addr, _) = spawn_backend().await;
        let (mut tx, body) = Channel::<Bytes>::new(4);
        let sender = tokio::spawn(async move {
            for i in 0..CHUNKS {
                let chunk: Vec<u8> = (0..CHUNK).map(|j| ((i * CHUNK + j) % 251) as u8).collect();
                if tx.send_data(Bytes::from(chunk)).await.is_err() {
                    break;
                }
            }
        });
        let response = forward(
            &Proxy::new(),
            &backend(&format!("http://{addr}/echo-body"), &[]),
            &Fixture::new("/echo-body", "").method(Method::POST),
            Body::new(body),
        )
        .await
        .expect("forwarded");
        assert_eq!(response.status(), StatusCode::OK);
        let echoed = body_bytes(response).await;
        let _ = sender.await;
        assert_eq!(echoed.len(), CHUNK * CHUNKS);
        let expected: Vec<u8> = (0..CHUNK * CHUNKS).map(|k| (k % 251) as u8).collect();
        assert!(
            echoed == expected,
            "the echoed body differs from the one sent"
        );
    }

    #[tokio::test]
    async fn the_request_body_is_not_buffered() {
        let (addr, _) = spawn_backend().await;
        let (mut tx, body) = Channel::<Bytes>::new(4);
        tx.send_data(Bytes::from(vec![7u8; 1024]))
            .await
            .expect("first chunk");
        // The rest of the body never comes while the backend answers: a proxy that waited for
        // the whole body would hang here until the test limit.
        let response = forward(
            &Proxy::new(),
            &backend(&format!("http://{addr}/first-chunk"), &[]),
            &Fixture::new("/first-chunk", "").method(Method::PUT),
            Body::new(body),
        )
        .await
        .expect("forwarded before the body ended");
        assert_eq!(body_bytes(response).await, Bytes::from_static(b"1024"));
        drop(tx);
    }

    #[tokio::test]
    async fn the_response_body_is_not_buffered() {
        let (addr, drip) = spawn_backend().await;
        let response = forward(
            &Proxy::new(),
            &backend(&format!("http://{addr}/drip"), &[]),
            &Fixture::new("/drip", ""),
            Body::empty(),
        )
        .await
        .expect("the head arrives while the backend still holds the body");
        let mut body = response.into_body();
        let first = tokio::time::timeout(TEST_LIMIT, body.frame())
            .await
            .expect("first chunk within the test limit")
            .expect("a frame")
            .expect("no error");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"first")));
        let mut tx = drip
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
            .expect("the backend kept its sender");
        tx.send_data(Bytes::from_static(b"second"))
            .await
            .expect("second chunk");
        drop(tx);
        let rest = tokio::time::timeout(TEST_LIMIT, body.collect())
            .await
            .expect("rest within the test limit")
            .expect("rest read")
            .to_bytes();
        assert_eq!(rest, Bytes::from_static(b"second"));
    }

    #[tokio::test]
    async fn a_backend_that_is_down_is_service_unavailable() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address")
        };
        let error = forward(
            &Proxy::new(),
            &backend(&format!("http://{closed}/x"), &[]),
            &Fixture::new("/x", ""),
            Body::empty(),
        )
        .await
        .expect_err("nothing listens there");
        assert!(matches!(error, ProxyError::Unreachable { .. }), "{error}");
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body_bytes(error.response()).await;
        assert_eq!(
            body,
            Bytes::from_static(br#"{"message":"Service Unavailable"}"#)
        );
    }

    #[tokio::test]
    async fn a_slow_backend_times_out_as_http_apis_do() {
        let (addr, _) = spawn_backend().await;
        let slow = HttpBackend::new(
            &format!("http://{addr}/slow"),
            None,
            Some(200),
            &BTreeMap::new(),
        )
        .expect("valid");
        let started = Instant::now();
        let error = forward(
            &Proxy::new(),
            &slow,
            &Fixture::new("/slow", ""),
            Body::empty(),
        )
        .await
        .expect_err("the backend sleeps past the timeout");
        let elapsed = started.elapsed();
        assert!(
            matches!(
                error,
                ProxyError::Timeout {
                    timeout_ms: 200,
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(15),
            "{elapsed:?}"
        );
        assert_eq!(error.status(), StatusCode::GATEWAY_TIMEOUT);
        let body = body_bytes(error.response()).await;
        assert_eq!(
            body,
            Bytes::from_static(br#"{"message":"Endpoint request timed out"}"#)
        );
    }

    /// A raw TCP "backend" that answers one connection with `reply` (nothing, if empty) and
    /// closes it.
    async fn spawn_raw_backend(reply: &'static [u8]) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(reply).await;
                let _ = socket.shutdown().await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_backend_that_does_not_speak_http_is_a_bad_gateway() {
        let addr = spawn_raw_backend(b"this is not http\r\n\r\n").await;
        let error = forward(
            &Proxy::new(),
            &backend(&format!("http://{addr}/x"), &[]),
            &Fixture::new("/x", ""),
            Body::empty(),
        )
        .await
        .expect_err("garbage is no response");
        assert!(
            matches!(error, ProxyError::InvalidResponse { .. }),
            "{error}"
        );
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn a_backend_that_hangs_up_is_service_unavailable() {
        let addr = spawn_raw_backend(b"").await;
        let error = forward(
            &Proxy::new(),
            &backend(&format!("http://{addr}/x"), &[]),
            &Fixture::new("/x", ""),
            Body::empty(),
        )
        .await
        .expect_err("no response at all");
        assert!(matches!(error, ProxyError::NoResponse { .. }), "{error}");
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn an_oversized_request_body_is_refused_as_too_large() {
        let (addr, _) = spawn_backend().await;
        let limited = Limited::new(Full::new(Bytes::from(vec![0u8; 100])), 10);
        let error = forward(
            &Proxy::new(),
            &backend(&format!("http://{addr}/count"), &[]),
            &Fixture::new("/count", "").method(Method::POST),
            Body::new(limited),
        )
        .await
        .expect_err("the body limit trips");
        assert!(matches!(error, ProxyError::RequestBodyTooLarge), "{error}");
        assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
