//! API Gateway HTTP API route keys (`GET /items/{id}`, `ANY /files/{proxy+}`, `$default`) and the
//! routing table that picks the route for a request the way API Gateway does. Pure: no I/O.
//!
//! # Route keys
//!
//! A route key is `$default` or `METHOD /path`, with exactly one space between the two. The
//! method is `ANY` or one of `GET POST PUT PATCH DELETE HEAD OPTIONS`, upper-case. The path
//! starts with `/`; each segment is either literal text or one whole variable: `{name}` (one
//! segment) or `{name+}` (greedy: one or more segments, only as the last segment, as API Gateway
//! documents: "The greedy path variable must be at the end of the resource path"). Variable names
//! are ASCII letters, digits, `_` and `-`, unique within the key. A segment that mixes a
//! variable with literal text (`{id}.json`), an empty segment (`//`), a trailing `/` (other than
//! the root `/`), a `.`/`..` segment, `%`-escapes and characters outside a URL path are refused,
//! as is a path longer than [`MAX_ROUTE_PATH_LEN`].
//!
//! # Precedence
//!
//! API Gateway documents three tiers for HTTP APIs ("Routing API requests"): a full match for a
//! route and method, then a match with a greedy path variable, then `$default`; its example puts
//! the static `GET /pets/dog/1` ahead of `GET /pets/dog/{id}`. Where the documentation is silent
//! Nimbus decides as the last rows say. The first rule that separates two candidates decides:
//!
//! | # | Rule | Example (request → chosen route) |
//! |---|------|----------------------------------|
//! | 1 | A route without a greedy variable whose every segment matches (a *full match*) beats any greedy route. | `GET /pets/dog/2` → `GET /pets/dog/{id}` over `GET /pets/{proxy+}` |
//! | 2 | A greedy route (`{name+}` takes one or more segments) beats `$default`. | `POST /test/5` → `ANY /{proxy+}` over `$default` |
//! | 3 | `$default` takes every method and path nothing else took. | `DELETE /nope` → `$default` |
//! | 4 | Within a tier, segments compare left to right; at the first segment where two candidates differ, literal beats `{var}`, and `{var}` beats `{greedy+}`. | `GET /pets/dog/1` → `GET /pets/dog/1` over `GET /pets/dog/{id}`; `GET /pets/cat/1` → `GET /pets/{proxy+}` over `GET /{proxy+}` |
//! | 5 | For the same path template, a route with the request's method beats `ANY` ("the `ANY` method matches all methods that you haven't defined"). | `GET /items` → `GET /items` over `ANY /items` |
//! | 6 | The path decides before the method: a more specific path with `ANY` beats a less specific one with the exact method. | `GET /items/1` → `ANY /items/{id}` over `GET /{a}/{b}` |
//! | 7 | Methods compare exactly (case-sensitive); `HEAD` does not fall back to a `GET` route (AWS documents no such fallback for HTTP APIs), only to `ANY`. | `HEAD /items` with only `GET /items` → no match |
//! | 8 | A greedy variable needs at least one segment: `/files` does not match `/files/{proxy+}`, nor `/` match `/{proxy+}` (add a route for the bare path). | `GET /files` → `$default` |
//! | 9 | A trailing slash is part of the path: `/items/` is not `/items` and matches no literal or `{var}` route; a greedy variable keeps it (`/files/a/` gives `proxy` = `a/`). | `GET /items/` with `GET /items` → no match |
//! | 10 | Two routes with the same method whose templates differ only in variable names would match the same requests, so the table refuses them, as it refuses the same key twice. | `GET /a/{x}` + `GET /a/{y}` → error |
//!
//! # Request paths
//!
//! [`RouteTable::find`] takes the path as received (percent-encoded, stage prefix removed) and
//! checks it first ([`check_path`]): it must start with `/`, be at most [`MAX_REQUEST_PATH_LEN`]
//! bytes, have no empty segments, valid `%XX` escapes only, no encoded NUL, UTF-8 once decoded,
//! and no `.`/`..` segment raw or encoded (nor a `.`/`..` piece inside a segment that decodes
//! to several, like `..%2Fetc`). Literal segments compare against the decoded segment and
//! parameter values are decoded, since "API Gateway decodes URL-encoded request parameters
//! before passing them to your backend integration"; an encoded `/` (`%2F`) stays inside its
//! segment's value.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest path accepted in a route key, in bytes.
pub const MAX_ROUTE_PATH_LEN: usize = 1024;

/// Longest request path [`check_path`] accepts, in bytes (Nimbus's limit; API Gateway bounds the
/// whole request line and headers instead).
pub const MAX_REQUEST_PATH_LEN: usize = 8192;

/// The method part of a route key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteMethod {
    /// `ANY`: every method the same path does not define a route for.
    Any,
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
}

impl RouteMethod {
    const ALL: [RouteMethod; 8] = [
        RouteMethod::Any,
        RouteMethod::Get,
        RouteMethod::Post,
        RouteMethod::Put,
        RouteMethod::Patch,
        RouteMethod::Delete,
        RouteMethod::Head,
        RouteMethod::Options,
    ];

