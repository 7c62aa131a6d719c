//! One async job this instance runs, in memory: its state and progress
//! ([`Tracked`], told by the worker thread through [`JobObserver`]), what a
//! reader sees of it ([`JobSnapshot`]) and its event log ([`EventLog`]).
//!
//! The event log is the seam a cluster replaces: here an in-memory list
//! and a `watch` channel that wakes its readers; streams over it are
//! `tokio-stream` wrappers, so a reader joins at any point and follows it
//! to the job's last event.

use std::sync::Arc;

use futures_util::stream::{self, BoxStream, StreamExt};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use uuid::Uuid;

use super::store::JobState;
use crate::clock::Clock;
use crate::queue::JobObserver;
use crate::storage::StoredPage;

/// What a reader sees of an async job: the state of `GET /jobs/{id}` and
/// of every `state` event, before the HTTP side adds its links.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSnapshot {
    pub job_id: Uuid,
    /// The worker type's name.
    pub kind: String,
    /// The tenant it belongs to (`None`: submitted with API keys off).
    pub tenant: Option<Arc<str>>,
    pub state: JobState,
    /// Jobs ahead of this one while queued (0: next).
    pub position: Option<u64>,
    pub worker: Option<String>,
    /// Units (pages) done so far, and in all once known.
    pub done: u64,
    pub total: Option<u64>,
    /// Pages stored so far, by page number.
    pub pages: Vec<StoredPage>,
    /// The reply a sync request would have got, once `done`.
    pub result: Option<Value>,
    /// Why it ended, once `failed`, `cancelled` or `expired`.
    pub error: Option<Value>,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub expires_ms: Option<u64>,
}

/// One event of a job's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// The job changed state (the last one is final).
    State(Box<JobSnapshot>),
    /// A page was stored.
    Page {
        page: StoredPage,
        done: u64,
        total: Option<u64>,
    },
}

impl JobEvent {
    /// The job's last event: nothing follows it.
    pub fn is_last(&self) -> bool {
        matches!(self, JobEvent::State(s) if s.state.is_final())
    }
}

/// One job's events in order, which readers follow from any index.
pub trait EventLog: Send + Sync + 'static {
    fn push(&self, event: JobEvent);
    /// Events from `from` on.
    fn since(&self, from: usize) -> Vec<JobEvent>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The events from `from` on, numbered, as they come; ends after the
    /// last one (or when the log is dropped).
    fn follow(self: Arc<Self>, from: usize) -> BoxStream<'static, (usize, JobEvent)>;
}

/// The event log in memory, with a `watch` channel of its length.
pub struct MemoryLog {
    events: Mutex<Vec<JobEvent>>,
    changed: watch::Sender<usize>,
}

impl Default for MemoryLog {
    fn default() -> Self {
        MemoryLog {
            events: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
        }
    }
}

/// An item of a followed log: an event, or the end after the last one.
enum Step {
    Event(usize, JobEvent),
    End,
}

impl EventLog for MemoryLog {
    fn push(&self, event: JobEvent) {
        let mut events = self.events.lock();
        events.push(event);
        self.changed.send_replace(events.len());
    }

    fn since(&self, from: usize) -> Vec<JobEvent> {
        let events = self.events.lock();
        events[from.min(events.len())..].to_vec()
    }

    fn len(&self) -> usize {
        self.events.lock().len()
    }

    fn follow(self: Arc<Self>, from: usize) -> BoxStream<'static, (usize, JobEvent)> {
        // Subscribed before the first read: a push between the two wakes
        // the stream, and `since` decides what is new, so nothing is
        // missed or sent twice.
        let changes = WatchStream::new(self.changed.subscribe());
        let mut next = from;
        changes
            .flat_map(move |_| {
                let batch = self.since(next);
                let first = next;
                next += batch.len();
                let end = batch.iter().any(JobEvent::is_last).then_some(Step::End);
                let steps = batch
                    .into_iter()
                    .enumerate()
                    .map(move |(i, e)| Step::Event(first + i, e));
                stream::iter(steps.chain(end))
            })
            .take_while(|step| std::future::ready(matches!(step, Step::Event(..))))
            .filter_map(|step| {
                std::future::ready(match step {
                    Step::Event(i, e) => Some((i, e)),
                    Step::End => None,
                })
            })
            .boxed()
    }
}

