//! Job records in SQLite: the part of an async job that must outlive the
//! process that accepted it.
//!
//! ```text
//! handler ──insert().await──▶ [channel] ──▶ writer thread ──one transaction per batch──▶ jobs.db
//! worker  ──update()────────▶     ▲            │ drains everything queued, commits once,
//!                                 │            └ then answers every waiting caller
//! status page, restart ──get(), unfinished(), … on a separate read connection (WAL)
//! ```
//!
//! One file (e.g. `OUTPUT_DIR/jobs.db`) in WAL mode, shared by every instance
//! that uses the same folder. All writes of this process go through one
//! dedicated OS thread that owns the write connection: it takes whatever has
//! queued up while it was committing the previous batch and commits it in a
//! single transaction (group commit), so a burst of submissions costs a few
//! commits instead of one per job, and an update is always applied after the
//! insert of the same job because both travel through the same FIFO channel.
//! Reads use their own connection: WAL lets them run alongside the writer.
//!
//! Durability: `synchronous=NORMAL` in WAL mode. A commit is in the WAL file
//! (the OS page cache) before the caller is answered, so it survives the
//! server being killed (SIGKILL, OOM killer, panic); the WAL is only fsynced
//! at checkpoints, so a power loss or kernel crash may lose the last commits
//! (never corrupt the file). Surviving a crash of the server is what async
//! jobs promise; surviving power loss would cost an fsync per batch.
//!
//! The read methods (`get`, `unfinished`, …) and `claim`, `delete`, `flush`
//! block the calling thread for as long as SQLite takes (normally well under
//! a millisecond; up to the busy timeout when another process holds the write
//! lock); async callers on a hot path should wrap them in `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

/// How long a statement waits for another connection (this process's writer,
/// or another instance sharing the file) to release the write lock before it
/// fails with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most commands committed in one transaction: bounds how long the first
/// caller of a very large burst waits for its acknowledgement.
const MAX_BATCH: usize = 1024;

/// Version of the schema below, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id              TEXT PRIMARY KEY NOT NULL,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    owner           TEXT NOT NULL,
    idempotency_key TEXT,
    fingerprint     TEXT,
    request         TEXT NOT NULL,
    result          TEXT,
    error           TEXT,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,
    finished_ms     INTEGER,
    tenant          TEXT
);
-- UNIQUE lets any number of rows have no key (NULLs are distinct in SQLite).
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency_key ON jobs (idempotency_key);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_ms);
CREATE INDEX IF NOT EXISTS jobs_finished_ms ON jobs (finished_ms);
";

/// Every column, in the order [`read_record`] expects them.
const COLUMNS: &str = "id, kind, state, owner, idempotency_key, fingerprint, request, result, \
                       error, created_ms, updated_ms, finished_ms, tenant";

/// Schema changes from each earlier version, applied in order.
const MIGRATIONS: [&str; 1] = [
    // 1 → 2: the tenant (API key name) a job belongs to.
    "ALTER TABLE jobs ADD COLUMN tenant TEXT;",
];

/// Where a job is in its life. The strings are what the database and the API
/// store, so they must never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
    Expired,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            "expired" => JobState::Expired,
            _ => return None,
        })
    }

    /// A final job never runs again; it is served until its TTL and then
    /// deleted.
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

/// One async job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: Uuid,
    /// The worker type's name (`JobKind::NAME`).
    pub kind: String,
    pub state: JobState,
    /// Id of the server instance running (or meant to run) it.
    pub owner: String,
    pub idempotency_key: Option<String>,
    /// Hash of the request, to detect a key reused for another request.
    pub fingerprint: Option<String>,
    /// What is needed to run the job again after a restart.
    pub request: serde_json::Value,
    /// The reply, when done.
    pub result: Option<serde_json::Value>,
    /// The error body, when failed, cancelled or expired.
    pub error: Option<serde_json::Value>,
    /// Unix milliseconds.
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Unix milliseconds when it reached a final state.
    pub finished_ms: Option<u64>,
    /// The tenant (API key name) that submitted it; `None` with keys off.
    pub tenant: Option<String>,
}

