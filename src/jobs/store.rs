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
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
const SCHEMA_VERSION: i64 = 1;

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
    finished_ms     INTEGER
);
-- UNIQUE lets any number of rows have no key (NULLs are distinct in SQLite).
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency_key ON jobs (idempotency_key);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_ms);
CREATE INDEX IF NOT EXISTS jobs_finished_ms ON jobs (finished_ms);
";

/// Every column, in the order [`read_record`] expects them.
const COLUMNS: &str = "id, kind, state, owner, idempotency_key, fingerprint, request, result, \
                       error, created_ms, updated_ms, finished_ms";

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
    /// Worker type: "pdf" | "message".
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
        // A panic while holding the lock cannot leave the connection in a
        // state later reads would trip on: every read is a single statement.
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
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

/// A write, as the writer thread receives it.
struct Command {
    op: Op,
    reply: Reply,
}

enum Op {
    Insert(JobRecord),
    Update {
        id: Uuid,
        state: JobState,
        result: Option<serde_json::Value>,
        error: Option<serde_json::Value>,
        finished_ms: Option<u64>,
        updated_ms: u64,
    },
    Claim {
        id: Uuid,
        from: String,
        to: String,
        updated_ms: u64,
    },
    Delete(Vec<Uuid>),
    /// Writes nothing; answered after the batch it is in is committed.
    Flush,
}

/// Who waits for a write. Async callers get a tokio oneshot; blocking ones a
/// crossbeam channel, because a tokio oneshot's `blocking_recv` panics when
/// called from inside a runtime, which is where tests and shutdown run.
enum Reply {
    None,
    Insert(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
    Claim(Sender<Result<bool, StoreError>>),
    Delete(Sender<Result<(), StoreError>>),
    Flush(Sender<()>),
}

impl Reply {
    /// Delivers the outcome; a caller that has gone away is not an error.
    fn send(self, outcome: Result<bool, StoreError>) {
        match self {
            Reply::None => {}
            Reply::Flush(tx) => {
                let _ = tx.send(());
            }
            Reply::Insert(tx) => {
                let _ = tx.send(outcome.map(|_| ()));
            }
            Reply::Claim(tx) => {
                let _ = tx.send(outcome);
            }
            Reply::Delete(tx) => {
                let _ = tx.send(outcome.map(|_| ()));
            }
        }
    }
}

/// The thread that owns the write connection.
struct Writer {
    conn: Connection,
    path: PathBuf,
    counters: Arc<Counters>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Command>) {
        // `recv` keeps returning queued commands after the Store is dropped
        // and only fails once the channel is both closed and empty.
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            // No waiting for more: whatever arrived while the previous batch
            // was committing is the batch, so a lone insert is not delayed.
            batch.extend(rx.try_iter().take(MAX_BATCH - 1));
            self.commit(batch);
        }
    }

    /// Applies a batch in one transaction and answers every caller in it.
    fn commit(&mut self, batch: Vec<Command>) {
        let (ops, replies): (Vec<Op>, Vec<Reply>) =
            batch.into_iter().map(|c| (c.op, c.reply)).unzip();
        let outcomes = self.apply(&ops);
        // Counted before anyone is answered, so a caller that reads the
        // stats after its write returns sees that write.
        let mut written = 0;
        let mut failed = 0;
        for (op, outcome) in ops.iter().zip(&outcomes) {
            match (op, outcome) {
                (Op::Flush, _) => {}
                (_, Ok(_)) => written += 1,
                (op, Err(e)) => {
                    failed += 1;
                    if let Op::Update { id, .. } = op {
                        // Nobody waits for an update, so the log is its
                        // only report.
                        tracing::error!(job_id = %id, "job update lost: {e}");
                    }
                }
            }
        }
        let c = &self.counters;
        c.writes.fetch_add(written, Ordering::Relaxed);
        c.failed_writes.fetch_add(failed, Ordering::Relaxed);
        c.largest_batch.fetch_max(written, Ordering::Relaxed);
        for ((op, reply), outcome) in ops.iter().zip(replies).zip(outcomes) {
            if matches!(op, Op::Flush) {
                reply.send(Ok(true));
            } else {
                reply.send(outcome);
            }
        }
    }

    /// One outcome per op, in order. An op that fails on its own (a reused
    /// key) fails alone; an error that ends the transaction (disk full, I/O
    /// error, lock timeout, failed commit) fails the whole batch.
    fn apply(&mut self, ops: &[Op]) -> Vec<Result<bool, StoreError>> {
        let path = self.path.clone();
        let fail_all = |e: &rusqlite::Error| {
            tracing::error!(path = %path.display(), writes = ops.len(), "job store commit failed: {e}");
            ops.iter()
                .map(|_| Err(write_error(&path, e)))
                .collect::<Vec<_>>()
        };
        if ops.iter().all(|op| matches!(op, Op::Flush)) {
            return ops.iter().map(|_| Ok(true)).collect();
        }
        let tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => return fail_all(&e),
        };
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            match apply_one(&tx, op) {
                Ok(answer) => outcomes.push(Ok(answer)),
                // SQLite rolled the whole transaction back: nothing in this
                // batch was written, including the ops that succeeded.
                Err(e) if tx.is_autocommit() => return fail_all(&e),
                Err(e) => outcomes.push(Err(op_error(&self.path, op, &e))),
            }
        }
        // A failed commit drops the transaction, which rolls it back.
        if let Err(e) = tx.commit() {
            return fail_all(&e);
        }
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        outcomes
    }
}