    /// The upper-case name as written in a route key.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMethod::Any => "ANY",
            RouteMethod::Get => "GET",
            RouteMethod::Post => "POST",
            RouteMethod::Put => "PUT",
            RouteMethod::Patch => "PATCH",
            RouteMethod::Delete => "DELETE",
            RouteMethod::Head => "HEAD",
            RouteMethod::Options => "OPTIONS",
        }
    }
}

impl fmt::Display for RouteMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One segment of a route path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TemplateSegment {
    /// Literal text, compared with the decoded request segment.
    Literal(String),
    /// `{name}`: exactly one segment.
    Variable(String),
    /// `{name+}`: the rest of the path, one or more segments; always last.
    Greedy(String),
}

/// The path of a route key, parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathTemplate {
    segments: Vec<TemplateSegment>,
}

impl PathTemplate {
    /// The segments after the leading `/`; empty for the root path `/`.
    pub fn segments(&self) -> &[TemplateSegment] {
        &self.segments
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for segment in &self.segments {
            match segment {
                TemplateSegment::Literal(text) => write!(f, "/{text}")?,
                TemplateSegment::Variable(name) => write!(f, "/{{{name}}}")?,
                TemplateSegment::Greedy(name) => write!(f, "/{{{name}+}}")?,
            }
        }
        Ok(())
    }
}

impl FromStr for PathTemplate {
    type Err = RouteKeyError;

    fn from_str(path: &str) -> Result<Self, Self::Err> {
        if path.len() > MAX_ROUTE_PATH_LEN {
            return Err(RouteKeyError::PathTooLong {
                len: path.len(),
                max: MAX_ROUTE_PATH_LEN,
            });
        }
        let Some(body) = path.strip_prefix('/') else {
            return Err(RouteKeyError::PathNotAbsolute { path: path.into() });
        };
        if body.is_empty() {
            return Ok(PathTemplate {
                segments: Vec::new(),
            });
        }
        if body.ends_with('/') {
            return Err(RouteKeyError::TrailingSlash { path: path.into() });
        }
        let raw: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(raw.len());
        for (i, text) in raw.iter().enumerate() {
            let segment = parse_template_segment(path, text)?;
            if let TemplateSegment::Greedy(_) = segment {
                if i + 1 != raw.len() {
                    return Err(RouteKeyError::GreedyNotLast {
                        segment: (*text).into(),
                    });
                }
            }
            if let TemplateSegment::Variable(name) | TemplateSegment::Greedy(name) = &segment {
                let seen = segments.iter().any(|s| {
                    matches!(s, TemplateSegment::Variable(n) | TemplateSegment::Greedy(n) if n == name)
                });
                if seen {
                    return Err(RouteKeyError::DuplicateVariable { name: name.clone() });
                }
            }
            segments.push(segment);
        }
        Ok(PathTemplate { segments })
    }
}

fn parse_template_segment(path: &str, text: &str) -> Result<TemplateSegment, RouteKeyError> {
    if text.is_empty() {
        return Err(RouteKeyError::EmptySegment { path: path.into() });
    }
    let opens = text.matches('{').count();
    let closes = text.matches('}').count();
    if opens == 0 && closes == 0 {
        if text == "." || text == ".." {
            return Err(RouteKeyError::DotSegment {
                segment: text.into(),
            });
        }
        if let Some(ch) = text.chars().find(|&c| !is_literal_char(c)) {
            return Err(RouteKeyError::BadCharacter {
                segment: text.into(),
                ch,
            });
        }
        return Ok(TemplateSegment::Literal(text.into()));
    }
    let whole = text.len() >= 2 && text.starts_with('{') && text.ends_with('}');
    if !whole {
        return Err(if opens == closes {
            RouteKeyError::MixedSegment {
                segment: text.into(),
            }
        } else {
            RouteKeyError::UnbalancedBraces {
                segment: text.into(),
            }
        });
    }
    let inner = &text[1..text.len() - 1];
    if inner.contains(['{', '}']) {
        return Err(RouteKeyError::UnbalancedBraces {
            segment: text.into(),
        });
    }
    let (name, greedy) = match inner.strip_suffix('+') {
        Some(name) => (name, true),
        None => (inner, false),
    };
    if name.is_empty() {
        return Err(RouteKeyError::EmptyVariable {
            segment: text.into(),
        });
    }
    if let Some(ch) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        return Err(RouteKeyError::BadVariableName {
            segment: text.into(),
            ch,
        });
    }
    Ok(if greedy {
        TemplateSegment::Greedy(name.into())
    } else {
        TemplateSegment::Variable(name.into())
    })
}

/// Characters a literal route segment may hold: RFC 3986 path characters without `%` (literals
/// are written decoded), plus non-ASCII text so `/café` can be routed.
fn is_literal_char(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@".contains(c)
    } else {
        !c.is_control() && !c.is_whitespace()
    }
}

/// A route key: `$default` or a method and a path template.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RouteKey {
    /// `$default`: the catch-all for requests no other route matches.
    Default,
    /// `METHOD /path`.
    Route {
        method: RouteMethod,
        path: PathTemplate,
    },
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteKey::Default => f.write_str("$default"),
            RouteKey::Route { method, path } => write!(f, "{method} {path}"),
        }
    }
}

