//! The stateless rules of SQS-compatible queues: errors as the JSON protocol reports them, queue
//! names and ARNs, queue attributes with their defaults and bounds, message bodies and message
//! attributes, batch entry ids, FIFO ids, and the digests SQS returns (MD5OfMessageBody,
//! MD5OfMessageAttributes, content-based deduplication ids). No I/O: the store, the engine and
//! the HTTP handlers call these.
//!
//! Limits follow the current Amazon SQS API reference (botocore's sqs model 2012-11-05): the
//! largest message, and the default MaximumMessageSize, is 1 MiB (1,048,576 bytes).

use std::collections::{BTreeMap, BTreeSet};

use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{ACCOUNT_ID, REGION};

/// The largest message SQS accepts, and the default `MaximumMessageSize`: 1 MiB.
pub const MAX_MESSAGE_SIZE: u32 = 1_048_576;
/// The smallest `MaximumMessageSize` a queue may have: 1 KiB.
pub const MIN_MESSAGE_SIZE: u32 = 1_024;
/// Entries in one batch request.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// Message attributes on one message.
pub const MAX_MESSAGE_ATTRIBUTES: usize = 10;
/// Queue names, batch entry ids: at most 80 characters.
pub const MAX_NAME_LEN: usize = 80;
/// Message attribute names and data types: at most 256 characters.
const MAX_ATTRIBUTE_NAME_LEN: usize = 256;
/// MessageGroupId, MessageDeduplicationId: at most 128 characters.
const MAX_FIFO_ID_LEN: usize = 128;
const FIFO_SUFFIX: &str = ".fifo";

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// An SQS error as the JSON protocol returns it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SqsError {
    /// The error shape name, sent as `__type: "com.amazonaws.sqs#<code>"`. Modelled conditions
    /// use the shape names of botocore's sqs service-2.json; unmodelled ones (bad parameter
    /// values, missing parameters, unknown actions) use the query error code.
    pub code: &'static str,
    /// The awsQueryCompatible code sent in `x-amzn-query-error: <query_code>;Sender`; botocore
    /// shows it as `e.response["Error"]["Code"]` and uses it to pick the modelled exception.
    pub query_code: &'static str,
    /// Whether the caller is at fault (`Sender`) or the service (`Receiver`).
    pub sender_fault: bool,
    pub message: String,
}

impl SqsError {
    fn sender(code: &'static str, query_code: &'static str, message: impl Into<String>) -> Self {
        SqsError {
            code,
            query_code,
            sender_fault: true,
            message: message.into(),
        }
    }

    /// The body's `__type`: `com.amazonaws.sqs#<code>`.
    pub fn json_type(&self) -> String {
        format!("com.amazonaws.sqs#{}", self.code)
    }

    /// The `x-amzn-query-error` header value: `<query_code>;Sender` or `<query_code>;Receiver`.
    pub fn query_error_header(&self) -> String {
        let fault = if self.sender_fault {
            "Sender"
        } else {
            "Receiver"
        };
        format!("{};{fault}", self.query_code)
    }

    /// The HTTP status SQS answers with: 403 for OverLimit and PurgeQueueInProgress, 500 for
    /// service faults, 400 for every other client error.
    pub fn http_status(&self) -> u16 {
        match self.code {
            _ if !self.sender_fault => 500,
            "OverLimit" | "PurgeQueueInProgress" => 403,
            _ => 400,
        }
    }

    pub fn queue_does_not_exist() -> SqsError {
        Self::sender(
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
            "The specified queue does not exist.",
        )
    }

    /// An attribute name SQS does not know, or one that does not apply to this queue type.
    pub fn invalid_attribute_name(name: &str) -> SqsError {
        Self::sender(
            "InvalidAttributeName",
            "InvalidAttributeName",
            format!("Unknown Attribute {name}."),
        )
    }

    /// A queue attribute value out of range or malformed; `why` names the allowed values.
    pub fn invalid_attribute_value(name: &str, why: &str) -> SqsError {
        Self::sender(
            "InvalidAttributeValue",
            "InvalidAttributeValue",
            format!("Invalid value for the parameter {name}. Reason: {why}"),
        )
    }

    pub fn invalid_parameter_value(msg: impl Into<String>) -> SqsError {
        Self::sender("InvalidParameterValue", "InvalidParameterValue", msg)
    }

    pub fn missing_parameter(name: &str) -> SqsError {
        Self::sender(
            "MissingParameter",
            "MissingParameter",
            format!("The request must contain the parameter {name}."),
        )
    }

    /// CreateQueue for an existing name with different attribute values.
    pub fn queue_name_exists(name: &str) -> SqsError {
        Self::sender(
            "QueueNameExists",
            "QueueAlreadyExists",
            format!("A queue already exists with the same name ({name}) and a different value for one or more attributes."),
        )
    }

    /// CreateQueue within 60 seconds of deleting a queue of the same name.
    pub fn queue_deleted_recently(name: &str) -> SqsError {
        Self::sender(
            "QueueDeletedRecently",
            "AWS.SimpleQueueService.QueueDeletedRecently",
            format!("You must wait 60 seconds after deleting a queue before you can create another queue with the same name ({name})."),
        )
    }

    pub fn receipt_handle_is_invalid(handle: &str) -> SqsError {
        Self::sender(
            "ReceiptHandleIsInvalid",
            "ReceiptHandleIsInvalid",
            format!("The input receipt handle \"{handle}\" is not a valid receipt handle."),
        )
    }

    pub fn message_not_inflight() -> SqsError {
        Self::sender(
            "MessageNotInflight",
            "AWS.SimpleQueueService.MessageNotInflight",
            "The message referred to isn't in flight.",
        )
    }

    pub fn too_many_entries_in_batch_request(n: usize) -> SqsError {
        Self::sender(
            "TooManyEntriesInBatchRequest",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            format!(
                "Maximum number of entries per request are {MAX_BATCH_ENTRIES}. You have sent {n}."
            ),
        )
    }

    pub fn empty_batch_request() -> SqsError {
        Self::sender(
            "EmptyBatchRequest",
            "AWS.SimpleQueueService.EmptyBatchRequest",
            "The batch request doesn't contain any entries.",
        )
    }

    pub fn batch_entry_ids_not_distinct(id: &str) -> SqsError {
        Self::sender(
            "BatchEntryIdsNotDistinct",
            "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
            format!("Id {id} repeated."),
        )
    }

    pub fn invalid_batch_entry_id(id: &str) -> SqsError {
        Self::sender(
            "InvalidBatchEntryId",
            "AWS.SimpleQueueService.InvalidBatchEntryId",
            format!("A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most {MAX_NAME_LEN} letters long. Got {id:?}."),
        )
    }

    /// A SendMessageBatch whose messages together are larger than 1 MiB.
    pub fn batch_request_too_long(total: usize) -> SqsError {
        Self::sender(
            "BatchRequestTooLong",
            "AWS.SimpleQueueService.BatchRequestTooLong",
            format!("Batch requests cannot be longer than {MAX_MESSAGE_SIZE} bytes. You have sent {total} bytes."),
        )
    }

    pub fn unsupported_operation(msg: impl Into<String>) -> SqsError {
        Self::sender(
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation",
            msg,
        )
    }

    pub fn invalid_message_contents(msg: impl Into<String>) -> SqsError {
        Self::sender("InvalidMessageContents", "InvalidMessageContents", msg)
    }

    pub fn purge_queue_in_progress(name: &str) -> SqsError {
        Self::sender(
            "PurgeQueueInProgress",
            "AWS.SimpleQueueService.PurgeQueueInProgress",
            format!("Only one PurgeQueue operation on {name} is allowed every 60 seconds."),
        )
    }

    /// A limit reached, e.g. too many in-flight messages for ReceiveMessage.
    pub fn over_limit(msg: impl Into<String>) -> SqsError {
        Self::sender("OverLimit", "OverLimit", msg)
    }

    /// An `X-Amz-Target` naming no SQS operation.
    pub fn invalid_action(target: &str) -> SqsError {
        Self::sender(
            "InvalidAction",
            "InvalidAction",
            format!("The action or operation requested is invalid. Verify that the action is typed correctly. Got {target:?}."),
        )
    }

