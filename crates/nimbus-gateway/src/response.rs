//! Turning a function's result into the HTTP response, by API Gateway's rules for HTTP APIs.
//!
//! As API Gateway documents for HTTP APIs ("Lambda function response format"):
//! - 2.0: a result with a `statusCode` is read as `{statusCode, headers, cookies, body,
//!   isBase64Encoded}`; each cookie becomes a `set-cookie` header. Any other valid JSON is a
//!   200 `application/json` response whose body is the function's response (a JSON string's
//!   contents, any other value as returned).
//! - 1.0: the result must be `{statusCode, headers, multiValueHeaders, body, isBase64Encoded}`.
//!   `headers` and `multiValueHeaders` are merged; for a header named in both, only the
//!   `multiValueHeaders` values are sent.
//!
//! Anything else is a [`MappingError`], which the gateway answers with a 5xx; the error's text is
//! for the logs. Fields API Gateway does not know are ignored, as HTTP APIs do. Where the guide
//! is silent this follows the lenient reading API Gateway's JSON parser is known for: a numeric
//! string status (`"200"`) and scalar header values or bodies (`5`, `true`) are taken as their
//! text; objects and arrays where text belongs are errors. A response without `content-type`
//! is sent as `application/json`, the type API Gateway assumes for function results.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Map, Value};

/// The HTTP response a function's result maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What is wrong with a function's result, for the logs; the client only sees a 5xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the function's result is not valid JSON: {0}")]
    NotJson(String),
    #[error("the function's result is {found}, but payload format 1.0 needs a JSON object with a statusCode")]
    NotAnObject { found: &'static str },
    #[error("the function's result has no statusCode, which payload format 1.0 requires")]
    MissingStatusCode,
    #[error("statusCode {0} is not an HTTP status code (an integer from 100 to 599)")]
    InvalidStatusCode(String),
    #[error("{field} must be {expected}, but the function returned {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("header name {0:?} is not a valid HTTP header name")]
    InvalidHeaderName(String),
    #[error("the value of header {0:?} is not a valid HTTP header value (control characters such as a line break are not allowed)")]
    InvalidHeaderValue(String),
    #[error("body is marked isBase64Encoded but is not valid base64: {0}")]
    InvalidBase64(String),
}

/// Maps the result of a function integrated with payload format 2.0.
pub fn map_v2(result: &[u8]) -> Result<MappedResponse, MappingError> {
    let value: Value =
        serde_json::from_slice(result).map_err(|e| MappingError::NotJson(e.to_string()))?;
    match value {
        Value::Object(object) if object.contains_key("statusCode") => {
            structured(&object, Format::V2)
        }
        // Without a statusCode API Gateway infers the response: the documented example turns
        // `"Hello from Lambda!"` into the body `Hello from Lambda!`, and an object into its JSON
        // text as the function returned it.
        Value::String(text) => Ok(inferred(Bytes::from(text))),
        _ => Ok(inferred(Bytes::copy_from_slice(result))),
    }
}

/// Maps the result of a function integrated with payload format 1.0.
pub fn map_v1(result: &[u8]) -> Result<MappedResponse, MappingError> {
    let value: Value =
        serde_json::from_slice(result).map_err(|e| MappingError::NotJson(e.to_string()))?;
    match value {
        Value::Object(object) if object.contains_key("statusCode") => {
            structured(&object, Format::V1)
        }
        Value::Object(_) => Err(MappingError::MissingStatusCode),
        other => Err(MappingError::NotAnObject {
            found: json_kind(&other),
        }),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    V1,
    V2,
}

fn inferred(body: Bytes) -> MappedResponse {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    MappedResponse {
        status: StatusCode::OK,
        headers,
        body,
    }
}

fn structured(object: &Map<String, Value>, format: Format) -> Result<MappedResponse, MappingError> {
    let status = status_code(object.get("statusCode"))?;
    let mut headers = HeaderMap::new();

    let mut multi_names: Vec<HeaderName> = Vec::new();
    if format == Format::V1 {
        for (name, values) in object_field(object, "multiValueHeaders")? {
            let field = || format!("multiValueHeaders.{name}");
            let values = match values {
                Value::Null => continue,
                Value::Array(values) => values,
                other => return Err(wrong_type(field(), "an array of strings", other)),
            };
            let header_name = header_name(name)?;
            for value in values {
                if let Some(text) = scalar_text(value, field)? {
                    headers.append(header_name.clone(), header_value(name, &text)?);
                }
            }
            multi_names.push(header_name);
        }
    }

    for (name, value) in object_field(object, "headers")? {
        let Some(text) = scalar_text(value, || format!("headers.{name}"))? else {
            continue;
        };
        let header_name = header_name(name)?;
        // "If the same key-value pair is specified in both, only the values from
        // multiValueHeaders will appear in the merged list."
        if multi_names.contains(&header_name) {
            continue;
        }
        headers.append(header_name, header_value(name, &text)?);
    }

    if format == Format::V2 {
        match object.get("cookies") {
            None | Some(Value::Null) => {}
            Some(Value::Array(cookies)) => {
                for (i, cookie) in cookies.iter().enumerate() {
                    let Value::String(cookie) = cookie else {
                        return Err(wrong_type(format!("cookies[{i}]"), "a string", cookie));
                    };
                    headers.append(SET_COOKIE, header_value("set-cookie", cookie)?);
                }
            }
            Some(other) => return Err(wrong_type("cookies".into(), "an array of strings", other)),
        }
    }

    if !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }

    let body = scalar_text(object.get("body").unwrap_or(&Value::Null), || "body".into())?
        .unwrap_or_default();
    let body = if is_base64_encoded(object.get("isBase64Encoded"))? {
        Bytes::from(
            BASE64
                .decode(body.as_bytes())
                .map_err(|e| MappingError::InvalidBase64(e.to_string()))?,
        )
    } else {
        Bytes::from(body)
    };

    Ok(MappedResponse {
        status,
        headers,
        body,
    })
}