/// Runs one op inside the batch's transaction. The bool is the claim's
/// answer; other ops return true.
fn apply_one(tx: &rusqlite::Transaction<'_>, op: &Op) -> rusqlite::Result<bool> {
    match op {
        Op::Insert(r) => {
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT INTO jobs ({COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))?;
            stmt.execute(params![
                r.id.to_string(),
                r.kind,
                r.state.as_str(),
                r.owner,
                r.idempotency_key,
                r.fingerprint,
                r.request.to_string(),
                r.result.as_ref().map(|v| v.to_string()),
                r.error.as_ref().map(|v| v.to_string()),
                ms_to_sql(r.created_ms),
                ms_to_sql(r.updated_ms),
                r.finished_ms.map(ms_to_sql),
            ])?;
            Ok(true)
        }
        Op::Update {
            id,
            state,
            result,
            error,
            finished_ms,
            updated_ms,
        } => {
            let mut stmt = tx.prepare_cached(
                "UPDATE jobs SET state = ?2, result = ?3, error = ?4, finished_ms = ?5, \
                 updated_ms = ?6 WHERE id = ?1",
            )?;
            let changed = stmt.execute(params![
                id.to_string(),
                state.as_str(),
                result.as_ref().map(|v| v.to_string()),
                error.as_ref().map(|v| v.to_string()),
                finished_ms.map(ms_to_sql),
                ms_to_sql(*updated_ms),
            ])?;
            if changed == 0 {
                // Deleted by the cleanup, or its insert failed: nothing to
                // keep, but worth knowing about.
                tracing::warn!(job_id = %id, state = state.as_str(), "update of an unknown job ignored");
            }
            Ok(true)
        }
        Op::Claim {
            id,
            from,
            to,
            updated_ms,
        } => {
            let mut stmt = tx.prepare_cached(
                "UPDATE jobs SET owner = ?3, updated_ms = ?4 WHERE id = ?1 AND owner = ?2",
            )?;
            let changed =
                stmt.execute(params![id.to_string(), from, to, ms_to_sql(*updated_ms)])?;
            Ok(changed == 1)
        }
        Op::Delete(ids) => {
            let mut stmt = tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?;
            for id in ids {
                stmt.execute([id.to_string()])?;
            }
            Ok(true)
        }
        Op::Flush => Ok(true),
    }
}

/// The error a single failed op reports to its caller.
fn op_error(path: &Path, op: &Op, e: &rusqlite::Error) -> StoreError {
    if let (Op::Insert(record), rusqlite::Error::SqliteFailure(f, message)) = (op, e) {
        let message = message.as_deref().unwrap_or("");
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            && message.contains("idempotency_key")
        {
            return StoreError::DuplicateKey;
        }
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY {
            return StoreError::DuplicateId(record.id);
        }
    }
    write_error(path, e)
}

fn write_error(path: &Path, e: &rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    let detail = e.to_string();
    if is_corruption(e) {
        StoreError::Corrupt { path, detail }
    } else {
        StoreError::Write { path, detail }
    }
}