    /// A failure on Nimbus's side (the store failed); `Receiver` fault, HTTP 500.
    pub fn internal_error(msg: impl Into<String>) -> SqsError {
        SqsError {
            code: "InternalError",
            query_code: "InternalError",
            sender_fault: false,
            message: msg.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Queue names and ARNs
// ---------------------------------------------------------------------------------------------

const STANDARD_NAME_RULE: &str =
    "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length";
const FIFO_NAME_RULE: &str = "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.";

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Whether `name` ends in `.fifo`, the suffix every FIFO queue name carries.
pub fn is_fifo_name(name: &str) -> bool {
    name.ends_with(FIFO_SUFFIX)
}

/// Queue names: 1–80 characters of `[A-Za-z0-9_-]`; a FIFO name is such a stem followed by
/// `.fifo`, the suffix counting toward the 80.
pub fn validate_queue_name(name: &str) -> Result<(), SqsError> {
    let (stem, rule) = match name.strip_suffix(FIFO_SUFFIX) {
        Some(stem) => (stem, FIFO_NAME_RULE),
        None => (name, STANDARD_NAME_RULE),
    };
    if stem.is_empty() || name.len() > MAX_NAME_LEN || !stem.chars().all(is_name_char) {
        return Err(SqsError::invalid_parameter_value(rule));
    }
    Ok(())
}

/// The ARN of the Nimbus queue `name`.
pub fn queue_arn(name: &str) -> String {
    format!("arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}")
}

/// The queue name in an ARN of Nimbus's own region and account; `None` for any other ARN.
pub fn queue_name_from_arn(arn: &str) -> Option<&str> {
    let name = arn
        .strip_prefix("arn:aws:sqs:")?
        .strip_prefix(REGION)?
        .strip_prefix(':')?
        .strip_prefix(ACCOUNT_ID)?
        .strip_prefix(':')?;
    validate_queue_name(name).ok().map(|()| name)
}

/// Whether `arn` has the shape `arn:aws:sqs:<region>:<account>:<queue name>`, any region and
/// account (12 digits).
fn is_sqs_arn(arn: &str) -> bool {
    let mut parts = arn.splitn(6, ':');
    let fixed = [
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ];
    let [Some("arn"), Some(partition), Some("sqs"), Some(region), Some(account)] = fixed else {
        return false;
    };
    let Some(name) = parts.next() else {
        return false;
    };
    partition.starts_with("aws")
        && !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && validate_queue_name(name).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Queue attributes
// ---------------------------------------------------------------------------------------------

/// Queue attribute names SQS knows (GetQueueAttributes' `QueueAttributeName` without `All`).
const KNOWN_ATTRIBUTE_NAMES: &[&str] = &[
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible",
    "ContentBasedDeduplication",
    "CreatedTimestamp",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "LastModifiedTimestamp",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "Policy",
    "QueueArn",
    "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
];

/// Names GetQueueAttributes accepts: the settable ones and the read-only ones
/// (ApproximateNumberOfMessages*, CreatedTimestamp, LastModifiedTimestamp, QueueArn). `All` is
/// the caller's to expand.
pub fn is_known_attribute_name(name: &str) -> bool {
    KNOWN_ATTRIBUTE_NAMES.contains(&name)
}

/// The bounds of each integer queue attribute, in AWS's units (seconds, bytes).
const DELAY_SECONDS: (i64, i64) = (0, 900);
const MAXIMUM_MESSAGE_SIZE: (i64, i64) = (MIN_MESSAGE_SIZE as i64, MAX_MESSAGE_SIZE as i64);
const MESSAGE_RETENTION_PERIOD: (i64, i64) = (60, 1_209_600);
const RECEIVE_WAIT_TIME_SECONDS: (i64, i64) = (0, 20);
const VISIBILITY_TIMEOUT: (i64, i64) = (0, 43_200);
const KMS_DATA_KEY_REUSE_PERIOD: (i64, i64) = (60, 86_400);
const DEFAULT_KMS_DATA_KEY_REUSE_PERIOD: u32 = 300;
const MAX_RECEIVE_COUNT: (i64, i64) = (1, 1_000);

/// A queue's settable attributes. `Default` is a standard queue with SQS's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueAttributes {
    /// 0..=900, default 0.
    pub delay_seconds: u32,
    /// 1024..=1048576, default 1048576.
    pub maximum_message_size: u32,
    /// 60..=1209600, default 345600 (4 days).
    pub message_retention_period: u32,
    /// 0..=20, default 0.
    pub receive_message_wait_time_seconds: u32,
    /// 0..=43200, default 30.
    pub visibility_timeout: u32,
    pub redrive_policy: Option<RedrivePolicy>,
    /// Kept verbatim once checked.
    pub redrive_allow_policy: Option<String>,
    /// Kept verbatim once checked to be a JSON object.
    pub policy: Option<String>,
    pub fifo_queue: bool,
    /// FIFO only.
    pub content_based_deduplication: bool,
    /// FIFO only: `messageGroup` | `queue` (default `queue`).
    pub deduplication_scope: Option<String>,
    /// FIFO only: `perQueue` (default) | `perMessageGroupId`.
    pub fifo_throughput_limit: Option<String>,
    pub kms_master_key_id: Option<String>,
    /// 60..=86400; 300 when a KMS key is set without it.
    pub kms_data_key_reuse_period_seconds: Option<u32>,
    pub sqs_managed_sse_enabled: Option<bool>,
}

impl Default for QueueAttributes {
    fn default() -> Self {
        QueueAttributes {
            delay_seconds: 0,
            maximum_message_size: MAX_MESSAGE_SIZE,
            message_retention_period: 345_600,
            receive_message_wait_time_seconds: 0,
            visibility_timeout: 30,
            redrive_policy: None,
            redrive_allow_policy: None,
            policy: None,
            fifo_queue: false,
            content_based_deduplication: false,
            deduplication_scope: None,
            fifo_throughput_limit: None,
            kms_master_key_id: None,
            kms_data_key_reuse_period_seconds: None,
            sqs_managed_sse_enabled: None,
        }
    }
}

fn parse_bool_attribute(name: &str, value: &str) -> Result<bool, SqsError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(SqsError::invalid_attribute_value(
            name,
            "must be true or false.",
        ))
    }
}

fn parse_int_attribute(name: &str, value: &str, (min, max): (i64, i64)) -> Result<u32, SqsError> {
    let why = || format!("must be an integer from {min} to {max}.");
    let n: i64 = value
        .parse()
        .map_err(|_| SqsError::invalid_attribute_value(name, &why()))?;
    if n < min || n > max {
        return Err(SqsError::invalid_attribute_value(name, &why()));
    }
    u32::try_from(n).map_err(|_| SqsError::invalid_attribute_value(name, &why()))
}

fn parse_choice(name: &str, value: &str, choices: &[&str]) -> Result<String, SqsError> {
    if choices.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(SqsError::invalid_attribute_value(
            name,
            &format!("must be one of {}.", choices.join(", ")),
        ))
    }
}

/// Policy: any JSON object, kept as given.
fn validate_policy(value: &str) -> Result<(), SqsError> {
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(SqsError::invalid_attribute_value(
            "Policy",
            "the policy must be a JSON object.",
        )),
    }
}

/// RedriveAllowPolicy: `{"redrivePermission": "allowAll"|"denyAll"|"byQueue",
/// "sourceQueueArns": [...]}`; the ARNs (1 to 10) only, and always, with `byQueue`.
fn validate_redrive_allow_policy(value: &str) -> Result<(), SqsError> {
    const NAME: &str = "RedriveAllowPolicy";
    let bad = |why: &str| SqsError::invalid_attribute_value(NAME, why);
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(value)
    else {
        return Err(bad("Redrive allow policy is not a valid JSON map."));
    };
    if let Some(key) = map
        .keys()
        .find(|k| *k != "redrivePermission" && *k != "sourceQueueArns")
    {
        return Err(bad(&format!(
            "Unknown key {key:?}; only redrivePermission and sourceQueueArns are supported."
        )));
    }
    let permission = match map.get("redrivePermission") {
        Some(serde_json::Value::String(p))
            if ["allowAll", "denyAll", "byQueue"].contains(&p.as_str()) =>
        {
            p.as_str()
        }
        _ => {
            return Err(bad(
                "redrivePermission must be one of allowAll, denyAll, byQueue.",
            ))
        }
    };
    match (permission, map.get("sourceQueueArns")) {
        ("byQueue", Some(serde_json::Value::Array(arns))) => {
            if arns.is_empty() || arns.len() > 10 {
                return Err(bad("sourceQueueArns must list 1 to 10 queue ARNs."));
            }
            if !arns.iter().all(|a| a.as_str().is_some_and(is_sqs_arn)) {
                return Err(bad("sourceQueueArns must be SQS queue ARNs."));
            }
            Ok(())
        }
        ("byQueue", _) => Err(bad(
            "sourceQueueArns (1 to 10 queue ARNs) is required when redrivePermission is byQueue.",
        )),
        (_, Some(_)) => Err(bad(
            "sourceQueueArns is allowed only when redrivePermission is byQueue.",
        )),
        (_, None) => Ok(()),
    }
}

