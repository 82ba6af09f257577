//! Lambda's platform log lines and naming, byte for byte.

/// Lambda's `START` line.
pub fn start_line(request_id: &str, version: &str) -> String {
    format!("START RequestId: {request_id} Version: {version}")
}

/// Lambda's `END` line.
pub fn end_line(request_id: &str) -> String {
    format!("END RequestId: {request_id}")
}

/// What a `REPORT` line says about one invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Report<'a> {
    pub request_id: &'a str,
    pub duration_ms: f64,
    pub memory_mb: u32,
    /// Peak memory of the instance during the invocation, measured by its cgroup.
    pub max_memory_used_mb: Option<u64>,
    /// Set on cold starts only.
    pub init_duration_ms: Option<f64>,
    /// `timeout`, `error` and the like; Lambda adds `Status:` for abnormal ends.
    pub status: Option<&'a str>,
    pub error_type: Option<&'a str>,
}

/// Lambda's `REPORT` line: tab-separated fields, billed duration rounded up to the millisecond.
pub fn report_line(r: &Report) -> String {
    let billed = r.duration_ms.ceil().max(1.0) as u64;
    let mut line = format!(
        "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB",
        r.request_id, r.duration_ms, billed, r.memory_mb
    );
    match r.max_memory_used_mb {
        Some(mb) => line.push_str(&format!("\tMax Memory Used: {mb} MB")),
        None => line.push_str("\tMax Memory Used: unknown"),
    }
    if let Some(init) = r.init_duration_ms {
        line.push_str(&format!("\tInit Duration: {init:.2} ms"));
    }
    if let Some(status) = r.status {
        line.push_str(&format!("\tStatus: {status}"));
    }
    if let Some(error_type) = r.error_type {
        line.push_str(&format!("\tError Type: {error_type}"));
    }
    line
}

/// A UTC timestamp with milliseconds, `2019-09-24T18:18:16.525` followed by `zone` (Lambda's API
/// writes `+0000`, its log lines `Z`).
pub fn utc_timestamp(unix_ms: i64, zone: &str) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(unix_ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{zone}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `/aws/lambda/NAME`, Lambda's log group naming.
pub fn log_group_name(function: &str) -> String {
    format!("/aws/lambda/{function}")
}

/// `YYYY/MM/DD/[VERSION]INSTANCE`, Lambda's log stream naming: one stream per instance.
pub fn log_stream_name(version: &str, instance_id: &str, unix_ms: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(unix_ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date();
    format!(
        "{:04}/{:02}/{:02}/[{version}]{instance_id}",
        date.year(),
        date.month() as u8,
        date.day()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_lines() {
        assert_eq!(
            start_line("abc", "$LATEST"),
            "START RequestId: abc Version: $LATEST"
        );
        assert_eq!(end_line("abc"), "END RequestId: abc");
        let r = Report {
            request_id: "abc",
            duration_ms: 1.234,
            memory_mb: 128,
            max_memory_used_mb: Some(31),
            init_duration_ms: Some(20.5),
            status: None,
            error_type: None,
        };
        assert_eq!(
            report_line(&r),
            "REPORT RequestId: abc\tDuration: 1.23 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 31 MB\tInit Duration: 20.50 ms"
        );
        let warm = Report {
            init_duration_ms: None,
            duration_ms: 0.2,
            status: Some("timeout"),
            ..r
        };
        assert_eq!(
            report_line(&warm),
            "REPORT RequestId: abc\tDuration: 0.20 ms\tBilled Duration: 1 ms\tMemory Size: 128 MB\tMax Memory Used: 31 MB\tStatus: timeout"
        );
        assert_eq!(
            log_stream_name("$LATEST", "0f3a", 0),
            "1970/01/01/[$LATEST]0f3a"
        );
        assert_eq!(log_group_name("hello"), "/aws/lambda/hello");
        assert_eq!(
            utc_timestamp(1_569_349_096_525, "+0000"),
            "2019-09-24T18:18:16.525+0000"
        );
        assert_eq!(utc_timestamp(5, "Z"), "1970-01-01T00:00:00.005Z");
    }
}