/// Standard alphabet; padding may be there or not, as functions differ in what they emit.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn status_code(value: Option<&Value>) -> Result<StatusCode, MappingError> {
    let code = match value {
        None | Some(Value::Null) => return Err(MappingError::MissingStatusCode),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    code.filter(|c| (100..=599).contains(c))
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| {
            MappingError::InvalidStatusCode(value.map(Value::to_string).unwrap_or_default())
        })
}

fn is_base64_encoded(value: Option<&Value>) -> Result<bool, MappingError> {
    match value {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(wrong_type("isBase64Encoded".into(), "a boolean", other)),
    }
}

/// An optional JSON object field; absent or `null` is empty.
fn object_field<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<impl Iterator<Item = (&'a String, &'a Value)>, MappingError> {
    let map = match object.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map),
        Some(other) => return Err(wrong_type(field.into(), "an object", other)),
    };
    Ok(map.into_iter().flatten())
}

/// The text of a string, number or boolean; `None` for `null`; an error for objects and arrays.
fn scalar_text(
    value: &Value,
    field: impl FnOnce() -> String,
) -> Result<Option<String>, MappingError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(wrong_type(field(), "a string", other)),
    }
}

fn header_name(name: &str) -> Result<HeaderName, MappingError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| MappingError::InvalidHeaderName(name.to_owned()))
}

/// Any bytes but control characters (UTF-8 included, which HTTP carries as obs-text).
fn header_value(name: &str, value: &str) -> Result<HeaderValue, MappingError> {
    HeaderValue::from_bytes(value.as_bytes())
        .map_err(|_| MappingError::InvalidHeaderValue(name.to_owned()))
}

