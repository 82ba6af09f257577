//! The event API Gateway HTTP APIs send to a Lambda integration, payload format versions 2.0 and 1.0.
//!
//! The shapes follow "Working with AWS Lambda proxy integrations for HTTP APIs" in the API Gateway
//! developer guide field for field, in the order AWS lists them. Where the guide's examples are
//! schematic (they do not say what an empty field looks like, or whether paths arrive decoded),
//! the behaviour follows events HTTP APIs are seen to send:
//! - 2.0 leaves out `cookies`, `queryStringParameters`, `pathParameters`, `stageVariables` and
//!   `body` when there are none; 1.0 sends them as `null`.
//! - `rawPath` (2.0), `path` and `requestContext.path` (1.0) arrive percent-decoded, as HTTP APIs
//!   deliver them (REST APIs do not); `rawQueryString` stays as the client sent it.
//! - The request body is sent as text only for text media types and base64-encoded otherwise
//!   (see [`is_text_body`]).
//!
//! The wire types borrow from [`RequestInfo`] and serialize straight to bytes, so building an
//! event copies nothing but what has to be decoded.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// What the gateway knows about one request when it invokes a function.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub method: &'a str,
    /// The request path as received (percent-encoded), including the stage prefix when the stage
    /// is not `$default` (e.g. `/prod/items/1`).
    pub raw_path: &'a str,
    /// The query string as received, without `?`; empty when there is none.
    pub raw_query: &'a str,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
    /// The matched route key: `GET /items/{id}` or `$default`.
    pub route_key: &'a str,
    /// The route's path parameters, already decoded, in route order.
    pub path_parameters: &'a [(String, String)],
    /// `$default` or a stage name such as `prod`.
    pub stage: &'a str,
    pub stage_variables: &'a BTreeMap<String, String>,
    pub api_id: &'a str,
    /// The Host the client used, without port, e.g. `abc123.execute-api.localhost`.
    pub domain_name: &'a str,
    pub account_id: &'a str,
    pub request_id: &'a str,
    pub source_ip: &'a str,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: &'a str,
    /// When the request arrived.
    pub time: OffsetDateTime,
    /// Placed as is under `requestContext.authorizer`, so it must already have the shape of the
    /// payload version: for 2.0 `{"jwt": {"claims": {..}, "scopes": [..]}}` or
    /// `{"lambda": {..}}`; for 1.0 `{"claims": {..}, "scopes": [..]}` or the Lambda
    /// authorizer's context. `None` leaves the field out, as AWS does without an authorizer.
    pub authorizer: Option<&'a serde_json::Value>,
}

/// The payload format 2.0 event for `info`, as JSON bytes.
pub fn event_v2(info: &RequestInfo) -> Vec<u8> {
    let query = QueryParams::parse(info.raw_query);
    let cookies = cookies(info.headers);
    let path = decode_path(info.raw_path);
    let body = EventBody::of(info.headers, info.body);
    let event = EventV2 {
        version: "2.0",
        route_key: info.route_key,
        raw_path: &path,
        raw_query_string: info.raw_query,
        cookies: &cookies,
        headers: JoinedHeaders(info.headers),
        query_string_parameters: JoinedQuery(&query),
        request_context: RequestContextV2 {
            account_id: info.account_id,
            api_id: info.api_id,
            authorizer: info.authorizer,
            domain_name: info.domain_name,
            domain_prefix: domain_prefix(info.domain_name),
            http: HttpV2 {
                method: info.method,
                path: &path,
                protocol: info.protocol,
                source_ip: info.source_ip,
                user_agent: user_agent(info.headers),
            },
            request_id: info.request_id,
            route_key: info.route_key,
            stage: info.stage,
            time: aws_time(info.time),
            time_epoch: epoch_millis(info.time),
        },
        body: body.text.as_deref(),
        path_parameters: Pairs(info.path_parameters),
        is_base64_encoded: body.is_base64_encoded,
        stage_variables: info.stage_variables,
    };
    to_json(&event)
}