impl FromStr for RouteKey {
    type Err = RouteKeyError;

    fn from_str(key: &str) -> Result<Self, Self::Err> {
        if key == "$default" {
            return Ok(RouteKey::Default);
        }
        if key.trim().is_empty() {
            return Err(RouteKeyError::Empty);
        }
        if key.starts_with('$') {
            return Err(RouteKeyError::UnknownSpecialKey { key: key.into() });
        }
        let Some((method, path)) = key.split_once(' ') else {
            return Err(RouteKeyError::MissingPath { key: key.into() });
        };
        let method = RouteMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == method)
            .ok_or_else(|| {
                if RouteMethod::ALL
                    .iter()
                    .any(|m| m.as_str().eq_ignore_ascii_case(method))
                {
                    RouteKeyError::LowercaseMethod {
                        method: method.into(),
                    }
                } else {
                    RouteKeyError::UnknownMethod {
                        method: method.into(),
                    }
                }
            })?;
        if path.starts_with(char::is_whitespace) || path.contains(' ') {
            return Err(RouteKeyError::Malformed { key: key.into() });
        }
        let path = path.parse()?;
        Ok(RouteKey::Route { method, path })
    }
}

impl Serialize for RouteKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RouteKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A route key that cannot be parsed, or a set of routes that cannot form a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteKeyError {
    #[error("the route key is empty; write `METHOD /path` or `$default`")]
    Empty,
    #[error("`{key}` is not a route key for HTTP APIs; the only special key is `$default`")]
    UnknownSpecialKey { key: String },
    #[error("route key `{key}` has no path; write `METHOD /path` or `$default`")]
    MissingPath { key: String },
    #[error("route key `{key}` must have exactly one space between the method and the path")]
    Malformed { key: String },
    #[error(
        "route key method `{method}` is not known; use ANY, GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS"
    )]
    UnknownMethod { method: String },
    #[error("route key method `{method}` must be written in upper case")]
    LowercaseMethod { method: String },
    #[error("route path `{path}` must start with '/'")]
    PathNotAbsolute { path: String },
    #[error("route path is {len} bytes long; the limit is {max}")]
    PathTooLong { len: usize, max: usize },
    #[error("route path `{path}` ends with '/'; only the root path `/` may")]
    TrailingSlash { path: String },
    #[error("route path `{path}` has an empty segment (`//`)")]
    EmptySegment { path: String },
    #[error("route path segment `{segment}` is a `.` or `..` segment")]
    DotSegment { segment: String },
    #[error("route path segment `{segment}` contains {ch:?}, which a route path may not hold")]
    BadCharacter { segment: String, ch: char },
    #[error(
        "route path segment `{segment}` mixes a variable with literal text; a variable must be a whole segment"
    )]
    MixedSegment { segment: String },
    #[error("route path segment `{segment}` has unbalanced or nested braces")]
    UnbalancedBraces { segment: String },
    #[error("route path segment `{segment}` is a variable without a name")]
    EmptyVariable { segment: String },
    #[error(
        "route path variable `{segment}` has {ch:?} in its name; names use ASCII letters, digits, '_' and '-'"
    )]
    BadVariableName { segment: String, ch: char },
    #[error("greedy path variable `{segment}` must be the last segment of the route path")]
    GreedyNotLast { segment: String },
    #[error("route path uses the variable name `{name}` twice")]
    DuplicateVariable { name: String },
    #[error("route `{key}` is defined twice")]
    DuplicateRoute { key: String },
    #[error(
        "route `{key}` conflicts with `{other}`: they differ only in variable names, so they would match the same requests"
    )]
    ConflictingRoutes { key: String, other: String },
}

/// A request path that cannot be routed. Each message names the offending segment as received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path `{path}` does not start with '/'")]
    NotAbsolute { path: String },
    #[error("the request path is {len} bytes long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("segment {position} of the request path `{path}` is empty (`//`)")]
    EmptySegment { path: String, position: usize },
    #[error("the request path segment `{segment}` is a `.` or `..` traversal segment")]
    Traversal { segment: String },
    #[error(
        "the request path segment `{segment}` has invalid percent-encoding: '%' must be followed by two hex digits"
    )]
    InvalidPercentEncoding { segment: String },
    #[error("the request path segment `{segment}` contains an encoded NUL (`%00`)")]
    EncodedNul { segment: String },
    #[error("the request path segment `{segment}` does not decode to UTF-8 text")]
    NotUtf8 { segment: String },
    #[error("the request path segment `{segment}` contains {ch:?}, which a URL path may not hold")]
    BadCharacter { segment: String, ch: char },
}