/// Everything the store can fail with. Messages are written for the operator
/// who reads them in the log of a server that refused to start.
///
/// Clone because one failed batch answers every caller that was in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the job database {} is corrupt ({detail}): move it away or delete it to start empty",
        .path.display()
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "the job database {} cannot be created or written ({detail}): check that its folder \
         exists and that this user may write to the folder and the file",
        .path.display()
    )]
    Unwritable { path: PathBuf, detail: String },
    #[error(
        "the job database {} has a schema this server does not know ({detail}): move it away \
         or delete it to start empty",
        .path.display()
    )]
    Incompatible { path: PathBuf, detail: String },
    #[error("the job database {} cannot be written: {detail}", .path.display())]
    Write { path: PathBuf, detail: String },
    #[error("the job database {} cannot be read: {detail}", .path.display())]
    Read { path: PathBuf, detail: String },
    #[error(
        "the job database {} holds a row this server cannot decode ({detail})",
        .path.display()
    )]
    BadRow { path: PathBuf, detail: String },
    #[error("the job database {} is closed: its writer thread has stopped", .path.display())]
    Closed { path: PathBuf },
    #[error("an idempotency key is already used")]
    DuplicateKey,
    #[error("a job with id {0} already exists")]
    DuplicateId(Uuid),
}

/// Counters for a status page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Inserts, updates, claims and deletes committed.
    pub writes: u64,
    /// Transactions committed by the writer thread.
    pub commits: u64,
    /// Writes that did not land (their caller got an error, or, for an
    /// update, it was logged).
    pub failed_writes: u64,
    /// Most writes committed in one transaction so far.
    pub largest_batch: u64,
}

#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    commits: AtomicU64,
    failed_writes: AtomicU64,
    largest_batch: AtomicU64,
}

/// The job database of this process. `Send + Sync`; share it as `Arc<Store>`.
/// Dropping it commits every write already sent and stops the writer thread.
pub struct Store {
    path: PathBuf,
    /// Taken in `Drop` so the writer sees the channel close.
    commands: Option<Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    reader: Mutex<Connection>,
    counters: Arc<Counters>,
}

/// How much an acknowledged commit survives; see the module comment.
#[derive(Debug, Clone, Copy)]
enum Synchronous {
    /// Survives a crash of the process, not of the machine.
    Normal,
    /// Survives power loss too: an fsync per commit. Only measured.
    #[cfg_attr(not(test), allow(dead_code))]
    Full,
}

