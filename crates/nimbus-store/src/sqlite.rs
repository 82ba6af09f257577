//! The embedded store: one SQLite database file in WAL mode, migrated on open.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use nimbus_core::{Alias, AliasRouting, FunctionConfig, FunctionVersion, VersionId};
use rusqlite::{params, Connection, OptionalExtension, Row};
use rusqlite_migration::{Migrations, M};

use crate::queues::{
    self, EventSourceMappingDoc, QueueCounts, QueueOp, QueueOpsResult, QueueRecord,
};
use crate::store::{
    AsyncEvent, EventInvokeConfig, FunctionRecord, GatewayApiDoc, GatewayDeploymentDoc, LogEvent,
    LogQuery, MetricMinute, NewAsyncEvent, NewLogEvent, Page, ProvisionedConfig, ScheduleRecord,
    Store, StoreError,
};

/// Schema history. Append only: a released migration is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: functions, versions, aliases, log events.
    r#"
    CREATE TABLE functions (
        name TEXT PRIMARY KEY,
        created_ms INTEGER NOT NULL,
        tags TEXT NOT NULL DEFAULT '{}',
        reserved_concurrency INTEGER,
        next_version INTEGER NOT NULL DEFAULT 1
    );
    -- version 0 is $LATEST
    CREATE TABLE versions (
        function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        config TEXT NOT NULL,
        code_sha256 TEXT NOT NULL,
        code_size INTEGER NOT NULL,
        last_modified_ms INTEGER NOT NULL,
        revision_id TEXT NOT NULL,
        PRIMARY KEY (function, version)
    );
    CREATE TABLE aliases (
        function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        description TEXT NOT NULL,
        routing_version INTEGER,
        routing_weight REAL,
        revision_id TEXT NOT NULL,
        PRIMARY KEY (function, name)
    );
    CREATE TABLE log_events (
        id INTEGER PRIMARY KEY,
        function TEXT NOT NULL,
        stream TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        request_id TEXT,
        message TEXT NOT NULL
    );
    CREATE INDEX log_events_function_id ON log_events (function, id);
    CREATE INDEX log_events_ts ON log_events (ts_ms);
    "#,
    // 2: per-minute execution metrics. No foreign key: a deleted function's minutes stay until
    // retention removes them. Histograms are JSON arrays of [bucket index, count].
    r#"
    CREATE TABLE metric_minutes (
        function TEXT NOT NULL,
        version TEXT NOT NULL,
        minute_ms INTEGER NOT NULL,
        invocations INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        throttles INTEGER NOT NULL,
        cold_starts INTEGER NOT NULL,
        provisioned_invocations INTEGER NOT NULL,
        duration_sum_ms REAL NOT NULL,
        duration_max_ms REAL NOT NULL,
        duration_buckets TEXT NOT NULL,
        init_duration_max_ms REAL NOT NULL,
        init_duration_buckets TEXT NOT NULL,
        concurrency_max INTEGER NOT NULL,
        provisioned_utilization_max REAL,
        PRIMARY KEY (function, version, minute_ms)
    );
    CREATE INDEX metric_minutes_minute ON metric_minutes (minute_ms);
    "#,
    // 3: provisioned concurrency configurations.
    r#"
    CREATE TABLE provisioned_concurrency (
        function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        qualifier TEXT NOT NULL,
        requested INTEGER NOT NULL,
        last_modified_ms INTEGER NOT NULL,
        PRIMARY KEY (function, qualifier)
    );
    "#,
    // 4: API gateway resources. An API (its routes, integrations, stages, CORS) is one JSON
    // document the gateway crate defines, replaced whole under a revision check; deployments are
    // immutable snapshots of it; custom domain names map a host to an API's stage.
    r#"
    CREATE TABLE gateway_apis (
        api_id TEXT PRIMARY KEY,
        revision INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE TABLE gateway_deployments (
        api_id TEXT NOT NULL REFERENCES gateway_apis(api_id) ON DELETE CASCADE,
        deployment_id TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (api_id, deployment_id)
    );
    CREATE TABLE gateway_domains (
        domain_name TEXT PRIMARY KEY,
        doc TEXT NOT NULL
    );
    "#,
    // 5: durable asynchronous invocations and their per-function configuration. An event is
    // due at `next_attempt_ms`; a dispatcher that claims it sets `leased_until_ms`, and a
    // server that starts clears every lease (the single node's leases died with it).
    r#"
    CREATE TABLE async_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL,
        function TEXT NOT NULL,
        qualifier TEXT,
        payload BLOB NOT NULL,
        received_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        leased_until_ms INTEGER
    );
    CREATE INDEX async_events_due ON async_events (next_attempt_ms);
    CREATE TABLE event_invoke_configs (
        function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        qualifier TEXT NOT NULL,
        max_retry_attempts INTEGER,
        max_event_age_s INTEGER,
        on_success TEXT,
        on_failure TEXT,
        last_modified_ms INTEGER NOT NULL,
        PRIMARY KEY (function, qualifier)
    );
    "#,
    // 6: schedules. `next_fire_ms` is the period a schedule fires for next; firing moves it on
    // in the same transaction that stores the asynchronous event, so a period fires once.
    r#"
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        expression TEXT NOT NULL,
        timezone TEXT NOT NULL,
        function TEXT NOT NULL,
        input TEXT,
        enabled INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        next_fire_ms INTEGER,
        last_fire_ms INTEGER
    );
    "#,
    // 7: queues, their messages, FIFO deduplication keys, event source mappings.
    crate::queues::MIGRATION,
    // 8: asynchronous events held while their function is paused (reserved concurrency 0):
    // due only when they pass their maximum age, released when the concurrency changes.
    r#"
    ALTER TABLE async_events ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX async_events_held ON async_events (function) WHERE held = 1;
    CREATE INDEX async_events_leased ON async_events (leased_until_ms) WHERE leased_until_ms IS NOT NULL;
    "#,
    // 9: log events lose their index on time. Only retention used it, and every log line paid
    // for it (three per invocation); retention now finds its cut by id, since events are
    // stored in the order they were written.
    r#"
    DROP INDEX log_events_ts;
    "#,
];

/// Prepared statements kept per connection (more than the store has).
const STATEMENT_CACHE: usize = 256;

/// The SQLite-backed [`Store`]. Calls run on tokio's blocking pool, one connection behind a mutex
/// (SQLite serialises writers anyway); queue ops may also run on the caller's thread when the
/// connection is free (`queue_ops_now`).
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Functions, versions and aliases as last read: every invocation looks them up, and they
    /// change only through this store's metadata writes, which clear the cache.
    cache: Arc<Mutex<MetaCache>>,
}

/// Read-through cache of metadata lookups. `generation` moves on every metadata write, so a
/// lookup that raced a write does not put the old value back.
#[derive(Default)]
struct MetaCache {
    generation: u64,
    /// Shared, so a lookup copies a pointer, not the record.
    functions: HashMap<String, Arc<FunctionRecord>>,
    /// By function, then version: a lookup by `&str` needs no key of its own.
    versions: HashMap<String, HashMap<VersionId, Arc<FunctionVersion>>>,
    aliases: HashMap<(String, String), Alias>,
}