/// Treats an empty string as "remove the attribute", as SetQueueAttributes does for the
/// optional JSON and key attributes.
fn optional(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

impl QueueAttributes {
    /// The attributes a CreateQueue for `name` with `attrs` makes: SQS's defaults, FIFO when
    /// `FifoQueue` is `true` (which a `.fifo` name requires and a standard name refuses), then
    /// each attribute checked and applied. Unknown names and FIFO-only attributes on a standard
    /// queue are InvalidAttributeName; bad values InvalidAttributeValue naming the allowed
    /// values; a name that does not fit the queue type InvalidParameterValue.
    ///
    /// As in SQS, a `.fifo` name without `FifoQueue=true` is refused: without the attribute
    /// SQS makes a standard queue, whose name may not contain a period.
    pub fn for_create(
        name: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<QueueAttributes, SqsError> {
        validate_queue_name(name)?;
        let fifo = match attrs.get("FifoQueue") {
            Some(v) => parse_bool_attribute("FifoQueue", v)?,
            None => false,
        };
        match (fifo, is_fifo_name(name)) {
            (true, false) => return Err(SqsError::invalid_parameter_value(FIFO_NAME_RULE)),
            (false, true) => return Err(SqsError::invalid_parameter_value(STANDARD_NAME_RULE)),
            _ => {}
        }
        let mut out = QueueAttributes {
            fifo_queue: fifo,
            ..QueueAttributes::default()
        };
        if fifo {
            out.deduplication_scope = Some("queue".to_string());
            out.fifo_throughput_limit = Some("perQueue".to_string());
        }
        out.apply(attrs, true)?;
        Ok(out)
    }

    /// SetQueueAttributes: the same checks as CreateQueue; FifoQueue cannot be changed. Either
    /// every attribute is applied or none is.
    pub fn set(&mut self, attrs: &BTreeMap<String, String>) -> Result<(), SqsError> {
        let mut next = self.clone();
        next.apply(attrs, false)?;
        *self = next;
        Ok(())
    }

    fn apply(&mut self, attrs: &BTreeMap<String, String>, creating: bool) -> Result<(), SqsError> {
        for (name, value) in attrs {
            let name = name.as_str();
            let value = value.as_str();
            match name {
                "DelaySeconds" => {
                    self.delay_seconds = parse_int_attribute(name, value, DELAY_SECONDS)?
                }
                "MaximumMessageSize" => {
                    self.maximum_message_size =
                        parse_int_attribute(name, value, MAXIMUM_MESSAGE_SIZE)?
                }
                "MessageRetentionPeriod" => {
                    self.message_retention_period =
                        parse_int_attribute(name, value, MESSAGE_RETENTION_PERIOD)?
                }
                "ReceiveMessageWaitTimeSeconds" => {
                    self.receive_message_wait_time_seconds =
                        parse_int_attribute(name, value, RECEIVE_WAIT_TIME_SECONDS)?
                }
                "VisibilityTimeout" => {
                    self.visibility_timeout = parse_int_attribute(name, value, VISIBILITY_TIMEOUT)?
                }
                "RedrivePolicy" => {
                    self.redrive_policy = optional(value).map(parse_redrive_policy).transpose()?
                }
                "RedriveAllowPolicy" => {
                    if let Some(v) = optional(value) {
                        validate_redrive_allow_policy(v)?;
                    }
                    self.redrive_allow_policy = optional(value).map(str::to_string);
                }
                "Policy" => {
                    if let Some(v) = optional(value) {
                        validate_policy(v)?;
                    }
                    self.policy = optional(value).map(str::to_string);
                }
                "FifoQueue" => {
                    let fifo = parse_bool_attribute(name, value)?;
                    // On create, for_create has already matched it against the name.
                    if !creating && fifo != self.fifo_queue {
                        return Err(SqsError::invalid_attribute_value(
                            name,
                            "Modifying queue type is not supported.",
                        ));
                    }
                }
                "ContentBasedDeduplication" | "DeduplicationScope" | "FifoThroughputLimit"
                    if !self.fifo_queue =>
                {
                    return Err(SqsError::invalid_attribute_name(name));
                }
                "ContentBasedDeduplication" => {
                    self.content_based_deduplication = parse_bool_attribute(name, value)?
                }
                "DeduplicationScope" => {
                    self.deduplication_scope =
                        Some(parse_choice(name, value, &["messageGroup", "queue"])?)
                }
                "FifoThroughputLimit" => {
                    self.fifo_throughput_limit = Some(parse_choice(
                        name,
                        value,
                        &["perQueue", "perMessageGroupId"],
                    )?)
                }
                "KmsMasterKeyId" => self.kms_master_key_id = optional(value).map(str::to_string),
                "KmsDataKeyReusePeriodSeconds" => {
                    self.kms_data_key_reuse_period_seconds =
                        Some(parse_int_attribute(name, value, KMS_DATA_KEY_REUSE_PERIOD)?)
                }
                "SqsManagedSseEnabled" => {
                    self.sqs_managed_sse_enabled = Some(parse_bool_attribute(name, value)?)
                }
                // Read-only attributes and names SQS does not know alike.
                _ => return Err(SqsError::invalid_attribute_name(name)),
            }
        }
        if self.kms_master_key_id.is_some() && self.kms_data_key_reuse_period_seconds.is_none() {
            self.kms_data_key_reuse_period_seconds = Some(DEFAULT_KMS_DATA_KEY_REUSE_PERIOD);
        }
        Ok(())
    }

    /// The settable attributes as GetQueueAttributes returns them: strings, RedrivePolicy as
    /// compact JSON with `maxReceiveCount` a number. FIFO attributes only on FIFO queues,
    /// optional ones only when set.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put("DelaySeconds", self.delay_seconds.to_string());
        put("MaximumMessageSize", self.maximum_message_size.to_string());
        put(
            "MessageRetentionPeriod",
            self.message_retention_period.to_string(),
        );
        put(
            "ReceiveMessageWaitTimeSeconds",
            self.receive_message_wait_time_seconds.to_string(),
        );
        put("VisibilityTimeout", self.visibility_timeout.to_string());
        if let Some(rp) = &self.redrive_policy {
            put("RedrivePolicy", rp.to_json());
        }
        if let Some(p) = &self.redrive_allow_policy {
            put("RedriveAllowPolicy", p.clone());
        }
        if let Some(p) = &self.policy {
            put("Policy", p.clone());
        }
        if self.fifo_queue {
            put("FifoQueue", "true".to_string());
            put(
                "ContentBasedDeduplication",
                self.content_based_deduplication.to_string(),
            );
            if let Some(s) = &self.deduplication_scope {
                put("DeduplicationScope", s.clone());
            }
            if let Some(s) = &self.fifo_throughput_limit {
                put("FifoThroughputLimit", s.clone());
            }
        }
        if let Some(k) = &self.kms_master_key_id {
            put("KmsMasterKeyId", k.clone());
        }
        if let Some(p) = self.kms_data_key_reuse_period_seconds {
            put("KmsDataKeyReusePeriodSeconds", p.to_string());
        }
        if let Some(b) = self.sqs_managed_sse_enabled {
            put("SqsManagedSseEnabled", b.to_string());
        }
        m
    }
}

// ---------------------------------------------------------------------------------------------
// Redrive policy
// ---------------------------------------------------------------------------------------------

/// A queue's dead-letter settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedrivePolicy {
    #[serde(rename = "deadLetterTargetArn")]
    pub dead_letter_target_arn: String,
    #[serde(rename = "maxReceiveCount")]
    pub max_receive_count: u32,
}

impl RedrivePolicy {
    /// Compact JSON as GetQueueAttributes returns it:
    /// `{"deadLetterTargetArn":"arn:…","maxReceiveCount":5}`.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"deadLetterTargetArn\":{},\"maxReceiveCount\":{}}}",
            serde_json::Value::String(self.dead_letter_target_arn.clone()),
            self.max_receive_count
        )
    }
}

/// Parses RedrivePolicy: a JSON object with exactly `deadLetterTargetArn` (an SQS ARN
/// `arn:aws:sqs:<region>:<account>:<name>`) and `maxReceiveCount` (1..=1000, a number or a
/// numeric string). Whether the target exists and has the right type is the caller's check
/// (see [`check_dead_letter_target`]).
pub fn parse_redrive_policy(s: &str) -> Result<RedrivePolicy, SqsError> {
    const NAME: &str = "RedrivePolicy";
    let bad = |why: &str| SqsError::invalid_attribute_value(NAME, why);
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(s) else {
        return Err(bad("Redrive policy is not a valid JSON map."));
    };
    if let Some(key) = map
        .keys()
        .find(|k| *k != "deadLetterTargetArn" && *k != "maxReceiveCount")
    {
        return Err(bad(&format!(
            "Only following attributes are supported: [deadLetterTargetArn, maxReceiveCount]. Got {key:?}."
        )));
    }
    let arn = match map.get("deadLetterTargetArn") {
        None => {
            return Err(bad(
                "Redrive policy does not contain mandatory attribute: deadLetterTargetArn.",
            ))
        }
        Some(serde_json::Value::String(arn)) if is_sqs_arn(arn) => arn.clone(),
        Some(other) => {
            return Err(bad(&format!(
                "Invalid value for deadLetterTargetArn: {other}; expected arn:aws:sqs:<region>:<account>:<queue name>."
            )))
        }
    };
    let range_error = |shown: &str| {
        bad(&format!(
            "Invalid value for maxReceiveCount: {shown}, valid values are from {} to {} both inclusive.",
            MAX_RECEIVE_COUNT.0, MAX_RECEIVE_COUNT.1
        ))
    };
    let count = match map.get("maxReceiveCount") {
        None => {
            return Err(bad(
                "Redrive policy does not contain mandatory attribute: maxReceiveCount.",
            ))
        }
        Some(serde_json::Value::Number(n)) => {
            n.as_i64().ok_or_else(|| range_error(&n.to_string()))?
        }
        Some(serde_json::Value::String(s)) => s.parse::<i64>().map_err(|_| range_error(s))?,
        Some(other) => return Err(range_error(&other.to_string())),
    };
    if !(MAX_RECEIVE_COUNT.0..=MAX_RECEIVE_COUNT.1).contains(&count) {
        return Err(range_error(&count.to_string()));
    }
    Ok(RedrivePolicy {
        dead_letter_target_arn: arn,
        max_receive_count: u32::try_from(count).map_err(|_| range_error(&count.to_string()))?,
    })
}

/// The dead-letter queue of a FIFO queue must be FIFO, and of a standard queue standard.
/// `target_fifo` is `None` when the target queue does not exist.
pub fn check_dead_letter_target(
    source_fifo: bool,
    target_fifo: Option<bool>,
) -> Result<(), SqsError> {
    match target_fifo {
        None => Err(SqsError::invalid_attribute_value(
            "RedrivePolicy",
            "Dead-letter target does not exist.",
        )),
        Some(t) if t != source_fifo => Err(SqsError::invalid_attribute_value(
            "RedrivePolicy",
            "Dead-letter queue must be same type of queue as the source.",
        )),
        Some(_) => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Message attributes
// ---------------------------------------------------------------------------------------------

/// `BinaryValue` is base64 on the JSON wire and bytes here.
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            base64::engine::general_purpose::STANDARD
                .decode(t.as_bytes())
                .map_err(|e| serde::de::Error::custom(format!("BinaryValue is not base64: {e}")))
        })
        .transpose()
    }
}

/// A message attribute (or message system attribute) as the JSON protocol carries it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MessageAttributeValue {
    /// `String`, `Number` or `Binary`, optionally followed by `.<custom label>`.
    #[serde(rename = "DataType")]
    pub data_type: String,
    #[serde(
        rename = "StringValue",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub string_value: Option<String>,
    /// Decoded bytes; base64 on the wire.
    #[serde(
        rename = "BinaryValue",
        skip_serializing_if = "Option::is_none",
        default,
        with = "base64_bytes"
    )]
    pub binary_value: Option<Vec<u8>>,
    /// Reserved by SQS ("Not implemented"); accepted on the wire only to be refused when non-empty.
    #[serde(
        rename = "StringListValues",
        skip_serializing_if = "Vec::is_empty",
        default
    )]
    pub string_list_values: Vec<String>,
    /// Reserved by SQS, as above; kept as the base64 text it arrived as.
    #[serde(
        rename = "BinaryListValues",
        skip_serializing_if = "Vec::is_empty",
        default
    )]
    pub binary_list_values: Vec<String>,
}

/// The base types a message attribute's DataType may start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeBaseType {
    String,
    Number,
    Binary,
}

impl AttributeBaseType {
    /// The base type of a DataType such as `Number.float`; `None` when it is none of the three.
    pub fn of(data_type: &str) -> Option<AttributeBaseType> {
        let (base, label) = match data_type.split_once('.') {
            Some((base, label)) => (base, Some(label)),
            None => (data_type, None),
        };
        if label == Some("") {
            return None;
        }
        match base {
            "String" => Some(AttributeBaseType::String),
            "Number" => Some(AttributeBaseType::Number),
            "Binary" => Some(AttributeBaseType::Binary),
            _ => None,
        }
    }

    /// The transport type byte in the MD5OfMessageAttributes encoding.
    fn transport_byte(self) -> u8 {
        match self {
            AttributeBaseType::String | AttributeBaseType::Number => 1,
            AttributeBaseType::Binary => 2,
        }
    }
}

/// SQS's allowed characters (XML 1.0's): #x9 #xA #xD #x20–#xD7FF #xE000–#xFFFD #x10000–#x10FFFF.
/// Rust strings cannot hold surrogates, so only the controls and U+FFFE/U+FFFF remain to refuse.
fn is_allowed_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

const ALLOWED_CHARACTERS: &str =
    "#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF";

fn is_attribute_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
}

