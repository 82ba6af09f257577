//! Queues and event source mappings: the records the store keeps and their SQL.
//!
//! A queue is a row with its attributes as an opaque JSON document (the events crate owns their
//! shape); its messages are rows of one table ordered by `seq`. A message is visible when
//! `visible_ms <= now`; a receive moves `visible_ms` on by the visibility timeout, counts the
//! receive and gives the message a new receipt token, so only the latest receiver can delete it.
//! Every change arrives as a [`QueueOp`], and a batch of them is applied in one transaction
//! (the caller batches for group commit).

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::sqlite::backend;
use crate::store::StoreError;

/// A queue as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRecord {
    pub name: String,
    /// The queue's attributes as a JSON document (shape owned by the caller).
    pub attributes: String,
    pub tags: BTreeMap<String, String>,
    pub created_ms: i64,
    pub modified_ms: i64,
}

/// A message on its way into a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub message_id: String,
    pub body: String,
    /// Message attributes as JSON (`None`: none).
    pub attributes: Option<String>,
    /// Message system attributes (AWSTraceHeader) as JSON.
    pub system_attributes: Option<String>,
    pub md5_body: String,
    pub md5_attributes: Option<String>,
    pub sent_ms: i64,
    /// Not receivable before this time (the delay).
    pub visible_ms: i64,
    /// Deleted by retention at this time.
    pub expires_ms: i64,
    /// FIFO: the message group.
    pub group_id: Option<String>,
    /// FIFO: the deduplication key (its scope already folded in by the caller) and how long it
    /// stays remembered.
    pub dedup: Option<Dedup>,
}

/// A FIFO deduplication key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedup {
    /// The key within the queue (the deduplication id, prefixed by the group when deduplication
    /// is per message group).
    pub key: String,
    /// The deduplication id as the sender gave it (or as computed from the body).
    pub id: String,
    pub until_ms: i64,
}

/// A stored message as a receive returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub seq: i64,
    pub message_id: String,
    pub body: String,
    pub attributes: Option<String>,
    pub system_attributes: Option<String>,
    pub md5_body: String,
    pub md5_attributes: Option<String>,
    pub sent_ms: i64,
    /// Receives so far, this one included.
    pub receive_count: u32,
    pub first_receive_ms: Option<i64>,
    /// The token of this receive: with `seq` it forms the receipt handle.
    pub receipt: i64,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
}

/// Where a queue's messages go after too many receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    pub dead_letter_queue: String,
    pub max_receive_count: u32,
    /// The dead-letter queue's retention: a moved message expires this long after it was first
    /// sent (SQS keeps the original enqueue time).
    pub retention_ms: i64,
}

/// One change to a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueOp {
    Send {
        queue: String,
        messages: Vec<NewMessage>,
    },
    Receive {
        queue: String,
        max: usize,
        now_ms: i64,
        /// Received messages stay invisible until then.
        visible_until_ms: i64,
        /// FIFO: in `seq` order, and nothing from a group that has a message in flight.
        fifo: bool,
        redrive: Option<Redrive>,
        /// Each receive's token (the caller draws them so tokens are unpredictable).
        receipt: i64,
    },
    Delete {
        queue: String,
        /// (seq, receipt token) pairs.
        handles: Vec<(i64, i64)>,
    },
    ChangeVisibility {
        queue: String,
        now_ms: i64,
        /// (seq, receipt token, new visible_ms).
        entries: Vec<(i64, i64, i64)>,
    },
    Purge {
        queue: String,
    },
}

/// What a send did with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The stored message's id: the original's when this one was a duplicate.
    pub message_id: String,
    pub seq: i64,
    pub duplicate: bool,
}

/// What a delete or visibility change did with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleOutcome {
    /// Done.
    Done,
    /// The receipt is not the message's latest (it was received again since): nothing done.
    Stale,
    /// No such message (deleted already, expired or purged).
    Gone,
    /// A visibility change for a message that is not in flight.
    NotInFlight,
}