/// The payload format 1.0 event for `info`, as JSON bytes.
pub fn event_v1(info: &RequestInfo) -> Vec<u8> {
    let query = QueryParams::parse(info.raw_query);
    let path = decode_path(info.raw_path);
    let body = EventBody::of(info.headers, info.body);
    let resource = route_resource(info.route_key);
    let has_query = !query.0.is_empty();
    let event = EventV1 {
        version: "1.0",
        resource,
        path: &path,
        http_method: info.method,
        headers: LastHeaders(info.headers),
        multi_value_headers: MultiHeaders(info.headers),
        query_string_parameters: has_query.then_some(LastQuery(&query)),
        multi_value_query_string_parameters: has_query.then_some(MultiQuery(&query)),
        request_context: RequestContextV1 {
            account_id: info.account_id,
            api_id: info.api_id,
            authorizer: info.authorizer,
            domain_name: info.domain_name,
            domain_prefix: domain_prefix(info.domain_name),
            // HTTP APIs have no separate extended id; live events repeat the request id.
            extended_request_id: info.request_id,
            http_method: info.method,
            identity: IdentityV1 {
                source_ip: info.source_ip,
                user_agent: user_agent(info.headers),
                ..IdentityV1::default()
            },
            path: &path,
            protocol: info.protocol,
            request_id: info.request_id,
            request_time: aws_time(info.time),
            request_time_epoch: epoch_millis(info.time),
            // HTTP APIs report the route key as the resource id (`ANY /items/{proxy+}`,
            // `$default`), and the route's path as the resource path.
            resource_id: info.route_key,
            resource_path: resource,
            stage: info.stage,
        },
        path_parameters: (!info.path_parameters.is_empty()).then_some(Pairs(info.path_parameters)),
        stage_variables: (!info.stage_variables.is_empty()).then_some(info.stage_variables),
        body: body.text.as_deref(),
        is_base64_encoded: body.is_base64_encoded,
    };
    to_json(&event)
}

/// Whether a request body goes into the event as text rather than base64.
///
/// API Gateway documents for HTTP APIs only that a binary body is base64-encoded; the split seen
/// on live HTTP APIs is that `text/*`, `application/json`, `application/xml` and
/// `application/javascript` are text, and everything else, including no content type at all and
/// `application/x-www-form-urlencoded`, is binary. A body that claims a text type but is not
/// UTF-8 cannot travel as a JSON string without damage, so it is base64-encoded too.
pub fn is_text_body(content_type: Option<&str>, body: &[u8]) -> bool {
    is_text_media_type(content_type) && std::str::from_utf8(body).is_ok()
}

fn is_text_media_type(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence
        .get(..5)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("text/"))
        || [
            "application/json",
            "application/xml",
            "application/javascript",
        ]
        .iter()
        .any(|t| essence.eq_ignore_ascii_case(t))
}

// ---------------------------------------------------------------------------------------------
// Wire types, in the field order of AWS's examples.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventV2<'a> {
    version: &'static str,
    route_key: &'a str,
    raw_path: &'a str,
    raw_query_string: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    cookies: &'a [&'a str],
    headers: JoinedHeaders<'a>,
    #[serde(skip_serializing_if = "JoinedQuery::is_empty")]
    query_string_parameters: JoinedQuery<'a>,
    request_context: RequestContextV2<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Pairs::is_empty")]
    path_parameters: Pairs<'a>,
    is_base64_encoded: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    stage_variables: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestContextV2<'a> {
    account_id: &'a str,
    api_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorizer: Option<&'a serde_json::Value>,
    domain_name: &'a str,
    domain_prefix: &'a str,
    http: HttpV2<'a>,
    request_id: &'a str,
    route_key: &'a str,
    stage: &'a str,
    time: String,
    time_epoch: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpV2<'a> {
    method: &'a str,
    path: &'a str,
    protocol: &'a str,
    source_ip: &'a str,
    user_agent: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventV1<'a> {
    version: &'static str,
    resource: &'a str,
    path: &'a str,
    http_method: &'a str,
    headers: LastHeaders<'a>,
    multi_value_headers: MultiHeaders<'a>,
    query_string_parameters: Option<LastQuery<'a>>,
    multi_value_query_string_parameters: Option<MultiQuery<'a>>,
    request_context: RequestContextV1<'a>,
    path_parameters: Option<Pairs<'a>>,
    stage_variables: Option<&'a BTreeMap<String, String>>,
    body: Option<&'a str>,
    is_base64_encoded: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestContextV1<'a> {
    account_id: &'a str,
    api_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorizer: Option<&'a serde_json::Value>,
    domain_name: &'a str,
    domain_prefix: &'a str,
    extended_request_id: &'a str,
    http_method: &'a str,
    identity: IdentityV1<'a>,
    path: &'a str,
    protocol: &'a str,
    request_id: &'a str,
    request_time: String,
    request_time_epoch: i64,
    resource_id: &'a str,
    resource_path: &'a str,
    stage: &'a str,
}

/// The caller identity of a 1.0 event. Nimbus has no IAM or Cognito callers, so every field but
/// the address and user agent is `null`, as AWS sends them for an unauthenticated caller.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct IdentityV1<'a> {
    access_key: (),
    account_id: (),
    caller: (),
    cognito_authentication_provider: (),
    cognito_authentication_type: (),
    cognito_identity_id: (),
    cognito_identity_pool_id: (),
    principal_org_id: (),
    source_ip: &'a str,
    user: (),
    user_agent: Cow<'a, str>,
    user_arn: (),
}

// ---------------------------------------------------------------------------------------------
// Maps serialized straight from the borrowed request.

/// Headers as 2.0 sends them: one entry per (lower-case) name, repeated values joined with a
/// comma, and `cookie` left out because its crumbs travel in `cookies`.
struct JoinedHeaders<'a>(&'a http::HeaderMap);