/// A message attribute name: 1–256 of `[A-Za-z0-9_.-]`, not starting with `AWS.` or `Amazon.`
/// (any case), not starting or ending with a period, no `..`.
pub fn validate_message_attribute_name(name: &str) -> Result<(), SqsError> {
    let bad = |why: &str| {
        SqsError::invalid_parameter_value(format!(
            "Message (user) attribute name '{name}' is invalid. Reason: {why}"
        ))
    };
    if name.is_empty() {
        return Err(SqsError::invalid_parameter_value(
            "The request must contain non-empty message attribute name.",
        ));
    }
    if name.len() > MAX_ATTRIBUTE_NAME_LEN {
        return Err(bad("it must be at most 256 characters long."));
    }
    if !name.chars().all(is_attribute_name_char) {
        return Err(bad(
            "it can only contain alphanumeric characters, hyphens (-), underscores (_) and periods (.).",
        ));
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("aws.") || lower.starts_with("amazon.") {
        return Err(bad(
            "names starting with 'AWS.' or 'Amazon.' are reserved for use by Amazon.",
        ));
    }
    if name.starts_with('.') || name.ends_with('.') {
        return Err(bad("it must not start or end with a period."));
    }
    if name.contains("..") {
        return Err(bad("it must not contain successive periods."));
    }
    Ok(())
}

/// A Number attribute: a decimal (sign, digits, fraction, exponent) of at most 38 significant
/// digits whose magnitude is zero or between 10^-128 and 10^+126.
fn is_sqs_number(s: &str) -> bool {
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => {
            let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                return false;
            }
            // An exponent too large for i64 is out of range unless the mantissa is zero.
            (m, e.parse::<i64>().ok())
        }
        None => (unsigned, Some(0)),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return false;
    }
    if !int_part
        .chars()
        .chain(frac_part.chars())
        .all(|c| c.is_ascii_digit())
    {
        return false;
    }
    let digits: String = format!("{int_part}{frac_part}");
    let Some(first_nonzero) = digits.find(|c| c != '0') else {
        return true; // zero
    };
    let Some(exponent) = exponent else {
        return false;
    };
    let significant = digits[first_nonzero..].trim_end_matches('0');
    if significant.len() > 38 {
        return false;
    }
    // The power of ten of the leading significant digit; i128 so no exponent can overflow it.
    let leading = int_part.len() as i128 - first_nonzero as i128 - 1 + i128::from(exponent);
    (-128..=125).contains(&leading)
}

/// Message attributes as SendMessage checks them: at most 10; each name valid; a DataType of at
/// most 256 allowed characters whose base type is String, Number or Binary; the value the base
/// type needs, non-empty (String values of allowed characters, Number values in SQS's range);
/// list values refused.
pub fn validate_message_attributes(
    attrs: &BTreeMap<String, MessageAttributeValue>,
) -> Result<(), SqsError> {
    if attrs.len() > MAX_MESSAGE_ATTRIBUTES {
        return Err(SqsError::invalid_parameter_value(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{MAX_MESSAGE_ATTRIBUTES}].",
            attrs.len()
        )));
    }
    for (name, value) in attrs {
        validate_message_attribute_name(name)?;
        validate_message_attribute_value(name, value)?;
    }
    Ok(())
}

fn validate_message_attribute_value(
    name: &str,
    value: &MessageAttributeValue,
) -> Result<(), SqsError> {
    let bad = |msg: String| Err(SqsError::invalid_parameter_value(msg));
    let data_type = value.data_type.as_str();
    if data_type.is_empty() {
        return bad(format!(
            "The message attribute '{name}' must contain non-empty message attribute type."
        ));
    }
    if data_type.len() > MAX_ATTRIBUTE_NAME_LEN || !data_type.chars().all(is_allowed_char) {
        return bad(format!(
            "The message attribute '{name}' has an invalid message attribute type: it must be at most 256 characters of {ALLOWED_CHARACTERS}."
        ));
    }
    let Some(base) = AttributeBaseType::of(data_type) else {
        return bad(format!(
            "The message attribute '{name}' has an invalid message attribute type, the set of supported type prefixes is Binary, Number, and String."
        ));
    };
    if !value.string_list_values.is_empty() || !value.binary_list_values.is_empty() {
        return bad(format!(
            "The message attribute '{name}' uses StringListValues or BinaryListValues, which Amazon SQS reserves for future use and does not implement."
        ));
    }
    let empty_value = || {
        Err(SqsError::invalid_parameter_value(format!(
            "The message attribute '{name}' must contain non-empty message attribute value for message attribute type '{data_type}'."
        )))
    };
    match base {
        AttributeBaseType::Binary => {
            if value.string_value.is_some() {
                return bad(format!(
                    "The message attribute '{name}' with type 'Binary' must use field 'Binary'."
                ));
            }
            match &value.binary_value {
                Some(b) if !b.is_empty() => Ok(()),
                _ => empty_value(),
            }
        }
        AttributeBaseType::String | AttributeBaseType::Number => {
            if value.binary_value.is_some() {
                return bad(format!(
                    "The message attribute '{name}' with type '{}' must use field 'String'.",
                    if base == AttributeBaseType::Number {
                        "Number"
                    } else {
                        "String"
                    }
                ));
            }
            let Some(s) = value.string_value.as_deref().filter(|s| !s.is_empty()) else {
                return empty_value();
            };
            if let Some(c) = s.chars().find(|c| !is_allowed_char(*c)) {
                return Err(SqsError::invalid_parameter_value(format!(
                    "Invalid binary character '#x{:X}' was found in the value of message attribute '{name}', the set of allowed characters is {ALLOWED_CHARACTERS}",
                    u32::from(c)
                )));
            }
            if base == AttributeBaseType::Number && !is_sqs_number(s) {
                return bad(format!(
                    "Can't cast the value '{s}' of message attribute '{name}' to a number: a Number has up to 38 digits of precision and lies between 10^-128 and 10^+126."
                ));
            }
            Ok(())
        }
    }
}

/// The size SQS counts toward MaximumMessageSize: the body's UTF-8 bytes plus, for each
/// attribute, its name, data type and value bytes.
pub fn message_size(body: &str, attrs: &BTreeMap<String, MessageAttributeValue>) -> usize {
    body.len()
        + attrs
            .iter()
            .map(|(name, v)| {
                name.len()
                    + v.data_type.len()
                    + v.string_value.as_ref().map_or(0, String::len)
                    + v.binary_value.as_ref().map_or(0, Vec::len)
            })
            .sum::<usize>()
}

/// A message larger than the queue's MaximumMessageSize.
pub fn check_message_size(size: usize, maximum_message_size: u32) -> Result<(), SqsError> {
    if size > maximum_message_size as usize {
        return Err(SqsError::invalid_parameter_value(format!(
            "One or more parameters are invalid. Reason: Message must be shorter than {maximum_message_size} bytes."
        )));
    }
    Ok(())
}

/// Hex MD5 (MD5OfMessageBody, MD5OfBody).
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// MD5OfMessageAttributes (and MD5OfMessageSystemAttributes) as SQS computes it and the SDKs
/// check it: attributes in name order; for each, the name, the data type, one transport byte
/// (1 for String and Number, 2 for Binary) and the value, every string or byte field preceded
/// by its length as a 4-byte big-endian integer. SQS omits the field when there are no
/// attributes; callers should too.
pub fn md5_of_attributes(attrs: &BTreeMap<String, MessageAttributeValue>) -> String {
    fn put(h: &mut Md5, bytes: &[u8]) {
        // Lengths fit: names, types and values are bounded far below 4 GiB by validation.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        h.update(len.to_be_bytes());
        h.update(bytes);
    }
    let mut h = Md5::new();
    for (name, v) in attrs {
        put(&mut h, name.as_bytes());
        put(&mut h, v.data_type.as_bytes());
        let base = AttributeBaseType::of(&v.data_type).unwrap_or(AttributeBaseType::String);
        h.update([base.transport_byte()]);
        match base {
            AttributeBaseType::Binary => put(&mut h, v.binary_value.as_deref().unwrap_or(&[])),
            _ => put(&mut h, v.string_value.as_deref().unwrap_or("").as_bytes()),
        }
    }
    hex::encode(h.finalize())
}

// ---------------------------------------------------------------------------------------------
// Bodies, batches, FIFO ids, ranges
// ---------------------------------------------------------------------------------------------

/// A message body: at least one character, all of SQS's allowed characters.
pub fn validate_body(body: &str) -> Result<(), SqsError> {
    if body.is_empty() {
        return Err(SqsError::missing_parameter("MessageBody"));
    }
    if let Some(c) = body.chars().find(|c| !is_allowed_char(*c)) {
        return Err(SqsError::invalid_message_contents(format!(
            "Invalid binary character '#x{:X}' was found in the message body, the set of allowed characters is {ALLOWED_CHARACTERS}",
            u32::from(c)
        )));
    }
    Ok(())
}

/// Batch entry ids: 1..=10 entries, each 1–80 characters of `[A-Za-z0-9_-]`, all distinct.
pub fn validate_batch_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Result<(), SqsError> {
    let ids: Vec<&str> = ids.into_iter().collect();
    if ids.is_empty() {
        return Err(SqsError::empty_batch_request());
    }
    if ids.len() > MAX_BATCH_ENTRIES {
        return Err(SqsError::too_many_entries_in_batch_request(ids.len()));
    }
    let mut seen = BTreeSet::new();
    for id in ids {
        if id.is_empty() || id.len() > MAX_NAME_LEN || !id.chars().all(is_name_char) {
            return Err(SqsError::invalid_batch_entry_id(id));
        }
        if !seen.insert(id) {
            return Err(SqsError::batch_entry_ids_not_distinct(id));
        }
    }
    Ok(())
}

/// MessageGroupId / MessageDeduplicationId (and ReceiveRequestAttemptId): 1–128 characters of
/// ASCII letters, digits and punctuation (``!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~``).
pub fn validate_fifo_id(field: &str, value: &str) -> Result<(), SqsError> {
    if value.is_empty()
        || value.len() > MAX_FIFO_ID_LEN
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c.is_ascii_punctuation())
    {
        return Err(SqsError::invalid_parameter_value(format!(
            "Value {value} for parameter {field} is invalid. Reason: {field} can only include alphanumeric and punctuation characters. 1 to 128 in length."
        )));
    }
    Ok(())
}

/// The MessageDeduplicationId content-based deduplication gives a message: hex SHA-256 of the
/// body (not the attributes).
pub fn content_dedup_id(body: &str) -> String {
    hex::encode(Sha256::digest(body.as_bytes()))
}