/// The results of ops applied in one transaction: the outer error fails them all (nothing
/// committed), an inner one is that op's own.
pub type QueueOpsResult = Result<Vec<Result<QueueOpResult, StoreError>>, StoreError>;

/// The result of one [`QueueOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueOpResult {
    Sent(Vec<Sent>),
    Received {
        messages: Vec<QueueMessage>,
        /// Messages moved to the dead-letter queue by this receive.
        moved: u32,
        /// When nothing was received: when the next invisible message becomes visible, if one
        /// does (a FIFO message held back by its group's lock is not counted: a delete or
        /// visibility change releases it).
        next_visible_ms: Option<i64>,
    },
    Handles(Vec<HandleOutcome>),
    Purged(u64),
}

/// A queue's message counts as GetQueueAttributes reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Receivable now.
    pub visible: u64,
    /// Received and not yet visible again.
    pub in_flight: u64,
    /// Never received and still delayed.
    pub delayed: u64,
}

/// An event source mapping as stored: the events crate owns the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSourceMappingDoc {
    pub uuid: String,
    pub function: String,
    pub source: String,
    pub doc: String,
}

pub(crate) const MIGRATION: &str = r#"
    CREATE TABLE queues (
        name TEXT PRIMARY KEY,
        attributes TEXT NOT NULL,
        tags TEXT NOT NULL DEFAULT '{}',
        created_ms INTEGER NOT NULL,
        modified_ms INTEGER NOT NULL
    );
    CREATE TABLE queue_messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL REFERENCES queues(name) ON DELETE CASCADE,
        message_id TEXT NOT NULL,
        body TEXT NOT NULL,
        attributes TEXT,
        system_attributes TEXT,
        md5_body TEXT NOT NULL,
        md5_attributes TEXT,
        sent_ms INTEGER NOT NULL,
        visible_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        receive_count INTEGER NOT NULL DEFAULT 0,
        first_receive_ms INTEGER,
        receipt INTEGER,
        group_id TEXT,
        dedup_id TEXT
    );
    CREATE INDEX queue_messages_visible ON queue_messages (queue, visible_ms);
    CREATE INDEX queue_messages_group ON queue_messages (queue, group_id, visible_ms) WHERE group_id IS NOT NULL;
    CREATE INDEX queue_messages_expiry ON queue_messages (expires_ms);
    CREATE TABLE queue_dedup (
        queue TEXT NOT NULL REFERENCES queues(name) ON DELETE CASCADE,
        key TEXT NOT NULL,
        message_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        until_ms INTEGER NOT NULL,
        PRIMARY KEY (queue, key)
    );
    CREATE TABLE event_source_mappings (
        uuid TEXT PRIMARY KEY,
        function TEXT NOT NULL,
        source TEXT NOT NULL,
        doc TEXT NOT NULL
    );
"#;

fn queue_row(r: &Row<'_>) -> rusqlite::Result<QueueRecord> {
    let tags: String = r.get(2)?;
    Ok(QueueRecord {
        name: r.get(0)?,
        attributes: r.get(1)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        created_ms: r.get(3)?,
        modified_ms: r.get(4)?,
    })
}

const QUEUE_COLUMNS: &str = "name, attributes, tags, created_ms, modified_ms";

fn not_found(queue: &str) -> StoreError {
    StoreError::NotFound(format!("queue {queue}"))
}

pub(crate) fn create_queue(conn: &Connection, q: &QueueRecord) -> Result<(), StoreError> {
    let tags = serde_json::to_string(&q.tags).map_err(backend)?;
    let n = conn
        .execute(
            "INSERT INTO queues (name, attributes, tags, created_ms, modified_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name) DO NOTHING",
            params![q.name, q.attributes, tags, q.created_ms, q.modified_ms],
        )
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::Conflict(format!("queue {} exists", q.name)));
    }
    Ok(())
}