fn schedule_row(r: &Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        name: r.get(0)?,
        expression: r.get(1)?,
        timezone: r.get(2)?,
        function: r.get(3)?,
        input: r.get(4)?,
        enabled: r.get(5)?,
        created_ms: r.get(6)?,
        next_fire_ms: r.get(7)?,
        last_fire_ms: r.get(8)?,
    })
}

fn event_invoke_config_row(r: &Row<'_>) -> rusqlite::Result<EventInvokeConfig> {
    Ok(EventInvokeConfig {
        function: r.get(0)?,
        qualifier: r.get(1)?,
        max_retry_attempts: r.get(2)?,
        max_event_age_s: r.get(3)?,
        on_success: r.get(4)?,
        on_failure: r.get(5)?,
        last_modified_ms: r.get(6)?,
    })
}

fn gateway_api_row(r: &Row<'_>) -> rusqlite::Result<GatewayApiDoc> {
    Ok(GatewayApiDoc {
        api_id: r.get(0)?,
        revision: r.get::<_, i64>(1)? as u64,
        doc: r.get(2)?,
    })
}

fn gateway_deployment_row(r: &Row<'_>) -> rusqlite::Result<GatewayDeploymentDoc> {
    Ok(GatewayDeploymentDoc {
        deployment_id: r.get(0)?,
        created_ms: r.get(1)?,
        doc: r.get(2)?,
    })
}

pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn version_num(v: VersionId) -> i64 {
    match v {
        VersionId::Latest => 0,
        VersionId::Published(n) => n as i64,
    }
}

fn version_id(n: i64) -> VersionId {
    if n == 0 {
        VersionId::Latest
    } else {
        VersionId::Published(n as u64)
    }
}

fn row_to_version(row: &Row) -> rusqlite::Result<FunctionVersion> {
    let config_json: String = row.get("config")?;
    let config: FunctionConfig = serde_json::from_str(&config_json).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(FunctionVersion {
        function: row.get("function")?,
        version: version_id(row.get("version")?),
        config,
        code_sha256: row.get("code_sha256")?,
        code_size: row.get::<_, i64>("code_size")? as u64,
        last_modified_ms: row.get("last_modified_ms")?,
        revision_id: row.get("revision_id")?,
    })
}

fn row_to_alias(row: &Row) -> rusqlite::Result<Alias> {
    let routing_version: Option<i64> = row.get("routing_version")?;
    let routing_weight: Option<f64> = row.get("routing_weight")?;
    Ok(Alias {
        function: row.get("function")?,
        name: row.get("name")?,
        function_version: version_id(row.get("version")?),
        description: row.get("description")?,
        routing: match (routing_version, routing_weight) {
            (Some(v), Some(w)) => Some(AliasRouting {
                additional_version: v as u64,
                weight: w,
            }),
            _ => None,
        },
        revision_id: row.get("revision_id")?,
    })
}

fn buckets_json(buckets: &[(u16, u64)]) -> Result<String, StoreError> {
    serde_json::to_string(buckets).map_err(backend)
}

fn buckets_from_json(text: &str) -> rusqlite::Result<Vec<(u16, u64)>> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn row_to_metric_minute(row: &Row) -> rusqlite::Result<MetricMinute> {
    let count = |name: &str| row.get::<_, i64>(name).map(|n| n.max(0) as u64);
    Ok(MetricMinute {
        function: row.get("function")?,
        version: row.get("version")?,
        minute_ms: row.get("minute_ms")?,
        invocations: count("invocations")?,
        errors: count("errors")?,
        throttles: count("throttles")?,
        cold_starts: count("cold_starts")?,
        provisioned_invocations: count("provisioned_invocations")?,
        duration_sum_ms: row.get("duration_sum_ms")?,
        duration_max_ms: row.get("duration_max_ms")?,
        duration_buckets: buckets_from_json(&row.get::<_, String>("duration_buckets")?)?,
        init_duration_max_ms: row.get("init_duration_max_ms")?,
        init_duration_buckets: buckets_from_json(&row.get::<_, String>("init_duration_buckets")?)?,
        concurrency_max: count("concurrency_max")?,
        provisioned_utilization_max: row.get("provisioned_utilization_max")?,
    })
}

fn insert_version(tx: &Connection, v: &FunctionVersion) -> Result<(), StoreError> {
    let config = serde_json::to_string(&v.config).map_err(backend)?;
    tx.execute(
        "INSERT OR REPLACE INTO versions (function, version, config, code_sha256, code_size, last_modified_ms, revision_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![v.function, version_num(v.version), config, v.code_sha256, v.code_size as i64, v.last_modified_ms, v.revision_id],
    )
    .map_err(backend)?;
    Ok(())
}

fn function_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT 1 FROM functions WHERE name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
    .map_err(backend)
}

fn load_function(conn: &Connection, name: &str) -> Result<FunctionRecord, StoreError> {
    conn.query_row(
        "SELECT name, created_ms, tags, reserved_concurrency FROM functions WHERE name = ?1",
        [&name],
        |row| {
            let tags: String = row.get(2)?;
            Ok(FunctionRecord {
                name: row.get(0)?,
                created_ms: row.get(1)?,
                tags: serde_json::from_str(&tags).unwrap_or_default(),
                reserved_concurrency: row.get(3)?,
            })
        },
    )
    .optional()
    .map_err(backend)?
    .ok_or_else(|| StoreError::NotFound(format!("function {name}")))
}

fn require_function(conn: &Connection, name: &str) -> Result<(), StoreError> {
    if function_exists(conn, name)? {
        Ok(())
    } else {
        Err(StoreError::NotFound(format!("function {name}")))
    }
}

fn load_version(
    conn: &Connection,
    name: &str,
    version: VersionId,
) -> Result<FunctionVersion, StoreError> {
    conn.query_row(
        "SELECT * FROM versions WHERE function = ?1 AND version = ?2",
        params![name, version_num(version)],
        row_to_version,
    )
    .optional()
    .map_err(backend)?
    .ok_or_else(|| match version {
        VersionId::Latest => StoreError::NotFound(format!("function {name}")),
        v => StoreError::NotFound(format!("version {v} of function {name}")),
    })
}

fn load_alias(conn: &Connection, function: &str, name: &str) -> Result<Alias, StoreError> {
    require_function(conn, function)?;
    conn.query_row(
        "SELECT * FROM aliases WHERE function = ?1 AND name = ?2",
        params![function, name],
        row_to_alias,
    )
    .optional()
    .map_err(backend)?
    .ok_or_else(|| StoreError::NotFound(format!("alias {name} of function {function}")))
}

fn check_alias_targets(conn: &Connection, alias: &Alias) -> Result<(), StoreError> {
    load_version(conn, &alias.function, alias.function_version)?;
    if let Some(r) = &alias.routing {
        load_version(
            conn,
            &alias.function,
            VersionId::Published(r.additional_version),
        )?;
    }
    Ok(())
}