impl Serialize for JoinedHeaders<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for name in self.0.keys() {
            if name == http::header::COOKIE {
                continue;
            }
            let mut values = self.0.get_all(name).iter();
            let Some(first) = values.next() else { continue };
            let mut joined = header_text(first);
            for value in values {
                let joined = joined.to_mut();
                joined.push(',');
                joined.push_str(&header_text(value));
            }
            map.serialize_entry(name.as_str(), &joined)?;
        }
        map.end()
    }
}

/// 1.0 `headers`: the last value of each header, as API Gateway's examples show.
struct LastHeaders<'a>(&'a http::HeaderMap);

impl Serialize for LastHeaders<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for name in self.0.keys() {
            if let Some(last) = self.0.get_all(name).iter().next_back() {
                map.serialize_entry(name.as_str(), &header_text(last))?;
            }
        }
        map.end()
    }
}

/// 1.0 `multiValueHeaders`: every value of each header, in the order received.
struct MultiHeaders<'a>(&'a http::HeaderMap);

impl Serialize for MultiHeaders<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for name in self.0.keys() {
            let values: Vec<Cow<str>> = self.0.get_all(name).iter().map(header_text).collect();
            map.serialize_entry(name.as_str(), &values)?;
        }
        map.end()
    }
}

/// The decoded query parameters, each name with its values in the order received.
struct QueryParams<'a>(BTreeMap<Cow<'a, str>, Vec<Cow<'a, str>>>);

impl<'a> QueryParams<'a> {
    /// Splits on `&` and the first `=`, decoding `+` as a space and then `%XX`, as API Gateway
    /// does for the parameter maps (the raw string goes untouched into `rawQueryString`). A name
    /// without `=` has the empty value; empty segments (`a=1&&b=2`) are skipped.
    fn parse(raw: &'a str) -> Self {
        let mut params: BTreeMap<Cow<'a, str>, Vec<Cow<'a, str>>> = BTreeMap::new();
        for segment in raw.split('&').filter(|s| !s.is_empty()) {
            let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
            params
                .entry(decode_query_component(name))
                .or_default()
                .push(decode_query_component(value));
        }
        QueryParams(params)
    }
}

/// 2.0 `queryStringParameters`: repeated values joined with a comma.
struct JoinedQuery<'a>(&'a QueryParams<'a>);

impl JoinedQuery<'_> {
    fn is_empty(&self) -> bool {
        self.0 .0.is_empty()
    }
}

impl Serialize for JoinedQuery<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                 .0
                .iter()
                .map(|(name, values)| (name, values.join(","))),
        )
    }
}

/// 1.0 `queryStringParameters`: the last value of each parameter.
struct LastQuery<'a>(&'a QueryParams<'a>);

impl Serialize for LastQuery<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                 .0
                .iter()
                .filter_map(|(name, values)| Some((name, values.last()?))),
        )
    }
}

/// 1.0 `multiValueQueryStringParameters`: every value of each parameter.
struct MultiQuery<'a>(&'a QueryParams<'a>);

impl Serialize for MultiQuery<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0 .0.iter())
    }
}

/// Name/value pairs (path parameters) as a JSON object.
#[derive(Clone, Copy)]
struct Pairs<'a>(&'a [(String, String)]);

impl Pairs<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The request body as the event carries it.
struct EventBody<'a> {
    /// `None` for an empty body: 2.0 then leaves `body` out and 1.0 sends `null`.
    text: Option<Cow<'a, str>>,
    is_base64_encoded: bool,
}

impl<'a> EventBody<'a> {
    fn of(headers: &http::HeaderMap, body: &'a [u8]) -> Self {
        if body.is_empty() {
            return EventBody {
                text: None,
                is_base64_encoded: false,
            };
        }
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        match std::str::from_utf8(body) {
            Ok(text) if is_text_media_type(content_type) => EventBody {
                text: Some(Cow::Borrowed(text)),
                is_base64_encoded: false,
            },
            _ => EventBody {
                text: Some(Cow::Owned(
                    base64::engine::general_purpose::STANDARD.encode(body),
                )),
                is_base64_encoded: true,
            },
        }
    }
}

/// The crumbs of every `Cookie` header, as 2.0's `cookies` lists them.
fn cookies(headers: &http::HeaderMap) -> Vec<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|crumb| !crumb.is_empty())
        .collect()
}

/// A header value as text; bytes that are not UTF-8 (obs-text) become U+FFFD.
fn header_text(value: &http::HeaderValue) -> Cow<'_, str> {
    String::from_utf8_lossy(value.as_bytes())
}

fn user_agent(headers: &http::HeaderMap) -> Cow<'_, str> {
    headers
        .get(http::header::USER_AGENT)
        .map(header_text)
        .unwrap_or(Cow::Borrowed(""))
}

/// The path with `%XX` decoded, as HTTP APIs hand it to functions. Sequences that do not decode
/// to UTF-8 become U+FFFD.
fn decode_path(raw_path: &str) -> Cow<'_, str> {
    percent_decode_str(raw_path).decode_utf8_lossy()
}