pub(crate) fn get_queue(conn: &Connection, name: &str) -> Result<QueueRecord, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {QUEUE_COLUMNS} FROM queues WHERE name = ?1"
    ))
    .map_err(backend)?
    .query_row([name], queue_row)
    .optional()
    .map_err(backend)?
    .ok_or_else(|| not_found(name))
}

pub(crate) fn list_queues(conn: &Connection, prefix: &str) -> Result<Vec<QueueRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {QUEUE_COLUMNS} FROM queues WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name"
        ))
        .map_err(backend)?;
    let rows = stmt.query_map([prefix], queue_row).map_err(backend)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(backend)
}

pub(crate) fn update_queue(
    conn: &Connection,
    name: &str,
    attributes: Option<&str>,
    tags: Option<&BTreeMap<String, String>>,
    modified_ms: i64,
) -> Result<(), StoreError> {
    let tags = tags
        .map(serde_json::to_string)
        .transpose()
        .map_err(backend)?;
    let n = conn
        .execute(
            "UPDATE queues SET attributes = COALESCE(?2, attributes), tags = COALESCE(?3, tags),
                    modified_ms = CASE WHEN ?2 IS NULL THEN modified_ms ELSE ?4 END
             WHERE name = ?1",
            params![name, attributes, tags, modified_ms],
        )
        .map_err(backend)?;
    if n == 0 {
        return Err(not_found(name));
    }
    Ok(())
}

pub(crate) fn delete_queue(conn: &Connection, name: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM queue_messages WHERE queue = ?1", [name])
        .map_err(backend)?;
    conn.execute("DELETE FROM queue_dedup WHERE queue = ?1", [name])
        .map_err(backend)?;
    let n = conn
        .execute("DELETE FROM queues WHERE name = ?1", [name])
        .map_err(backend)?;
    if n == 0 {
        return Err(not_found(name));
    }
    Ok(())
}

pub(crate) fn queue_counts(
    conn: &Connection,
    name: &str,
    now_ms: i64,
) -> Result<QueueCounts, StoreError> {
    get_queue(conn, name)?;
    conn.prepare_cached(
        "SELECT COALESCE(SUM(visible_ms <= ?2), 0),
                COALESCE(SUM(visible_ms > ?2 AND receive_count > 0), 0),
                COALESCE(SUM(visible_ms > ?2 AND receive_count = 0), 0)
         FROM queue_messages WHERE queue = ?1 AND expires_ms > ?2",
    )
    .map_err(backend)?
    .query_row(params![name, now_ms], |r| {
        Ok(QueueCounts {
            visible: r.get::<_, i64>(0)? as u64,
            in_flight: r.get::<_, i64>(1)? as u64,
            delayed: r.get::<_, i64>(2)? as u64,
        })
    })
    .map_err(backend)
}

/// Deletes messages past their retention and forgotten deduplication keys.
pub(crate) fn expire_messages(conn: &Connection, now_ms: i64) -> Result<u64, StoreError> {
    let n = conn
        .execute(
            "DELETE FROM queue_messages WHERE expires_ms <= ?1",
            [now_ms],
        )
        .map_err(backend)?;
    conn.execute("DELETE FROM queue_dedup WHERE until_ms <= ?1", [now_ms])
        .map_err(backend)?;
    Ok(n as u64)
}

fn queue_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM queues WHERE name = ?1")
        .map_err(backend)?
        .exists([name])
        .map_err(backend)
}

/// Applies one op. `Err` is this op's own failure (an unknown queue); the transaction goes on.
/// Applies `ops` in order; a backend failure stops and fails them all.
pub(crate) fn apply_all(conn: &Connection, ops: &[QueueOp]) -> QueueOpsResult {
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        match apply(conn, op) {
            Err(StoreError::Backend(e)) => return Err(StoreError::Backend(e)),
            r => out.push(r),
        }
    }
    Ok(out)
}