/// Decodes a row selected with [`COLUMNS`]. A value that does not decode is
/// a conversion failure, which `read_error` reports as a bad row.
fn read_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    let state: String = row.get(2)?;
    Ok(JobRecord {
        id: parse_uuid(row, 0)?,
        kind: row.get(1)?,
        state: JobState::parse(&state)
            .ok_or_else(|| conversion_error(2, format!("unknown job state {state:?}")))?,
        owner: row.get(3)?,
        idempotency_key: row.get(4)?,
        fingerprint: row.get(5)?,
        request: parse_json(row, 6)?.unwrap_or(serde_json::Value::Null),
        result: parse_json(row, 7)?,
        error: parse_json(row, 8)?,
        created_ms: ms_from_sql(row.get(9)?, 9)?,
        updated_ms: ms_from_sql(row.get(10)?, 10)?,
        finished_ms: row
            .get::<_, Option<i64>>(11)?
            .map(|ms| ms_from_sql(ms, 11))
            .transpose()?,
    })
}

fn parse_uuid(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(index)?;
    Uuid::parse_str(&text).map_err(|e| conversion_error(index, format!("job id {text:?}: {e}")))
}

fn parse_json(
    row: &rusqlite::Row<'_>,
    index: usize,
) -> rusqlite::Result<Option<serde_json::Value>> {
    row.get::<_, Option<String>>(index)?
        .map(|text| serde_json::from_str(&text).map_err(|e| conversion_error(index, e.to_string())))
        .transpose()
}

fn conversion_error(index: usize, detail: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, detail.into())
}