fn write_alias(conn: &Connection, alias: &Alias, replace: bool) -> Result<(), StoreError> {
    let sql = if replace {
        "INSERT OR REPLACE INTO aliases (function, name, version, description, routing_version, routing_weight, revision_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    } else {
        "INSERT INTO aliases (function, name, version, description, routing_version, routing_weight, revision_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    };
    conn.execute(
        sql,
        params![
            alias.function,
            alias.name,
            version_num(alias.function_version),
            alias.description,
            alias.routing.as_ref().map(|r| r.additional_version as i64),
            alias.routing.as_ref().map(|r| r.weight),
            alias.revision_id
        ],
    )
    .map_err(backend)?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let mut conn = Connection::open(path)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        Self::prepare(&mut conn)?;
        // Checkpoints (copying the WAL into the database file, with an fsync) run on a thread
        // of their own instead of inside whichever commit crosses SQLite's threshold, so no
        // request pays for one, and a queue op run on an async worker never holds it up.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(backend)?;
        let store = SqliteStore::from_conn(conn);
        spawn_checkpointer(Arc::downgrade(&store.conn))?;
        Ok(store)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let mut conn = Connection::open_in_memory().map_err(backend)?;
        Self::prepare(&mut conn)?;
        Ok(SqliteStore::from_conn(conn))
    }

    fn from_conn(conn: Connection) -> SqliteStore {
        SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            cache: Arc::new(Mutex::new(MetaCache::default())),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, MetaCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A cached lookup: `get` reads the cache, `load` makes (only on a miss, so a hit copies
    /// no key into it) what reads the database, `put` fills the cache.
    async fn cached<T, G, M, L, P>(&self, get: G, load: M, put: P) -> Result<T, StoreError>
    where
        T: Clone + Send + 'static,
        G: FnOnce(&MetaCache) -> Option<T>,
        M: FnOnce() -> L,
        L: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
        P: FnOnce(&mut MetaCache, T),
    {
        let generation = {
            let c = self.cache();
            if let Some(hit) = get(&c) {
                return Ok(hit);
            }
            c.generation
        };
        let value = self.with(load()).await?;
        let mut c = self.cache();
        if c.generation == generation {
            put(&mut c, value.clone());
        }
        Ok(value)
    }

    /// Runs `f` inside one IMMEDIATE transaction that changes functions, versions or aliases,
    /// and forgets every cached lookup (before and after, so no reader re-caches old rows).
    async fn meta_tx<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.forget();
        let out = self.tx(f).await;
        self.forget();
        out
    }

    /// Loads `name`'s function record and `$LATEST` into the cache in one trip to the
    /// database, after a write changed them: the invocation that usually follows a deploy or
    /// a configuration change (a cold start) then finds them cached. Best effort: a failed load
    /// leaves the cache as it was.
    async fn preload_latest(&self, name: &str) {
        let generation = self.cache().generation;
        let name = name.to_string();
        let loaded = self
            .with(move |conn| {
                Ok((
                    load_function(conn, &name)?,
                    load_version(conn, &name, VersionId::Latest)?,
                ))
            })
            .await;
        if let Ok((function, latest)) = loaded {
            let mut c = self.cache();
            if c.generation == generation {
                c.versions
                    .entry(latest.function.clone())
                    .or_default()
                    .insert(VersionId::Latest, Arc::new(latest));
                c.functions
                    .insert(function.name.clone(), Arc::new(function));
            }
        }
    }

    fn forget(&self) {
        let mut c = self.cache();
        c.generation += 1;
        c.functions.clear();
        c.versions.clear();
        c.aliases.clear();
    }

    fn prepare(conn: &mut Connection) -> Result<(), StoreError> {
        // Every hot statement is prepared once and kept: rusqlite's default cache of 16 is
        // smaller than the statements the engines take turns with (queues, async events,
        // logs, metadata), and a statement pushed out is parsed again on its next use.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // WAL lets readers proceed during writes; NORMAL sync keeps commits durable across a
        // process crash (only an OS crash can lose the last commits), which is the promise for
        // metadata and logs.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )
        .map_err(backend)?;
        let migrations = Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect());
        migrations
            .to_latest(conn)
            .map_err(|e| StoreError::Backend(format!("migrating the database schema: {e}")))?;
        Ok(())
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Backend("database lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    /// Runs `f` inside one IMMEDIATE transaction.
    async fn tx<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.with(move |conn| in_tx(conn, f)).await
    }
}

/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Starts the thread that checkpoints the WAL every [`CHECKPOINT_EVERY`] (PASSIVE: it copies
/// what it can and never waits), until the store is dropped. With the connection busy it
/// waits its turn like any other caller; an idle database makes it a no-op.
fn spawn_checkpointer(conn: std::sync::Weak<Mutex<Connection>>) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("nimbus-checkpoint".into())
        .spawn(move || loop {
            std::thread::sleep(CHECKPOINT_EVERY);
            let Some(conn) = conn.upgrade() else {
                return;
            };
            let Ok(conn) = conn.lock() else {
                return;
            };
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "checkpointing the store's WAL failed");
            }
        })
        .map(|_| ())
        .map_err(|e| StoreError::Backend(format!("starting the checkpoint thread: {e}")))
}

/// Runs `f` inside one IMMEDIATE transaction on `conn`, committing if it succeeds.
fn in_tx<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(backend)?;
    let out = f(&tx)?;
    tx.commit().map_err(backend)?;
    Ok(out)
}

