//! The writer thread: one connection, group commit, and the row codecs
//! the reader shares.

use super::*;

/// A write, as the writer thread receives it.
pub(super) struct Command {
    pub(super) op: Op,
    pub(super) reply: Reply,
}

pub(super) enum Op {
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
pub(super) enum Reply {
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
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    pub(super) counters: Arc<Counters>,
}

impl Writer {
    pub(super) fn run(mut self, rx: Receiver<Command>) {
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
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
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
                r.tenant,
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
pub(super) fn read_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
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
        tenant: row.get(12)?,
    })
}

pub(super) fn parse_uuid(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Uuid> {
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
pub(super) fn ms_to_sql(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn ms_from_sql(ms: i64, index: usize) -> rusqlite::Result<u64> {
    u64::try_from(ms).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(index, ms))
}

pub(super) use crate::clock::now_ms;