/// Cancels the job and tells its place in line, whatever its worker type.
pub(super) trait Control: Send + Sync {
    fn cancel(&self);
    fn position(&self) -> Option<u64>;
}

impl<W: crate::queue::Worker> Control for crate::queue::JobHandle<W> {
    fn cancel(&self) {
        crate::queue::JobHandle::cancel(self);
    }
    fn position(&self) -> Option<u64> {
        crate::queue::JobHandle::position(self)
    }
}

/// What changes while the job lives.
struct Progress {
    state: JobState,
    worker: Option<String>,
    started_ms: Option<u64>,
    finished_ms: Option<u64>,
    done: u64,
    total: Option<u64>,
    pages: Vec<StoredPage>,
    result: Option<Value>,
    error: Option<Value>,
    /// DELETE asked for it; tells a user's cancel from a shutdown's.
    cancel_requested: bool,
}

/// An async job this instance runs.
pub struct Tracked {
    pub id: Uuid,
    pub kind: &'static str,
    /// The tenant that submitted it (API keys on).
    pub tenant: Option<Arc<str>>,
    created_ms: u64,
    ttl_ms: u64,
    clock: Arc<dyn Clock>,
    progress: Mutex<Progress>,
    log: Arc<MemoryLog>,
    control: Mutex<Option<Box<dyn Control>>>,
}

impl Tracked {
    pub(super) fn new(
        id: Uuid,
        kind: &'static str,
        tenant: Option<Arc<str>>,
        created_ms: u64,
        ttl_ms: u64,
        clock: Arc<dyn Clock>,
    ) -> Arc<Tracked> {
        let tracked = Arc::new(Tracked {
            id,
            kind,
            tenant,
            created_ms,
            ttl_ms,
            clock,
            progress: Mutex::new(Progress {
                state: JobState::Queued,
                worker: None,
                started_ms: None,
                finished_ms: None,
                done: 0,
                total: None,
                pages: Vec::new(),
                result: None,
                error: None,
                cancel_requested: false,
            }),
            log: Arc::new(MemoryLog::default()),
            control: Mutex::new(None),
        });
        let first = tracked.snapshot_of(&tracked.progress.lock());
        tracked.log.push(JobEvent::State(Box::new(first)));
        tracked
    }

    pub(super) fn set_control(&self, control: Box<dyn Control>) {
        *self.control.lock() = Some(control);
    }

    fn snapshot_of(&self, p: &Progress) -> JobSnapshot {
        let position = if p.state == JobState::Queued {
            self.control.lock().as_ref().and_then(|c| c.position())
        } else {
            None
        };
        let mut pages = p.pages.clone();
        // Pages arrive in render order, which fan-out mixes.
        pages.sort_by_key(|page| page.page);
        JobSnapshot {
            job_id: self.id,
            kind: self.kind.to_string(),
            tenant: self.tenant.clone(),
            state: p.state,
            position,
            worker: p.worker.clone(),
            done: p.done,
            total: p.total,
            pages,
            result: p.result.clone(),
            error: p.error.clone(),
            created_ms: self.created_ms,
            started_ms: p.started_ms,
            finished_ms: p.finished_ms,
            expires_ms: p.finished_ms.map(|f| f + self.ttl_ms),
        }
    }

    pub fn snapshot(&self) -> JobSnapshot {
        self.snapshot_of(&self.progress.lock())
    }

    pub fn state(&self) -> JobState {
        self.progress.lock().state
    }