fn parse_marker(marker: Option<&str>) -> Result<Option<i64>, StoreError> {
    marker
        .map(|m| {
            if m == nimbus_core::LATEST {
                Ok(0)
            } else {
                m.parse::<i64>().map_err(|_| {
                    StoreError::Invalid(format!("marker {m:?} is not one this API returned"))
                })
            }
        })
        .transpose()
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_function(
        &self,
        record: FunctionRecord,
        latest: FunctionVersion,
    ) -> Result<(), StoreError> {
        let name = record.name.clone();
        self.meta_tx(move |tx| {
            if function_exists(tx, &record.name)? {
                return Err(StoreError::Conflict(format!("Function already exist: {}", record.name)));
            }
            let tags = serde_json::to_string(&record.tags).map_err(backend)?;
            tx.execute(
                "INSERT INTO functions (name, created_ms, tags, reserved_concurrency) VALUES (?1, ?2, ?3, ?4)",
                params![record.name, record.created_ms, tags, record.reserved_concurrency],
            )
            .map_err(backend)?;
            insert_version(tx, &latest)
        })
        .await?;
        self.preload_latest(&name).await;
        Ok(())
    }

    async fn get_function(&self, name: &str) -> Result<FunctionRecord, StoreError> {
        self.function_shared(name).await.map(Arc::unwrap_or_clone)
    }

    async fn function_shared(&self, name: &str) -> Result<Arc<FunctionRecord>, StoreError> {
        self.cached(
            |c| c.functions.get(name).cloned(),
            || {
                let name = name.to_string();
                move |conn| load_function(conn, &name).map(Arc::new)
            },
            |c, v: Arc<FunctionRecord>| {
                c.functions.insert(v.name.clone(), v);
            },
        )
        .await
    }

    async fn list_functions(
        &self,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<FunctionVersion>, StoreError> {
        let marker = marker.unwrap_or("").to_string();
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT * FROM versions WHERE version = 0 AND function > ?1 ORDER BY function LIMIT ?2")
                .map_err(backend)?;
            let mut items: Vec<FunctionVersion> = stmt
                .query_map(params![marker, (limit + 1) as i64], row_to_version)
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)?;
            let next_marker = if items.len() > limit {
                items.truncate(limit);
                items.last().map(|v| v.function.clone())
            } else {
                None
            };
            Ok(Page { items, next_marker })
        })
        .await
    }

    async fn update_latest(
        &self,
        latest: FunctionVersion,
        expected_revision: Option<&str>,
    ) -> Result<(), StoreError> {
        let expected = expected_revision.map(str::to_string);
        let name = latest.function.clone();
        self.meta_tx(move |tx| {
            let current = load_version(tx, &latest.function, VersionId::Latest)?;
            if let Some(exp) = expected {
                if exp != current.revision_id {
                    return Err(StoreError::stale_revision());
                }
            }
            insert_version(tx, &latest)
        })
        .await?;
        self.preload_latest(&name).await;
        Ok(())
    }

    async fn set_reserved_concurrency(
        &self,
        name: &str,
        value: Option<u32>,
    ) -> Result<(), StoreError> {
        let name = name.to_string();
        self.meta_tx(move |tx| {
            require_function(tx, &name)?;
            tx.execute(
                "UPDATE functions SET reserved_concurrency = ?2 WHERE name = ?1",
                params![name, value],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn put_provisioned(&self, cfg: ProvisionedConfig) -> Result<(), StoreError> {
        self.tx(move |tx| {
            require_function(tx, &cfg.function)?;
            tx.execute(
                "INSERT INTO provisioned_concurrency (function, qualifier, requested, last_modified_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (function, qualifier) DO UPDATE SET requested = ?3, last_modified_ms = ?4",
                params![cfg.function, cfg.qualifier, cfg.requested, cfg.last_modified_ms],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn delete_provisioned(&self, function: &str, qualifier: &str) -> Result<(), StoreError> {
        let (function, qualifier) = (function.to_string(), qualifier.to_string());
        self.tx(move |tx| {
            let n = tx
                .execute(
                    "DELETE FROM provisioned_concurrency WHERE function = ?1 AND qualifier = ?2",
                    params![function, qualifier],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "provisioned concurrency configuration for {function}:{qualifier}"
                )));
            }
            Ok(())
        })
        .await
    }

    async fn list_provisioned(
        &self,
        function: Option<&str>,
    ) -> Result<Vec<ProvisionedConfig>, StoreError> {
        let function = function.map(str::to_string);
        self.tx(move |tx| {
            let mut stmt = tx
                .prepare(
                    "SELECT function, qualifier, requested, last_modified_ms FROM provisioned_concurrency
                     WHERE ?1 IS NULL OR function = ?1 ORDER BY function, qualifier",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([&function], |r| {
                    Ok(ProvisionedConfig {
                        function: r.get(0)?,
                        qualifier: r.get(1)?,
                        requested: r.get(2)?,
                        last_modified_ms: r.get(3)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn enqueue_async_events(
        &self,
        events: Vec<NewAsyncEvent>,
    ) -> Result<Vec<i64>, StoreError> {
        self.tx(move |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO async_events (request_id, function, qualifier, payload, received_ms, attempts, next_attempt_ms, held, leased_until_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8)",
                )
                .map_err(backend)?;
            let mut ids = Vec::with_capacity(events.len());
            for e in &events {
                ids.push(
                    stmt.insert(params![
                        e.request_id,
                        e.function,
                        e.qualifier,
                        e.payload,
                        e.received_ms,
                        e.not_before_ms.unwrap_or(e.received_ms),
                        e.held,
                        e.leased_until_ms
                    ])
                    .map_err(backend)?,
                );
            }
            Ok(ids)
        })
        .await
    }

    async fn claim_async_events(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<AsyncEvent>, StoreError> {
        self.tx(move |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE async_events SET leased_until_ms = ?2
                     WHERE id IN (SELECT id FROM async_events
                                  WHERE next_attempt_ms <= ?1 AND (leased_until_ms IS NULL OR leased_until_ms <= ?1)
                                  ORDER BY next_attempt_ms, id LIMIT ?3)
                     RETURNING id, request_id, function, qualifier, payload, received_ms, attempts, next_attempt_ms",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![now_ms, lease_until_ms, limit as i64], |r| {
                    Ok(AsyncEvent {
                        id: r.get(0)?,
                        request_id: r.get(1)?,
                        function: r.get(2)?,
                        qualifier: r.get(3)?,
                        payload: r.get(4)?,
                        received_ms: r.get(5)?,
                        attempts: r.get::<_, i64>(6)? as u32,
                        next_attempt_ms: r.get(7)?,
                    })
                })
                .map_err(backend)?;
            let mut out = rows.collect::<Result<Vec<_>, _>>().map_err(backend)?;
            out.sort_by_key(|e| (e.next_attempt_ms, e.id));
            Ok(out)
        })
        .await
    }

    async fn finish_async_events(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.tx(move |tx| {
            let mut stmt = tx
                .prepare_cached("DELETE FROM async_events WHERE id = ?1")
                .map_err(backend)?;
            for id in ids {
                stmt.execute([id]).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn retry_async_event(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_ms: i64,
    ) -> Result<(), StoreError> {
        self.tx(move |tx| {
            tx.execute(
                "UPDATE async_events SET attempts = ?2, next_attempt_ms = ?3, leased_until_ms = NULL WHERE id = ?1",
                params![id, attempts as i64, next_attempt_ms],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn hold_async_events(&self, held: Vec<(i64, i64)>) -> Result<(), StoreError> {
        self.tx(move |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE async_events SET held = 1, next_attempt_ms = ?2, leased_until_ms = NULL WHERE id = ?1",
                )
                .map_err(backend)?;
            for (id, until) in held {
                stmt.execute(params![id, until]).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn release_held_async_events(
        &self,
        function: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let function = function.to_owned();
        self.tx(move |tx| {
            let n = tx
                .execute(
                    "UPDATE async_events SET held = 0, next_attempt_ms = MIN(next_attempt_ms, ?2)
                     WHERE function = ?1 AND held = 1",
                    params![function, now_ms],
                )
                .map_err(backend)?;
            Ok(n as u64)
        })
        .await
    }

    async fn release_async_leases(&self) -> Result<u64, StoreError> {
        self.tx(|tx| {
            let n = tx
                .execute(
                    "UPDATE async_events SET leased_until_ms = NULL WHERE leased_until_ms IS NOT NULL",
                    [],
                )
                .map_err(backend)?;
            Ok(n as u64)
        })
        .await
    }

    async fn next_async_due_ms(&self) -> Result<Option<i64>, StoreError> {
        self.with(|conn| {
            // Two index walks, not a scan: the earliest unleased event, and the earliest lease
            // to run out (a leased event is due again only then).
            let unleased: Option<i64> = conn
                .prepare_cached(
                    "SELECT next_attempt_ms FROM async_events WHERE leased_until_ms IS NULL
                     ORDER BY next_attempt_ms LIMIT 1",
                )
                .map_err(backend)?
                .query_row([], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            let lease_end: Option<i64> = conn
                .prepare_cached(
                    "SELECT MIN(leased_until_ms) FROM async_events WHERE leased_until_ms IS NOT NULL",
                )
                .map_err(backend)?
                .query_row([], |r| r.get(0))
                .map_err(backend)?;
            Ok(match (unleased, lease_end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            })
        })
        .await
    }

    async fn count_async_events(&self) -> Result<u64, StoreError> {
        self.with(|conn| {
            conn.query_row("SELECT COUNT(*) FROM async_events", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(backend)
        })
        .await
    }

    async fn put_event_invoke_config(&self, cfg: EventInvokeConfig) -> Result<(), StoreError> {
        self.tx(move |tx| {
            require_function(tx, &cfg.function)?;
            tx.execute(
                "INSERT INTO event_invoke_configs (function, qualifier, max_retry_attempts, max_event_age_s, on_success, on_failure, last_modified_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (function, qualifier) DO UPDATE SET max_retry_attempts = ?3, max_event_age_s = ?4,
                     on_success = ?5, on_failure = ?6, last_modified_ms = ?7",
                params![
                    cfg.function,
                    cfg.qualifier,
                    cfg.max_retry_attempts,
                    cfg.max_event_age_s,
                    cfg.on_success,
                    cfg.on_failure,
                    cfg.last_modified_ms
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn get_event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<EventInvokeConfig, StoreError> {
        let (function, qualifier) = (function.to_string(), qualifier.to_string());
        self.with(move |conn| {
            conn.query_row(
                "SELECT function, qualifier, max_retry_attempts, max_event_age_s, on_success, on_failure, last_modified_ms
                 FROM event_invoke_configs WHERE function = ?1 AND qualifier = ?2",
                [&function, &qualifier],
                event_invoke_config_row,
            )
            .optional()
            .map_err(backend)?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "EventInvokeConfig for function {function}:{qualifier}"
                ))
            })
        })
        .await
    }

    async fn delete_event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<(), StoreError> {
        let (function, qualifier) = (function.to_string(), qualifier.to_string());
        self.tx(move |tx| {
            let n = tx
                .execute(
                    "DELETE FROM event_invoke_configs WHERE function = ?1 AND qualifier = ?2",
                    [&function, &qualifier],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "EventInvokeConfig for function {function}:{qualifier}"
                )));
            }
            Ok(())
        })
        .await
    }

    async fn list_event_invoke_configs(
        &self,
        function: &str,
    ) -> Result<Vec<EventInvokeConfig>, StoreError> {
        let function = function.to_string();
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT function, qualifier, max_retry_attempts, max_event_age_s, on_success, on_failure, last_modified_ms
                     FROM event_invoke_configs WHERE function = ?1 ORDER BY qualifier",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([&function], event_invoke_config_row)
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn create_schedule(&self, s: ScheduleRecord) -> Result<(), StoreError> {
        self.tx(move |tx| {
            let n = tx
                .execute(
                    "INSERT INTO schedules (name, expression, timezone, function, input, enabled, created_ms, next_fire_ms, last_fire_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (name) DO NOTHING",
                    params![s.name, s.expression, s.timezone, s.function, s.input, s.enabled, s.created_ms, s.next_fire_ms, s.last_fire_ms],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("schedule {} already exists", s.name)));
            }
            Ok(())
        })
        .await
    }

    async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, expression, timezone, function, input, enabled, created_ms, next_fire_ms, last_fire_ms
                     FROM schedules ORDER BY name",
                )
                .map_err(backend)?;
            let rows = stmt.query_map([], schedule_row).map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn get_schedule(&self, name: &str) -> Result<ScheduleRecord, StoreError> {
        let name = name.to_string();
        self.with(move |conn| {
            conn.query_row(
                "SELECT name, expression, timezone, function, input, enabled, created_ms, next_fire_ms, last_fire_ms
                 FROM schedules WHERE name = ?1",
                [&name],
                schedule_row,
            )
            .optional()
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(format!("schedule {name}")))
        })
        .await
    }

    async fn delete_schedule(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_string();
        self.tx(move |tx| {
            let n = tx
                .execute("DELETE FROM schedules WHERE name = ?1", [&name])
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("schedule {name}")));
            }
            Ok(())
        })
        .await
    }

    async fn set_schedule_enabled(
        &self,
        name: &str,
        enabled: bool,
        next_fire_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let name = name.to_string();
        self.tx(move |tx| {
            let n = tx
                .execute(
                    "UPDATE schedules SET enabled = ?2, next_fire_ms = ?3 WHERE name = ?1",
                    params![name, enabled, next_fire_ms],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("schedule {name}")));
            }
            Ok(())
        })
        .await
    }

    async fn fire_schedule(
        &self,
        name: &str,
        period_ms: i64,
        next_fire_ms: Option<i64>,
        event: NewAsyncEvent,
    ) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.tx(move |tx| {
            let n = tx
                .execute(
                    "UPDATE schedules SET last_fire_ms = ?2, next_fire_ms = ?3
                     WHERE name = ?1 AND enabled = 1 AND next_fire_ms = ?2",
                    params![name, period_ms, next_fire_ms],
                )
                .map_err(backend)?;
            if n == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO async_events (request_id, function, qualifier, payload, received_ms, attempts, next_attempt_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?5)",
                params![event.request_id, event.function, event.qualifier, event.payload, event.received_ms],
            )
            .map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn list_gateway_apis(&self) -> Result<Vec<GatewayApiDoc>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT api_id, revision, doc FROM gateway_apis ORDER BY api_id")
                .map_err(backend)?;
            let rows = stmt.query_map([], gateway_api_row).map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn get_gateway_api(&self, api_id: &str) -> Result<GatewayApiDoc, StoreError> {
        let api_id = api_id.to_string();
        self.with(move |conn| {
            conn.query_row(
                "SELECT api_id, revision, doc FROM gateway_apis WHERE api_id = ?1",
                [&api_id],
                gateway_api_row,
            )
            .optional()
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(format!("API {api_id}")))
        })
        .await
    }

    async fn put_gateway_api(
        &self,
        api_id: &str,
        doc: String,
        expected_revision: Option<u64>,
    ) -> Result<u64, StoreError> {
        let api_id = api_id.to_string();
        self.tx(move |tx| match expected_revision {
            None => {
                let n = tx
                    .execute(
                        "INSERT INTO gateway_apis (api_id, revision, doc) VALUES (?1, 1, ?2)
                         ON CONFLICT (api_id) DO NOTHING",
                        params![api_id, doc],
                    )
                    .map_err(backend)?;
                if n == 0 {
                    return Err(StoreError::Conflict(format!("API {api_id} already exists")));
                }
                Ok(1)
            }
            Some(rev) => {
                let next = rev + 1;
                let n = tx
                    .execute(
                        "UPDATE gateway_apis SET revision = ?3, doc = ?2 WHERE api_id = ?1 AND revision = ?4",
                        params![api_id, doc, next as i64, rev as i64],
                    )
                    .map_err(backend)?;
                if n == 1 {
                    return Ok(next);
                }
                let exists: bool = tx
                    .query_row(
                        "SELECT 1 FROM gateway_apis WHERE api_id = ?1",
                        [&api_id],
                        |_| Ok(true),
                    )
                    .optional()
                    .map_err(backend)?
                    .unwrap_or(false);
                Err(if exists {
                    StoreError::PreconditionFailed(format!(
                        "API {api_id} was changed by another request; retry"
                    ))
                } else {
                    StoreError::NotFound(format!("API {api_id}"))
                })
            }
        })
        .await
    }

    async fn delete_gateway_api(&self, api_id: &str) -> Result<(), StoreError> {
        let api_id = api_id.to_string();
        self.tx(move |tx| {
            let n = tx
                .execute("DELETE FROM gateway_apis WHERE api_id = ?1", [&api_id])
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("API {api_id}")));
            }
            Ok(())
        })
        .await
    }

    async fn put_gateway_deployment(
        &self,
        api_id: &str,
        deployment: GatewayDeploymentDoc,
    ) -> Result<(), StoreError> {
        let api_id = api_id.to_string();
        self.tx(move |tx| {
            let exists = tx
                .query_row(
                    "SELECT 1 FROM gateway_apis WHERE api_id = ?1",
                    [&api_id],
                    |_| Ok(()),
                )
                .optional()
                .map_err(backend)?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("API {api_id}")));
            }
            tx.execute(
                "INSERT INTO gateway_deployments (api_id, deployment_id, created_ms, doc)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    api_id,
                    deployment.deployment_id,
                    deployment.created_ms,
                    deployment.doc
                ],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::Conflict(format!(
                        "deployment {} of API {api_id} already exists",
                        deployment.deployment_id
                    ))
                }
                e => backend(e),
            })?;
            Ok(())
        })
        .await
    }

    async fn get_gateway_deployment(
        &self,
        api_id: &str,
        deployment_id: &str,
    ) -> Result<GatewayDeploymentDoc, StoreError> {
        let (api_id, deployment_id) = (api_id.to_string(), deployment_id.to_string());
        self.with(move |conn| {
            conn.query_row(
                "SELECT deployment_id, created_ms, doc FROM gateway_deployments
                 WHERE api_id = ?1 AND deployment_id = ?2",
                [&api_id, &deployment_id],
                gateway_deployment_row,
            )
            .optional()
            .map_err(backend)?
            .ok_or_else(|| {
                StoreError::NotFound(format!("deployment {deployment_id} of API {api_id}"))
            })
        })
        .await
    }

    async fn list_gateway_deployments(
        &self,
        api_id: &str,
    ) -> Result<Vec<GatewayDeploymentDoc>, StoreError> {
        let api_id = api_id.to_string();
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT deployment_id, created_ms, doc FROM gateway_deployments
                     WHERE api_id = ?1 ORDER BY created_ms, rowid",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([&api_id], gateway_deployment_row)
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn delete_gateway_deployment(
        &self,
        api_id: &str,
        deployment_id: &str,
    ) -> Result<(), StoreError> {
        let (api_id, deployment_id) = (api_id.to_string(), deployment_id.to_string());
        self.tx(move |tx| {
            let n = tx
                .execute(
                    "DELETE FROM gateway_deployments WHERE api_id = ?1 AND deployment_id = ?2",
                    [&api_id, &deployment_id],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "deployment {deployment_id} of API {api_id}"
                )));
            }
            Ok(())
        })
        .await
    }

    async fn list_gateway_domains(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT domain_name, doc FROM gateway_domains ORDER BY domain_name")
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn put_gateway_domain(&self, domain_name: &str, doc: String) -> Result<(), StoreError> {
        let domain_name = domain_name.to_string();
        self.tx(move |tx| {
            tx.execute(
                "INSERT INTO gateway_domains (domain_name, doc) VALUES (?1, ?2)
                 ON CONFLICT (domain_name) DO UPDATE SET doc = ?2",
                params![domain_name, doc],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn delete_gateway_domain(&self, domain_name: &str) -> Result<(), StoreError> {
        let domain_name = domain_name.to_string();
        self.tx(move |tx| {
            let n = tx
                .execute(
                    "DELETE FROM gateway_domains WHERE domain_name = ?1",
                    [&domain_name],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("domain name {domain_name}")));
            }
            Ok(())
        })
        .await
    }

    async fn create_queue(&self, queue: QueueRecord) -> Result<(), StoreError> {
        self.tx(move |tx| queues::create_queue(tx, &queue)).await
    }

    async fn get_queue(&self, name: &str) -> Result<QueueRecord, StoreError> {
        let name = name.to_owned();
        self.with(move |conn| queues::get_queue(conn, &name)).await
    }

    async fn list_queues(&self, prefix: &str) -> Result<Vec<QueueRecord>, StoreError> {
        let prefix = prefix.to_owned();
        self.with(move |conn| queues::list_queues(conn, &prefix))
            .await
    }

    async fn update_queue(
        &self,
        name: &str,
        attributes: Option<String>,
        tags: Option<BTreeMap<String, String>>,
        modified_ms: i64,
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.tx(move |tx| {
            queues::update_queue(tx, &name, attributes.as_deref(), tags.as_ref(), modified_ms)
        })
        .await
    }

    async fn delete_queue(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.tx(move |tx| queues::delete_queue(tx, &name)).await
    }

    async fn queue_ops(&self, ops: Vec<QueueOp>) -> QueueOpsResult {
        self.tx(move |tx| queues::apply_all(tx, &ops)).await
    }

    fn queue_ops_now(&self, ops: &[QueueOp]) -> Option<QueueOpsResult> {
        // Only a free connection: waiting for it here would block the caller's thread.
        let mut conn = self.conn.try_lock().ok()?;
        Some(in_tx(&mut conn, |tx| queues::apply_all(tx, ops)))
    }

    async fn queue_counts(&self, name: &str, now_ms: i64) -> Result<QueueCounts, StoreError> {
        let name = name.to_owned();
        self.with(move |conn| queues::queue_counts(conn, &name, now_ms))
            .await
    }

    async fn expire_queue_messages(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.tx(move |tx| queues::expire_messages(tx, now_ms)).await
    }

    async fn put_event_source_mapping(&self, m: EventSourceMappingDoc) -> Result<(), StoreError> {
        self.tx(move |tx| queues::put_mapping(tx, &m)).await
    }

    async fn get_event_source_mapping(
        &self,
        uuid: &str,
    ) -> Result<EventSourceMappingDoc, StoreError> {
        let uuid = uuid.to_owned();
        self.with(move |conn| queues::get_mapping(conn, &uuid))
            .await
    }

    async fn list_event_source_mappings(&self) -> Result<Vec<EventSourceMappingDoc>, StoreError> {
        self.with(|conn| queues::list_mappings(conn)).await
    }

    async fn delete_event_source_mapping(&self, uuid: &str) -> Result<(), StoreError> {
        let uuid = uuid.to_owned();
        self.tx(move |tx| queues::delete_mapping(tx, &uuid)).await
    }

    async fn set_tags(&self, name: &str, tags: BTreeMap<String, String>) -> Result<(), StoreError> {
        let name = name.to_string();
        self.meta_tx(move |tx| {
            require_function(tx, &name)?;
            let tags = serde_json::to_string(&tags).map_err(backend)?;
            tx.execute(
                "UPDATE functions SET tags = ?2 WHERE name = ?1",
                params![name, tags],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn delete_function(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_string();
        self.meta_tx(move |tx| {
            require_function(tx, &name)?;
            tx.execute("DELETE FROM functions WHERE name = ?1", [&name])
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn delete_version(&self, name: &str, version: u64) -> Result<(), StoreError> {
        let name = name.to_string();
        self.meta_tx(move |tx| {
            load_version(tx, &name, VersionId::Published(version))?;
            let alias: Option<String> = tx
                .query_row(
                    "SELECT name FROM aliases WHERE function = ?1 AND (version = ?2 OR routing_version = ?2) LIMIT 1",
                    params![name, version as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            if let Some(alias) = alias {
                return Err(StoreError::Conflict(format!(
                    "Unable to delete version {version} of function {name} because alias {alias} points at it"
                )));
            }
            tx.execute("DELETE FROM versions WHERE function = ?1 AND version = ?2", params![name, version as i64])
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn get_version(
        &self,
        name: &str,
        version: VersionId,
    ) -> Result<FunctionVersion, StoreError> {
        self.version_shared(name, version)
            .await
            .map(Arc::unwrap_or_clone)
    }

    async fn version_shared(
        &self,
        name: &str,
        version: VersionId,
    ) -> Result<Arc<FunctionVersion>, StoreError> {
        self.cached(
            |c| c.versions.get(name)?.get(&version).cloned(),
            || {
                let name = name.to_string();
                move |conn| load_version(conn, &name, version).map(Arc::new)
            },
            |c, v: Arc<FunctionVersion>| {
                c.versions
                    .entry(v.function.clone())
                    .or_default()
                    .insert(version, v);
            },
        )
        .await
    }

    async fn list_versions(
        &self,
        name: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<FunctionVersion>, StoreError> {
        let name = name.to_string();
        let after = parse_marker(marker)?.unwrap_or(-1);
        self.with(move |conn| {
            require_function(conn, &name)?;
            let mut stmt = conn
                .prepare_cached("SELECT * FROM versions WHERE function = ?1 AND version > ?2 ORDER BY version LIMIT ?3")
                .map_err(backend)?;
            let mut items: Vec<FunctionVersion> = stmt
                .query_map(params![name, after, (limit + 1) as i64], row_to_version)
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)?;
            let next_marker = if items.len() > limit {
                items.truncate(limit);
                items.last().map(|v| v.version.to_string())
            } else {
                None
            };
            Ok(Page { items, next_marker })
        })
        .await
    }

    async fn publish_version(
        &self,
        name: &str,
        description: Option<String>,
        expected_code_sha256: Option<&str>,
        expected_revision: Option<&str>,
    ) -> Result<FunctionVersion, StoreError> {
        let name = name.to_string();
        let expected_sha = expected_code_sha256.map(str::to_string);
        let expected_rev = expected_revision.map(str::to_string);
        self.meta_tx(move |tx| {
            let latest = load_version(tx, &name, VersionId::Latest)?;
            if let Some(sha) = expected_sha {
                if sha != latest.code_sha256 {
                    return Err(StoreError::Invalid(format!(
                        "CodeSha256 {sha} does not match the code of $LATEST ({})",
                        latest.code_sha256
                    )));
                }
            }
            if let Some(rev) = expected_rev {
                if rev != latest.revision_id {
                    return Err(StoreError::stale_revision());
                }
            }
            let newest: Option<FunctionVersion> = tx
                .query_row(
                    "SELECT * FROM versions WHERE function = ?1 AND version > 0 ORDER BY version DESC LIMIT 1",
                    [&name],
                    row_to_version,
                )
                .optional()
                .map_err(backend)?;
            if let Some(newest) = newest {
                let mut newest_cfg = newest.config.clone();
                newest_cfg.description = latest.config.description.clone();
                if newest.code_sha256 == latest.code_sha256 && newest_cfg == latest.config {
                    return Ok(newest);
                }
            }
            let number: i64 = tx
                .query_row("SELECT next_version FROM functions WHERE name = ?1", [&name], |r| r.get(0))
                .map_err(backend)?;
            tx.execute("UPDATE functions SET next_version = next_version + 1 WHERE name = ?1", [&name])
                .map_err(backend)?;
            let mut published = latest.clone();
            published.version = VersionId::Published(number as u64);
            if let Some(d) = description {
                published.config.description = d;
            }
            published.last_modified_ms = crate::now_ms();
            published.revision_id = crate::new_revision_id();
            insert_version(tx, &published)?;
            Ok(published)
        })
        .await
    }

    async fn create_alias(&self, alias: Alias) -> Result<(), StoreError> {
        self.meta_tx(move |tx| {
            require_function(tx, &alias.function)?;
            let exists = tx
                .query_row(
                    "SELECT 1 FROM aliases WHERE function = ?1 AND name = ?2",
                    params![alias.function, alias.name],
                    |_| Ok(()),
                )
                .optional()
                .map_err(backend)?
                .is_some();
            if exists {
                return Err(StoreError::Conflict(format!(
                    "Alias already exists: {}",
                    nimbus_core::FunctionRef::qualified_arn(&alias.function, &alias.name)
                )));
            }
            check_alias_targets(tx, &alias)?;
            write_alias(tx, &alias, false)
        })
        .await
    }

    async fn get_alias(&self, function: &str, name: &str) -> Result<Alias, StoreError> {
        let key = (function.to_string(), name.to_string());
        self.cached(
            |c| c.aliases.get(&key).cloned(),
            || {
                let (function, name) = key.clone();
                move |conn| load_alias(conn, &function, &name)
            },
            |c, a: Alias| {
                c.aliases.insert((a.function.clone(), a.name.clone()), a);
            },
        )
        .await
    }

    async fn update_alias(
        &self,
        alias: Alias,
        expected_revision: Option<&str>,
    ) -> Result<(), StoreError> {
        let expected = expected_revision.map(str::to_string);
        self.meta_tx(move |tx| {
            let current = load_alias(tx, &alias.function, &alias.name)?;
            if let Some(exp) = expected {
                if exp != current.revision_id {
                    return Err(StoreError::stale_revision());
                }
            }
            check_alias_targets(tx, &alias)?;
            write_alias(tx, &alias, true)
        })
        .await
    }

    async fn delete_alias(&self, function: &str, name: &str) -> Result<(), StoreError> {
        let (function, name) = (function.to_string(), name.to_string());
        self.meta_tx(move |tx| {
            load_alias(tx, &function, &name)?;
            tx.execute(
                "DELETE FROM aliases WHERE function = ?1 AND name = ?2",
                params![function, name],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn list_aliases(
        &self,
        function: &str,
        for_version: Option<VersionId>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<Alias>, StoreError> {
        let function = function.to_string();
        let marker = marker.unwrap_or("").to_string();
        let version = for_version.map(version_num);
        self.with(move |conn| {
            require_function(conn, &function)?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT * FROM aliases WHERE function = ?1 AND name > ?2 AND (?3 IS NULL OR version = ?3 OR routing_version = ?3) ORDER BY name LIMIT ?4",
                )
                .map_err(backend)?;
            let mut items: Vec<Alias> = stmt
                .query_map(params![function, marker, version, (limit + 1) as i64], row_to_alias)
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)?;
            let next_marker = if items.len() > limit {
                items.truncate(limit);
                items.last().map(|a| a.name.clone())
            } else {
                None
            };
            Ok(Page { items, next_marker })
        })
        .await
    }

    async fn append_logs(&self, events: Vec<NewLogEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.tx(move |tx| {
            let mut stmt = tx
                .prepare_cached("INSERT INTO log_events (function, stream, ts_ms, request_id, message) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(backend)?;
            for e in &events {
                stmt.execute(params![&*e.function, &*e.stream, e.ts_ms, e.request_id.as_deref(), e.message]).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn query_logs(&self, q: LogQuery) -> Result<Vec<LogEvent>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, function, stream, ts_ms, request_id, message FROM log_events
                     WHERE function = ?1 AND id > ?2 AND ts_ms >= ?3 AND (?4 IS NULL OR instr(message, ?4) > 0)
                       AND (?6 IS NULL OR request_id = ?6)
                     ORDER BY id LIMIT ?5",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(
                    params![q.function, q.after_id.unwrap_or(0), q.since_ms.unwrap_or(0), q.filter, q.limit.max(1) as i64, q.request_id],
                    |r| {
                        Ok(LogEvent {
                            id: r.get(0)?,
                            function: r.get(1)?,
                            stream: r.get(2)?,
                            ts_ms: r.get(3)?,
                            request_id: r.get(4)?,
                            message: r.get(5)?,
                        })
                    },
                )
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            Ok(rows)
        })
        .await
    }

    async fn purge_logs(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.tx(move |tx| {
            // The first event stored that is not older than the cut, found by walking the ids
            // from the oldest: it reads only what is about to go, with no index on time.
            let n = tx
                .execute(
                    "DELETE FROM log_events WHERE id < COALESCE(
                        (SELECT id FROM log_events WHERE ts_ms >= ?1 ORDER BY id LIMIT 1),
                        (SELECT max(id) + 1 FROM log_events))",
                    [before_ms],
                )
                .map_err(backend)?;
            Ok(n as u64)
        })
        .await
    }

    async fn put_metric_minutes(&self, rows: Vec<MetricMinute>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        // Read, merge, write: the histograms are merged bucket by bucket, which SQL cannot do.
        self.tx(move |tx| {
            let mut read = tx
                .prepare_cached(
                    "SELECT * FROM metric_minutes WHERE function = ?1 AND version = ?2 AND minute_ms = ?3",
                )
                .map_err(backend)?;
            let mut write = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO metric_minutes (function, version, minute_ms, invocations, errors,
                       throttles, cold_starts, provisioned_invocations, duration_sum_ms, duration_max_ms,
                       duration_buckets, init_duration_max_ms, init_duration_buckets, concurrency_max,
                       provisioned_utilization_max)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .map_err(backend)?;
            for row in rows {
                let stored = read
                    .query_row(params![row.function, row.version, row.minute_ms], row_to_metric_minute)
                    .optional()
                    .map_err(backend)?;
                let m = match stored {
                    Some(mut stored) => {
                        stored.merge(&row);
                        stored
                    }
                    None => row,
                };
                let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                write
                    .execute(params![
                        m.function,
                        m.version,
                        m.minute_ms,
                        n(m.invocations),
                        n(m.errors),
                        n(m.throttles),
                        n(m.cold_starts),
                        n(m.provisioned_invocations),
                        m.duration_sum_ms,
                        m.duration_max_ms,
                        buckets_json(&m.duration_buckets)?,
                        m.init_duration_max_ms,
                        buckets_json(&m.init_duration_buckets)?,
                        n(m.concurrency_max),
                        m.provisioned_utilization_max,
                    ])
                    .map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn metric_minutes(
        &self,
        function: &str,
        version: Option<&str>,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<MetricMinute>, StoreError> {
        let function = function.to_string();
        let version = version.map(str::to_string);
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT * FROM metric_minutes
                     WHERE function = ?1 AND (?2 IS NULL OR version = ?2) AND minute_ms >= ?3 AND minute_ms < ?4
                     ORDER BY version, minute_ms",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![function, version, from_ms, until_ms], row_to_metric_minute)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            Ok(rows)
        })
        .await
    }

    async fn prune_metric_minutes(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.tx(move |tx| {
            let n = tx
                .execute(
                    "DELETE FROM metric_minutes WHERE minute_ms < ?1",
                    [before_ms],
                )
                .map_err(backend)?;
            Ok(n as u64)
        })
        .await
    }

    async fn referenced_code(&self) -> Result<Vec<String>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare("SELECT DISTINCT code_sha256 FROM versions")
                .map_err(backend)?;
            let v = stmt
                .query_map([], |r| r.get(0))
                .map_err(backend)?
                .collect::<Result<Vec<String>, _>>()
                .map_err(backend)?;
            Ok(v)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn log_retention_cuts_at_the_first_event_stored_that_is_not_older() {
        let s = SqliteStore::in_memory().unwrap();
        let f: Arc<str> = "f".into();
        let event = |ts_ms: i64| NewLogEvent {
            function: f.clone(),
            stream: f.clone(),
            ts_ms,
            request_id: None,
            message: format!("at {ts_ms}"),
        };
        // 25 is stored after 30: written late, it waits for a later purge.
        s.append_logs([10, 20, 30, 25, 40].map(event).to_vec())
            .await
            .unwrap();
        let left = |s: SqliteStore| async move {
            let q = LogQuery {
                function: "f".into(),
                since_ms: None,
                after_id: None,
                filter: None,
                request_id: None,
                limit: 100,
            };
            let events = s.query_logs(q).await.unwrap();
            events.into_iter().map(|e| e.ts_ms).collect::<Vec<_>>()
        };
        assert_eq!(s.purge_logs(5).await.unwrap(), 0);
        assert_eq!(s.purge_logs(30).await.unwrap(), 2);
        assert_eq!(left(s.clone()).await, vec![30, 25, 40]);
        assert_eq!(s.purge_logs(41).await.unwrap(), 3);
        assert_eq!(left(s.clone()).await, Vec::<i64>::new());
        assert_eq!(s.purge_logs(100).await.unwrap(), 0);
    }

    fn latest(name: &str, sha: &str) -> FunctionVersion {
        FunctionVersion {
            function: name.into(),
            version: VersionId::Latest,
            config: FunctionConfig {
                runtime_name: "python3".into(),
                handler: "app.handler".into(),
                memory_mb: 128,
                timeout_s: 3,
                ephemeral_mb: 512,
                environment: BTreeMap::new(),
                description: String::new(),
                role: String::new(),
            },
            code_sha256: sha.into(),
            code_size: 10,
            last_modified_ms: 1,
            revision_id: format!("r-{sha}"),
        }
    }

    /// What the cache holds for `name`: its function record and the code of its `$LATEST`.
    fn cached(s: &SqliteStore, name: &str) -> (bool, Option<String>) {
        let c = s.cache();
        (
            c.functions.contains_key(name),
            c.versions
                .get(name)
                .and_then(|v| v.get(&VersionId::Latest))
                .map(|v| v.code_sha256.clone()),
        )
    }

    #[tokio::test]
    async fn writes_that_replace_latest_leave_it_cached() {
        let s = SqliteStore::in_memory().unwrap();
        let record = FunctionRecord {
            name: "f".into(),
            created_ms: 1,
            tags: BTreeMap::new(),
            reserved_concurrency: None,
        };
        s.create_function(record, latest("f", "aa")).await.unwrap();
        assert_eq!(cached(&s, "f"), (true, Some("aa".into())));
        s.update_latest(latest("f", "bb"), None).await.unwrap();
        assert_eq!(cached(&s, "f"), (true, Some("bb".into())));
        // Other writes still clear it, and the next read loads what was written.
        s.set_reserved_concurrency("f", Some(2)).await.unwrap();
        assert_eq!(cached(&s, "f"), (false, None));
        assert_eq!(
            s.get_function("f").await.unwrap().reserved_concurrency,
            Some(2)
        );
        // A refused write caches nothing new.
        assert!(s
            .update_latest(latest("f", "cc"), Some("stale"))
            .await
            .is_err());
        assert_eq!(cached(&s, "f").1, None);
    }
}