/// Request text quoted in an error, cut short so an 8 KiB path cannot bloat a log line.
fn shown(text: &str) -> String {
    const MAX: usize = 80;
    if text.len() <= MAX {
        return text.into();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A checked request path: its decoded segments and whether it ended with '/'.
struct RequestPath<'a> {
    segments: Vec<Cow<'a, str>>,
    trailing_slash: bool,
}

/// Checks a request path as received (see the module documentation for the rules).
pub fn check_path(raw: &str) -> Result<(), PathError> {
    decode_path(raw).map(|_| ())
}

fn decode_path(raw: &str) -> Result<RequestPath<'_>, PathError> {
    if raw.len() > MAX_REQUEST_PATH_LEN {
        return Err(PathError::TooLong {
            len: raw.len(),
            max: MAX_REQUEST_PATH_LEN,
        });
    }
    let Some(body) = raw.strip_prefix('/') else {
        return Err(PathError::NotAbsolute { path: shown(raw) });
    };
    if body.is_empty() {
        return Ok(RequestPath {
            segments: Vec::new(),
            trailing_slash: false,
        });
    }
    let (body, trailing_slash) = match body.strip_suffix('/') {
        Some(body) => (body, true),
        None => (body, false),
    };
    let mut segments = Vec::new();
    for (i, segment) in body.split('/').enumerate() {
        if segment.is_empty() {
            return Err(PathError::EmptySegment {
                path: shown(raw),
                position: i + 1,
            });
        }
        segments.push(decode_segment(segment)?);
    }
    Ok(RequestPath {
        segments,
        trailing_slash,
    })
}

fn decode_segment(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if let Some(ch) = raw
        .chars()
        .find(|&c| c.is_control() || c == ' ' || c == '?' || c == '#')
    {
        return Err(PathError::BadCharacter {
            segment: shown(raw),
            ch,
        });
    }
    let decoded = if raw.contains('%') {
        let bytes = raw.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
                match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                    (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                    _ => {
                        return Err(PathError::InvalidPercentEncoding {
                            segment: shown(raw),
                        })
                    }
                }
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        if out.contains(&0) {
            return Err(PathError::EncodedNul {
                segment: shown(raw),
            });
        }
        match String::from_utf8(out) {
            Ok(text) => Cow::Owned(text),
            Err(_) => {
                return Err(PathError::NotUtf8 {
                    segment: shown(raw),
                })
            }
        }
    } else {
        Cow::Borrowed(raw)
    };
    // An encoded '/' or '\' keeps `..%2Fetc` in one segment here, but a backend that joins the
    // value into a file path would still climb out, so such pieces are refused too.
    if decoded
        .split(['/', '\\'])
        .any(|piece| piece == "." || piece == "..")
    {
        return Err(PathError::Traversal {
            segment: shown(raw),
        });
    }
    Ok(decoded)
}

/// The route chosen for a request.
#[derive(Debug, PartialEq)]
pub struct RouteMatch<'a, T> {
    pub route_key: &'a RouteKey,
    pub value: &'a T,
    /// Path variables in template order, values percent-decoded; a greedy variable holds the
    /// rest of the path, decoded segment by segment and joined with '/'.
    pub path_parameters: Vec<(String, String)>,
}

/// Routes that end at one trie node, by method. At most eight entries, so a list beats a map.
#[derive(Default)]
struct Endpoints {
    by_method: Vec<(RouteMethod, usize)>,
}

impl Endpoints {
    /// The route for `method`, preferring the exact method over `ANY` (precedence rule 5).
    fn lookup(&self, method: &str) -> Option<usize> {
        let exact = self
            .by_method
            .iter()
            .find(|(m, _)| *m != RouteMethod::Any && m.as_str() == method);
        exact
            .or_else(|| self.by_method.iter().find(|(m, _)| *m == RouteMethod::Any))
            .map(|&(_, index)| index)
    }
}

/// A trie over template segments. Each node is reached by exactly one template prefix, so a
/// lookup visits each node at most once per pass however many routes there are.
#[derive(Default)]
struct Node {
    literals: HashMap<String, Node>,
    variable: Option<Box<Node>>,
    /// Routes whose template ends at this node.
    here: Endpoints,
    /// Routes whose template ends with a greedy variable right below this node.
    greedy: Endpoints,
}