    pub(super) fn finished_ms(&self) -> Option<u64> {
        self.progress.lock().finished_ms
    }

    pub(super) fn cancel_requested(&self) -> bool {
        self.progress.lock().cancel_requested
    }

    /// The job's events.
    pub fn log(&self) -> Arc<MemoryLog> {
        Arc::clone(&self.log)
    }

    /// Records the final outcome, once; later calls are ignored.
    pub(super) fn end(&self, state: JobState, result: Option<Value>, error: Option<Value>) -> bool {
        let mut p = self.progress.lock();
        if p.state.is_final() {
            return false;
        }
        p.state = state;
        if state != JobState::Done {
            // A job that did not finish leaves no pages behind.
            p.pages.clear();
        }
        p.result = result;
        p.error = error;
        p.finished_ms = Some(self.clock.now_ms());
        self.log
            .push(JobEvent::State(Box::new(self.snapshot_of(&p))));
        true
    }

    /// Stops the job (DELETE). False if it had already ended.
    pub(super) fn request_cancel(&self) -> bool {
        {
            let mut p = self.progress.lock();
            if p.state.is_final() {
                return false;
            }
            p.cancel_requested = true;
        }
        if let Some(control) = self.control.lock().as_ref() {
            control.cancel();
        }
        true
    }
}

impl JobObserver for Tracked {
    fn started(&self, worker: &str) {
        let mut p = self.progress.lock();
        if p.state.is_final() {
            return;
        }
        p.state = JobState::Running;
        p.worker = Some(worker.to_string());
        p.started_ms = Some(self.clock.now_ms());
        self.log
            .push(JobEvent::State(Box::new(self.snapshot_of(&p))));
    }

    fn total(&self, total: u64) {
        self.progress.lock().total = Some(total);
    }

    fn page(&self, done: u64, page: &StoredPage) {
        let mut p = self.progress.lock();
        p.done = done;
        p.pages.push(page.clone());
        self.log.push(JobEvent::Page {
            page: page.clone(),
            done,
            total: p.total,
        });
    }
}

/// A page as listed in a stored reply (`result.pages`), for jobs served
/// from their record.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct ReplyPages {
    #[serde(default)]
    pub pages: Vec<StoredPage>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn tracked() -> Arc<Tracked> {
        Tracked::new(Uuid::new_v4(), "test", None, 0, 1000, Arc::new(SystemClock))
    }

    fn page(n: u32) -> StoredPage {
        StoredPage::tiny(n, 1)
    }

    #[tokio::test]
    async fn a_follower_gets_every_event_from_its_start_and_ends_with_the_last() {
        let job = tracked();
        let follower = job.log().follow(0);
        job.started("w-0");
        job.page(1, &page(1));
        job.end(JobState::Done, None, None);
        let got: Vec<(usize, JobEvent)> = follower.collect().await;
        let ids: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, [0, 1, 2, 3], "queued, running, page, done");
        assert!(got[3].1.is_last());
    }

    #[tokio::test]
    async fn a_late_follower_resumes_where_it_asks() {
        let job = tracked();
        job.started("w-0");
        job.page(1, &page(1));
        job.page(2, &page(2));
        let resumed = job.log().follow(2);
        job.end(JobState::Done, None, None);
        let ids: Vec<usize> = resumed.map(|(i, _)| i).collect().await;
        assert_eq!(ids, [2, 3, 4]);
    }

    #[test]
    fn the_outcome_is_recorded_once_and_a_failed_job_keeps_no_pages() {
        let job = tracked();
        job.page(1, &page(1));
        assert!(job.end(JobState::Failed, None, None));
        assert!(!job.end(JobState::Done, None, None), "the first end wins");
        let snapshot = job.snapshot();
        assert_eq!(snapshot.state, JobState::Failed);
        assert!(snapshot.pages.is_empty());
        assert!(!job.request_cancel(), "an ended job cannot be cancelled");
    }
}