pub(crate) fn apply(conn: &Connection, op: &QueueOp) -> Result<QueueOpResult, StoreError> {
    match op {
        QueueOp::Send { queue, messages } => {
            if !queue_exists(conn, queue)? {
                return Err(not_found(queue));
            }
            messages
                .iter()
                .map(|m| send(conn, queue, m))
                .collect::<Result<Vec<_>, _>>()
                .map(QueueOpResult::Sent)
        }
        QueueOp::Receive {
            queue,
            max,
            now_ms,
            visible_until_ms,
            fifo,
            redrive,
            receipt,
        } => {
            if !queue_exists(conn, queue)? {
                return Err(not_found(queue));
            }
            receive(
                conn,
                queue,
                *max,
                *now_ms,
                *visible_until_ms,
                *fifo,
                redrive.as_ref(),
                *receipt,
            )
        }
        QueueOp::Delete { queue, handles } => {
            if !queue_exists(conn, queue)? {
                return Err(not_found(queue));
            }
            let mut out = Vec::with_capacity(handles.len());
            for &(seq, receipt) in handles {
                out.push(match current_receipt(conn, queue, seq)? {
                    None => HandleOutcome::Gone,
                    Some(r) if r != Some(receipt) => HandleOutcome::Stale,
                    Some(_) => {
                        conn.prepare_cached("DELETE FROM queue_messages WHERE seq = ?1")
                            .map_err(backend)?
                            .execute([seq])
                            .map_err(backend)?;
                        HandleOutcome::Done
                    }
                });
            }
            Ok(QueueOpResult::Handles(out))
        }
        QueueOp::ChangeVisibility {
            queue,
            now_ms,
            entries,
        } => {
            if !queue_exists(conn, queue)? {
                return Err(not_found(queue));
            }
            let mut out = Vec::with_capacity(entries.len());
            for &(seq, receipt, visible_ms) in entries {
                let row: Option<(Option<i64>, i64)> = conn
                    .prepare_cached(
                        "SELECT receipt, visible_ms FROM queue_messages WHERE seq = ?1 AND queue = ?2",
                    )
                    .map_err(backend)?
                    .query_row(params![seq, queue], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(backend)?;
                out.push(match row {
                    None => HandleOutcome::Gone,
                    Some((r, _)) if r != Some(receipt) => HandleOutcome::Stale,
                    Some((_, v)) if v <= *now_ms => HandleOutcome::NotInFlight,
                    Some(_) => {
                        conn.prepare_cached(
                            "UPDATE queue_messages SET visible_ms = ?2 WHERE seq = ?1",
                        )
                        .map_err(backend)?
                        .execute(params![seq, visible_ms])
                        .map_err(backend)?;
                        HandleOutcome::Done
                    }
                });
            }
            Ok(QueueOpResult::Handles(out))
        }
        QueueOp::Purge { queue } => {
            if !queue_exists(conn, queue)? {
                return Err(not_found(queue));
            }
            let n = conn
                .execute("DELETE FROM queue_messages WHERE queue = ?1", [queue])
                .map_err(backend)?;
            Ok(QueueOpResult::Purged(n as u64))
        }
    }
}

/// `None`: no such message in the queue; `Some(None)`: never received.
fn current_receipt(
    conn: &Connection,
    queue: &str,
    seq: i64,
) -> Result<Option<Option<i64>>, StoreError> {
    conn.prepare_cached("SELECT receipt FROM queue_messages WHERE seq = ?1 AND queue = ?2")
        .map_err(backend)?
        .query_row(params![seq, queue], |r| r.get::<_, Option<i64>>(0))
        .optional()
        .map_err(backend)
}

fn send(conn: &Connection, queue: &str, m: &NewMessage) -> Result<Sent, StoreError> {
    if let Some(d) = &m.dedup {
        let seen: Option<(String, i64)> = conn
            .prepare_cached(
                "SELECT message_id, seq FROM queue_dedup WHERE queue = ?1 AND key = ?2 AND until_ms > ?3",
            )
            .map_err(backend)?
            .query_row(params![queue, d.key, m.sent_ms], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(backend)?;
        if let Some((message_id, seq)) = seen {
            return Ok(Sent {
                message_id,
                seq,
                duplicate: true,
            });
        }
    }
    conn.prepare_cached(
        "INSERT INTO queue_messages (queue, message_id, body, attributes, system_attributes, md5_body,
             md5_attributes, sent_ms, visible_ms, expires_ms, group_id, dedup_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .map_err(backend)?
    .execute(params![
        queue,
        m.message_id,
        m.body,
        m.attributes,
        m.system_attributes,
        m.md5_body,
        m.md5_attributes,
        m.sent_ms,
        m.visible_ms,
        m.expires_ms,
        m.group_id,
        m.dedup.as_ref().map(|d| d.id.as_str()),
    ])
    .map_err(backend)?;
    let seq = conn.last_insert_rowid();
    if let Some(d) = &m.dedup {
        conn.prepare_cached(
            "INSERT INTO queue_dedup (queue, key, message_id, seq, until_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (queue, key) DO UPDATE SET message_id = ?3, seq = ?4, until_ms = ?5",
        )
        .map_err(backend)?
        .execute(params![queue, d.key, m.message_id, seq, d.until_ms])
        .map_err(backend)?;
    }
    Ok(Sent {
        message_id: m.message_id.clone(),
        seq,
        duplicate: false,
    })
}

const MESSAGE_COLUMNS: &str =
    "seq, message_id, body, attributes, system_attributes, md5_body, md5_attributes,
     sent_ms, receive_count, first_receive_ms, receipt, group_id, dedup_id";

fn message_row(r: &Row<'_>) -> rusqlite::Result<QueueMessage> {
    Ok(QueueMessage {
        seq: r.get(0)?,
        message_id: r.get(1)?,
        body: r.get(2)?,
        attributes: r.get(3)?,
        system_attributes: r.get(4)?,
        md5_body: r.get(5)?,
        md5_attributes: r.get(6)?,
        sent_ms: r.get(7)?,
        receive_count: r.get::<_, i64>(8)? as u32,
        first_receive_ms: r.get(9)?,
        receipt: r.get::<_, Option<i64>>(10)?.unwrap_or(0),
        group_id: r.get(11)?,
        dedup_id: r.get(12)?,
    })
}

/// Candidates for a receive: (seq, receive_count, sent_ms).
fn candidates(
    conn: &Connection,
    queue: &str,
    now_ms: i64,
    fifo: bool,
    limit: usize,
) -> Result<Vec<(i64, u32, i64)>, StoreError> {
    // Standard queues: oldest visible first, in index order. FIFO: `seq` order, skipping every
    // group with a message in flight (received and not yet visible again).
    let sql = if fifo {
        "SELECT seq, receive_count, sent_ms FROM queue_messages m
         WHERE queue = ?1 AND visible_ms <= ?2 AND expires_ms > ?2
           AND NOT EXISTS (SELECT 1 FROM queue_messages f
                           WHERE f.queue = ?1 AND f.group_id = m.group_id AND f.visible_ms > ?2
                             AND f.receive_count > 0)
         ORDER BY seq LIMIT ?3"
    } else {
        "SELECT seq, receive_count, sent_ms FROM queue_messages
         WHERE queue = ?1 AND visible_ms <= ?2 AND expires_ms > ?2
         ORDER BY visible_ms LIMIT ?3"
    };
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt
        .query_map(params![queue, now_ms, limit as i64], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u32, r.get(2)?))
        })
        .map_err(backend)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(backend)
}