/// An integer request parameter within `min..=max`: per-message DelaySeconds 0..=900;
/// ReceiveMessage's MaxNumberOfMessages 1..=10, WaitTimeSeconds 0..=20, VisibilityTimeout
/// 0..=43200; ChangeMessageVisibility's VisibilityTimeout 0..=43200.
pub fn check_range(param: &str, value: i64, min: i64, max: i64) -> Result<(), SqsError> {
    if value < min || value > max {
        return Err(SqsError::invalid_parameter_value(format!(
            "Value {value} for parameter {param} is invalid. Reason: Must be between {min} and {max}, if provided."
        )));
    }
    Ok(())
}

/// What SendMessage's queue-type rules make of one message's optional fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFields {
    /// The delay to apply: the message's own, else the queue's DelaySeconds.
    pub delay_seconds: u32,
    pub message_group_id: Option<String>,
    /// The id to deduplicate on (FIFO only): the given one, else the content-based one.
    pub deduplication_id: Option<String>,
}

/// The queue-type rules of SendMessage (and each SendMessageBatch entry), given the queue's
/// attributes: DelaySeconds 0..=900 and, on FIFO queues, not per message (0 is let through);
/// FIFO queues need a MessageGroupId and a MessageDeduplicationId unless the queue has
/// ContentBasedDeduplication; standard queues take a MessageGroupId (fair queues) but no
/// MessageDeduplicationId.
pub fn resolve_send_fields(
    queue: &QueueAttributes,
    body: &str,
    delay_seconds: Option<i64>,
    message_group_id: Option<&str>,
    deduplication_id: Option<&str>,
) -> Result<SendFields, SqsError> {
    let delay = match delay_seconds {
        Some(d) => {
            check_range("DelaySeconds", d, DELAY_SECONDS.0, DELAY_SECONDS.1)?;
            if queue.fifo_queue && d != 0 {
                return Err(SqsError::invalid_parameter_value(format!(
                    "Value {d} for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type."
                )));
            }
            u32::try_from(d).unwrap_or(0)
        }
        None => queue.delay_seconds,
    };
    if let Some(g) = message_group_id {
        validate_fifo_id("MessageGroupId", g)?;
    }
    if let Some(d) = deduplication_id {
        validate_fifo_id("MessageDeduplicationId", d)?;
    }
    if !queue.fifo_queue {
        if let Some(d) = deduplication_id {
            return Err(SqsError::invalid_parameter_value(format!(
                "Value {d} for parameter MessageDeduplicationId is invalid. Reason: The request include parameter that is not valid for this queue type."
            )));
        }
        return Ok(SendFields {
            delay_seconds: delay,
            message_group_id: message_group_id.map(str::to_string),
            deduplication_id: None,
        });
    }
    let Some(group) = message_group_id else {
        return Err(SqsError::missing_parameter("MessageGroupId"));
    };
    let dedup = match deduplication_id {
        Some(d) => d.to_string(),
        None if queue.content_based_deduplication => content_dedup_id(body),
        None => {
            return Err(SqsError::invalid_parameter_value(
                "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly",
            ))
        }
    };
    Ok(SendFields {
        delay_seconds: delay,
        message_group_id: Some(group.to_string()),
        deduplication_id: Some(dedup),
    })
}

/// ReceiveMessage's numeric parameters resolved against the queue's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveParams {
    /// 1..=10, default 1.
    pub max_number_of_messages: u32,
    /// 0..=20, default the queue's ReceiveMessageWaitTimeSeconds.
    pub wait_time_seconds: u32,
    /// 0..=43200, default the queue's VisibilityTimeout.
    pub visibility_timeout: u32,
}