fn wrong_type(field: String, expected: &'static str, found: &Value) -> MappingError {
    MappingError::WrongType {
        field,
        expected,
        found: json_kind(found),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected response: status, headers in order (name, value), body bytes.
    type Expected = (u16, &'static [(&'static str, &'static str)], &'static [u8]);

    fn check(result: &str, mapped: Result<MappedResponse, MappingError>, expected: Expected) {
        let mapped = mapped.unwrap_or_else(|e| panic!("{result}: unexpected error: {e}"));
        assert_eq!(mapped.status.as_u16(), expected.0, "{result}");
        // Order matters among the values of one name (several set-cookie), not across names,
        // which follow the JSON object's key order; a stable sort by name compares just that.
        let mut headers: Vec<(&str, &str)> = mapped
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        headers.sort_by_key(|(name, _)| *name);
        let mut wanted = expected.1.to_vec();
        wanted.sort_by_key(|(name, _)| *name);
        assert_eq!(headers, wanted, "{result}");
        assert_eq!(&mapped.body[..], expected.2, "{result}");
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn v2_results() {
        let cases: &[(&str, Expected)] = &[
            // The two documented inference examples.
            (
                r#""Hello from Lambda!""#,
                (200, &[JSON], b"Hello from Lambda!"),
            ),
            (
                r#"{ "message": "Hello from Lambda!" }"#,
                (200, &[JSON], br#"{ "message": "Hello from Lambda!" }"#),
            ),
            // Other valid JSON without statusCode is inferred the same way.
            ("42", (200, &[JSON], b"42")),
            ("null", (200, &[JSON], b"null")),
            ("[1,2]", (200, &[JSON], b"[1,2]")),
            (r#"{"status":404}"#, (200, &[JSON], br#"{"status":404}"#)),
            // statusCode only.
            (r#"{"statusCode":204}"#, (204, &[JSON], b"")),
            (
                r#"{"statusCode":"201","body":"made"}"#,
                (201, &[JSON], b"made"),
            ),
            // Headers, with scalar values taken as text and null values left out.
            (
                r#"{"statusCode":200,"headers":{"Content-Type":"text/html","X-Count":5,"X-On":true,"X-None":null},"body":"<p>hi</p>"}"#,
                (
                    200,
                    &[
                        ("content-type", "text/html"),
                        ("x-count", "5"),
                        ("x-on", "true"),
                    ],
                    b"<p>hi</p>",
                ),
            ),
            // Cookies become one set-cookie header each.
            (
                r#"{"statusCode":302,"headers":{"Location":"/home"},"cookies":["a=1; Path=/","b=2; HttpOnly"]}"#,
                (
                    302,
                    &[
                        ("location", "/home"),
                        ("set-cookie", "a=1; Path=/"),
                        ("set-cookie", "b=2; HttpOnly"),
                        JSON,
                    ],
                    b"",
                ),
            ),
            // Base64 bodies are decoded to bytes.
            (
                r#"{"statusCode":200,"headers":{"content-type":"image/png"},"body":"iVBORw0KGgoA/w==","isBase64Encoded":true}"#,
                (
                    200,
                    &[("content-type", "image/png")],
                    &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff],
                ),
            ),
            (
                r#"{"statusCode":200,"body":"aGk","isBase64Encoded":"true"}"#,
                (200, &[JSON], b"hi"),
            ),
            // multiValueHeaders means nothing to 2.0 and is ignored, as unknown fields are.
            (
                r#"{"statusCode":200,"multiValueHeaders":{"x-a":["1"]},"extra":{}}"#,
                (200, &[JSON], b""),
            ),
        ];
        for (result, expected) in cases {
            check(result, map_v2(result.as_bytes()), *expected);
        }
    }

    #[test]
    fn v1_results() {
        let cases: &[(&str, Expected)] = &[
            (r#"{"statusCode":200}"#, (200, &[JSON], b"")),
            (
                r#"{"statusCode":200,"headers":{"Content-Type":"text/plain"},"body":"ok"}"#,
                (200, &[("content-type", "text/plain")], b"ok"),
            ),
            // Multi-value headers, several Set-Cookie among them.
            (
                r#"{"statusCode":200,"multiValueHeaders":{"Set-Cookie":["a=1","b=2"],"Content-Type":["text/plain"]},"body":"x"}"#,
                (
                    200,
                    &[
                        ("set-cookie", "a=1"),
                        ("set-cookie", "b=2"),
                        ("content-type", "text/plain"),
                    ],
                    b"x",
                ),
            ),
            // Merged: a header named in both keeps only its multiValueHeaders values.
            (
                r#"{"statusCode":200,"headers":{"X-A":"single","X-B":"b"},"multiValueHeaders":{"x-a":["m1","m2"]}}"#,
                (
                    200,
                    &[("x-a", "m1"), ("x-a", "m2"), ("x-b", "b"), JSON],
                    b"",
                ),
            ),
            (
                r#"{"statusCode":200,"body":"AAEC","isBase64Encoded":true}"#,
                (200, &[JSON], &[0, 1, 2]),
            ),
            // 1.0 has no cookies field; it is ignored.
            (
                r#"{"statusCode":200,"cookies":["a=1"]}"#,
                (200, &[JSON], b""),
            ),
        ];
        for (result, expected) in cases {
            check(result, map_v1(result.as_bytes()), *expected);
        }
    }

    #[test]
    fn bad_results() {
        enum Format {
            V1,
            V2,
            Both,
        }
        let wrong =
            |field: &str, expected: &'static str, found: &'static str| MappingError::WrongType {
                field: field.into(),
                expected,
                found,
            };
        let cases: Vec<(Format, &str, MappingError)> = vec![
            (
                Format::Both,
                "not json",
                MappingError::NotJson("expected ident at line 1 column 2".into()),
            ),
            (
                Format::Both,
                "",
                MappingError::NotJson("EOF while parsing a value at line 1 column 0".into()),
            ),
            (
                Format::V1,
                r#""Hello""#,
                MappingError::NotAnObject { found: "a string" },
            ),
            (
                Format::V1,
                "null",
                MappingError::NotAnObject { found: "null" },
            ),
            (
                Format::V1,
                "[1]",
                MappingError::NotAnObject { found: "an array" },
            ),
            (
                Format::V1,
                r#"{"body":"x"}"#,
                MappingError::MissingStatusCode,
            ),
            (
                Format::Both,
                r#"{"statusCode":null}"#,
                MappingError::MissingStatusCode,
            ),
            (
                Format::Both,
                r#"{"statusCode":99}"#,
                MappingError::InvalidStatusCode("99".into()),
            ),
            (
                Format::Both,
                r#"{"statusCode":600}"#,
                MappingError::InvalidStatusCode("600".into()),
            ),
            (
                Format::Both,
                r#"{"statusCode":-1}"#,
                MappingError::InvalidStatusCode("-1".into()),
            ),
            (
                Format::Both,
                r#"{"statusCode":200.5}"#,
                MappingError::InvalidStatusCode("200.5".into()),
            ),
            (
                Format::Both,
                r#"{"statusCode":"OK"}"#,
                MappingError::InvalidStatusCode(r#""OK""#.into()),
            ),
            (
                Format::Both,
                r#"{"statusCode":true}"#,
                MappingError::InvalidStatusCode("true".into()),
            ),
            (
                Format::Both,
                r#"{"statusCode":200,"body":{"a":1}}"#,
                wrong("body", "a string", "an object"),
            ),
            (
                Format::Both,
                r#"{"statusCode":200,"body":[1]}"#,
                wrong("body", "a string", "an array"),
            ),
            (
                Format::Both,
                r#"{"statusCode":200,"headers":[]}"#,
                wrong("headers", "an object", "an array"),
            ),
            (
                Format::Both,
                r#"{"statusCode":200,"headers":"x"}"#,
                wrong("headers", "an object", "a string"),
            ),
            (
                Format::Both,
                r#"{"statusCode":200,"headers":{"x-a":{"b":1}}}"#,
                wrong("headers.x-a", "a string", "an object"),
            ),
            (
                Format::V2,
                r#"{"statusCode":200,"headers":{"x-a":["1"]}}"#,
                wrong("headers.x-a", "a string", "an array"),
            ),
            (
                Format::Both,
                r#"{"statusCode":200,"headers":{"x-a":"a\nb"}}"#,
                MappingError::InvalidHeaderValue("x-a".into()),
            ),
            (
                Format::Both,
                r#"{"statusCode":200,"headers":{"x-a":"a\r\nInjected: 1"}}"#,
                MappingError::InvalidHeaderValue("x-a".into()),
            ),
            (
                Format::Both,
                r#"{"statusCode":200,"headers":{"bad name":"v"}}"#,
                MappingError::InvalidHeaderName("bad name".into()),
            ),
            (
                Format::Both,
                r#"{"statusCode":200,"headers":{"":"v"}}"#,
                MappingError::InvalidHeaderName("".into()),
            ),
            (
                Format::V1,
                r#"{"statusCode":200,"multiValueHeaders":{"x-a":"1"}}"#,
                wrong("multiValueHeaders.x-a", "an array of strings", "a string"),
            ),
            (
                Format::V1,
                r#"{"statusCode":200,"multiValueHeaders":{"x-a":[[1]]}}"#,
                wrong("multiValueHeaders.x-a", "a string", "an array"),
            ),
            (
                Format::V1,
                r#"{"statusCode":200,"multiValueHeaders":{"x-a":["a\u0000"]}}"#,
                MappingError::InvalidHeaderValue("x-a".into()),
            ),
            (
                Format::V2,
                r#"{"statusCode":200,"cookies":"a=1"}"#,
                wrong("cookies", "an array of strings", "a string"),
            ),
            (
                Format::V2,
                r#"{"statusCode":200,"cookies":[1]}"#,
                wrong("cookies[0]", "a string", "a number"),
            ),
            (
                Format::V2,
                r#"{"statusCode":200,"cookies":["a=1\nb"]}"#,
                MappingError::InvalidHeaderValue("set-cookie".into()),
            ),
            (
                Format::Both,
                r#"{"statusCode":200,"isBase64Encoded":1}"#,
                wrong("isBase64Encoded", "a boolean", "a number"),
            ),
            (
                Format::Both,
                r#"{"statusCode":200,"body":"not base64!","isBase64Encoded":true}"#,
                MappingError::InvalidBase64("Invalid symbol 32, offset 3.".into()),
            ),
        ];
        for (format, result, expected) in cases {
            if matches!(format, Format::V1 | Format::Both) {
                assert_eq!(
                    map_v1(result.as_bytes()),
                    Err(expected.clone()),
                    "1.0: {result}"
                );
            }
            if matches!(format, Format::V2 | Format::Both) {
                assert_eq!(
                    map_v2(result.as_bytes()),
                    Err(expected.clone()),
                    "2.0: {result}"
                );
            }
        }
    }

    #[test]
    fn errors_read_as_sentences() {
        let e = MappingError::WrongType {
            field: "body".into(),
            expected: "a string",
            found: "an object",
        };
        assert_eq!(
            e.to_string(),
            "body must be a string, but the function returned an object"
        );
        assert_eq!(
            MappingError::InvalidStatusCode("600".into()).to_string(),
            "statusCode 600 is not an HTTP status code (an integer from 100 to 599)"
        );
    }
}