impl Store {
    /// Opens or creates the database: WAL mode, schema created or checked,
    /// `PRAGMA quick_check` run. A corrupt file, a file that is not a
    /// database, or a folder or file that cannot be written is an error whose
    /// message tells the operator what to do; the server refuses to start
    /// with it rather than lose jobs later.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, Synchronous::Normal)
    }

    fn open_with(path: &Path, synchronous: Synchronous) -> Result<Store, StoreError> {
        let writer_conn = open_writer(path, synchronous)?;
        // Opened after the writer, which created the file and the schema, so
        // a missing file here is an error rather than a second empty database.
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|conn| {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // Writes from this connection would bypass the writer's ordering.
            conn.pragma_update(None, "query_only", true)?;
            Ok(conn)
        })
        .map_err(|e| open_error(path, e))?;

        let counters = Arc::new(Counters::default());
        let (commands, rx) = crossbeam_channel::unbounded();
        let writer = Writer {
            conn: writer_conn,
            path: path.to_path_buf(),
            counters: Arc::clone(&counters),
        };
        let handle = std::thread::Builder::new()
            .name("job-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Write {
                path: path.to_path_buf(),
                detail: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Store {
            path: path.to_path_buf(),
            commands: Some(commands),
            writer: Some(handle),
            reader: Mutex::new(reader),
            counters,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Durable insert: returns once the transaction holding the row is
    /// committed. Concurrent inserts share transactions (see the module
    /// comment). A reused idempotency key is [`StoreError::DuplicateKey`].
    pub async fn insert(&self, record: JobRecord) -> Result<(), StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Op::Insert(record), Reply::Insert(reply))?;
        answer.await.map_err(|_| self.closed())?
    }

    /// Records a job's new state, without waiting for the commit. Applied
    /// after every write sent before it, in particular the job's insert; a
    /// failure is logged, and the job is then found in its previous state
    /// after a restart, which re-queues it if it was unfinished.
    pub fn update(
        &self,
        id: Uuid,
        state: JobState,
        result: Option<serde_json::Value>,
        error: Option<serde_json::Value>,
        finished_ms: Option<u64>,
    ) {
        let op = Op::Update {
            id,
            state,
            result,
            error,
            finished_ms,
            updated_ms: now_ms(),
        };
        if let Err(e) = self.send(op, Reply::None) {
            tracing::error!(job_id = %id, "job update lost: {e}");
        }
    }

    /// Blocks until every write sent before the call is committed (or has
    /// failed and been reported). For shutdown and tests.
    pub fn flush(&self) {
        let (reply, answer) = crossbeam_channel::bounded(1);
        if self.send(Op::Flush, Reply::Flush(reply)).is_ok() {
            // An error means the writer is gone, so nothing is pending either.
            let _ = answer.recv();
        }
    }

    pub fn get(&self, id: Uuid) -> Result<Option<JobRecord>, StoreError> {
        let conn = self.reader();
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1");
        conn.prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_row([id.to_string()], read_record).optional())
            .map_err(|e| self.read_error(e))
    }

    pub fn find_by_key(&self, idempotency_key: &str) -> Result<Option<JobRecord>, StoreError> {
        let conn = self.reader();
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE idempotency_key = ?1");
        conn.prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_row([idempotency_key], read_record).optional())
            .map_err(|e| self.read_error(e))
    }

    /// Queued or running jobs, oldest first: what a restarted instance must
    /// run again.
    pub fn unfinished(&self) -> Result<Vec<JobRecord>, StoreError> {
        let conn = self.reader();
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE state IN ('queued', 'running') \
             ORDER BY created_ms, id"
        );
        conn.prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_map([], read_record)?.collect())
            .map_err(|e| self.read_error(e))
    }

    /// Atomically moves a job from owner `from` to owner `to`; false if its
    /// owner is no longer `from` (another instance took it first) or the job
    /// is gone. Goes through the writer so it is ordered with this process's
    /// other writes, and through SQLite's write lock so two instances
    /// claiming the same job cannot both win.
    pub fn claim(&self, id: Uuid, from: &str, to: &str) -> Result<bool, StoreError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let op = Op::Claim {
            id,
            from: from.to_owned(),
            to: to.to_owned(),
            updated_ms: now_ms(),
        };
        self.send(op, Reply::Claim(reply))?;
        answer.recv().map_err(|_| self.closed())?
    }

    /// Ids of jobs that reached a final state at or before
    /// `finished_before_ms`, oldest first, at most `limit`.
    pub fn finished_before(
        &self,
        finished_before_ms: u64,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let conn = self.reader();
        // The state test keeps a job that was given a finish time by mistake
        // but is still unfinished from ever being deleted.
        let sql = "SELECT id FROM jobs WHERE finished_ms <= ?1 \
                   AND state NOT IN ('queued', 'running') ORDER BY finished_ms LIMIT ?2";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        conn.prepare_cached(sql)
            .and_then(|mut stmt| {
                stmt.query_map(params![ms_to_sql(finished_before_ms), limit], |row| {
                    parse_uuid(row, 0)
                })?
                .collect()
            })
            .map_err(|e| self.read_error(e))
    }

    /// Deletes the rows (unknown ids are ignored); returns once committed.
    pub fn delete(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.send(Op::Delete(ids.to_vec()), Reply::Delete(reply))?;
        answer.recv().map_err(|_| self.closed())?
    }

    /// Number of rows (tracked jobs), from every instance sharing the file.
    pub fn count(&self) -> Result<u64, StoreError> {
        let conn = self.reader();
        conn.query_row("SELECT COUNT(*) FROM jobs", [], |row| row.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.read_error(e))
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            writes: c.writes.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            failed_writes: c.failed_writes.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
        }
    }

    fn send(&self, op: Op, reply: Reply) -> Result<(), StoreError> {
        // `commands` is only None inside Drop, where nothing sends.
        let commands = self.commands.as_ref().ok_or_else(|| self.closed())?;
        commands
            .send(Command { op, reply })
            .map_err(|_| self.closed())
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock()
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed {
            path: self.path.clone(),
        }
    }

    fn read_error(&self, e: rusqlite::Error) -> StoreError {
        let path = self.path.clone();
        match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::BadRow {
                path,
                detail: e.to_string(),
            },
            e if is_corruption(&e) => StoreError::Corrupt {
                path,
                detail: e.to_string(),
            },
            e => StoreError::Read {
                path,
                detail: e.to_string(),
            },
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the channel is the writer's signal to stop; it first
        // commits everything still queued, so joining it is a flush.
        drop(self.commands.take());
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!(path = %self.path.display(), "job store writer thread panicked");
            }
        }
    }
}