impl ReceiveParams {
    pub fn resolve(
        queue: &QueueAttributes,
        max_number_of_messages: Option<i64>,
        wait_time_seconds: Option<i64>,
        visibility_timeout: Option<i64>,
    ) -> Result<ReceiveParams, SqsError> {
        let pick = |param: &str, v: Option<i64>, (min, max): (i64, i64), default: u32| match v {
            Some(v) => {
                check_range(param, v, min, max)?;
                Ok(u32::try_from(v).unwrap_or(default))
            }
            None => Ok(default),
        };
        Ok(ReceiveParams {
            max_number_of_messages: pick(
                "MaxNumberOfMessages",
                max_number_of_messages,
                (1, MAX_BATCH_ENTRIES as i64),
                1,
            )?,
            wait_time_seconds: pick(
                "WaitTimeSeconds",
                wait_time_seconds,
                RECEIVE_WAIT_TIME_SECONDS,
                queue.receive_message_wait_time_seconds,
            )?,
            visibility_timeout: pick(
                "VisibilityTimeout",
                visibility_timeout,
                VISIBILITY_TIMEOUT,
                queue.visibility_timeout,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn s(data_type: &str, v: &str) -> MessageAttributeValue {
        MessageAttributeValue {
            data_type: data_type.to_string(),
            string_value: Some(v.to_string()),
            ..Default::default()
        }
    }

    fn b(data_type: &str, v: &[u8]) -> MessageAttributeValue {
        MessageAttributeValue {
            data_type: data_type.to_string(),
            binary_value: Some(v.to_vec()),
            ..Default::default()
        }
    }

    fn attrs(pairs: Vec<(&str, MessageAttributeValue)>) -> BTreeMap<String, MessageAttributeValue> {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    #[test]
    fn every_error_has_its_shape_query_code_and_status() {
        let rows: Vec<(SqsError, &str, &str, u16)> = vec![
            (
                SqsError::queue_does_not_exist(),
                "QueueDoesNotExist",
                "AWS.SimpleQueueService.NonExistentQueue",
                400,
            ),
            (
                SqsError::invalid_attribute_name("X"),
                "InvalidAttributeName",
                "InvalidAttributeName",
                400,
            ),
            (
                SqsError::invalid_attribute_value("X", "y"),
                "InvalidAttributeValue",
                "InvalidAttributeValue",
                400,
            ),
            (
                SqsError::invalid_parameter_value("m"),
                "InvalidParameterValue",
                "InvalidParameterValue",
                400,
            ),
            (
                SqsError::missing_parameter("P"),
                "MissingParameter",
                "MissingParameter",
                400,
            ),
            (
                SqsError::queue_name_exists("q"),
                "QueueNameExists",
                "QueueAlreadyExists",
                400,
            ),
            (
                SqsError::queue_deleted_recently("q"),
                "QueueDeletedRecently",
                "AWS.SimpleQueueService.QueueDeletedRecently",
                400,
            ),
            (
                SqsError::receipt_handle_is_invalid("h"),
                "ReceiptHandleIsInvalid",
                "ReceiptHandleIsInvalid",
                400,
            ),
            (
                SqsError::message_not_inflight(),
                "MessageNotInflight",
                "AWS.SimpleQueueService.MessageNotInflight",
                400,
            ),
            (
                SqsError::too_many_entries_in_batch_request(11),
                "TooManyEntriesInBatchRequest",
                "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                400,
            ),
            (
                SqsError::empty_batch_request(),
                "EmptyBatchRequest",
                "AWS.SimpleQueueService.EmptyBatchRequest",
                400,
            ),
            (
                SqsError::batch_entry_ids_not_distinct("a"),
                "BatchEntryIdsNotDistinct",
                "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
                400,
            ),
            (
                SqsError::invalid_batch_entry_id("a b"),
                "InvalidBatchEntryId",
                "AWS.SimpleQueueService.InvalidBatchEntryId",
                400,
            ),
            (
                SqsError::batch_request_too_long(2_000_000),
                "BatchRequestTooLong",
                "AWS.SimpleQueueService.BatchRequestTooLong",
                400,
            ),
            (
                SqsError::unsupported_operation("m"),
                "UnsupportedOperation",
                "AWS.SimpleQueueService.UnsupportedOperation",
                400,
            ),
            (
                SqsError::invalid_message_contents("m"),
                "InvalidMessageContents",
                "InvalidMessageContents",
                400,
            ),
            (
                SqsError::purge_queue_in_progress("q"),
                "PurgeQueueInProgress",
                "AWS.SimpleQueueService.PurgeQueueInProgress",
                403,
            ),
            (SqsError::over_limit("m"), "OverLimit", "OverLimit", 403),
            (
                SqsError::invalid_action("AmazonSQS.Nope"),
                "InvalidAction",
                "InvalidAction",
                400,
            ),
            (
                SqsError::internal_error("m"),
                "InternalError",
                "InternalError",
                500,
            ),
        ];
        for (err, code, query_code, status) in rows {
            assert_eq!(err.code, code);
            assert_eq!(err.query_code, query_code, "{code}");
            assert_eq!(err.http_status(), status, "{code}");
            assert_eq!(err.json_type(), format!("com.amazonaws.sqs#{code}"));
            let fault = if status == 500 { "Receiver" } else { "Sender" };
            assert_eq!(err.query_error_header(), format!("{query_code};{fault}"));
            assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn error_messages_carry_aws_wording_and_context() {
        assert_eq!(
            SqsError::queue_does_not_exist().message,
            "The specified queue does not exist."
        );
        assert_eq!(
            SqsError::invalid_attribute_name("Foo").message,
            "Unknown Attribute Foo."
        );
        assert_eq!(
            SqsError::missing_parameter("MessageBody").message,
            "The request must contain the parameter MessageBody."
        );
        assert_eq!(
            SqsError::too_many_entries_in_batch_request(11).message,
            "Maximum number of entries per request are 10. You have sent 11."
        );
        assert_eq!(
            SqsError::batch_entry_ids_not_distinct("x").message,
            "Id x repeated."
        );
        assert!(SqsError::receipt_handle_is_invalid("abc")
            .message
            .contains("\"abc\""));
        assert!(SqsError::batch_request_too_long(1_048_577)
            .message
            .contains("You have sent 1048577 bytes."));
    }

    #[test]
    fn queue_names() {
        let long_standard = "a".repeat(80);
        let too_long_standard = "a".repeat(81);
        let long_fifo = format!("{}.fifo", "a".repeat(75));
        let too_long_fifo = format!("{}.fifo", "a".repeat(76));
        let rows: Vec<(&str, bool)> = vec![
            ("a", true),
            ("My_queue-1", true),
            (&long_standard, true),
            (&too_long_standard, false),
            ("", false),
            ("has space", false),
            ("dot.ted", false),
            ("q.fifo", true),
            (&long_fifo, true),
            (&too_long_fifo, false),
            (".fifo", false),
            ("a.b.fifo", false),
            ("q.FIFO", false),
            ("ünï", false),
        ];
        for (name, ok) in rows {
            let got = validate_queue_name(name);
            assert_eq!(got.is_ok(), ok, "{name:?}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.code, "InvalidParameterValue");
            }
        }
        assert!(is_fifo_name("x.fifo"));
        assert!(!is_fifo_name("x"));
        assert!(validate_queue_name("q.fifo!")
            .unwrap_err()
            .message
            .starts_with("Can only include"));
        assert!(validate_queue_name(&too_long_fifo)
            .unwrap_err()
            .message
            .contains("FIFO"));
    }

    #[test]
    fn arns_round_trip_for_our_account_only() {
        let arn = queue_arn("orders.fifo");
        assert_eq!(arn, "arn:aws:sqs:us-east-1:000000000000:orders.fifo");
        assert_eq!(queue_name_from_arn(&arn), Some("orders.fifo"));
        assert_eq!(
            queue_name_from_arn("arn:aws:sqs:eu-west-1:000000000000:orders"),
            None
        );
        assert_eq!(
            queue_name_from_arn("arn:aws:sqs:us-east-1:123456789012:orders"),
            None
        );
        assert_eq!(
            queue_name_from_arn("arn:aws:sqs:us-east-1:000000000000:"),
            None
        );
        assert_eq!(
            queue_name_from_arn("arn:aws:sns:us-east-1:000000000000:orders"),
            None
        );
    }

    #[test]
    fn defaults_match_sqs() {
        let q = QueueAttributes::for_create("q", &BTreeMap::new()).unwrap();
        assert_eq!(q, QueueAttributes::default());
        let m = q.to_map();
        assert_eq!(
            m,
            map(&[
                ("DelaySeconds", "0"),
                ("MaximumMessageSize", "1048576"),
                ("MessageRetentionPeriod", "345600"),
                ("ReceiveMessageWaitTimeSeconds", "0"),
                ("VisibilityTimeout", "30"),
            ])
        );
        let f = QueueAttributes::for_create("q.fifo", &map(&[("FifoQueue", "true")])).unwrap();
        let m = f.to_map();
        assert_eq!(m["FifoQueue"], "true");
        assert_eq!(m["ContentBasedDeduplication"], "false");
        assert_eq!(m["DeduplicationScope"], "queue");
        assert_eq!(m["FifoThroughputLimit"], "perQueue");
    }

    #[test]
    fn integer_attribute_bounds() {
        // (attribute, just-below-min, min, max, just-above-max)
        let rows = [
            ("DelaySeconds", -1, 0, 900, 901),
            ("MaximumMessageSize", 1023, 1024, 1_048_576, 1_048_577),
            ("MessageRetentionPeriod", 59, 60, 1_209_600, 1_209_601),
            ("ReceiveMessageWaitTimeSeconds", -1, 0, 20, 21),
            ("VisibilityTimeout", -1, 0, 43_200, 43_201),
            ("KmsDataKeyReusePeriodSeconds", 59, 60, 86_400, 86_401),
        ];
        for (name, below, min, max, above) in rows {
            for ok in [min, max] {
                let q = QueueAttributes::for_create("q", &map(&[(name, &ok.to_string())]))
                    .unwrap_or_else(|e| panic!("{name}={ok}: {e}"));
                assert_eq!(q.to_map()[name], ok.to_string(), "{name}");
            }
            for bad in [
                below.to_string(),
                above.to_string(),
                "ten".to_string(),
                "1.5".to_string(),
                String::new(),
            ] {
                let e = QueueAttributes::for_create("q", &map(&[(name, &bad)])).unwrap_err();
                assert_eq!(e.code, "InvalidAttributeValue", "{name}={bad}");
                assert!(e.message.contains(name), "{}", e.message);
                assert!(
                    e.message.contains(&format!("from {min} to {max}")),
                    "{}",
                    e.message
                );
            }
        }
    }

    #[test]
    fn unknown_and_read_only_attribute_names_are_refused() {
        for name in [
            "Bogus",
            "QueueArn",
            "ApproximateNumberOfMessages",
            "CreatedTimestamp",
            "All",
            "visibilitytimeout",
        ] {
            let e = QueueAttributes::for_create("q", &map(&[(name, "1")])).unwrap_err();
            assert_eq!(e.code, "InvalidAttributeName", "{name}");
            assert_eq!(e.message, format!("Unknown Attribute {name}."));
        }
        assert!(is_known_attribute_name("QueueArn"));
        assert!(is_known_attribute_name(
            "ApproximateNumberOfMessagesDelayed"
        ));
        assert!(is_known_attribute_name("VisibilityTimeout"));
        assert!(!is_known_attribute_name("All"));
        assert!(!is_known_attribute_name("Bogus"));
    }

    /// (queue name, attributes, expected error code or None)
    type CreateRow<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a str>);

    #[test]
    fn fifo_rules_on_create() {
        let rows: Vec<CreateRow> = vec![
            ("q.fifo", vec![("FifoQueue", "true")], None),
            (
                "q.fifo",
                vec![("FifoQueue", "TRUE"), ("ContentBasedDeduplication", "true")],
                None,
            ),
            ("q.fifo", vec![], Some("InvalidParameterValue")),
            (
                "q.fifo",
                vec![("FifoQueue", "false")],
                Some("InvalidParameterValue"),
            ),
            (
                "q",
                vec![("FifoQueue", "true")],
                Some("InvalidParameterValue"),
            ),
            ("q", vec![("FifoQueue", "false")], None),
            (
                "q",
                vec![("FifoQueue", "yes")],
                Some("InvalidAttributeValue"),
            ),
            (
                "q",
                vec![("ContentBasedDeduplication", "true")],
                Some("InvalidAttributeName"),
            ),
            (
                "q",
                vec![("DeduplicationScope", "queue")],
                Some("InvalidAttributeName"),
            ),
            (
                "q",
                vec![("FifoThroughputLimit", "perQueue")],
                Some("InvalidAttributeName"),
            ),
            (
                "q.fifo",
                vec![
                    ("FifoQueue", "true"),
                    ("DeduplicationScope", "messageGroup"),
                    ("FifoThroughputLimit", "perMessageGroupId"),
                ],
                None,
            ),
            (
                "q.fifo",
                vec![("FifoQueue", "true"), ("DeduplicationScope", "group")],
                Some("InvalidAttributeValue"),
            ),
            (
                "q.fifo",
                vec![("FifoQueue", "true"), ("FifoThroughputLimit", "perGroup")],
                Some("InvalidAttributeValue"),
            ),
            (
                "q.fifo",
                vec![("FifoQueue", "true"), ("ContentBasedDeduplication", "1")],
                Some("InvalidAttributeValue"),
            ),
        ];
        for (name, a, want) in rows {
            let got = QueueAttributes::for_create(name, &map(&a));
            assert_eq!(
                got.as_ref().err().map(|e| e.code),
                want,
                "{name} {a:?}: {got:?}"
            );
        }
        let q = QueueAttributes::for_create(
            "q.fifo",
            &map(&[
                ("FifoQueue", "true"),
                ("DeduplicationScope", "messageGroup"),
                ("FifoThroughputLimit", "perMessageGroupId"),
                ("ContentBasedDeduplication", "true"),
            ]),
        )
        .unwrap();
        assert!(q.fifo_queue && q.content_based_deduplication);
        assert_eq!(q.to_map()["DeduplicationScope"], "messageGroup");
        assert_eq!(q.to_map()["FifoThroughputLimit"], "perMessageGroupId");
    }

    #[test]
    fn set_is_all_or_nothing_and_keeps_the_queue_type() {
        let mut q = QueueAttributes::for_create("q", &BTreeMap::new()).unwrap();
        let e = q
            .set(&map(&[
                ("DelaySeconds", "5"),
                ("VisibilityTimeout", "99999"),
            ]))
            .unwrap_err();
        assert_eq!(e.code, "InvalidAttributeValue");
        assert_eq!(q.delay_seconds, 0, "a refused set changes nothing");
        q.set(&map(&[("DelaySeconds", "5"), ("VisibilityTimeout", "60")]))
            .unwrap();
        assert_eq!((q.delay_seconds, q.visibility_timeout), (5, 60));

        let e = q.set(&map(&[("FifoQueue", "true")])).unwrap_err();
        assert_eq!(e.code, "InvalidAttributeValue");
        assert!(e.message.contains("Modifying queue type is not supported."));
        q.set(&map(&[("FifoQueue", "false")])).unwrap();
        let mut f = QueueAttributes::for_create("f.fifo", &map(&[("FifoQueue", "true")])).unwrap();
        assert_eq!(
            f.set(&map(&[("FifoQueue", "false")])).unwrap_err().code,
            "InvalidAttributeValue"
        );
        f.set(&map(&[("ContentBasedDeduplication", "true")]))
            .unwrap();
        assert!(f.content_based_deduplication);
    }

    #[test]
    fn json_attributes_are_checked_kept_verbatim_and_cleared_by_empty_string() {
        let policy = r#"{"Version": "2012-10-17", "Statement": []}"#;
        let mut q = QueueAttributes::for_create("q", &map(&[("Policy", policy)])).unwrap();
        assert_eq!(q.to_map()["Policy"], policy);
        q.set(&map(&[("Policy", "")])).unwrap();
        assert!(!q.to_map().contains_key("Policy"));
        for bad in ["[]", "not json", "\"s\""] {
            assert_eq!(
                q.set(&map(&[("Policy", bad)])).unwrap_err().code,
                "InvalidAttributeValue",
                "{bad}"
            );
        }

        let rows: Vec<(&str, bool)> = vec![
            (r#"{"redrivePermission":"allowAll"}"#, true),
            (r#"{"redrivePermission":"denyAll"}"#, true),
            (
                r#"{"redrivePermission":"byQueue","sourceQueueArns":["arn:aws:sqs:us-east-1:000000000000:src"]}"#,
                true,
            ),
            (r#"{"redrivePermission":"byQueue"}"#, false),
            (
                r#"{"redrivePermission":"byQueue","sourceQueueArns":[]}"#,
                false,
            ),
            (
                r#"{"redrivePermission":"byQueue","sourceQueueArns":["nope"]}"#,
                false,
            ),
            (
                r#"{"redrivePermission":"allowAll","sourceQueueArns":["arn:aws:sqs:us-east-1:000000000000:src"]}"#,
                false,
            ),
            (r#"{"redrivePermission":"some"}"#, false),
            (r#"{"redrivePermission":"allowAll","extra":1}"#, false),
            ("[]", false),
        ];
        for (v, ok) in rows {
            let got = QueueAttributes::for_create("q", &map(&[("RedriveAllowPolicy", v)]));
            assert_eq!(got.is_ok(), ok, "{v}: {got:?}");
            if let Ok(q) = got {
                assert_eq!(q.to_map()["RedriveAllowPolicy"], v);
            }
        }
        let eleven: Vec<String> = (0..11)
            .map(|i| format!("\"{}\"", queue_arn(&format!("s{i}"))))
            .collect();
        let v = format!(
            r#"{{"redrivePermission":"byQueue","sourceQueueArns":[{}]}}"#,
            eleven.join(",")
        );
        assert!(QueueAttributes::for_create("q", &map(&[("RedriveAllowPolicy", &v)])).is_err());
    }

    #[test]
    fn kms_attributes() {
        let q =
            QueueAttributes::for_create("q", &map(&[("KmsMasterKeyId", "alias/aws/sqs")])).unwrap();
        assert_eq!(q.to_map()["KmsMasterKeyId"], "alias/aws/sqs");
        assert_eq!(q.to_map()["KmsDataKeyReusePeriodSeconds"], "300");
        let q =
            QueueAttributes::for_create("q", &map(&[("SqsManagedSseEnabled", "true")])).unwrap();
        assert_eq!(q.to_map()["SqsManagedSseEnabled"], "true");
        assert_eq!(
            QueueAttributes::for_create("q", &map(&[("SqsManagedSseEnabled", "on")]))
                .unwrap_err()
                .code,
            "InvalidAttributeValue"
        );
    }

    #[test]
    fn redrive_policy_parsing() {
        let arn = "arn:aws:sqs:us-east-1:000000000000:dlq";
        let ok = |count: u32| RedrivePolicy {
            dead_letter_target_arn: arn.to_string(),
            max_receive_count: count,
        };
        let rows: Vec<(String, Option<RedrivePolicy>)> = vec![
            (format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":5}}"#), Some(ok(5))),
            (format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"5"}}"#), Some(ok(5))),
            (format!(r#"{{"maxReceiveCount":1,"deadLetterTargetArn":"{arn}"}}"#), Some(ok(1))),
            (format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":1000}}"#), Some(ok(1000))),
            (format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":0}}"#), None),
            (format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":1001}}"#), None),
            (format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"0"}}"#), None),
            (format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"five"}}"#), None),
            (format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":2.5}}"#), None),
            (format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":-1}}"#), None),
            (format!(r#"{{"deadLetterTargetArn":"{arn}"}}"#), None),
            (r#"{"maxReceiveCount":5}"#.to_string(), None),
            (r#"{"deadLetterTargetArn":"dlq","maxReceiveCount":5}"#.to_string(), None),
            (r#"{"deadLetterTargetArn":"arn:aws:sns:us-east-1:000000000000:t","maxReceiveCount":5}"#.to_string(), None),
            (r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:0000:dlq","maxReceiveCount":5}"#.to_string(), None),
            (r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:bad name","maxReceiveCount":5}"#.to_string(), None),
            (format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":5,"x":1}}"#), None),
            ("not json".to_string(), None),
            ("[]".to_string(), None),
        ];
        for (input, want) in rows {
            let got = parse_redrive_policy(&input);
            match want {
                Some(w) => assert_eq!(got.as_ref().ok(), Some(&w), "{input}: {got:?}"),
                None => {
                    let e = got.unwrap_err();
                    assert_eq!(e.code, "InvalidAttributeValue", "{input}");
                    assert!(e.message.contains("RedrivePolicy"), "{}", e.message);
                }
            }
        }
        let e = parse_redrive_policy(&format!(
            r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":0}}"#
        ))
        .unwrap_err();
        assert!(
            e.message
                .contains("valid values are from 1 to 1000 both inclusive"),
            "{}",
            e.message
        );
        // Other regions' and accounts' ARNs parse; whether the target exists is the caller's check.
        assert!(parse_redrive_policy(r#"{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:123456789012:x.fifo","maxReceiveCount":3}"#).is_ok());
    }

    #[test]
    fn redrive_policy_round_trips_as_aws_returns_it() {
        let input = r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":"7"}"#;
        let q = QueueAttributes::for_create("q", &map(&[("RedrivePolicy", input)])).unwrap();
        assert_eq!(
            q.to_map()["RedrivePolicy"],
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":7}"#
        );
        let mut q = q;
        q.set(&map(&[("RedrivePolicy", "")])).unwrap();
        assert_eq!(q.redrive_policy, None);
        assert!(check_dead_letter_target(false, Some(false)).is_ok());
        assert!(check_dead_letter_target(true, Some(true)).is_ok());
        assert_eq!(
            check_dead_letter_target(true, Some(false))
                .unwrap_err()
                .code,
            "InvalidAttributeValue"
        );
        assert_eq!(
            check_dead_letter_target(false, None).unwrap_err().code,
            "InvalidAttributeValue"
        );
    }

    #[test]
    fn queue_attributes_serde_round_trip() {
        let q = QueueAttributes::for_create(
            "q.fifo",
            &map(&[("FifoQueue", "true"), ("RedrivePolicy", r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:d.fifo","maxReceiveCount":2}"#)]),
        )
        .unwrap();
        let json = serde_json::to_string(&q).unwrap();
        assert_eq!(serde_json::from_str::<QueueAttributes>(&json).unwrap(), q);
    }

    #[test]
    fn message_attribute_validation() {
        let long_name = "n".repeat(256);
        let too_long_name = "n".repeat(257);
        let long_type = format!("String.{}", "t".repeat(249));
        let too_long_type = format!("String.{}", "t".repeat(250));
        let rows: Vec<(&str, MessageAttributeValue, bool)> = vec![
            ("ok", s("String", "v"), true),
            ("with.dots-and_under", s("String", "v"), true),
            (&long_name, s("String", "v"), true),
            (&too_long_name, s("String", "v"), false),
            ("", s("String", "v"), false),
            ("AWS.x", s("String", "v"), false),
            ("aws.x", s("String", "v"), false),
            ("Amazon.x", s("String", "v"), false),
            ("AMAZON.x", s("String", "v"), false),
            ("AWSx", s("String", "v"), true),
            (".lead", s("String", "v"), false),
            ("trail.", s("String", "v"), false),
            ("a..b", s("String", "v"), false),
            ("sp ace", s("String", "v"), false),
            ("t", s("String.custom", "v"), true),
            ("t", s(&long_type, "v"), true),
            ("t", s(&too_long_type, "v"), false),
            ("t", s("", "v"), false),
            ("t", s("string", "v"), false),
            ("t", s("Text", "v"), false),
            ("t", s("String.", "v"), false),
            ("t", s("String", ""), false),
            (
                "t",
                MessageAttributeValue {
                    data_type: "String".into(),
                    ..Default::default()
                },
                false,
            ),
            ("t", s("String", "tab\tok"), true),
            ("t", s("String", "bell\u{7}"), false),
            ("t", s("String", "\u{FFFE}"), false),
            ("t", s("String", "emoji 😀"), true),
            ("n", s("Number", "0"), true),
            ("n", s("Number", "-12.5e3"), true),
            ("n", s("Number", "+7"), true),
            ("n", s("Number", ".5"), true),
            ("n", s("Number", "5."), true),
            ("n", s("Number", "1e125"), true),
            ("n", s("Number", "9.99e125"), true),
            ("n", s("Number", "1e126"), false),
            ("n", s("Number", "1e-128"), true),
            ("n", s("Number", "0.00001e-123"), true),
            ("n", s("Number", "1e-129"), false),
            ("n", s("Number", "0e999999999999999999999"), true),
            ("n", s("Number", "1e9223372036854775807"), false),
            ("n", s("Number", "0.001e-9223372036854775808"), false),
            ("n", s("Number", &"9".repeat(38)), true),
            ("n", s("Number", &format!("{}000", "9".repeat(38))), true),
            ("n", s("Number", &"9".repeat(39)), false),
            ("n", s("Number", "abc"), false),
            ("n", s("Number", "1e"), false),
            ("n", s("Number", "."), false),
            ("n", s("Number", "1.2.3"), false),
            ("n", s("Number", "NaN"), false),
            ("n", s("Number.int", "42"), true),
            ("b", b("Binary", &[0, 1, 2]), true),
            ("b", b("Binary.gif", b"GIF"), true),
            ("b", b("Binary", &[]), false),
            ("b", s("Binary", "text"), false),
            (
                "b",
                MessageAttributeValue {
                    data_type: "String".into(),
                    string_value: Some("v".into()),
                    binary_value: Some(vec![1]),
                    ..Default::default()
                },
                false,
            ),
            (
                "l",
                MessageAttributeValue {
                    data_type: "String".into(),
                    string_value: Some("v".into()),
                    string_list_values: vec!["x".into()],
                    ..Default::default()
                },
                false,
            ),
            (
                "l",
                MessageAttributeValue {
                    data_type: "Binary".into(),
                    binary_value: Some(vec![1]),
                    binary_list_values: vec!["AQ==".into()],
                    ..Default::default()
                },
                false,
            ),
        ];
        for (name, value, ok) in rows {
            let got = validate_message_attributes(&attrs(vec![(name, value.clone())]));
            assert_eq!(got.is_ok(), ok, "{name:?} {value:?}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.code, "InvalidParameterValue");
            }
        }
        let ten = (0..10)
            .map(|i| (format!("a{i}"), s("String", "v")))
            .collect::<BTreeMap<_, _>>();
        assert!(validate_message_attributes(&ten).is_ok());
        let mut eleven = ten.clone();
        eleven.insert("a10".into(), s("String", "v"));
        let e = validate_message_attributes(&eleven).unwrap_err();
        assert_eq!(
            e.message,
            "Number of message attributes [11] exceeds the allowed maximum [10]."
        );
        assert!(validate_message_attributes(&BTreeMap::new()).is_ok());
    }

    #[test]
    fn message_attribute_json_uses_base64_for_binary() {
        let v: MessageAttributeValue =
            serde_json::from_str(r#"{"DataType":"Binary","BinaryValue":"AAEC/w=="}"#).unwrap();
        assert_eq!(v.binary_value.as_deref(), Some(&[0u8, 1, 2, 255][..]));
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"DataType":"Binary","BinaryValue":"AAEC/w=="}"#
        );
        let v: MessageAttributeValue =
            serde_json::from_str(r#"{"DataType":"String","StringValue":"x"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"DataType":"String","StringValue":"x"}"#
        );
        assert!(serde_json::from_str::<MessageAttributeValue>(
            r#"{"DataType":"Binary","BinaryValue":"%%%"}"#
        )
        .is_err());
        let v: MessageAttributeValue =
            serde_json::from_str(r#"{"DataType":"String","StringListValues":["a"]}"#).unwrap();
        assert_eq!(v.string_list_values, vec!["a".to_string()]);
    }

    #[test]
    fn message_size_counts_body_names_types_and_values() {
        assert_eq!(message_size("héllo", &BTreeMap::new()), 6);
        let a = attrs(vec![
            ("name", s("String", "value")),
            ("bin", b("Binary.x", &[1, 2, 3])),
        ]);
        // 4 body + (4 + 6 + 5) + (3 + 8 + 3)
        assert_eq!(message_size("body", &a), 4 + 15 + 14);
        assert!(check_message_size(1_048_576, MAX_MESSAGE_SIZE).is_ok());
        let e = check_message_size(1_048_577, MAX_MESSAGE_SIZE).unwrap_err();
        assert_eq!(e.code, "InvalidParameterValue");
        assert!(e
            .message
            .contains("Message must be shorter than 1048576 bytes."));
        assert!(check_message_size(1025, 1024).is_err());
    }

    #[test]
    fn digests() {
        // Known values: `printf 'hello world' | md5sum` / `sha256sum`.
        assert_eq!(md5_hex(b"hello world"), "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(
            content_dedup_id("hello world"),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }

    /// Expected MD5OfMessageAttributes digests. botocore 1.43 does not verify this field (its
    /// handlers.py has no such check), so they were produced by two independent Python
    /// implementations that agree: one written from AWS's description of the encoding
    /// (`hashlib.md5`, `struct.pack(">I", len)`, names sorted, transport byte 1/2), and moto
    /// 5.2.1's `moto.sqs.models.Message.attribute_md5`.
    #[test]
    fn md5_of_message_attributes_matches_reference_digests() {
        let rows: Vec<(BTreeMap<String, MessageAttributeValue>, &str)> = vec![
            (
                attrs(vec![("a", s("String", "hello"))]),
                "e27d468a11a9c30a9e438973b143212c",
            ),
            (
                attrs(vec![
                    ("Number1", s("Number", "42")),
                    ("Str", s("String.custom", "x y")),
                ]),
                "0205d9a4e45e57d23629e908bc373ad2",
            ),
            (
                attrs(vec![("bin", b("Binary", &[0, 1, 2, 255]))]),
                "f6f282f22090666a21841eeaf6665b42",
            ),
            (
                attrs(vec![
                    ("zeta", b("Binary.gif", b"GIF89a")),
                    ("alpha", s("Number.float", "-1.5e3")),
                    ("mid", s("String", "h\u{e9}llo \u{2713}")),
                ]),
                "046881b5299783646fa1f319d5abaea5",
            ),
        ];
        for (a, want) in rows {
            assert_eq!(md5_of_attributes(&a), want, "{a:?}");
        }
    }

    #[test]
    fn bodies() {
        assert!(validate_body("x").is_ok());
        assert!(validate_body("{\"json\": true}\r\n\t😀\u{E000}\u{FFFD}\u{10FFFF}").is_ok());
        let e = validate_body("").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                "MissingParameter",
                "The request must contain the parameter MessageBody."
            )
        );
        for (body, shown) in [
            ("a\u{0}b", "#x0"),
            ("\u{1F}", "#x1F"),
            ("\u{FFFF}", "#xFFFF"),
            ("\u{FFFE}", "#xFFFE"),
            ("\u{8}", "#x8"),
        ] {
            let e = validate_body(body).unwrap_err();
            assert_eq!(e.code, "InvalidMessageContents", "{body:?}");
            assert!(e.message.contains(&format!("'{shown}'")), "{}", e.message);
        }
    }

    #[test]
    fn batch_ids() {
        let ids_80 = "i".repeat(80);
        let ids_81 = "i".repeat(81);
        let ten: Vec<String> = (0..10).map(|i| format!("id-{i}")).collect();
        let eleven: Vec<String> = (0..11).map(|i| format!("id_{i}")).collect();
        let rows: Vec<(Vec<&str>, Option<&str>)> = vec![
            (vec!["a"], None),
            (ten.iter().map(String::as_str).collect(), None),
            (vec![&ids_80], None),
            (vec![], Some("EmptyBatchRequest")),
            (
                eleven.iter().map(String::as_str).collect(),
                Some("TooManyEntriesInBatchRequest"),
            ),
            (vec![&ids_81], Some("InvalidBatchEntryId")),
            (vec![""], Some("InvalidBatchEntryId")),
            (vec!["a.b"], Some("InvalidBatchEntryId")),
            (vec!["a", "b", "a"], Some("BatchEntryIdsNotDistinct")),
            (vec!["A", "a"], None),
        ];
        for (ids, want) in rows {
            let got = validate_batch_ids(ids.iter().copied());
            assert_eq!(got.as_ref().err().map(|e| e.code), want, "{ids:?}");
        }
    }

    #[test]
    fn fifo_ids() {
        let max = "g".repeat(128);
        let over = "g".repeat(129);
        let rows: Vec<(&str, bool)> = vec![
            ("g", true),
            (&max, true),
            (&over, false),
            ("", false),
            (r##"!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~"##, true),
            ("with space", false),
            ("ümlaut", false),
            ("tab\t", false),
        ];
        for (v, ok) in rows {
            let got = validate_fifo_id("MessageGroupId", v);
            assert_eq!(got.is_ok(), ok, "{v:?}");
            if let Err(e) = got {
                assert_eq!(e.code, "InvalidParameterValue");
                assert!(e.message.contains("MessageGroupId can only include alphanumeric and punctuation characters. 1 to 128 in length."));
            }
        }
    }

    #[test]
    fn ranges() {
        let rows = [
            ("DelaySeconds", 0, 900),
            ("MaxNumberOfMessages", 1, 10),
            ("WaitTimeSeconds", 0, 20),
            ("VisibilityTimeout", 0, 43_200),
        ];
        for (param, min, max) in rows {
            assert!(check_range(param, min, min, max).is_ok());
            assert!(check_range(param, max, min, max).is_ok());
            for bad in [min - 1, max + 1] {
                let e = check_range(param, bad, min, max).unwrap_err();
                assert_eq!(e.code, "InvalidParameterValue");
                assert_eq!(e.message, format!("Value {bad} for parameter {param} is invalid. Reason: Must be between {min} and {max}, if provided."));
            }
        }
    }

    #[test]
    fn send_fields_follow_queue_type() {
        let std_q = QueueAttributes {
            delay_seconds: 7,
            ..QueueAttributes::default()
        };
        let fifo = QueueAttributes::for_create("f.fifo", &map(&[("FifoQueue", "true")])).unwrap();
        let fifo_cbd = QueueAttributes::for_create(
            "f.fifo",
            &map(&[("FifoQueue", "true"), ("ContentBasedDeduplication", "true")]),
        )
        .unwrap();

        let got = resolve_send_fields(&std_q, "b", None, None, None).unwrap();
        assert_eq!(
            got,
            SendFields {
                delay_seconds: 7,
                message_group_id: None,
                deduplication_id: None
            }
        );
        assert_eq!(
            resolve_send_fields(&std_q, "b", Some(900), None, None)
                .unwrap()
                .delay_seconds,
            900
        );
        assert_eq!(
            resolve_send_fields(&std_q, "b", Some(901), None, None)
                .unwrap_err()
                .code,
            "InvalidParameterValue"
        );
        assert_eq!(
            resolve_send_fields(&std_q, "b", None, Some("tenant-1"), None)
                .unwrap()
                .message_group_id
                .as_deref(),
            Some("tenant-1")
        );
        assert_eq!(
            resolve_send_fields(&std_q, "b", None, None, Some("d"))
                .unwrap_err()
                .code,
            "InvalidParameterValue"
        );

        assert_eq!(
            resolve_send_fields(&fifo, "b", None, None, Some("d"))
                .unwrap_err()
                .code,
            "MissingParameter"
        );
        let e = resolve_send_fields(&fifo, "b", None, Some("g"), None).unwrap_err();
        assert!(e.message.contains("ContentBasedDeduplication"));
        let e = resolve_send_fields(&fifo, "b", Some(5), Some("g"), Some("d")).unwrap_err();
        assert!(
            e.message.contains("parameter DelaySeconds"),
            "{}",
            e.message
        );
        let got = resolve_send_fields(&fifo, "b", Some(0), Some("g"), Some("d")).unwrap();
        assert_eq!(
            got,
            SendFields {
                delay_seconds: 0,
                message_group_id: Some("g".into()),
                deduplication_id: Some("d".into())
            }
        );
        let got = resolve_send_fields(&fifo_cbd, "hello world", None, Some("g"), None).unwrap();
        assert_eq!(
            got.deduplication_id.as_deref(),
            Some("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
        );
        assert_eq!(
            resolve_send_fields(&fifo_cbd, "b", None, Some("bad group"), None)
                .unwrap_err()
                .code,
            "InvalidParameterValue"
        );
    }

    #[test]
    fn receive_params_default_to_the_queue() {
        let q = QueueAttributes {
            receive_message_wait_time_seconds: 20,
            visibility_timeout: 45,
            ..QueueAttributes::default()
        };
        assert_eq!(
            ReceiveParams::resolve(&q, None, None, None).unwrap(),
            ReceiveParams {
                max_number_of_messages: 1,
                wait_time_seconds: 20,
                visibility_timeout: 45
            }
        );
        assert_eq!(
            ReceiveParams::resolve(&q, Some(10), Some(0), Some(0)).unwrap(),
            ReceiveParams {
                max_number_of_messages: 10,
                wait_time_seconds: 0,
                visibility_timeout: 0
            }
        );
        for (m, w, v, param) in [
            (Some(0), None, None, "MaxNumberOfMessages"),
            (Some(11), None, None, "MaxNumberOfMessages"),
            (None, Some(21), None, "WaitTimeSeconds"),
            (None, None, Some(43_201), "VisibilityTimeout"),
        ] {
            let e = ReceiveParams::resolve(&q, m, w, v).unwrap_err();
            assert!(e.message.contains(param), "{}", e.message);
        }
    }
}
