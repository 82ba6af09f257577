//! CORS for HTTP APIs as API Gateway does it: the API's CORS configuration, the gateway's own
//! answer to preflight requests, and the CORS headers put on every other response. Pure: no I/O.
//!
//! What API Gateway documents ("Configure CORS for HTTP APIs"), and Nimbus does:
//! - With CORS configured, the gateway answers preflight `OPTIONS` requests itself, "even if
//!   there isn't an OPTIONS route configured"; the caller sends `204 No Content` with the
//!   headers [`CorsConfiguration::preflight`] returns. A preflight is an `OPTIONS` request with
//!   both an `Origin` and an `Access-Control-Request-Method` header; any other `OPTIONS` request
//!   is routed like any request.
//! - "To return CORS headers, your request must contain an `origin` header."
//! - The gateway "ignores CORS headers returned from your backend integration":
//!   [`CorsConfiguration::apply`] removes every `Access-Control-*` header the integration set
//!   before adding the configured ones.
//! - `allowOrigins` entries are an exact origin (`https://www.example.com`), `*` (any origin),
//!   or a scheme wildcard `https://*` / `http://*` ("allow any origin that begins with
//!   https://"). Subdomain wildcards (`https://*.example.com`) are not documented and are
//!   refused by [`CorsConfiguration::validate`].
//! - `maxAge` is -1 to 86400 (the `Cors` model's `IntegerWithLengthBetweenMinus1And86400`);
//!   `allowMethods` entries are 1 to 64 characters.
//!
//! What the documentation leaves open, and Nimbus decides:
//! - A preflight whose origin, method or requested headers are not allowed still gets its 204,
//!   but with no `Access-Control-*` headers at all, so the browser refuses the real request
//!   with its usual CORS error rather than a gateway error it cannot read.
//! - Origins compare as browsers serialise them: scheme and host case-insensitively, and an
//!   explicit default port (`:443` for https, `:80` for http) equals no port.
//! - `GET`, `HEAD` and `POST` pass the preflight method check even when not listed, as the
//!   Fetch standard's CORS-safelisted methods do in browsers.
//! - `*` in `allowMethods` or `allowHeaders` echoes what the preflight asked for, which works
//!   with credentials too (browsers read a literal `*` there as a name when credentials are sent).
//! - `Access-Control-Allow-Origin` is `*` only for a `*` entry without `allowCredentials`;
//!   otherwise it echoes the request's origin and adds `Vary: Origin`. `allowCredentials` with
//!   `*` is refused by `validate`, and is never honoured for a `*` match even if unvalidated.

use http::header::{
    HeaderName, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use http::{HeaderMap, HeaderValue, Method};
use serde::{Deserialize, Serialize};

/// Smallest and largest `maxAge` API Gateway accepts, in seconds.
pub const MAX_AGE_RANGE: (i32, i32) = (-1, 86400);

/// An HTTP API's CORS configuration: API Gateway's `Cors` object, with its camelCase field names
/// (`allowOrigins`, ...); the PascalCase names of CloudFormation and SAM are accepted as aliases.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CorsConfiguration {
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "AllowOrigins")]
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "AllowMethods")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "AllowHeaders")]
    pub allow_headers: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        alias = "ExposeHeaders"
    )]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "MaxAge")]
    pub max_age: Option<i32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "AllowCredentials"
    )]
    pub allow_credentials: Option<bool>,
}

/// A CORS configuration API Gateway would refuse (or that could never match a browser's request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsError {
    #[error(
        "allowCredentials cannot be true while allowOrigins contains `*`; list the allowed origins instead"
    )]
    CredentialsWithAnyOrigin,
    #[error("maxAge {0} is out of range; it must be between -1 and 86400 seconds")]
    MaxAgeOutOfRange(i32),
    #[error("allowOrigins entry `{origin}` is not valid: {reason}")]
    BadOrigin {
        origin: String,
        reason: &'static str,
    },
    #[error("allowMethods entry `{method}` is not an HTTP method name (1 to 64 token characters) or `*`")]
    BadMethod { method: String },
    #[error("{field} entry `{header}` is not a header name or `*`")]
    BadHeader { field: &'static str, header: String },
}

/// How an origin was allowed, which decides what `Access-Control-Allow-Origin` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grant {
    /// By a `*` entry: answer `*` (or echo, when credentials are configured).
    Any,
    /// By an exact or scheme-wildcard entry: echo the origin.
    Listed,
}