/// Opens the write connection and brings the file to a known, checked state.
fn open_writer(path: &Path, synchronous: Synchronous) -> Result<Connection, StoreError> {
    let err = |e: rusqlite::Error| open_error(path, e);
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    // The first statement that reads the file: a file that is not a
    // database fails here.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        // SQLite keeps the old mode when it cannot create the -wal and -shm
        // files next to the database.
        return Err(StoreError::Unwritable {
            path: path.to_path_buf(),
            detail: format!("cannot switch to WAL mode, journal_mode is still {mode}"),
        });
    }
    let sync = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(err)?;

    let mut problems = Vec::new();
    conn.pragma_query(None, "quick_check", |row| {
        problems.push(row.get::<_, String>(0)?);
        Ok(())
    })
    .map_err(err)?;
    if problems != ["ok"] {
        problems.truncate(3);
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("quick_check: {}", problems.join("; ")),
        });
    }

    create_schema(&conn).map_err(|e| match e {
        SchemaError::Sql(e) => err(e),
        SchemaError::Newer(version) => StoreError::Incompatible {
            path: path.to_path_buf(),
            detail: format!(
                "schema version {version}, this server knows up to {SCHEMA_VERSION}: it was \
                 written by a newer server"
            ),
        },
    })?;
    // Catches a database made with a different `jobs` table (same version
    // number, other columns) before the first insert does.
    if let Err(e) = conn.prepare(&format!("SELECT {COLUMNS} FROM jobs LIMIT 0")) {
        return Err(StoreError::Incompatible {
            path: path.to_path_buf(),
            detail: e.to_string(),
        });
    }
    // SQLite silently opens a write-protected file read-only.
    if conn.is_readonly("main").map_err(err)? {
        return Err(StoreError::Unwritable {
            path: path.to_path_buf(),
            detail: "the file is read-only".into(),
        });
    }
    Ok(conn)
}

enum SchemaError {
    Sql(rusqlite::Error),
    Newer(i64),
}

impl From<rusqlite::Error> for SchemaError {
    fn from(e: rusqlite::Error) -> Self {
        SchemaError::Sql(e)
    }
}

/// Creates the schema if missing and stamps its version. Always a write
/// transaction, even when the schema exists, so a database this process
/// cannot write (read-only file, folder without room for the WAL) is found
/// at startup rather than at the first job.
fn create_schema(conn: &Connection) -> Result<(), SchemaError> {
    // IMMEDIATE takes the write lock first, so two instances starting
    // together do not both decide to create the schema.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(SchemaError::Newer(version));
        }
        if version > 0 {
            for migration in &MIGRATIONS[(version as usize - 1).min(MIGRATIONS.len())..] {
                conn.execute_batch(migration)?;
            }
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(_) => {
            // The original error is the one worth reporting.
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    result
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    let detail = e.to_string();
    if is_corruption(&e) {
        StoreError::Corrupt { path, detail }
    } else {
        // Everything else that stops an open (cannot create the file or its
        // folder, permission denied, read-only, disk full, I/O error) is
        // about where the file lives.
        StoreError::Unwritable { path, detail }
    }
}

#[cfg(test)]
mod tests;
mod writer;

use writer::{ms_to_sql, now_ms, parse_uuid, read_record, Command, Op, Reply, Writer};