#[allow(clippy::too_many_arguments)]
fn receive(
    conn: &Connection,
    queue: &str,
    max: usize,
    now_ms: i64,
    visible_until_ms: i64,
    fifo: bool,
    redrive: Option<&Redrive>,
    receipt: i64,
) -> Result<QueueOpResult, StoreError> {
    let redrive = match redrive {
        Some(r) if r.dead_letter_queue != queue && queue_exists(conn, &r.dead_letter_queue)? => {
            Some(r)
        }
        _ => None,
    };
    let mut messages = Vec::new();
    let mut moved = 0u32;
    // Messages moved to the dead-letter queue leave room for others: look again, a bounded
    // number of times.
    for _ in 0..8 {
        let want = max - messages.len();
        let found = candidates(conn, queue, now_ms, fifo, want)?;
        let exhausted = found.len() < want;
        let mut moved_now = 0;
        for (seq, receive_count, sent_ms) in found {
            if let Some(r) = redrive.filter(|r| receive_count >= r.max_receive_count) {
                conn.prepare_cached(
                    "UPDATE queue_messages SET queue = ?2, visible_ms = ?3, expires_ms = ?4,
                         receive_count = 0, first_receive_ms = NULL, receipt = NULL
                     WHERE seq = ?1",
                )
                .map_err(backend)?
                .execute(params![
                    seq,
                    r.dead_letter_queue,
                    now_ms,
                    sent_ms + r.retention_ms
                ])
                .map_err(backend)?;
                moved_now += 1;
                continue;
            }
            let m = conn
                .prepare_cached(&format!(
                    "UPDATE queue_messages SET visible_ms = ?2, receive_count = receive_count + 1,
                         first_receive_ms = COALESCE(first_receive_ms, ?3), receipt = ?4
                     WHERE seq = ?1 RETURNING {MESSAGE_COLUMNS}"
                ))
                .map_err(backend)?
                .query_row(params![seq, visible_until_ms, now_ms, receipt], message_row)
                .map_err(backend)?;
            messages.push(m);
        }
        moved += moved_now;
        if exhausted || moved_now == 0 || messages.len() >= max {
            break;
        }
    }
    let next_visible_ms = if messages.is_empty() {
        conn.prepare_cached(
            "SELECT MIN(visible_ms) FROM queue_messages WHERE queue = ?1 AND visible_ms > ?2 AND expires_ms > ?2",
        )
        .map_err(backend)?
        .query_row(params![queue, now_ms], |r| r.get::<_, Option<i64>>(0))
        .map_err(backend)?
    } else {
        None
    };
    Ok(QueueOpResult::Received {
        messages,
        moved,
        next_visible_ms,
    })
}