impl CorsConfiguration {
    /// Checks the constraints API Gateway documents, plus entries no browser request could match.
    pub fn validate(&self) -> Result<(), CorsError> {
        let any_origin = self.allow_origins.iter().any(|o| o == "*");
        if any_origin && self.allow_credentials == Some(true) {
            return Err(CorsError::CredentialsWithAnyOrigin);
        }
        if let Some(age) = self.max_age {
            if !(MAX_AGE_RANGE.0..=MAX_AGE_RANGE.1).contains(&age) {
                return Err(CorsError::MaxAgeOutOfRange(age));
            }
        }
        for origin in &self.allow_origins {
            check_origin_entry(origin).map_err(|reason| CorsError::BadOrigin {
                origin: origin.clone(),
                reason,
            })?;
        }
        for method in &self.allow_methods {
            if method != "*" && !(method.len() <= 64 && is_token(method)) {
                return Err(CorsError::BadMethod {
                    method: method.clone(),
                });
            }
        }
        for (field, list) in [
            ("allowHeaders", &self.allow_headers),
            ("exposeHeaders", &self.expose_headers),
        ] {
            for header in list {
                if header != "*" && HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(CorsError::BadHeader {
                        field,
                        header: header.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The headers of the gateway's answer to a preflight request (the caller sends them with
    /// `204 No Content`), or `None` when the request is not a preflight and should be routed.
    /// A refused preflight gets an empty map: still a 204, with no CORS headers.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<HeaderMap> {
        if method != Method::OPTIONS {
            return None;
        }
        let origin = headers.get(ORIGIN)?;
        let requested_method = headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut answer = HeaderMap::new();
        let (Ok(origin), Ok(requested_method)) = (origin.to_str(), requested_method.to_str())
        else {
            return Some(answer);
        };
        let requested_method = requested_method.trim();
        let Some(grant) = self.grant(origin) else {
            return Some(answer);
        };
        if !self.method_allowed(requested_method) {
            return Some(answer);
        }
        let requested_headers: Vec<String> = headers
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect();
        if !requested_headers.iter().all(|h| self.header_allowed(h)) {
            return Some(answer);
        }

        self.put_origin(&mut answer, origin, grant);
        let methods = if self.allow_methods.iter().any(|m| m == "*") {
            requested_method.to_string()
        } else {
            self.allow_methods.join(",")
        };
        put(&mut answer, ACCESS_CONTROL_ALLOW_METHODS, &methods);
        let allowed_headers = if self.allow_headers.iter().any(|h| h == "*") {
            requested_headers.join(",")
        } else {
            self.allow_headers.join(",")
        };
        put(&mut answer, ACCESS_CONTROL_ALLOW_HEADERS, &allowed_headers);
        if let Some(age) = self.max_age {
            put(&mut answer, ACCESS_CONTROL_MAX_AGE, &age.to_string());
        }
        Some(answer)
    }

    /// Puts the CORS headers on a normal (non-preflight) response: first removes every
    /// `Access-Control-*` header the integration returned, then, when the request's `Origin` is
    /// allowed, adds `Access-Control-Allow-Origin`, `-Allow-Credentials`, `-Expose-Headers`
    /// and `Vary: Origin` when the origin is echoed.
    pub fn apply(&self, request_headers: &HeaderMap, response_headers: &mut HeaderMap) {
        let backend_cors: Vec<HeaderName> = response_headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in backend_cors {
            response_headers.remove(name);
        }
        let Some(origin) = request_headers
            .get(ORIGIN)
            .and_then(|value| value.to_str().ok())
        else {
            return;
        };
        let Some(grant) = self.grant(origin) else {
            return;
        };
        self.put_origin(response_headers, origin, grant);
        put(
            response_headers,
            ACCESS_CONTROL_EXPOSE_HEADERS,
            &self.expose_headers.join(","),
        );
    }

    /// Whether `origin` (the request's `Origin` header) is allowed, and how.
    fn grant(&self, origin: &str) -> Option<Grant> {
        let origin = origin.trim();
        let normalized = normalize_origin(origin);
        let mut any = false;
        for entry in &self.allow_origins {
            if entry == "*" {
                any = true;
                continue;
            }
            let Some(normalized) = &normalized else {
                // `null` or garbage: only a `*` entry lets it through.
                continue;
            };
            if let Some(scheme) = entry.strip_suffix("://*") {
                let matches = normalized
                    .split_once("://")
                    .is_some_and(|(s, _)| s.eq_ignore_ascii_case(scheme));
                if matches {
                    return Some(Grant::Listed);
                }
            } else if normalize_origin(entry).as_ref() == Some(normalized) {
                return Some(Grant::Listed);
            }
        }
        any.then_some(Grant::Any)
    }

    fn method_allowed(&self, method: &str) -> bool {
        matches!(method, "GET" | "HEAD" | "POST")
            || self
                .allow_methods
                .iter()
                .any(|m| m == "*" || m.eq_ignore_ascii_case(method))
    }

    fn header_allowed(&self, header: &str) -> bool {
        self.allow_headers
            .iter()
            .any(|h| h == "*" || h.eq_ignore_ascii_case(header))
    }

    /// `Access-Control-Allow-Origin`, `-Allow-Credentials` and `Vary: Origin`.
    fn put_origin(&self, headers: &mut HeaderMap, origin: &str, grant: Grant) {
        let credentials = self.allow_credentials == Some(true);
        if grant == Grant::Any && !credentials {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            return;
        }
        let Ok(value) = HeaderValue::from_str(origin.trim()) else {
            return;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
        add_vary_origin(headers);
        // Credentials are never granted through `*`, even in a configuration `validate` refused.
        if credentials && grant == Grant::Listed {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// Sets a header from configured text, leaving it out when empty or not a valid header value.
fn put(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if value.is_empty() {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Adds `Origin` to `Vary` unless it (or `*`) is already there; the backend's other `Vary`
/// entries stay.
fn add_vary_origin(headers: &mut HeaderMap) {
    let present = headers
        .get_all(VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| {
            let token = token.trim();
            token == "*" || token.eq_ignore_ascii_case("origin")
        });
    if !present {
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

/// RFC 9110 token characters, the alphabet of method names.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Why an `allowOrigins` entry can never match, or `Ok` for `*`, `scheme://*` and origins.
fn check_origin_entry(entry: &str) -> Result<(), &'static str> {
    if entry == "*" {
        return Ok(());
    }
    if let Some(scheme) = entry.strip_suffix("://*") {
        return if is_scheme(scheme) {
            Ok(())
        } else {
            Err("the text before `://*` is not a URL scheme")
        };
    }
    if entry.contains('*') {
        return Err("a wildcard may only be the whole entry (`*`) or a whole host (`https://*`)");
    }
    let Some((_, rest)) = entry.split_once("://") else {
        return Err("an origin is `scheme://host` or `scheme://host:port`");
    };
    if rest.contains(['/', '?', '#']) {
        return Err("an origin has no path, query or fragment (not even a trailing '/')");
    }
    if normalize_origin(entry).is_none() {
        return Err("an origin is `scheme://host` or `scheme://host:port`");
    }
    Ok(())
}

fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// `scheme://host[:port]` in lower case without a default port, or `None` when `text` is not
/// such an origin (for instance the opaque origin `null`).
fn normalize_origin(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    if !is_scheme(scheme) || rest.is_empty() {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    // An IPv6 host is bracketed; the port, if any, follows the closing bracket.
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']')?;
        let (host, after) = rest.split_at(end + 1);
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~[]:%".contains(c) || !c.is_ascii());
    if !host_ok {
        return None;
    }
    let host = host.to_ascii_lowercase();
    let port = match port {
        None => None,
        Some(port) => {
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let number: u16 = port.parse().ok()?;
            let default = matches!((scheme.as_str(), number), ("https", 443) | ("http", 80));
            (!default).then_some(number)
        }
    };
    Some(match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> CorsConfiguration {
        let config: CorsConfiguration = serde_json::from_value(json).unwrap();
        config.validate().unwrap();
        config
    }

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

    /// The headers as sorted `name: value` lines, for whole-map comparison.
    fn lines(map: &HeaderMap) -> Vec<String> {
        let mut lines: Vec<String> = map
            .iter()
            .map(|(name, value)| format!("{}: {}", name, value.to_str().unwrap()))
            .collect();
        lines.sort();
        lines
    }

    fn example() -> CorsConfiguration {
        config(serde_json::json!({
            "allowOrigins": ["https://www.example.com", "http://localhost:3000"],
            "allowMethods": ["GET", "PUT", "DELETE"],
            "allowHeaders": ["content-type", "x-api-key"],
            "exposeHeaders": ["x-request-id", "date"],
            "maxAge": 300,
            "allowCredentials": true
        }))
    }

    fn open() -> CorsConfiguration {
        config(serde_json::json!({
            "allowOrigins": ["*"],
            "allowMethods": ["*"],
            "allowHeaders": ["*"],
            "exposeHeaders": ["*"],
            "maxAge": -1
        }))
    }

    fn https_only() -> CorsConfiguration {
        config(serde_json::json!({
            "allowOrigins": ["https://*"],
            "allowMethods": ["PATCH"],
            "allowCredentials": true
        }))
    }

    #[test]
    fn preflight_table() {
        type Row = (
            fn() -> CorsConfiguration,
            &'static str,
            &'static [(&'static str, &'static str)],
            Option<&'static [&'static str]>,
        );
        #[rustfmt::skip]
        let rows: &[Row] = &[
            // Allowed origin, method and headers: the full answer, origin echoed.
            (example, "OPTIONS", &[("origin", "https://www.example.com"), ("access-control-request-method", "PUT"), ("access-control-request-headers", "Content-Type, X-API-Key")],
             Some(&["access-control-allow-credentials: true", "access-control-allow-headers: content-type,x-api-key", "access-control-allow-methods: GET,PUT,DELETE", "access-control-allow-origin: https://www.example.com", "access-control-max-age: 300", "vary: Origin"])),
            // A subset of the allowed headers, and none at all.
            (example, "OPTIONS", &[("origin", "http://localhost:3000"), ("access-control-request-method", "DELETE"), ("access-control-request-headers", "x-api-key")],
             Some(&["access-control-allow-credentials: true", "access-control-allow-headers: content-type,x-api-key", "access-control-allow-methods: GET,PUT,DELETE", "access-control-allow-origin: http://localhost:3000", "access-control-max-age: 300", "vary: Origin"])),
            (example, "OPTIONS", &[("origin", "http://localhost:3000"), ("access-control-request-method", "GET")],
             Some(&["access-control-allow-credentials: true", "access-control-allow-headers: content-type,x-api-key", "access-control-allow-methods: GET,PUT,DELETE", "access-control-allow-origin: http://localhost:3000", "access-control-max-age: 300", "vary: Origin"])),
            // Origins compare case-insensitively and without default ports.
            (example, "OPTIONS", &[("origin", "HTTPS://WWW.Example.com:443"), ("access-control-request-method", "PUT")],
             Some(&["access-control-allow-credentials: true", "access-control-allow-headers: content-type,x-api-key", "access-control-allow-methods: GET,PUT,DELETE", "access-control-allow-origin: HTTPS://WWW.Example.com:443", "access-control-max-age: 300", "vary: Origin"])),
            // POST is CORS-safelisted: it passes though not listed.
            (example, "OPTIONS", &[("origin", "https://www.example.com"), ("access-control-request-method", "POST")],
             Some(&["access-control-allow-credentials: true", "access-control-allow-headers: content-type,x-api-key", "access-control-allow-methods: GET,PUT,DELETE", "access-control-allow-origin: https://www.example.com", "access-control-max-age: 300", "vary: Origin"])),
            // Refused: 204 with no CORS headers.
            (example, "OPTIONS", &[("origin", "https://evil.example.com"), ("access-control-request-method", "PUT")], Some(&[])),
            (example, "OPTIONS", &[("origin", "http://www.example.com"), ("access-control-request-method", "PUT")], Some(&[])),
            (example, "OPTIONS", &[("origin", "https://www.example.com:8443"), ("access-control-request-method", "PUT")], Some(&[])),
            (example, "OPTIONS", &[("origin", "http://localhost:3001"), ("access-control-request-method", "PUT")], Some(&[])),
            (example, "OPTIONS", &[("origin", "null"), ("access-control-request-method", "PUT")], Some(&[])),
            (example, "OPTIONS", &[("origin", "https://www.example.com"), ("access-control-request-method", "PATCH")], Some(&[])),
            (example, "OPTIONS", &[("origin", "https://www.example.com"), ("access-control-request-method", "PUT"), ("access-control-request-headers", "content-type,authorization")], Some(&[])),
            // Not preflights: routed normally.
            (example, "OPTIONS", &[("origin", "https://www.example.com")], None),
            (example, "OPTIONS", &[("access-control-request-method", "PUT")], None),
            (example, "GET", &[("origin", "https://www.example.com"), ("access-control-request-method", "PUT")], None),
            // Wildcards everywhere, no credentials: `*` origin, echoed method and headers, maxAge -1.
            (open, "OPTIONS", &[("origin", "https://anything.test"), ("access-control-request-method", "PROPFIND"), ("access-control-request-headers", "x-one"), ("access-control-request-headers", "X-Two")],
             Some(&["access-control-allow-headers: x-one,x-two", "access-control-allow-methods: PROPFIND", "access-control-allow-origin: *", "access-control-max-age: -1"])),
            (open, "OPTIONS", &[("origin", "null"), ("access-control-request-method", "GET")],
             Some(&["access-control-allow-methods: GET", "access-control-allow-origin: *", "access-control-max-age: -1"])),
            // Scheme wildcard: any https origin, echoed, with credentials; no headers allowed.
            (https_only, "OPTIONS", &[("origin", "https://app.test:8443"), ("access-control-request-method", "PATCH")],
             Some(&["access-control-allow-credentials: true", "access-control-allow-methods: PATCH", "access-control-allow-origin: https://app.test:8443", "vary: Origin"])),
            (https_only, "OPTIONS", &[("origin", "http://app.test"), ("access-control-request-method", "PATCH")], Some(&[])),
            (https_only, "OPTIONS", &[("origin", "https://app.test"), ("access-control-request-method", "PATCH"), ("access-control-request-headers", "content-type")], Some(&[])),
            // No configuration at all allows nothing.
            (CorsConfiguration::default, "OPTIONS", &[("origin", "https://a.test"), ("access-control-request-method", "GET")], Some(&[])),
        ];
        for (i, (make, method, request, expected)) in rows.iter().enumerate() {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let answer = make().preflight(&method, &headers(request));
            let got = answer.as_ref().map(lines);
            let want = expected.map(|e| e.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "row {i}: {method} {request:?}");
        }
    }

    #[test]
    fn apply_table() {
        type Row = (
            fn() -> CorsConfiguration,
            &'static [(&'static str, &'static str)],
            &'static [(&'static str, &'static str)],
            &'static [&'static str],
        );
        #[rustfmt::skip]
        let rows: &[Row] = &[
            // Allowed origin: echoed, credentials, expose list, Vary added to the backend's.
            (example, &[("origin", "https://www.example.com")], &[("content-type", "text/plain"), ("vary", "Accept-Encoding")],
             &["access-control-allow-credentials: true", "access-control-allow-origin: https://www.example.com", "access-control-expose-headers: x-request-id,date", "content-type: text/plain", "vary: Accept-Encoding", "vary: Origin"]),
            // The backend's CORS headers are dropped, allowed origin or not.
            (example, &[("origin", "https://www.example.com")], &[("access-control-allow-origin", "*"), ("Access-Control-Allow-Methods", "GET"), ("access-control-max-age", "9"), ("x-kept", "1"), ("vary", "origin")],
             &["access-control-allow-credentials: true", "access-control-allow-origin: https://www.example.com", "access-control-expose-headers: x-request-id,date", "vary: origin", "x-kept: 1"]),
            (example, &[("origin", "https://evil.example.com")], &[("access-control-allow-origin", "https://evil.example.com"), ("access-control-allow-credentials", "true"), ("x-kept", "1")],
             &["x-kept: 1"]),
            (example, &[], &[("access-control-allow-origin", "*"), ("x-kept", "1")],
             &["x-kept: 1"]),
            // `*` without credentials: a literal `*`, no Vary.
            (open, &[("origin", "https://anything.test")], &[("access-control-allow-origin", "https://backend.test")],
             &["access-control-allow-origin: *", "access-control-expose-headers: *"]),
            (open, &[], &[], &[]),
            // Scheme wildcard.
            (https_only, &[("origin", "https://app.test")], &[],
             &["access-control-allow-credentials: true", "access-control-allow-origin: https://app.test", "vary: Origin"]),
            (https_only, &[("origin", "http://app.test")], &[], &[]),
        ];
        for (i, (make, request, response, expected)) in rows.iter().enumerate() {
            let mut response = headers(response);
            make().apply(&headers(request), &mut response);
            let want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            assert_eq!(lines(&response), want, "row {i}: {request:?}");
        }
    }

    #[test]
    fn credentials_are_never_granted_through_a_star() {
        // Refused by validate, but if it reached apply anyway, no credentials leak to any origin.
        let config = CorsConfiguration {
            allow_origins: vec!["*".into()],
            allow_credentials: Some(true),
            ..Default::default()
        };
        assert_eq!(config.validate(), Err(CorsError::CredentialsWithAnyOrigin));
        let mut response = HeaderMap::new();
        config.apply(&headers(&[("origin", "https://a.test")]), &mut response);
        assert_eq!(
            lines(&response),
            vec![
                "access-control-allow-origin: https://a.test",
                "vary: Origin"
            ]
        );
    }

    #[test]
    fn validate_table() {
        let cases: &[(serde_json::Value, Option<&str>)] = &[
            (serde_json::json!({}), None),
            (
                serde_json::json!({"allowOrigins": ["*", "https://*", "http://*", "https://a.test:8443", "http://[::1]:3000"], "maxAge": 86400}),
                None,
            ),
            (serde_json::json!({"maxAge": -1}), None),
            (
                serde_json::json!({"allowOrigins": ["*"], "allowCredentials": true}),
                Some("allowCredentials cannot be true while allowOrigins contains `*`"),
            ),
            (
                serde_json::json!({"allowOrigins": ["*"], "allowCredentials": false}),
                None,
            ),
            (
                serde_json::json!({"maxAge": 86401}),
                Some("maxAge 86401 is out of range"),
            ),
            (
                serde_json::json!({"maxAge": -2}),
                Some("maxAge -2 is out of range"),
            ),
            (
                serde_json::json!({"allowOrigins": ["https://a.test/"]}),
                Some("`https://a.test/` is not valid: an origin has no path"),
            ),
            (
                serde_json::json!({"allowOrigins": ["a.test"]}),
                Some("`a.test` is not valid: an origin is `scheme://host`"),
            ),
            (
                serde_json::json!({"allowOrigins": ["https://*.a.test"]}),
                Some("`https://*.a.test` is not valid: a wildcard may only be"),
            ),
            (
                serde_json::json!({"allowOrigins": ["https://a.test:99999"]}),
                Some("`https://a.test:99999` is not valid"),
            ),
            (
                serde_json::json!({"allowMethods": ["GET", "BAD METHOD"]}),
                Some("allowMethods entry `BAD METHOD` is not an HTTP method name"),
            ),
            (
                serde_json::json!({"allowMethods": ["X".repeat(65)]}),
                Some("is not an HTTP method name (1 to 64"),
            ),
            (
                serde_json::json!({"allowMethods": [""]}),
                Some("allowMethods entry `` is not"),
            ),
            (
                serde_json::json!({"allowHeaders": ["x-ok", "bad header"]}),
                Some("allowHeaders entry `bad header` is not a header name"),
            ),
            (
                serde_json::json!({"exposeHeaders": ["x:y"]}),
                Some("exposeHeaders entry `x:y` is not a header name"),
            ),
        ];
        for (json, expected) in cases {
            let config: CorsConfiguration = serde_json::from_value(json.clone()).unwrap();
            match (config.validate(), expected) {
                (Ok(()), None) => {}
                (Err(err), Some(needle)) => {
                    assert!(err.to_string().contains(needle), "{json}: {err}")
                }
                (got, want) => panic!("{json}: got {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn serde_uses_api_gateway_field_names() {
        let config = example();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "allowOrigins": ["https://www.example.com", "http://localhost:3000"],
                "allowMethods": ["GET", "PUT", "DELETE"],
                "allowHeaders": ["content-type", "x-api-key"],
                "exposeHeaders": ["x-request-id", "date"],
                "maxAge": 300,
                "allowCredentials": true
            })
        );
        assert_eq!(
            serde_json::to_value(CorsConfiguration::default()).unwrap(),
            serde_json::json!({})
        );
        let sam: CorsConfiguration = serde_json::from_value(serde_json::json!({
            "AllowOrigins": ["https://a.test"], "AllowMethods": ["GET"], "MaxAge": 5,
            "AllowCredentials": false
        }))
        .unwrap();
        assert_eq!(sam.allow_origins, vec!["https://a.test".to_string()]);
        assert_eq!(sam.max_age, Some(5));
        assert_eq!(sam.allow_credentials, Some(false));
    }

    #[test]
    fn origins_normalize_as_browsers_serialize_them() {
        let cases: &[(&str, Option<&str>)] = &[
            ("https://A.Test", Some("https://a.test")),
            ("https://a.test:443", Some("https://a.test")),
            ("http://a.test:80", Some("http://a.test")),
            ("https://a.test:80", Some("https://a.test:80")),
            ("http://[::1]:8080", Some("http://[::1]:8080")),
            ("http://[::1]", Some("http://[::1]")),
            ("null", None),
            ("https://", None),
            ("https://a.test:", None),
            ("https://a.test:x", None),
            ("https://a.test/path", None),
            ("1http://a.test", None),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_origin(input).as_deref(), *expected, "{input}");
        }
    }
}
