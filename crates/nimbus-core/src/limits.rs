//! Lambda's quotas, as Nimbus enforces them.

/// Limits on function configuration and invocation payloads. The defaults are Lambda's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits;

impl Limits {
    pub const MEMORY_MIN_MB: u32 = 128;
    pub const MEMORY_MAX_MB: u32 = 10_240;
    pub const MEMORY_DEFAULT_MB: u32 = 128;
    pub const TIMEOUT_MIN_S: u32 = 1;
    pub const TIMEOUT_MAX_S: u32 = 900;
    pub const TIMEOUT_DEFAULT_S: u32 = 3;
    pub const EPHEMERAL_MIN_MB: u32 = 512;
    pub const EPHEMERAL_MAX_MB: u32 = 10_240;
    pub const EPHEMERAL_DEFAULT_MB: u32 = 512;
    /// Synchronous request and response payloads.
    pub const SYNC_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
    /// Asynchronous (Event) payloads.
    pub const ASYNC_PAYLOAD_BYTES: usize = 256 * 1024;
    /// A zip uploaded directly in CreateFunction / UpdateFunctionCode (Lambda: 50 MB zipped).
    pub const ZIP_BYTES: usize = 50 * 1024 * 1024;
    /// Unpacked code (Lambda: 250 MB); beyond it an archive is refused as a zip bomb.
    pub const UNZIPPED_BYTES: u64 = 250 * 1024 * 1024;
    /// Files in one archive.
    pub const ZIP_ENTRIES: usize = 20_000;
    /// Environment variables, all keys and values together (Lambda: 4 KB).
    pub const ENV_BYTES: usize = 4 * 1024;
    pub const DESCRIPTION_CHARS: usize = 256;
    /// Processes and threads per instance (Lambda: 1024).
    pub const PIDS_PER_INSTANCE: u32 = 1024;
    /// Output one invocation may print before the rest is dropped.
    pub const LOG_BYTES_PER_INVOCATION: usize = 1024 * 1024;
    /// The `X-Amz-Log-Result` tail (Lambda: last 4 KB).
    pub const LOG_TAIL_BYTES: usize = 4 * 1024;
}
