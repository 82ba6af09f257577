//! Access logs: one line per request in the stage's format, with API Gateway's `$context`
//! variables substituted, appended to `<dir>/<apiId>/<stage>.log` by one writer task so request
//! handling never waits on the disk.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

/// The format used when a stage turns access logging on without giving one: JSON with the
/// variables API Gateway's console suggests.
pub const DEFAULT_FORMAT: &str = r#"{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","requestTime":"$context.requestTime","httpMethod":"$context.httpMethod","routeKey":"$context.routeKey","status":"$context.status","protocol":"$context.protocol","responseLength":"$context.responseLength","integrationLatency":"$context.integrationLatency","integrationError":"$context.integrationErrorMessage"}"#;

/// The `$context` variables the gateway knows, longest names first so that a name which is a
/// prefix of another (`$context.integration` / `$context.integrationLatency`) never cuts a
/// longer one short.
pub const VARIABLES: &[&str] = &[
    "integrationErrorMessage",
    "integration.integrationStatus",
    "integrationLatency",
    "integrationStatus",
    "integration.latency",
    "integration.status",
    "integration.error",
    "identity.sourceIp",
    "identity.userAgent",
    "requestTimeEpoch",
    "responseLatency",
    "responseLength",
    "error.message",
    "domainPrefix",
    "requestTime",
    "domainName",
    "httpMethod",
    "requestId",
    "accountId",
    "routeKey",
    "protocol",
    "status",
    "apiId",
    "stage",
    "path",
];

/// Checks a format: it must use at least `$context.requestId` (as API Gateway requires) and
/// only variables the gateway knows.
pub fn check_format(format: &str) -> Result<(), String> {
    if format.len() > 2048 {
        return Err(format!(
            "the access log format is {} characters long; the limit is 2048",
            format.len()
        ));
    }
    if !format.contains("$context.requestId") && !format.contains("$context.extendedRequestId") {
        return Err("the access log format must include $context.requestId".into());
    }
    let mut rest = format;
    while let Some(i) = rest.find("$context.") {
        let after = &rest[i + "$context.".len()..];
        match VARIABLES.iter().find(|v| after.starts_with(**v)) {
            Some(v) => rest = &after[v.len()..],
            None => {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                    .collect();
                return Err(format!(
                    "the access log format uses $context.{name}, which the gateway does not provide (known: {})",
                    VARIABLES.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Substitutes the variables into `format`. Values are escaped for a JSON string (formats are
/// usually JSON with each variable inside quotes); a variable without a value becomes `-`.
pub fn render(format: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(format.len() + 64);
    let mut rest = format;
    while let Some(i) = rest.find("$context.") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "$context.".len()..];
        match VARIABLES.iter().find(|v| after.starts_with(**v)) {
            Some(v) => {
                match value(v) {
                    Some(s) => escape_into(&mut out, &s),
                    None => out.push('-'),
                }
                rest = &after[v.len()..];
            }
            None => {
                out.push_str("$context.");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

/// Where a stage's access log lines go.
pub fn log_path(dir: &Path, api_id: &str, stage: &str) -> PathBuf {
    dir.join(api_id).join(format!("{stage}.log"))
}

/// The writer: lines are sent to it and appended by a task of its own.
#[derive(Clone)]
pub struct AccessLogs {
    dir: PathBuf,
    tx: mpsc::UnboundedSender<(PathBuf, String)>,
}

impl AccessLogs {
    /// Starts the writer task. Files are opened on first use and kept open.
    pub fn start(dir: PathBuf) -> AccessLogs {
        let (tx, mut rx) = mpsc::unbounded_channel::<(PathBuf, String)>();
        tokio::task::spawn_blocking(move || {
            let mut files: HashMap<PathBuf, std::io::BufWriter<std::fs::File>> = HashMap::new();
            while let Some((path, line)) = rx.blocking_recv() {
                append(&mut files, path, line);
                // Drain what else is queued before flushing, so a burst costs one write.
                while let Ok((path, line)) = rx.try_recv() {
                    append(&mut files, path, line);
                }
                for (path, f) in files.iter_mut() {
                    if let Err(e) = f.flush() {
                        tracing::warn!(path = %path.display(), error = %e, "writing an access log failed");
                    }
                }
            }
        });
        AccessLogs { dir, tx }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn write(&self, api_id: &str, stage: &str, line: String) {
        let _ = self.tx.send((log_path(&self.dir, api_id, stage), line));
    }
}

fn append(
    files: &mut HashMap<PathBuf, std::io::BufWriter<std::fs::File>>,
    path: PathBuf,
    mut line: String,
) {
    line.push('\n');
    if !files.contains_key(&path) {
        let opened = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
            });
        match opened {
            Ok(f) => {
                files.insert(path.clone(), std::io::BufWriter::new(f));
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "opening an access log failed");
                return;
            }
        }
    }
    if let Some(f) = files.get_mut(&path) {
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::warn!(path = %path.display(), error = %e, "writing an access log failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_variables_escaped_and_missing_ones_as_dash() {
        let line = render(
            r#"{"id":"$context.requestId","lat":$context.integrationLatency,"err":"$context.integrationErrorMessage","ua":"$context.identity.userAgent","s":$context.status}"#,
            |v| match v {
                "requestId" => Some("abc=".into()),
                "integrationLatency" => Some("12".into()),
                "identity.userAgent" => Some("say \"hi\"\n".into()),
                "status" => Some("200".into()),
                _ => None,
            },
        );
        assert_eq!(
            line,
            r#"{"id":"abc=","lat":12,"err":"-","ua":"say \"hi\"\n","s":200}"#
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ua"], "say \"hi\"\n");
    }

    #[test]
    fn longer_names_win_over_their_prefixes() {
        let line = render(
            "$context.integrationStatus $context.integration.status",
            |v| Some(v.to_string()),
        );
        assert_eq!(line, "integrationStatus integration.status");
    }

    #[test]
    fn formats_are_checked() {
        assert_eq!(check_format(DEFAULT_FORMAT), Ok(()));
        assert!(check_format("$context.status")
            .unwrap_err()
            .contains("requestId"));
        let e = check_format("$context.requestId $context.nope").unwrap_err();
        assert!(e.contains("$context.nope"), "{e}");
        assert!(check_format(&format!("$context.requestId{}", " ".repeat(2048))).is_err());
    }
}