/// SQLite integers are i64; unix milliseconds stay below i64::MAX for the
/// next 292 million years, so saturating never changes a real value.
fn ms_to_sql(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn ms_from_sql(ms: i64, index: usize) -> rusqlite::Result<u64> {
    u64::try_from(ms).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(index, ms))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;

    /// A fresh folder under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let dir = std::env::temp_dir().join(format!("jobserver-store-{}", Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("temp dir is created");
            TempDir(dir)
        }

        fn db(&self) -> PathBuf {
            self.0.join("jobs.db")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn record(created_ms: u64) -> JobRecord {
        JobRecord {
            id: Uuid::new_v4(),
            kind: "pdf".into(),
            state: JobState::Queued,
            owner: "instance-a".into(),
            idempotency_key: None,
            fingerprint: None,
            request: json!({"input": "/out/in.pdf", "pages": [1, 2]}),
            result: None,
            error: None,
            created_ms,
            updated_ms: created_ms,
            finished_ms: None,
        }
    }

    #[test]
    fn the_store_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Store>();
    }

    #[test]
    fn job_states_round_trip_through_their_strings() {
        for state in [
            JobState::Queued,
            JobState::Running,
            JobState::Done,
            JobState::Failed,
            JobState::Cancelled,
            JobState::Expired,
        ] {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
            let json = serde_json::to_value(state).expect("a state serializes");
            assert_eq!(json, json!(state.as_str()), "serde and as_str agree");
            let unfinished = matches!(state, JobState::Queued | JobState::Running);
            assert_eq!(state.is_final(), !unfinished, "{state:?}");
        }
        assert_eq!(JobState::parse("Done"), None, "parsing is exact");
    }

    #[tokio::test]
    async fn an_inserted_record_reads_back_with_every_field() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).expect("store opens");
        let full = JobRecord {
            id: Uuid::new_v4(),
            kind: "message".into(),
            state: JobState::Done,
            owner: "instance-b".into(),
            idempotency_key: Some("key-1".into()),
            fingerprint: Some("sha256:abc".into()),
            request: json!({"text": "héllo", "n": 1.5}),
            result: Some(json!({"pages": 3, "url": "/jobs/x/result"})),
            error: Some(json!({"error": "none"})),
            created_ms: 1_700_000_000_000,
            updated_ms: 1_700_000_000_500,
            finished_ms: Some(1_700_000_001_000),
        };
        store.insert(full.clone()).await.expect("insert commits");
        let sparse = record(5);
        store.insert(sparse.clone()).await.expect("insert commits");

        assert_eq!(store.get(full.id).expect("get works"), Some(full.clone()));
        assert_eq!(store.get(sparse.id).expect("get works"), Some(sparse));
        assert_eq!(
            store.find_by_key("key-1").expect("find works"),
            Some(full),
            "the record is found by its idempotency key"
        );
        assert_eq!(store.find_by_key("key-2").expect("find works"), None);
        assert_eq!(store.get(Uuid::new_v4()).expect("get works"), None);
        assert_eq!(store.count().expect("count works"), 2);
    }

    #[tokio::test]
    async fn an_update_sent_right_after_the_insert_is_applied_after_it() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).expect("store opens");
        let job = record(10);
        let mut insert = Box::pin(store.insert(job.clone()));
        // The first poll queues the insert; the updates are sent while it
        // may still be uncommitted and must land on the row, not on nothing.
        let polled = futures::poll!(&mut insert);
        store.update(job.id, JobState::Running, None, None, None);
        store.update(
            job.id,
            JobState::Done,
            Some(json!({"pages": 2})),
            None,
            Some(99),
        );
        match polled {
            std::task::Poll::Ready(result) => result.expect("insert commits"),
            std::task::Poll::Pending => insert.await.expect("insert commits"),
        }
        store.flush();

        let got = store.get(job.id).expect("get works").expect("job exists");
        assert_eq!(got.state, JobState::Done, "the last update wins");
        assert_eq!(got.result, Some(json!({"pages": 2})));
        assert_eq!(got.finished_ms, Some(99));
        assert!(got.updated_ms >= job.updated_ms, "updated_ms moves forward");
        assert_eq!(got.request, job.request, "the update keeps the request");
    }

    #[test]
    fn an_update_sent_before_the_insert_future_is_polled_finds_no_row() {
        // The ordering rule callers rely on: an insert is queued when its
        // future is first polled, not when `insert` is called, so an update
        // must follow an awaited (or at least polled) insert.
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).expect("store opens");
        let job = record(1);
        let insert = store.insert(job.clone());
        store.update(job.id, JobState::Done, None, None, Some(2));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime builds");
        rt.block_on(insert).expect("insert commits");
        store.flush();
        let got = store.get(job.id).expect("get works").expect("job exists");
        assert_eq!(got.state, JobState::Queued, "the early update found no row");
    }

    #[tokio::test]
    async fn a_record_survives_dropping_and_reopening_the_store() {
        let dir = TempDir::new();
        let job = record(7);
        {
            let store = Store::open(&dir.db()).expect("store opens");
            store.insert(job.clone()).await.expect("insert commits");
            store.update(job.id, JobState::Running, None, None, None);
            // No flush: dropping must commit the queued update.
        }
        let store = Store::open(&dir.db()).expect("store reopens");
        let got = store.get(job.id).expect("get works").expect("job survived");
        assert_eq!(
            got.state,
            JobState::Running,
            "the update queued at drop landed"
        );
        assert_eq!(got.request, job.request);
    }

    #[tokio::test]
    async fn unfinished_lists_only_queued_and_running_jobs_oldest_first() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).expect("store opens");
        let mut newest_running = record(300);
        newest_running.state = JobState::Running;
        let oldest_queued = record(100);
        let mut done = record(50);
        done.state = JobState::Done;
        done.finished_ms = Some(60);
        let middle_queued = record(200);
        let mut failed = record(150);
        failed.state = JobState::Failed;
        for r in [
            &newest_running,
            &oldest_queued,
            &done,
            &middle_queued,
            &failed,
        ] {
            store.insert(r.clone()).await.expect("insert commits");
        }
        let ids: Vec<Uuid> = store
            .unfinished()
            .expect("unfinished works")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(
            ids,
            vec![oldest_queued.id, middle_queued.id, newest_running.id],
            "only unfinished jobs, by creation time"
        );
    }

    #[tokio::test]
    async fn a_job_is_claimed_once_and_the_second_claimer_is_refused() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).expect("store opens");
        let job = record(1);
        store.insert(job.clone()).await.expect("insert commits");

        assert!(store.claim(job.id, "instance-a", "b").expect("claim works"));
        assert!(
            !store.claim(job.id, "instance-a", "c").expect("claim works"),
            "the job no longer belongs to instance-a"
        );
        assert!(!store
            .claim(Uuid::new_v4(), "instance-a", "c")
            .expect("claim works"));
        let got = store.get(job.id).expect("get works").expect("job exists");
        assert_eq!(got.owner, "b", "the first claimer owns the job");
    }

    #[tokio::test]
    async fn finished_jobs_past_a_time_are_listed_and_deleted() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).expect("store opens");
        let mut old = Vec::new();
        for finished in [10, 20, 30] {
            let mut r = record(1);
            r.state = JobState::Done;
            r.finished_ms = Some(finished);
            store.insert(r.clone()).await.expect("insert commits");
            old.push(r.id);
        }
        let mut recent = record(1);
        recent.state = JobState::Expired;
        recent.finished_ms = Some(1_000);
        store.insert(recent.clone()).await.expect("insert commits");
        let mut running = record(1);
        running.state = JobState::Running;
        running.finished_ms = Some(5);
        store.insert(running.clone()).await.expect("insert commits");

        assert_eq!(
            store.finished_before(30, 100).expect("query works"),
            old,
            "final jobs finished at or before 30, oldest first; never a running one"
        );
        assert_eq!(store.finished_before(30, 2).expect("query works"), old[..2]);

        store.delete(&old).expect("delete commits");
        assert_eq!(
            store.finished_before(30, 100).expect("query works"),
            Vec::<Uuid>::new()
        );
        assert_eq!(store.get(old[0]).expect("get works"), None);
        assert_eq!(store.count().expect("count works"), 2, "the others stay");
        store.delete(&[]).expect("deleting nothing is fine");
    }

    #[tokio::test]
    async fn a_reused_idempotency_key_is_a_duplicate_key_error() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).expect("store opens");
        let mut first = record(1);
        first.idempotency_key = Some("same".into());
        let mut second = record(2);
        second.idempotency_key = Some("same".into());
        store
            .insert(first.clone())
            .await
            .expect("first insert commits");
        let err = store
            .insert(second.clone())
            .await
            .expect_err("key is taken");
        assert!(matches!(err, StoreError::DuplicateKey), "got {err:?}");
        assert_eq!(err.to_string(), "an idempotency key is already used");

        let mut same_id = first.clone();
        same_id.idempotency_key = None;
        let err = store.insert(same_id).await.expect_err("id is taken");
        assert!(
            matches!(err, StoreError::DuplicateId(id) if id == first.id),
            "got {err:?}"
        );

        // Jobs without a key never collide.
        store.insert(record(3)).await.expect("no key");
        store.insert(record(4)).await.expect("no key either");
        assert_eq!(store.get(second.id).expect("get works"), None);
    }

    #[tokio::test]
    async fn a_failed_insert_does_not_fail_the_others_in_its_batch() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).expect("store opens");
        let mut taken = record(1);
        taken.idempotency_key = Some("k".into());
        store.insert(taken).await.expect("insert commits");

        let mut clash = record(2);
        clash.idempotency_key = Some("k".into());
        let fine: Vec<JobRecord> = (0..20).map(record).collect();
        let (clash_result, fine_results) = tokio::join!(
            store.insert(clash),
            futures::future::join_all(fine.iter().cloned().map(|r| store.insert(r)))
        );
        assert!(matches!(clash_result, Err(StoreError::DuplicateKey)));
        for (r, result) in fine.iter().zip(fine_results) {
            result.expect("the rest of the batch commits");
            assert!(store.get(r.id).expect("get works").is_some());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_inserts_all_land_and_share_commits() {
        let dir = TempDir::new();
        let store = Arc::new(Store::open(&dir.db()).expect("store opens"));
        const INSERTS: u64 = 200;
        let tasks: Vec<_> = (0..INSERTS)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.insert(record(i)).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("task ran").expect("insert commits");
        }
        let stats = store.stats();
        assert_eq!(store.count().expect("count works"), INSERTS);
        assert_eq!(stats.writes, INSERTS, "every insert counted once");
        assert!(
            stats.commits < INSERTS,
            "inserts were grouped: {} commits for {INSERTS} inserts",
            stats.commits
        );
        assert!(stats.largest_batch > 1, "{stats:?}");
    }

    #[test]
    fn a_file_of_random_bytes_is_refused_as_not_a_database() {
        let dir = TempDir::new();
        let bytes: Vec<u8> = (0..8192)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(dir.db(), bytes).expect("garbage written");
        let err = Store::open(&dir.db())
            .err()
            .expect("a garbage file is refused");
        let message = err.to_string();
        assert!(matches!(err, StoreError::Corrupt { .. }), "got {err:?}");
        assert!(
            message.contains("corrupt") && message.contains("not a database"),
            "{message}"
        );
        assert!(
            message.contains(&dir.db().display().to_string()),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_database_with_damaged_pages_is_refused_as_corrupt() {
        let dir = TempDir::new();
        {
            let store = Store::open(&dir.db()).expect("store opens");
            for i in 0..200 {
                store.insert(record(i)).await.expect("insert commits");
            }
            // Closing the last connection checkpoints the WAL into the file.
        }
        let mut bytes = std::fs::read(dir.db()).expect("database read");
        assert!(bytes.len() > 3 * 4096, "the table spans several pages");
        // Page 1 (header and schema) stays intact; the pages after it hold
        // the table and its indexes.
        for b in &mut bytes[4096..3 * 4096] {
            *b = 0xA5;
        }
        std::fs::write(dir.db(), bytes).expect("damage written");
        let err = Store::open(&dir.db())
            .err()
            .expect("a damaged file is refused");
        assert!(matches!(err, StoreError::Corrupt { .. }), "got {err:?}");
        let message = err.to_string();
        assert!(message.contains("move it away or delete it"), "{message}");
    }

    #[test]
    fn a_location_that_cannot_be_created_is_refused_with_its_path() {
        let dir = TempDir::new();
        // A regular file where a folder should be: fails even for root,
        // unlike a permission-based check.
        let not_a_folder = dir.0.join("plain-file");
        std::fs::write(&not_a_folder, b"x").expect("file written");
        let path = not_a_folder.join("jobs.db");
        let err = Store::open(&path).err().expect("open fails");
        assert!(matches!(err, StoreError::Unwritable { .. }), "got {err:?}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains("cannot be created or written"),
            "{message}"
        );
    }

    #[test]
    fn a_database_from_a_newer_server_is_refused() {
        let dir = TempDir::new();
        drop(Store::open(&dir.db()).expect("store opens"));
        let conn = Connection::open(dir.db()).expect("raw open");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("version bumped");
        drop(conn);
        let err = Store::open(&dir.db()).err().expect("open fails");
        assert!(
            matches!(err, StoreError::Incompatible { .. }),
            "got {err:?}"
        );
    }

    /// Mean cost of a durable insert, sequential and with 64 in flight, for
    /// both synchronous settings. Run with
    /// `cargo test --release --lib jobs::store -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn measure_insert_cost() {
        const SEQUENTIAL: u64 = 2_000;
        const CONCURRENCY: u64 = 64;
        const PER_TASK: u64 = 50;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("runtime builds");
        for synchronous in [Synchronous::Normal, Synchronous::Full] {
            let dir = TempDir::new();
            let store = Arc::new(Store::open_with(&dir.db(), synchronous).expect("store opens"));

            let started = Instant::now();
            rt.block_on(async {
                for i in 0..SEQUENTIAL {
                    store.insert(record(i)).await.expect("insert commits");
                }
            });
            let sequential = started.elapsed();
            let after_sequential = store.stats();

            let started = Instant::now();
            rt.block_on(async {
                let tasks: Vec<_> = (0..CONCURRENCY)
                    .map(|t| {
                        let store = Arc::clone(&store);
                        tokio::spawn(async move {
                            for i in 0..PER_TASK {
                                store.insert(record(t * PER_TASK + i)).await?;
                            }
                            Ok::<_, StoreError>(())
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("task ran").expect("inserts commit");
                }
            });
            let concurrent = started.elapsed();
            let stats = store.stats();
            let concurrent_inserts = CONCURRENCY * PER_TASK;
            let concurrent_commits = stats.commits - after_sequential.commits;
            println!(
                "synchronous={synchronous:?}: sequential: {:.1} µs/insert ({SEQUENTIAL} inserts, \
                 {} commits); {CONCURRENCY} concurrent: {:.1} µs/insert ({concurrent_inserts} \
                 inserts, {concurrent_commits} commits, {:.1} inserts/commit)",
                sequential.as_secs_f64() * 1e6 / SEQUENTIAL as f64,
                after_sequential.commits,
                concurrent.as_secs_f64() * 1e6 / concurrent_inserts as f64,
                concurrent_inserts as f64 / concurrent_commits as f64,
            );
        }
    }
}