impl Node {
    /// Tier 1 (rule 1): every segment matched by a literal or `{var}`, literals tried first.
    fn find_full(&self, segments: &[Cow<'_, str>], method: &str) -> Option<usize> {
        let Some((first, rest)) = segments.split_first() else {
            return self.here.lookup(method);
        };
        if let Some(child) = self.literals.get(first.as_ref()) {
            if let Some(found) = child.find_full(rest, method) {
                return Some(found);
            }
        }
        self.variable
            .as_ref()
            .and_then(|child| child.find_full(rest, method))
    }

    /// Tier 2: a greedy variable takes the remaining (at least one) segments; deeper literal
    /// and `{var}` matches are preferred over stopping here (rule 4).
    fn find_greedy(&self, segments: &[Cow<'_, str>], method: &str) -> Option<usize> {
        let (first, rest) = segments.split_first()?;
        if let Some(child) = self.literals.get(first.as_ref()) {
            if let Some(found) = child.find_greedy(rest, method) {
                return Some(found);
            }
        }
        if let Some(child) = &self.variable {
            if let Some(found) = child.find_greedy(rest, method) {
                return Some(found);
            }
        }
        self.greedy.lookup(method)
    }
}

/// The routes of one deployment, ready to match requests.
pub struct RouteTable<T> {
    routes: Vec<(RouteKey, T)>,
    root: Node,
    default: Option<usize>,
}

impl<T: fmt::Debug> fmt::Debug for RouteTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl<T> RouteTable<T> {
    /// Builds the table; the same key twice, or two keys that differ only in variable names
    /// (precedence rule 10), is an error naming them.
    pub fn build(routes: impl IntoIterator<Item = (RouteKey, T)>) -> Result<Self, RouteKeyError> {
        let mut table = RouteTable {
            routes: Vec::new(),
            root: Node::default(),
            default: None,
        };
        for (key, value) in routes {
            let index = table.routes.len();
            let existing = match &key {
                RouteKey::Default => table.default.replace(index),
                RouteKey::Route { method, path } => {
                    let mut node = &mut table.root;
                    let mut endpoints = None;
                    for segment in path.segments() {
                        match segment {
                            TemplateSegment::Literal(text) => {
                                node = node.literals.entry(text.clone()).or_default();
                            }
                            TemplateSegment::Variable(_) => {
                                node = node.variable.get_or_insert_with(Box::default);
                            }
                            TemplateSegment::Greedy(_) => {
                                // Greedy is always last (checked when parsing).
                                endpoints = Some(&mut node.greedy);
                                break;
                            }
                        }
                    }
                    let endpoints = match endpoints {
                        Some(endpoints) => endpoints,
                        None => &mut node.here,
                    };
                    let clash = endpoints
                        .by_method
                        .iter()
                        .find(|(m, _)| m == method)
                        .map(|&(_, i)| i);
                    if clash.is_none() {
                        endpoints.by_method.push((*method, index));
                    }
                    clash
                }
            };
            if let Some(other) = existing {
                let other = &table.routes[other].0;
                return Err(if *other == key {
                    RouteKeyError::DuplicateRoute {
                        key: key.to_string(),
                    }
                } else {
                    RouteKeyError::ConflictingRoutes {
                        key: key.to_string(),
                        other: other.to_string(),
                    }
                });
            }
            table.routes.push((key, value));
        }
        Ok(table)
    }

    /// The routes in the order they were given.
    pub fn routes(&self) -> impl Iterator<Item = (&RouteKey, &T)> {
        self.routes.iter().map(|(key, value)| (key, value))
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route for a request, by the precedence in the module documentation. `raw_path` is the
    /// path as received (percent-encoded, stage prefix removed, no query string); it is checked
    /// first, so a bad path is an error even when `$default` exists. `Ok(None)` means no route
    /// matched (API Gateway answers `{"message":"Not Found"}`).
    pub fn find(
        &self,
        method: &str,
        raw_path: &str,
    ) -> Result<Option<RouteMatch<'_, T>>, PathError> {
        let path = decode_path(raw_path)?;
        let found = if path.trailing_slash {
            None
        } else {
            self.root.find_full(&path.segments, method)
        };
        let found = found
            .or_else(|| self.root.find_greedy(&path.segments, method))
            .or(self.default);
        Ok(found.map(|index| {
            let (route_key, value) = &self.routes[index];
            RouteMatch {
                route_key,
                value,
                path_parameters: path_parameters(route_key, &path),
            }
        }))
    }
}

fn path_parameters(key: &RouteKey, path: &RequestPath<'_>) -> Vec<(String, String)> {
    let RouteKey::Route { path: template, .. } = key else {
        return Vec::new();
    };
    let mut parameters = Vec::new();
    for (i, segment) in template.segments().iter().enumerate() {
        match segment {
            TemplateSegment::Literal(_) => {}
            TemplateSegment::Variable(name) => {
                if let Some(value) = path.segments.get(i) {
                    parameters.push((name.clone(), value.to_string()));
                }
            }
            TemplateSegment::Greedy(name) => {
                let rest = path.segments.get(i..).unwrap_or_default();
                let mut value = rest.join("/");
                if path.trailing_slash {
                    value.push('/');
                }
                parameters.push((name.clone(), value));
            }
        }
    }
    parameters
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> RouteKey {
        text.parse()
            .unwrap_or_else(|e| panic!("test route key `{text}`: {e}"))
    }

    fn table(keys: &[&str]) -> RouteTable<String> {
        RouteTable::build(keys.iter().map(|k| (key(k), (*k).to_string())))
            .unwrap_or_else(|e| panic!("test table {keys:?}: {e}"))
    }

    /// (routes, method, path, expected route key or None, expected parameters)
    type Row = (
        &'static [&'static str],
        &'static str,
        &'static str,
        Option<&'static str>,
        &'static [(&'static str, &'static str)],
    );

    const AWS_EXAMPLE: &[&str] = &[
        "GET /pets/dog/1",
        "GET /pets/dog/{id}",
        "GET /pets/{proxy+}",
        "ANY /{proxy+}",
        "$default",
    ];

    #[rustfmt::skip]
    const PRECEDENCE: &[Row] = &[
        // API Gateway's own example table.
        (AWS_EXAMPLE, "GET", "/pets/dog/1", Some("GET /pets/dog/1"), &[]),
        (AWS_EXAMPLE, "GET", "/pets/dog/2", Some("GET /pets/dog/{id}"), &[("id", "2")]),
        (AWS_EXAMPLE, "GET", "/pets/cat/1", Some("GET /pets/{proxy+}"), &[("proxy", "cat/1")]),
        (AWS_EXAMPLE, "POST", "/test/5", Some("ANY /{proxy+}"), &[("proxy", "test/5")]),
        (AWS_EXAMPLE, "POST", "/pets/dog/1", Some("ANY /{proxy+}"), &[("proxy", "pets/dog/1")]),
        (AWS_EXAMPLE, "GET", "/", Some("$default"), &[]),
        // Specific method beats ANY on the same path; ANY takes the others.
        (&["ANY /items", "GET /items"], "GET", "/items", Some("GET /items"), &[]),
        (&["ANY /items", "GET /items"], "DELETE", "/items", Some("ANY /items"), &[]),
        (&["GET /items", "ANY /items"], "PROPFIND", "/items", Some("ANY /items"), &[]),
        // No HEAD -> GET fallback; lower-case methods are not GET.
        (&["GET /items"], "HEAD", "/items", None, &[]),
        (&["GET /items", "ANY /items"], "HEAD", "/items", Some("ANY /items"), &[]),
        (&["GET /items"], "get", "/items", None, &[]),
        // Literal beats variable at the first differing segment, path before method.
        (&["GET /items/{id}", "GET /items/new"], "GET", "/items/new", Some("GET /items/new"), &[]),
        (&["GET /items/{id}", "GET /items/new"], "GET", "/items/7", Some("GET /items/{id}"), &[("id", "7")]),
        (&["GET /{a}/b", "GET /a/{b}"], "GET", "/a/b", Some("GET /a/{b}"), &[("b", "b")]),
        (&["GET /{a}/b", "GET /a/{b}"], "GET", "/x/b", Some("GET /{a}/b"), &[("a", "x")]),
        (&["ANY /items/{id}", "GET /{proxy+}"], "GET", "/items/1", Some("ANY /items/{id}"), &[("id", "1")]),
        (&["ANY /items/{id}", "GET /{a}/{b}"], "GET", "/items/1", Some("ANY /items/{id}"), &[("id", "1")]),
        // Backtracking: the literal branch fails deeper, the variable branch matches.
        (&["GET /a/b/c", "GET /{x}/b/d"], "GET", "/a/b/d", Some("GET /{x}/b/d"), &[("x", "a")]),
        (&["GET /a/b", "POST /{x}/b"], "POST", "/a/b", Some("POST /{x}/b"), &[("x", "a")]),
        // A full match beats a greedy route even when the greedy one has more literals first.
        (&["GET /a/{proxy+}", "GET /{x}/b"], "GET", "/a/b", Some("GET /{x}/b"), &[("x", "a")]),
        (&["GET /a/{proxy+}", "GET /{x}/b"], "GET", "/a/c", Some("GET /a/{proxy+}"), &[("proxy", "c")]),
        // Deeper greedy beats shallower; {var} before greedy at the same depth.
        (&["ANY /{proxy+}", "ANY /files/{path+}"], "GET", "/files/a/b/c", Some("ANY /files/{path+}"), &[("path", "a/b/c")]),
        (&["ANY /files/{path+}", "ANY /files/{id}/{rest+}"], "GET", "/files/1/x", Some("ANY /files/{id}/{rest+}"), &[("id", "1"), ("rest", "x")]),
        (&["ANY /files/{path+}", "ANY /files/{id}/{rest+}"], "GET", "/files/1", Some("ANY /files/{path+}"), &[("path", "1")]),
        // Greedy needs one segment at least.
        (&["ANY /files/{proxy+}"], "GET", "/files", None, &[]),
        (&["ANY /files/{proxy+}", "$default"], "GET", "/files", Some("$default"), &[]),
        (&["ANY /{proxy+}"], "GET", "/", None, &[]),
        (&["GET /", "ANY /{proxy+}"], "GET", "/", Some("GET /"), &[]),
        // Trailing slash is significant.
        (&["GET /items"], "GET", "/items/", None, &[]),
        (&["GET /items", "$default"], "GET", "/items/", Some("$default"), &[]),
        (&["GET /files/{proxy+}"], "GET", "/files/a/", Some("GET /files/{proxy+}"), &[("proxy", "a/")]),
        (&["GET /files/{proxy+}"], "GET", "/files/", None, &[]),
        // Method mismatch falls through tiers.
        (&["POST /items/{id}", "GET /{proxy+}"], "GET", "/items/1", Some("GET /{proxy+}"), &[("proxy", "items/1")]),
        (&["POST /items/{id}"], "GET", "/items/1", None, &[]),
        // Literal comparison is case-sensitive, and extra segments do not match.
        (&["GET /Items"], "GET", "/items", None, &[]),
        (&["GET /items/{id}"], "GET", "/items/1/extra", None, &[]),
        // Several variables in order.
        (&["GET /users/{user}/orders/{order}"], "GET", "/users/u1/orders/o2", Some("GET /users/{user}/orders/{order}"), &[("user", "u1"), ("order", "o2")]),
        // Encoded and unicode segments.
        (&["GET /items/{id}"], "GET", "/items/a%20b", Some("GET /items/{id}"), &[("id", "a b")]),
        (&["GET /items/{id}"], "GET", "/items/a%2Fb", Some("GET /items/{id}"), &[("id", "a/b")]),
        (&["GET /café"], "GET", "/caf%C3%A9", Some("GET /café"), &[]),
        (&["GET /items/{id}"], "GET", "/items/%E2%9C%93", Some("GET /items/{id}"), &[("id", "✓")]),
        (&["GET /items/new"], "GET", "/items/%6Eew", Some("GET /items/new"), &[]),
        (&["GET /files/{proxy+}"], "GET", "/files/a%20b/c%2Fd/%C3%A9", Some("GET /files/{proxy+}"), &[("proxy", "a b/c/d/é")]),
        (&["GET /a+b"], "GET", "/a+b", Some("GET /a+b"), &[]),
    ];

    #[test]
    fn precedence_table() {
        for (routes, method, path, expected, params) in PRECEDENCE {
            let table = table(routes);
            let found = table
                .find(method, path)
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let got = found.as_ref().map(|m| m.route_key.to_string());
            assert_eq!(
                got.as_deref(),
                *expected,
                "{method} {path} with routes {routes:?}"
            );
            if let Some(found) = found {
                assert_eq!(found.value, &found.route_key.to_string());
                let want: Vec<(String, String)> = params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                assert_eq!(found.path_parameters, want, "{method} {path}");
            }
        }
    }

    #[test]
    fn route_order_does_not_change_the_choice() {
        let mut keys: Vec<&str> = AWS_EXAMPLE.to_vec();
        keys.reverse();
        let table = table(&keys);
        let found = table.find("GET", "/pets/dog/1").unwrap().unwrap();
        assert_eq!(found.route_key, &key("GET /pets/dog/1"));
    }

    #[test]
    fn route_keys_round_trip_canonically() {
        for text in [
            "$default",
            "GET /",
            "GET /items/{id}",
            "ANY /files/{proxy+}",
            "OPTIONS /{proxy+}",
            "DELETE /a-b/c_d/e.f/~g/{x-1}",
            "POST /café/{id}",
        ] {
            let parsed = key(text);
            assert_eq!(parsed.to_string(), text);
            let json = serde_json::to_string(&parsed).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            let back: RouteKey = serde_json::from_str(&json).unwrap();
            assert_eq!(back, parsed);
        }
        let parsed = key("ANY /files/{proxy+}");
        assert_eq!(
            parsed,
            RouteKey::Route {
                method: RouteMethod::Any,
                path: PathTemplate {
                    segments: vec![
                        TemplateSegment::Literal("files".into()),
                        TemplateSegment::Greedy("proxy".into()),
                    ]
                }
            }
        );
        let err = serde_json::from_str::<RouteKey>("\"FETCH /x\"").unwrap_err();
        assert!(err.to_string().contains("`FETCH` is not known"), "{err}");
    }

    #[test]
    fn bad_route_keys_name_the_problem() {
        let long = format!("GET /{}", "a".repeat(MAX_ROUTE_PATH_LEN));
        let cases: &[(&str, &str)] = &[
            ("", "the route key is empty"),
            ("$connect", "`$connect` is not a route key for HTTP APIs"),
            ("$DEFAULT", "`$DEFAULT` is not a route key"),
            ("GET", "route key `GET` has no path"),
            ("GET  /items", "exactly one space"),
            ("GET /items extra", "exactly one space"),
            ("FETCH /items", "method `FETCH` is not known"),
            ("get /items", "method `get` must be written in upper case"),
            ("GET items", "route path `items` must start with '/'"),
            ("GET /items/", "route path `/items/` ends with '/'"),
            ("GET /a//b", "route path `/a//b` has an empty segment"),
            ("GET /a/{}", "segment `{}` is a variable without a name"),
            ("GET /a/{+}", "segment `{+}` is a variable without a name"),
            ("GET /a/{id", "segment `{id` has unbalanced"),
            ("GET /a/id}", "segment `id}` has unbalanced"),
            ("GET /a/{{id}}", "segment `{{id}}` has unbalanced or nested"),
            ("GET /a/{id}.json", "segment `{id}.json` mixes a variable"),
            ("GET /a/v{id}", "segment `v{id}` mixes a variable"),
            (
                "GET /{proxy+}/x",
                "greedy path variable `{proxy+}` must be the last",
            ),
            ("GET /{id}/{id}", "variable name `id` twice"),
            ("GET /{id}/{id+}", "variable name `id` twice"),
            ("GET /a/{i!d}", "variable `{i!d}` has '!' in its name"),
            ("GET /a/{id.x}", "variable `{id.x}` has '.' in its name"),
            ("GET /a/b%20c", "segment `b%20c` contains '%'"),
            ("GET /a/b?c", "segment `b?c` contains '?'"),
            ("GET /a/b#c", "segment `b#c` contains '#'"),
            ("GET /a/b\tc", "segment `b\tc` contains '\\t'"),
            ("GET /a/..", "segment `..` is a `.` or `..` segment"),
            ("GET /./a", "segment `.` is a `.` or `..` segment"),
            (&long, "route path is 1025 bytes long; the limit is 1024"),
        ];
        assert!(cases.len() >= 12);
        for (text, needle) in cases {
            let err = text
                .parse::<RouteKey>()
                .expect_err(&format!("`{text}` should be refused"));
            let message = err.to_string();
            assert!(
                message.contains(needle),
                "`{text}`: expected {needle:?} in {message:?}"
            );
        }
    }

    #[test]
    fn tables_refuse_duplicate_and_conflicting_routes() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["GET /items", "GET /items"],
                "route `GET /items` is defined twice",
            ),
            (
                &["$default", "$default"],
                "route `$default` is defined twice",
            ),
            (
                &["GET /a/{x}", "GET /a/{y}"],
                "route `GET /a/{y}` conflicts with `GET /a/{x}`",
            ),
            (
                &["ANY /f/{proxy+}", "ANY /f/{rest+}"],
                "route `ANY /f/{rest+}` conflicts with `ANY /f/{proxy+}`",
            ),
        ];
        for (keys, needle) in cases {
            let err = RouteTable::build(keys.iter().map(|k| (key(k), ()))).unwrap_err();
            assert!(err.to_string().contains(needle), "{keys:?}: {err}");
        }
        // Different methods on the same shape are fine, as are {x} and {x+} at one place.
        let ok = RouteTable::build(
            ["GET /a/{x}", "POST /a/{y}", "GET /a/{z+}", "ANY /a/{w}"]
                .iter()
                .map(|k| (key(k), ())),
        );
        assert_eq!(ok.map(|t| t.len()).ok(), Some(4));
    }

    #[test]
    fn bad_request_paths_are_refused_naming_the_segment() {
        let table = table(&["$default"]);
        let long = format!("/{}", "a".repeat(MAX_REQUEST_PATH_LEN));
        let cases: &[(&str, &str)] = &[
            ("", "the request path `` does not start with '/'"),
            ("items", "the request path `items` does not start with '/'"),
            ("/a/../b", "segment `..` is a `.` or `..` traversal segment"),
            ("/a/./b", "segment `.` is a `.` or `..` traversal"),
            ("/..", "segment `..` is a"),
            ("/a/%2e%2e/b", "segment `%2e%2e` is a"),
            ("/a/%2E./b", "segment `%2E.` is a"),
            ("/a/.%2e", "segment `.%2e` is a"),
            ("/a/%2e", "segment `%2e` is a"),
            ("/a/..%2Fetc", "segment `..%2Fetc` is a"),
            ("/a/x%2F..%2Fy", "segment `x%2F..%2Fy` is a"),
            ("/a/..%5Cwin", "segment `..%5Cwin` is a"),
            ("/a//b", "segment 2 of the request path `/a//b` is empty"),
            ("//", "segment 1 of the request path `//` is empty"),
            ("/a/%zz", "segment `%zz` has invalid percent-encoding"),
            ("/a/%4", "segment `%4` has invalid percent-encoding"),
            ("/a/b%", "segment `b%` has invalid percent-encoding"),
            ("/a/b%00c", "segment `b%00c` contains an encoded NUL"),
            ("/a/%FF", "segment `%FF` does not decode to UTF-8"),
            ("/a/%C3", "segment `%C3` does not decode to UTF-8"),
            ("/a/b c", "segment `b c` contains ' '"),
            ("/a/b\u{0}c", "segment `b\u{0}c` contains '\\0'"),
            ("/a/b?x=1", "segment `b?x=1` contains '?'"),
            (
                &long,
                "the request path is 8193 bytes long; the limit is 8192",
            ),
        ];
        for (path, needle) in cases {
            let err = table
                .find("GET", path)
                .expect_err(&format!("`{path}` should be refused"));
            let message = err.to_string();
            assert!(
                message.contains(needle),
                "`{path}`: expected {needle:?} in {message:?}"
            );
            assert_eq!(check_path(path), Err(err));
        }
        // Dots inside a name are not traversal.
        assert!(check_path("/a/..b/c.d/.well-known/%2e%2ex").is_ok());
        assert!(check_path("/").is_ok());
    }

    #[test]
    fn long_segments_are_cut_short_in_messages() {
        let path = format!("/{}%zz", "x".repeat(500));
        let message = check_path(&path).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
        assert!(message.contains('…'));
    }

    #[test]
    fn matching_many_routes_stays_correct() {
        let keys: Vec<String> = (0..2000)
            .map(|i| format!("GET /svc{i}/items/{{id}}"))
            .chain(["ANY /{proxy+}".to_string()])
            .collect();
        let table = RouteTable::build(keys.iter().map(|k| (key(k), k.clone()))).unwrap();
        let found = table.find("GET", "/svc1234/items/9").unwrap().unwrap();
        assert_eq!(found.value, "GET /svc1234/items/{id}");
        assert_eq!(found.path_parameters, vec![("id".into(), "9".into())]);
        let found = table.find("GET", "/svc1234/other").unwrap().unwrap();
        assert_eq!(found.value, "ANY /{proxy+}");
    }
}