pub(crate) fn put_mapping(conn: &Connection, m: &EventSourceMappingDoc) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO event_source_mappings (uuid, function, source, doc) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (uuid) DO UPDATE SET function = ?2, source = ?3, doc = ?4",
        params![m.uuid, m.function, m.source, m.doc],
    )
    .map_err(backend)?;
    Ok(())
}

fn mapping_row(r: &Row<'_>) -> rusqlite::Result<EventSourceMappingDoc> {
    Ok(EventSourceMappingDoc {
        uuid: r.get(0)?,
        function: r.get(1)?,
        source: r.get(2)?,
        doc: r.get(3)?,
    })
}

pub(crate) fn get_mapping(
    conn: &Connection,
    uuid: &str,
) -> Result<EventSourceMappingDoc, StoreError> {
    conn.query_row(
        "SELECT uuid, function, source, doc FROM event_source_mappings WHERE uuid = ?1",
        [uuid],
        mapping_row,
    )
    .optional()
    .map_err(backend)?
    .ok_or_else(|| StoreError::NotFound(format!("event source mapping {uuid}")))
}

pub(crate) fn list_mappings(conn: &Connection) -> Result<Vec<EventSourceMappingDoc>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT uuid, function, source, doc FROM event_source_mappings ORDER BY uuid")
        .map_err(backend)?;
    let rows = stmt.query_map([], mapping_row).map_err(backend)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(backend)
}

pub(crate) fn delete_mapping(conn: &Connection, uuid: &str) -> Result<(), StoreError> {
    let n = conn
        .execute("DELETE FROM event_source_mappings WHERE uuid = ?1", [uuid])
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("event source mapping {uuid}")));
    }
    Ok(())
}