fn decode_query_component(raw: &str) -> Cow<'_, str> {
    if raw.contains('+') {
        let spaced = raw.replace('+', " ");
        Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
    } else {
        percent_decode_str(raw).decode_utf8_lossy()
    }
}

/// `id` of `id.execute-api.us-east-1.amazonaws.com`.
fn domain_prefix(domain_name: &str) -> &str {
    domain_name.split('.').next().unwrap_or(domain_name)
}

/// The path of a route key (`/items/{id}` of `GET /items/{id}`); `$default` stays `$default`,
/// which is what 1.0's `resource` and `resourcePath` carry for the default route.
fn route_resource(route_key: &str) -> &str {
    route_key
        .split_once(' ')
        .map_or(route_key, |(_, path)| path)
}

/// API Gateway's request time format, always in UTC: `12/Mar/2020:19:03:58 +0000`.
fn aws_time(time: OffsetDateTime) -> String {
    const FORMAT: &[FormatItem<'static>] =
        format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
    // Formatting a valid date with this description cannot fail (no fields it lacks); an empty
    // string would still leave a well-formed event.
    time.to_offset(UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

fn epoch_millis(time: OffsetDateTime) -> i64 {
    (time.unix_timestamp_nanos() / 1_000_000) as i64
}

fn to_json<T: Serialize>(event: &T) -> Vec<u8> {
    // The events hold only strings, booleans, integers, nulls and string-keyed maps, which
    // serde_json always serializes; this is not a failure input can cause.
    serde_json::to_vec(event).expect("an event of strings and string-keyed maps serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue};
    use serde_json::{json, Value};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn millis(epoch_ms: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(epoch_ms) * 1_000_000).unwrap()
    }

    /// Owns what a `RequestInfo` borrows, with the fields of AWS's documented examples.
    struct Fixture {
        method: &'static str,
        raw_path: &'static str,
        raw_query: &'static str,
        headers: HeaderMap,
        body: Vec<u8>,
        route_key: &'static str,
        path_parameters: Vec<(String, String)>,
        stage: &'static str,
        stage_variables: BTreeMap<String, String>,
        time: OffsetDateTime,
        request_id: &'static str,
        authorizer: Option<Value>,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                method: "GET",
                raw_path: "/my/path",
                raw_query: "",
                headers: HeaderMap::new(),
                body: Vec::new(),
                route_key: "$default",
                path_parameters: Vec::new(),
                stage: "$default",
                stage_variables: BTreeMap::new(),
                time: millis(1_583_348_638_390),
                request_id: "id",
                authorizer: None,
            }
        }

        fn info(&self) -> RequestInfo<'_> {
            RequestInfo {
                method: self.method,
                raw_path: self.raw_path,
                raw_query: self.raw_query,
                headers: &self.headers,
                body: &self.body,
                route_key: self.route_key,
                path_parameters: &self.path_parameters,
                stage: self.stage,
                stage_variables: &self.stage_variables,
                api_id: "api-id",
                domain_name: "id.execute-api.us-east-1.amazonaws.com",
                account_id: "123456789012",
                request_id: self.request_id,
                source_ip: "IP",
                protocol: "HTTP/1.1",
                time: self.time,
                authorizer: self.authorizer.as_ref(),
            }
        }

        fn v2(&self) -> Value {
            serde_json::from_slice(&event_v2(&self.info())).unwrap()
        }

        fn v1(&self) -> Value {
            serde_json::from_slice(&event_v1(&self.info())).unwrap()
        }
    }

    /// Asserts field by field, so a failure names the field that differs.
    fn assert_same(actual: &Value, expected: &Value, at: &str) {
        match (actual, expected) {
            (Value::Object(a), Value::Object(e)) => {
                for key in e.keys().chain(a.keys()) {
                    let here = format!("{at}.{key}");
                    match (a.get(key), e.get(key)) {
                        (Some(av), Some(ev)) => assert_same(av, ev, &here),
                        (None, Some(ev)) => panic!("{here} is missing (expected {ev})"),
                        (Some(av), None) => panic!("{here} is unexpected ({av})"),
                        (None, None) => unreachable!(),
                    }
                }
            }
            _ => assert_eq!(actual, expected, "at {at}"),
        }
    }

    #[test]
    fn documented_v2_example() {
        // The 2.0 example of "Working with AWS Lambda proxy integrations for HTTP APIs".
        let mut documented = json!({
          "version": "2.0",
          "routeKey": "$default",
          "rawPath": "/my/path",
          "rawQueryString": "parameter1=value1&parameter1=value2&parameter2=value",
          "cookies": ["cookie1", "cookie2"],
          "headers": { "header1": "value1", "header2": "value1,value2" },
          "queryStringParameters": { "parameter1": "value1,value2", "parameter2": "value" },
          "requestContext": {
            "accountId": "123456789012",
            "apiId": "api-id",
            "authentication": {
              "clientCert": {
                "clientCertPem": "CERT_CONTENT",
                "subjectDN": "www.example.com",
                "issuerDN": "Example issuer",
                "serialNumber": "a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1",
                "validity": {
                  "notBefore": "May 28 12:30:02 2019 GMT",
                  "notAfter": "Aug  5 09:36:04 2021 GMT"
                }
              }
            },
            "authorizer": {
              "jwt": {
                "claims": { "claim1": "value1", "claim2": "value2" },
                "scopes": ["scope1", "scope2"]
              }
            },
            "domainName": "id.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "id",
            "http": {
              "method": "POST",
              "path": "/my/path",
              "protocol": "HTTP/1.1",
              "sourceIp": "IP",
              "userAgent": "agent"
            },
            "requestId": "id",
            "routeKey": "$default",
            "stage": "$default",
            "time": "12/Mar/2020:19:03:58 +0000",
            "timeEpoch": 1583348638390_i64
          },
          "body": "Hello from Lambda",
          "pathParameters": { "parameter1": "value1" },
          "isBase64Encoded": false,
          "stageVariables": { "stageVariable1": "value1", "stageVariable2": "value2" }
        });
        // Where the example cannot describe one real request, and why:
        // - Nimbus does no mutual TLS, so there is no `authentication`.
        // - `timeEpoch` 1583348638390 is 04/Mar/2020 19:03:58.390 UTC; `time` says 12/Mar. Both
        //   come from one clock here.
        // - The example's headers carry no content type and a user agent only in
        //   `requestContext`; the request below sends both (so the body is text, as shown).
        let ctx = documented["requestContext"].as_object_mut().unwrap();
        ctx.remove("authentication");
        ctx["time"] = json!("04/Mar/2020:19:03:58 +0000");
        let event_headers = documented["headers"].as_object_mut().unwrap();
        event_headers.insert("content-type".into(), json!("text/plain"));
        event_headers.insert("user-agent".into(), json!("agent"));

        let mut f = Fixture::new();
        f.method = "POST";
        f.raw_query = "parameter1=value1&parameter1=value2&parameter2=value";
        f.headers = headers(&[
            ("Header1", "value1"),
            ("Header2", "value1"),
            ("Header2", "value2"),
            ("Cookie", "cookie1; cookie2"),
            ("Content-Type", "text/plain"),
            ("User-Agent", "agent"),
        ]);
        f.body = b"Hello from Lambda".to_vec();
        f.path_parameters = vec![("parameter1".into(), "value1".into())];
        f.stage_variables = BTreeMap::from([
            ("stageVariable1".into(), "value1".into()),
            ("stageVariable2".into(), "value2".into()),
        ]);
        f.authorizer = Some(documented["requestContext"]["authorizer"].clone());
        assert_same(&f.v2(), &documented, "event");
    }

    #[test]
    fn documented_v1_example() {
        // The 1.0 example of "Working with AWS Lambda proxy integrations for HTTP APIs".
        let mut documented = json!({
          "version": "1.0",
          "resource": "/my/path",
          "path": "/my/path",
          "httpMethod": "GET",
          "headers": { "Header1": "value1", "Header2": "value2" },
          "multiValueHeaders": { "Header1": ["value1"], "Header2": ["value1", "value2"] },
          "queryStringParameters": { "parameter1": "value1", "parameter2": "value" },
          "multiValueQueryStringParameters": {
            "parameter1": ["value1", "value2"],
            "parameter2": ["value"]
          },
          "requestContext": {
            "accountId": "123456789012",
            "apiId": "id",
            "authorizer": { "claims": null, "scopes": null },
            "domainName": "id.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "id",
            "extendedRequestId": "request-id",
            "httpMethod": "GET",
            "identity": {
              "accessKey": null,
              "accountId": null,
              "caller": null,
              "cognitoAuthenticationProvider": null,
              "cognitoAuthenticationType": null,
              "cognitoIdentityId": null,
              "cognitoIdentityPoolId": null,
              "principalOrgId": null,
              "sourceIp": "IP",
              "user": null,
              "userAgent": "user-agent",
              "userArn": null,
              "clientCert": {
                "clientCertPem": "CERT_CONTENT",
                "subjectDN": "www.example.com",
                "issuerDN": "Example issuer",
                "serialNumber": "a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1",
                "validity": {
                  "notBefore": "May 28 12:30:02 2019 GMT",
                  "notAfter": "Aug  5 09:36:04 2021 GMT"
                }
              }
            },
            "path": "/my/path",
            "protocol": "HTTP/1.1",
            "requestId": "id=",
            "requestTime": "04/Mar/2020:19:15:17 +0000",
            "requestTimeEpoch": 1583349317135_i64,
            "resourceId": null,
            "resourcePath": "/my/path",
            "stage": "$default"
          },
          "pathParameters": null,
          "stageVariables": null,
          "body": "Hello from Lambda!",
          "isBase64Encoded": false
        });
        // Where the example cannot describe one real request, and why:
        // - Header names: `http::HeaderMap` keeps names lower-case, so 1.0 sends them lower-case
        //   (AWS passes the client's spelling through in 1.0).
        // - `queryStringParameters` shows the first of two values but `headers` the last; live
        //   HTTP API 1.0 events (and REST APIs) carry the last value for both.
        // - `apiId` "id" beside the 2.0 example's "api-id": the fixture uses "api-id" for both.
        // - `extendedRequestId`/`requestId`: live events repeat the one request id in both.
        // - `resourceId`: live events carry the route key ("GET /my/path" here).
        // - No mutual TLS, so no `identity.clientCert`; the request sends a content type.
        documented["headers"] = json!({
            "header1": "value1", "header2": "value2",
            "user-agent": "user-agent", "content-type": "text/plain"
        });
        documented["multiValueHeaders"] = json!({
            "header1": ["value1"], "header2": ["value1", "value2"],
            "user-agent": ["user-agent"], "content-type": ["text/plain"]
        });
        documented["queryStringParameters"]["parameter1"] = json!("value2");
        let ctx = documented["requestContext"].as_object_mut().unwrap();
        ctx["apiId"] = json!("api-id");
        ctx["extendedRequestId"] = json!("id=");
        ctx["resourceId"] = json!("GET /my/path");
        ctx["identity"]
            .as_object_mut()
            .unwrap()
            .remove("clientCert");

        let mut f = Fixture::new();
        f.raw_query = "parameter1=value1&parameter1=value2&parameter2=value";
        f.route_key = "GET /my/path";
        f.headers = headers(&[
            ("Header1", "value1"),
            ("Header2", "value1"),
            ("Header2", "value2"),
            ("User-Agent", "user-agent"),
            ("Content-Type", "text/plain"),
        ]);
        f.body = b"Hello from Lambda!".to_vec();
        f.request_id = "id=";
        f.time = millis(1_583_349_317_135);
        f.authorizer = Some(json!({ "claims": null, "scopes": null }));
        assert_same(&f.v1(), &documented, "event");
    }

    #[test]
    fn empty_fields_are_left_out_of_v2_and_null_in_v1() {
        // A GET without query, cookies, path parameters, stage variables or body.
        let f = Fixture::new();
        let v2 = f.v2();
        for absent in [
            "cookies",
            "queryStringParameters",
            "pathParameters",
            "stageVariables",
            "body",
        ] {
            assert!(
                v2.get(absent).is_none(),
                "2.0 should leave out {absent}: {v2}"
            );
        }
        assert_eq!(v2["rawQueryString"], json!(""));
        assert_eq!(v2["headers"], json!({}));
        assert_eq!(v2["isBase64Encoded"], json!(false));
        assert!(v2["requestContext"].get("authorizer").is_none());
        assert_eq!(v2["requestContext"]["http"]["userAgent"], json!(""));

        let v1 = f.v1();
        for null in [
            "queryStringParameters",
            "multiValueQueryStringParameters",
            "pathParameters",
            "stageVariables",
            "body",
        ] {
            assert_eq!(
                v1[null],
                Value::Null,
                "1.0 should send {null} as null: {v1}"
            );
            assert!(v1.get(null).is_some(), "1.0 should send {null}");
        }
        assert_eq!(v1["isBase64Encoded"], json!(false));
        assert_eq!(v1["resource"], json!("$default"));
        assert_eq!(v1["requestContext"]["resourcePath"], json!("$default"));
        assert_eq!(v1["requestContext"]["resourceId"], json!("$default"));
        assert!(v1["requestContext"].get("authorizer").is_none());
    }

    #[test]
    fn query_strings() {
        struct Case {
            raw: &'static str,
            v2: Value,
            v1_last: Value,
            v1_multi: Value,
        }
        let cases = [
            Case {
                raw: "a=1&a=2&b",
                v2: json!({ "a": "1,2", "b": "" }),
                v1_last: json!({ "a": "2", "b": "" }),
                v1_multi: json!({ "a": ["1", "2"], "b": [""] }),
            },
            Case {
                raw: "a=%20x&plus=a+b&encodedPlus=a%2Bb&empty=",
                v2: json!({ "a": " x", "plus": "a b", "encodedPlus": "a+b", "empty": "" }),
                v1_last: json!({ "a": " x", "plus": "a b", "encodedPlus": "a+b", "empty": "" }),
                v1_multi: json!({ "a": [" x"], "plus": ["a b"], "encodedPlus": ["a+b"], "empty": [""] }),
            },
            Case {
                raw: "redirect=https%3A%2F%2Fexample.com%2Fa&&x=1=2&caf%C3%A9=%E2%82%AC",
                v2: json!({ "redirect": "https://example.com/a", "x": "1=2", "café": "€" }),
                v1_last: json!({ "redirect": "https://example.com/a", "x": "1=2", "café": "€" }),
                v1_multi: json!({ "redirect": ["https://example.com/a"], "x": ["1=2"], "café": ["€"] }),
            },
        ];
        for case in cases {
            let mut f = Fixture::new();
            f.raw_query = case.raw;
            let v2 = f.v2();
            assert_eq!(v2["rawQueryString"], json!(case.raw), "{}", case.raw);
            assert_eq!(v2["queryStringParameters"], case.v2, "{}", case.raw);
            let v1 = f.v1();
            assert_eq!(v1["queryStringParameters"], case.v1_last, "{}", case.raw);
            assert_eq!(
                v1["multiValueQueryStringParameters"], case.v1_multi,
                "{}",
                case.raw
            );
        }
    }

    #[test]
    fn cookies_and_duplicate_headers() {
        let mut f = Fixture::new();
        f.headers = headers(&[
            ("Cookie", "a=1; b=2"),
            ("Cookie", "c=3;d=4"),
            ("X-Dup", "first"),
            ("x-dup", "second"),
            ("Accept", "*/*"),
        ]);
        let v2 = f.v2();
        assert_eq!(v2["cookies"], json!(["a=1", "b=2", "c=3", "d=4"]));
        assert_eq!(
            v2["headers"],
            json!({ "x-dup": "first,second", "accept": "*/*" })
        );

        // 1.0 has no `cookies`; the Cookie header stays a header.
        let v1 = f.v1();
        assert!(v1.get("cookies").is_none());
        assert_eq!(v1["headers"]["cookie"], json!("c=3;d=4"));
        assert_eq!(
            v1["multiValueHeaders"]["cookie"],
            json!(["a=1; b=2", "c=3;d=4"])
        );
        assert_eq!(v1["headers"]["x-dup"], json!("second"));
        assert_eq!(v1["multiValueHeaders"]["x-dup"], json!(["first", "second"]));
    }

    #[test]
    fn bodies() {
        let png: &[u8] = &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff];
        let cases: [(Option<&str>, &[u8], Value, bool); 7] = [
            (Some("image/png"), png, json!("iVBORw0KGgoA/w=="), true),
            (
                Some("application/json"),
                b"{\"a\":1}",
                json!("{\"a\":1}"),
                false,
            ),
            (
                Some("text/html; charset=utf-8"),
                "héllo".as_bytes(),
                json!("héllo"),
                false,
            ),
            (None, b"plain", json!("cGxhaW4="), true),
            (
                Some("application/x-www-form-urlencoded"),
                b"a=1",
                json!("YT0x"),
                true,
            ),
            // Claims text but is not UTF-8: base64 rather than a damaged string.
            (Some("text/plain"), &[0xff, 0xfe], json!("//4="), true),
            (Some("application/octet-stream"), b"", Value::Null, false),
        ];
        for (content_type, body, expected_body, base64) in cases {
            let mut f = Fixture::new();
            f.method = "POST";
            if let Some(ct) = content_type {
                f.headers = headers(&[("Content-Type", ct)]);
            }
            f.body = body.to_vec();
            let v2 = f.v2();
            assert_eq!(
                v2.get("body").cloned().unwrap_or(Value::Null),
                expected_body,
                "{content_type:?}"
            );
            assert_eq!(v2["isBase64Encoded"], json!(base64), "{content_type:?}");
            let v1 = f.v1();
            assert_eq!(v1["body"], expected_body, "{content_type:?}");
            assert_eq!(v1["isBase64Encoded"], json!(base64), "{content_type:?}");
        }
    }

    #[test]
    fn text_body_rule() {
        let cases: [(Option<&str>, &[u8], bool); 10] = [
            (Some("text/plain"), b"x", true),
            (Some("TEXT/CSV"), b"x", true),
            (Some("application/json"), b"x", true),
            (Some("application/json; charset=utf-8"), b"x", true),
            (Some("application/xml"), b"x", true),
            (Some("application/javascript"), b"x", true),
            (Some("application/octet-stream"), b"x", false),
            (Some("multipart/form-data; boundary=x"), b"x", false),
            (None, b"x", false),
            (Some("text/plain"), &[0xc3], false),
        ];
        for (content_type, body, text) in cases {
            assert_eq!(is_text_body(content_type, body), text, "{content_type:?}");
        }
    }

    #[test]
    fn paths_and_stages() {
        struct Case {
            stage: &'static str,
            raw_path: &'static str,
            route_key: &'static str,
            path: &'static str,
            resource: &'static str,
        }
        let cases = [
            Case {
                stage: "$default",
                raw_path: "/items/1",
                route_key: "GET /items/{id}",
                path: "/items/1",
                resource: "/items/{id}",
            },
            Case {
                stage: "prod",
                raw_path: "/prod/items/1",
                route_key: "GET /items/{id}",
                path: "/prod/items/1",
                resource: "/items/{id}",
            },
            Case {
                stage: "$default",
                raw_path: "/caf%C3%A9",
                route_key: "$default",
                path: "/café",
                resource: "$default",
            },
            Case {
                stage: "dev",
                raw_path: "/dev/a%20b/%E2%82%AC",
                route_key: "ANY /{proxy+}",
                path: "/dev/a b/€",
                resource: "/{proxy+}",
            },
            // A malformed escape stays as sent; bytes that are not UTF-8 become U+FFFD.
            Case {
                stage: "$default",
                raw_path: "/a%ZZ/%FF",
                route_key: "$default",
                path: "/a%ZZ/\u{FFFD}",
                resource: "$default",
            },
        ];
        for case in cases {
            let mut f = Fixture::new();
            f.stage = case.stage;
            f.raw_path = case.raw_path;
            f.route_key = case.route_key;
            let v2 = f.v2();
            assert_eq!(v2["rawPath"], json!(case.path), "{}", case.raw_path);
            assert_eq!(
                v2["requestContext"]["http"]["path"],
                json!(case.path),
                "{}",
                case.raw_path
            );
            assert_eq!(v2["requestContext"]["stage"], json!(case.stage));
            assert_eq!(v2["routeKey"], json!(case.route_key));
            assert_eq!(v2["requestContext"]["routeKey"], json!(case.route_key));
            let v1 = f.v1();
            assert_eq!(v1["path"], json!(case.path), "{}", case.raw_path);
            assert_eq!(
                v1["requestContext"]["path"],
                json!(case.path),
                "{}",
                case.raw_path
            );
            assert_eq!(v1["resource"], json!(case.resource));
            assert_eq!(v1["requestContext"]["resourcePath"], json!(case.resource));
            assert_eq!(v1["requestContext"]["resourceId"], json!(case.route_key));
            assert_eq!(v1["requestContext"]["stage"], json!(case.stage));
        }
    }

    #[test]
    fn stage_variables_and_path_parameters() {
        let mut f = Fixture::new();
        f.stage_variables = BTreeMap::from([("table".into(), "items-prod".into())]);
        f.path_parameters = vec![("id".into(), "a b".into()), ("proxy".into(), "x/y".into())];
        let v2 = f.v2();
        assert_eq!(v2["stageVariables"], json!({ "table": "items-prod" }));
        assert_eq!(v2["pathParameters"], json!({ "id": "a b", "proxy": "x/y" }));
        let v1 = f.v1();
        assert_eq!(v1["stageVariables"], json!({ "table": "items-prod" }));
        assert_eq!(v1["pathParameters"], json!({ "id": "a b", "proxy": "x/y" }));
    }

    #[test]
    fn time_is_utc_in_api_gateway_format() {
        let mut f = Fixture::new();
        // 2020-03-12T20:03:58.007+01:00 is 19:03:58.007 UTC.
        f.time = millis(1_584_039_838_007).to_offset(UtcOffset::from_hms(1, 0, 0).unwrap());
        let v2 = f.v2();
        assert_eq!(
            v2["requestContext"]["time"],
            json!("12/Mar/2020:19:03:58 +0000")
        );
        assert_eq!(
            v2["requestContext"]["timeEpoch"],
            json!(1_584_039_838_007_i64)
        );
        let v1 = f.v1();
        assert_eq!(
            v1["requestContext"]["requestTime"],
            json!("12/Mar/2020:19:03:58 +0000")
        );
        assert_eq!(
            v1["requestContext"]["requestTimeEpoch"],
            json!(1_584_039_838_007_i64)
        );
        // Single-digit days are zero-padded, as in "04/Mar/2020".
        f.time = millis(1_583_349_317_135);
        assert_eq!(
            f.v2()["requestContext"]["time"],
            json!("04/Mar/2020:19:15:17 +0000")
        );
    }

    #[test]
    fn domain_prefix_is_the_first_label() {
        assert_eq!(domain_prefix("abc123.execute-api.localhost"), "abc123");
        assert_eq!(domain_prefix("localhost"), "localhost");
        assert_eq!(domain_prefix(""), "");
    }

    #[test]
    fn v2_field_order_follows_aws() {
        let mut f = Fixture::new();
        f.raw_query = "a=1";
        f.headers = headers(&[("Cookie", "a=1"), ("Content-Type", "text/plain")]);
        f.body = b"x".to_vec();
        f.path_parameters = vec![("id".into(), "1".into())];
        f.stage_variables = BTreeMap::from([("k".into(), "v".into())]);
        let text = String::from_utf8(event_v2(&f.info())).unwrap();
        let order = [
            "\"version\"",
            "\"routeKey\"",
            "\"rawPath\"",
            "\"rawQueryString\"",
            "\"cookies\"",
            "\"headers\"",
            "\"queryStringParameters\"",
            "\"requestContext\"",
            "\"body\"",
            "\"pathParameters\"",
            "\"isBase64Encoded\"",
            "\"stageVariables\"",
        ];
        let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }
}
