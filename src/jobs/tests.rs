//! `AsyncJobs` on its own: a test worker, the local services, and tokio's
//! clock (paused where no OS thread must make progress).
//!
//! The worker reports each start (and each cancel it sees) on a channel
//! and blocks on a gate of the job's own, so tests wait on signals, not
//! sleeps. Real OS threads run the jobs and write the records, and paused
//! tokio time auto-advances to the next timer while they work (every
//! admitted job holds two deadline timers), so tests that run jobs use
//! real time until those jobs are over and only then pause it.

use bytes::Bytes;
use crossbeam_channel::{unbounded, Receiver, Sender};
use futures_util::StreamExt;
use serde_json::json;
use tempfile::TempDir;

use super::*;
use crate::clock::TokioClock;
use crate::config::PoolConfig;
use crate::queue::testing::{TestJob, TestWorker};
use crate::storage::{LocalPages, StoredPage};

/// Long enough for any signal on a loaded machine, short enough for a
/// failing test.
const SIGNAL: Duration = Duration::from_secs(5);

const TTL: Duration = Duration::from_secs(60);

/// A gate for one blocking job: send (or drop the sender) to open it.
fn gate() -> (Sender<()>, Receiver<()>) {
    unbounded()
}

struct Harness {
    jobs: Arc<AsyncJobs>,
    queue: JobQueue<TestWorker>,
    started: Receiver<&'static str>,
    saw_cancel: Receiver<&'static str>,
    layout: Layout,
    clock: Arc<dyn Clock>,
    _dir: TempDir,
}

fn jobs_config(max_tracked: u64) -> JobsConfig {
    JobsConfig {
        result_ttl: TTL,
        max_tracked,
    }
}

#[derive(PartialEq)]
enum Role {
    /// Waits until this instance holds the lease.
    Primary,
    /// Another instance holds the lease already.
    Standby,
}

/// Waits until `election` holds the lease. The wait runs on the blocking
/// pool with a std timeout: a tokio timer would fire at once under paused
/// time, and a running blocking task keeps paused time from advancing.
async fn until_primary(election: &Election) {
    let mut role = election.subscribe();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = futures::executor::block_on(role.wait_for(|&primary| primary)).map(|_| ());
        let _ = tx.send(());
    });
    let waited = tokio::task::spawn_blocking(move || rx.recv_timeout(SIGNAL))
        .await
        .unwrap();
    assert!(
        waited.is_ok(),
        "the only instance in a fresh folder should become the primary"
    );
}

/// Async jobs over the local services in `layout`, as `AsyncJobs::open`
/// builds them, on `clock`.
async fn open_jobs(
    layout: &Layout,
    config: JobsConfig,
    clock: Arc<dyn Clock>,
    role: Role,
) -> Arc<AsyncJobs> {
    let store = Store::open(&layout.database()).unwrap();
    let members = LockFiles::join(&layout.instances_dir()).unwrap();
    let election = Election::start(layout.primary_lock()).unwrap();
    if role == Role::Primary {
        until_primary(&election).await;
    } else {
        assert!(
            !election.is_primary(),
            "another instance holds the lease, so this one waits"
        );
    }
    let services = Services {
        records: Arc::new(SqliteRecords::new(store)),
        pages: Arc::new(LocalPages::new(layout.clone())),
        members: Box::new(members),
        lease: Box::new(election),
        clock,
    };
    AsyncJobs::with(config, services).await.unwrap()
}

/// One worker thread, room for 16 queued jobs, a minute of budget.
async fn harness(config: JobsConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    layout.create().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let jobs = open_jobs(&layout, config, Arc::clone(&clock), Role::Primary).await;
    let (started_tx, started) = unbounded();
    let (cancel_tx, saw_cancel) = unbounded();
    let pool = PoolConfig::new(1, 16, Duration::from_secs(60));
    let queue = JobQueue::start("test", pool, move |_| TestWorker {
        started: started_tx.clone(),
        saw_cancel: cancel_tx.clone(),
    })
    .unwrap();
    Harness {
        jobs,
        queue,
        started,
        saw_cancel,
        layout,
        clock,
        _dir: dir,
    }
}

fn request(job: TestJob) -> AsyncRequest<TestWorker> {
    AsyncRequest {
        job_id: Uuid::new_v4(),
        kind: "test",
        job,
        options: SubmitOptions::default(),
        request: json!({}),
        idempotency: None,
        input: None,
        to_result: Box::new(|done| json!({ "output": done.output })),
        record_place: None,
        queue_place: None,
        tenant: None,
    }
}

fn keyed(job: TestJob, key: &str, fingerprint: &str) -> AsyncRequest<TestWorker> {
    AsyncRequest {
        idempotency: Some(Idempotency {
            key: key.to_string(),
            fingerprint: fingerprint.to_string(),
        }),
        ..request(job)
    }
}

impl Harness {
    /// An id a finished job's record already holds: a submit under it
    /// cannot be recorded.
    async fn taken_id(&self) -> Uuid {
        let taken = Uuid::new_v4();
        let now = self.clock.now_ms();
        self.jobs
            .records()
            .insert(stored_record(taken, JobState::Done, now))
            .await
            .unwrap();
        taken
    }

    async fn submit(&self, job: TestJob) -> Result<Accepted, ApiError> {
        self.jobs.submit(&self.queue, request(job)).await
    }

    fn expect_start(&self, name: &str) {
        let got = self
            .started
            .recv_timeout(SIGNAL)
            .unwrap_or_else(|_| panic!("expected {name} to start"));
        assert_eq!(got, name, "expected {name} to start next");
    }

    /// Submits a job named `name` and waits for its worker to start it.
    async fn started(&self, name: &'static str, job: TestJob) -> Uuid {
        let accepted = self.submit(job).await.unwrap();
        self.expect_start(name);
        accepted.job.job_id
    }

    /// Cancels `id` on a task of its own (DELETE waits for the end).
    fn cancel_in_background(
        &self,
        id: Uuid,
    ) -> tokio::task::JoinHandle<Result<Option<JobSnapshot>, ApiError>> {
        let jobs = Arc::clone(&self.jobs);
        tokio::spawn(async move { jobs.cancel(id).await })
    }

    fn expect_cancel_seen(&self, name: &str) {
        let got = self
            .saw_cancel
            .recv_timeout(SIGNAL)
            .unwrap_or_else(|_| panic!("expected the worker to see {name} cancelled"));
        assert_eq!(got, name);
    }

    /// Runs a quick job to its end and checks that it is the only job to
    /// start: whatever was refused or cancelled (`what`) never ran.
    async fn next_runs_alone(&self, what: &str) {
        let next = self.submit(TestJob::Quick("next")).await.unwrap();
        self.expect_start("next");
        let end = ended(&self.jobs, next.job.job_id).await;
        assert_eq!(end.state, JobState::Done);
        assert!(self.started.try_recv().is_err(), "{what}");
    }

    /// Puts page 1 of `id` into the page store.
    async fn put_page(&self, id: Uuid) {
        store_page(self.jobs.pages(), id).await;
    }
}

/// Follows the job's events to the last one and returns the final state.
async fn ended(jobs: &AsyncJobs, id: Uuid) -> JobSnapshot {
    let tracked = jobs.get_live(id).expect("the job is in memory");
    let events = tokio::time::timeout(SIGNAL, tracked.log().follow(0).collect::<Vec<_>>())
        .await
        .expect("the job should reach a final state");
    match events.last() {
        Some((_, JobEvent::State(job))) if job.state.is_final() => (**job).clone(),
        other => panic!("the last event should be a final state, got {other:?}"),
    }
}

/// Final state events in the job's log: exactly one for a job that ended.
fn final_events(jobs: &AsyncJobs, id: Uuid) -> Vec<JobState> {
    let tracked = jobs.get_live(id).expect("the job is in memory");
    tracked
        .log()
        .since(0)
        .into_iter()
        .filter_map(|event| match event {
            JobEvent::State(job) if job.state.is_final() => Some(job.state),
            _ => None,
        })
        .collect()
}

/// The job's record once its final state has been written: the update is
/// sent as the job ends, without waiting, so flush until it has landed.
async fn recorded(jobs: &AsyncJobs, id: Uuid) -> JobRecord {
    let deadline = std::time::Instant::now() + SIGNAL;
    loop {
        jobs.records().flush().await;
        let record = jobs.records().get(id).await.unwrap();
        if let Some(record) = record.filter(|r| r.state.is_final()) {
            return record;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} should be recorded as ended"
        );
        tokio::task::yield_now().await;
    }
}

fn status_of(err: &ApiError) -> (u16, &'static str) {
    let (status, code) = err.status_and_code();
    (status.as_u16(), code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_cancelled_never_runs_and_ends_cancelled() {
    let h = harness(jobs_config(10)).await;
    let (open, blocked) = gate();
    let running = h.submit(TestJob::Block("a", blocked)).await.unwrap();
    h.expect_start("a");
    let queued = h.submit(TestJob::Quick("never")).await.unwrap();
    let id = queued.job.job_id;
    assert_eq!(queued.job.state, JobState::Queued);
    assert_eq!(queued.job.position, Some(0), "next behind the running job");

    let cancelled = h
        .jobs
        .cancel(id)
        .await
        .expect("a queued job can be cancelled")
        .expect("the job is known");
    assert_eq!(
        cancelled.state,
        JobState::Cancelled,
        "DELETE answers the end"
    );
    assert_eq!(cancelled.position, None, "no longer in line");
    let error = cancelled.error.expect("a cancelled job says why");
    assert_eq!(error["error"], "cancelled", "{error}");
    assert_eq!(final_events(&h.jobs, id), [JobState::Cancelled]);
    assert_eq!(recorded(&h.jobs, id).await.state, JobState::Cancelled);

    open.send(()).unwrap();
    assert_eq!(
        ended(&h.jobs, running.job.job_id).await.state,
        JobState::Done
    );
    h.next_runs_alone("the cancelled job never started").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_ends_it_cancelled_once_the_worker_stops() {
    let h = harness(jobs_config(10)).await;
    let (open, slow) = gate();
    let id = h.started("slow", TestJob::SlowToStop("slow", slow)).await;
    let cancel = h.cancel_in_background(id);
    h.expect_cancel_seen("slow");
    let meanwhile = h.jobs.snapshot(id).await.unwrap().unwrap();
    assert_eq!(
        meanwhile.state,
        JobState::Running,
        "still running while its worker has not stopped"
    );
    assert!(
        final_events(&h.jobs, id).is_empty(),
        "no end before the stop"
    );

    open.send(()).unwrap();
    let answer = cancel
        .await
        .unwrap()
        .expect("a running job can be cancelled");
    let cancelled = answer.expect("the job is known");
    assert_eq!(
        cancelled.state,
        JobState::Cancelled,
        "DELETE answers the end"
    );
    assert_eq!(cancelled.worker.as_deref(), Some("test-worker-0"));
    assert_eq!(final_events(&h.jobs, id), [JobState::Cancelled]);
    assert_eq!(recorded(&h.jobs, id).await.state, JobState::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_finishes_as_its_cancel_arrives_ends_done_once_and_cancel_answers_409() {
    let h = harness(jobs_config(10)).await;
    let id = h
        .started("finisher", TestJob::FinishDespiteCancel("finisher"))
        .await;

    let refused = h
        .jobs
        .cancel(id)
        .await
        .expect_err("a job that finished is not cancelled");
    assert!(matches!(refused, ApiError::Conflict(_)), "{refused:?}");
    assert_eq!(status_of(&refused), (409, "conflict"));
    h.expect_cancel_seen("finisher");

    let end = ended(&h.jobs, id).await;
    assert_eq!(end.state, JobState::Done, "its output counts");
    assert_eq!(end.result, Some(json!({ "output": "finisher" })));
    assert_eq!(end.error, None, "a done job carries no error");
    assert_eq!(final_events(&h.jobs, id), [JobState::Done], "it ended once");
    let record = recorded(&h.jobs, id).await;
    assert_eq!(record.state, JobState::Done, "the record agrees");

    let again = h
        .jobs
        .cancel(id)
        .await
        .expect_err("an ended job stays ended");
    assert_eq!(status_of(&again), (409, "conflict"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_racing_its_cancel_ends_exactly_once_either_done_or_cancelled() {
    let h = harness(jobs_config(100)).await;
    for _ in 0..20 {
        let (open, blocked) = gate();
        let id = h.started("racer", TestJob::Block("racer", blocked)).await;
        let cancel = h.cancel_in_background(id);
        // Fails when the cancel already ended the job (its gate is gone).
        let _ = open.send(());
        let answer = cancel.await.unwrap();

        let end = ended(&h.jobs, id).await;
        match &answer {
            Ok(Some(job)) => {
                assert_eq!(job.state, JobState::Cancelled, "a 202 shows the cancel");
                assert_eq!(end.state, JobState::Cancelled);
            }
            Err(err) => {
                assert_eq!(status_of(err), (409, "conflict"), "{err:?}");
                assert_eq!(end.state, JobState::Done, "a 409 means it was done");
            }
            Ok(None) => panic!("the job is known"),
        }
        assert_eq!(final_events(&h.jobs, id), [end.state], "one end, never two");
        assert_eq!(recorded(&h.jobs, id).await.state, end.state);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_admit_exactly_max_tracked_and_refuse_the_rest() {
    const BOUND: u64 = 3;
    const SUBMITS: usize = 12;
    let h = harness(jobs_config(BOUND)).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(SUBMITS));
    let submits: Vec<_> = (0..SUBMITS)
        .map(|_| {
            let (jobs, queue, barrier) =
                (Arc::clone(&h.jobs), h.queue.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                jobs.submit(&queue, request(TestJob::Quick("bounded")))
                    .await
            })
        })
        .collect();
    let mut admitted = 0;
    let mut refused = 0;
    for submit in submits {
        match submit.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(ApiError::TooManyJobs { max, retry_after }) => {
                assert_eq!(max, BOUND);
                assert!((1..=60).contains(&retry_after), "{retry_after}");
                refused += 1;
            }
            Err(other) => panic!("expected TooManyJobs, got {other:?}"),
        }
    }
    assert_eq!(admitted, BOUND, "exactly the bound is admitted");
    assert_eq!(
        refused,
        SUBMITS as u64 - BOUND,
        "every other submit is refused"
    );
    assert_eq!(h.jobs.tracked(), BOUND, "refused submits hold no place");
    assert_eq!(h.jobs.records().count().await.unwrap(), BOUND);
    assert_eq!(h.jobs.stats.refused_full.load(Ordering::Relaxed), refused);
    assert_eq!(h.jobs.stats.submitted.load(Ordering::Relaxed), admitted);
    let refusal = ApiError::TooManyJobs {
        max: BOUND,
        retry_after: 1,
    };
    assert_eq!(status_of(&refusal), (503, "too_many_jobs"));
}

/// A record of a job that exists before this test submits one like it.
fn stored_record(id: Uuid, state: JobState, at_ms: u64) -> JobRecord {
    JobRecord {
        id,
        kind: "test".into(),
        state,
        owner: "an-instance-that-died".into(),
        idempotency_key: None,
        fingerprint: None,
        request: json!({}),
        result: None,
        error: None,
        created_ms: at_ms,
        updated_ms: at_ms,
        finished_ms: state.is_final().then_some(at_ms),
        tenant: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecorded_submit_gives_its_place_back_its_input_is_removed_and_it_never_runs() {
    let h = harness(jobs_config(3)).await;
    // A job whose record cannot be inserted: its id is taken.
    let taken = h.taken_id().await;
    h.jobs.sweep().await;
    assert_eq!(h.jobs.tracked(), 1, "the sweep counted the record");

    let (open, blocked) = gate();
    let running = h.submit(TestJob::Block("a", blocked)).await.unwrap();
    h.expect_start("a");
    assert_eq!(h.jobs.tracked(), 2);

    let kept = keep_input(h.jobs.pages(), taken).await;
    let unrecorded = AsyncRequest {
        job_id: taken,
        input: Some(kept.clone()),
        ..request(TestJob::Quick("unrecorded"))
    };
    let err = h
        .jobs
        .submit(&h.queue, unrecorded)
        .await
        .err()
        .expect("a job that cannot be recorded is refused");
    assert_eq!(status_of(&err), (503, "unavailable"), "{err:?}");
    assert_eq!(h.jobs.tracked(), 2, "its place is given back");
    assert!(
        !h.jobs.pages().has_input(&kept).await,
        "its kept input is removed"
    );
    assert_eq!(
        h.jobs.get_live(taken).map(|t| t.kind),
        None,
        "it is not tracked"
    );

    let last = h.submit(TestJob::Quick("last")).await;
    assert!(
        last.is_ok(),
        "the place given back takes a job: {:?}",
        last.err()
    );
    let over = h.submit(TestJob::Quick("over")).await;
    assert!(
        matches!(over, Err(ApiError::TooManyJobs { max: 3, .. })),
        "then the bound holds: {:?}",
        over.err()
    );

    open.send(()).unwrap();
    assert_eq!(
        ended(&h.jobs, running.job.job_id).await.state,
        JobState::Done
    );
    h.expect_start("last");
    assert_eq!(
        ended(&h.jobs, last.unwrap().job.job_id).await.state,
        JobState::Done
    );
    assert!(
        h.started.try_recv().is_err(),
        "the unrecorded job never started"
    );
}

/// A job is handed to the queue only once its record is committed, so an
/// idle worker cannot start a job whose record then fails (the client would
/// get 503 for a job that ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecorded_submit_never_starts_even_on_an_idle_worker() {
    let h = harness(jobs_config(10)).await;
    let taken = h.taken_id().await;
    let unrecorded = AsyncRequest {
        job_id: taken,
        ..request(TestJob::Quick("unrecorded"))
    };
    let refused = h.jobs.submit(&h.queue, unrecorded).await;
    assert!(refused.is_err(), "a job that cannot be recorded is refused");
    h.next_runs_alone("the unrecorded job must not start").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_with_the_same_request_replays_and_with_another_is_refused() {
    let h = harness(jobs_config(10)).await;
    let (open, blocked) = gate();
    let first = h
        .jobs
        .submit(
            &h.queue,
            keyed(TestJob::Block("first", blocked), "k-1", "one"),
        )
        .await
        .unwrap();
    assert!(!first.replayed, "a new key runs a new job");
    let id = first.job.job_id;
    h.expect_start("first");

    let same = Idempotency {
        key: "k-1".into(),
        fingerprint: "one".into(),
    };
    let found = h.jobs.find_by_key(&same).await.unwrap();
    assert_eq!(found.map(|j| j.job_id), Some(id), "the key names the job");
    assert_eq!(h.jobs.stats.replayed.load(Ordering::Relaxed), 1);
    let other = Idempotency {
        key: "k-1".into(),
        fingerprint: "two".into(),
    };
    let reused = h.jobs.find_by_key(&other).await.unwrap_err();
    assert!(
        matches!(reused, ApiError::IdempotencyKeyReused(_)),
        "{reused:?}"
    );
    assert_eq!(status_of(&reused), (422, "idempotency_key_reused"));
    let unknown = Idempotency {
        key: "k-2".into(),
        fingerprint: "one".into(),
    };
    assert!(h.jobs.find_by_key(&unknown).await.unwrap().is_none());

    // Requests that missed the first record (racing it) meet the key at
    // insert time: the same request replays, another is refused.
    let racing = h
        .jobs
        .submit(&h.queue, keyed(TestJob::Quick("same"), "k-1", "one"))
        .await
        .unwrap();
    assert!(racing.replayed, "the same request replays");
    assert_eq!(racing.job.job_id, id, "as the first job");
    let racing_other = h
        .jobs
        .submit(&h.queue, keyed(TestJob::Quick("other"), "k-1", "two"))
        .await
        .err()
        .expect("another request under the key is refused");
    assert_eq!(status_of(&racing_other), (422, "idempotency_key_reused"));
    assert_eq!(h.jobs.tracked(), 1, "one record for the key");
    assert_eq!(h.jobs.records().count().await.unwrap(), 1);

    open.send(()).unwrap();
    assert_eq!(ended(&h.jobs, id).await.state, JobState::Done);
    h.next_runs_alone("neither the replay nor the refused request ran")
        .await;
}

#[tokio::test]
async fn a_finished_job_leaves_memory_only_after_finished_in_memory_and_its_record_answers_then() {
    let h = harness(jobs_config(10)).await;
    let accepted = h.submit(TestJob::Quick("kept")).await.unwrap();
    let id = accepted.job.job_id;
    let live = ended(&h.jobs, id).await;
    let record = recorded(&h.jobs, id).await;
    let finished = live.finished_ms.expect("an ended job has an end time");
    assert_eq!(
        record.finished_ms,
        Some(finished),
        "memory and record agree"
    );

    // The job is over and its record written: nothing else runs now.
    tokio::time::pause();
    advance_to_last_ms(&h.jobs, finished, FINISHED_IN_MEMORY).await;
    h.jobs.forget_finished();
    assert!(
        h.jobs.get_live(id).is_some(),
        "kept in memory until FINISHED_IN_MEMORY has passed"
    );
    assert_eq!(h.jobs.snapshot(id).await.unwrap(), Some(live.clone()));

    tokio::time::advance(Duration::from_millis(1)).await;
    h.jobs.forget_finished();
    assert!(
        h.jobs.get_live(id).is_none(),
        "forgotten once it has passed"
    );
    let from_record = h
        .jobs
        .snapshot(id)
        .await
        .unwrap()
        .expect("the records answer for a forgotten job");
    assert_eq!(from_record.state, JobState::Done);
    assert_eq!(from_record.result, Some(json!({ "output": "kept" })));
    assert_eq!(from_record.finished_ms, Some(finished));
    assert_eq!(
        from_record.expires_ms,
        Some(finished + TTL.as_millis() as u64),
        "it expires a TTL after its end, as in memory"
    );
    assert_eq!(from_record.expires_ms, live.expires_ms);
}

#[tokio::test]
async fn only_the_lease_holder_sweeps_and_only_after_the_ttl_records_pages_and_inputs_go() {
    let h = harness(jobs_config(10)).await;
    let standby = open_jobs(
        &h.layout,
        jobs_config(10),
        Arc::clone(&h.clock),
        Role::Standby,
    )
    .await;
    assert!(h.jobs.is_primary() && !standby.is_primary());

    let id = Uuid::new_v4();
    let kept = keep_input(h.jobs.pages(), id).await;
    // The input is not handed to the job, so its end does not remove it:
    // an input left behind by an instance that died after the job ended.
    let accepted = h
        .jobs
        .submit(
            &h.queue,
            AsyncRequest {
                job_id: id,
                ..request(TestJob::Quick("swept"))
            },
        )
        .await
        .unwrap();
    assert_eq!(accepted.job.job_id, id);
    assert_eq!(ended(&h.jobs, id).await.state, JobState::Done);
    h.put_page(id).await;
    let finished = recorded(&h.jobs, id)
        .await
        .finished_ms
        .expect("a done job has an end time");

    tokio::time::pause();
    advance_to_last_ms(&h.jobs, finished, TTL).await;
    h.jobs.sweep().await;
    standby.sweep().await;
    let pages = h.jobs.pages();
    assert!(
        h.jobs.records().get(id).await.unwrap().is_some(),
        "the record stays until the TTL has passed"
    );
    assert!(
        pages.get_page(id, 1).await.unwrap().is_some(),
        "the pages stay until the TTL has passed"
    );
    assert!(
        pages.has_input(&kept).await,
        "the input stays until the TTL"
    );

    tokio::time::advance(Duration::from_millis(1)).await;
    standby.sweep().await;
    assert!(
        h.jobs.records().get(id).await.unwrap().is_some(),
        "a standby removes nothing"
    );
    assert!(pages.get_page(id, 1).await.unwrap().is_some());
    assert!(pages.has_input(&kept).await);
    assert_eq!(standby.stats.removed.load(Ordering::Relaxed), 0);

    h.jobs.sweep().await;
    assert_eq!(
        h.jobs.records().get(id).await.unwrap(),
        None,
        "record removed"
    );
    assert_eq!(pages.get_page(id, 1).await.unwrap(), None, "pages removed");
    assert!(!pages.has_input(&kept).await, "kept input removed");
    assert_eq!(h.jobs.stats.removed.load(Ordering::Relaxed), 1);
    assert_eq!(h.jobs.tracked(), 0, "the recount follows the removal");
    assert_eq!(
        h.jobs.snapshot(id).await.unwrap(),
        None,
        "gone from memory and records"
    );
}

#[tokio::test(start_paused = true)]
async fn records_left_by_a_dead_instance_are_swept_after_the_ttl_and_unfinished_ones_never() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    layout.create().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let ended_at = clock.now_ms();
    let (done, unfinished) = (Uuid::new_v4(), Uuid::new_v4());
    {
        // The dead instance's records; dropping the store commits them.
        let store = Store::open(&layout.database()).unwrap();
        store
            .insert(stored_record(done, JobState::Done, ended_at))
            .await
            .unwrap();
        store
            .insert(stored_record(unfinished, JobState::Running, ended_at))
            .await
            .unwrap();
    }
    let jobs = open_jobs(&layout, jobs_config(10), clock, Role::Primary).await;
    assert_eq!(jobs.tracked(), 2, "records are counted at start");
    let pages = jobs.pages();
    let mut inputs = Vec::new();
    for id in [done, unfinished] {
        inputs.push(keep_input(pages, id).await);
    }
    store_page(pages, done).await;

    advance_to_last_ms(&jobs, ended_at, TTL).await;
    jobs.sweep().await;
    assert!(
        jobs.records().get(done).await.unwrap().is_some(),
        "kept until the TTL has passed"
    );
    assert!(pages.get_page(done, 1).await.unwrap().is_some());
    assert!(pages.has_input(&inputs[0]).await);

    tokio::time::advance(Duration::from_millis(1)).await;
    jobs.sweep().await;
    assert_eq!(
        jobs.records().get(done).await.unwrap(),
        None,
        "record removed"
    );
    assert_eq!(
        pages.get_page(done, 1).await.unwrap(),
        None,
        "pages removed"
    );
    assert!(!pages.has_input(&inputs[0]).await, "kept input removed");
    assert_eq!(jobs.tracked(), 1);

    tokio::time::advance(TTL * 10).await;
    jobs.sweep().await;
    let left = jobs.records().get(unfinished).await.unwrap();
    assert_eq!(
        left.map(|r| r.state),
        Some(JobState::Running),
        "an unfinished job is never swept, however old"
    );
    assert!(pages.has_input(&inputs[1]).await, "nor is its input");
    assert_eq!(jobs.stats.removed.load(Ordering::Relaxed), 1);
}

/// Puts page 1 of `id` into `pages`, as a renderer's worker does.
/// Advances paused time to the last millisecond of `keep` after
/// `from_ms` (the jobs' clock), so one more millisecond passes it.
async fn advance_to_last_ms(jobs: &AsyncJobs, from_ms: u64, keep: Duration) {
    let last = from_ms + keep.as_millis() as u64 - 1;
    let ahead = last
        .checked_sub(jobs.now_ms())
        .expect("time was paused before the last kept millisecond");
    tokio::time::advance(Duration::from_millis(ahead)).await;
}

/// Keeps a small upload as job `id`'s input.
async fn keep_input(pages: &Arc<dyn PageStore>, id: Uuid) -> InputRef {
    let pdf = Bytes::from_static(b"%PDF-1.7");
    pages.keep_input(id, pdf).await.unwrap()
}

async fn store_page(pages: &Arc<dyn PageStore>, id: Uuid) {
    let scratch = pages.scratch(id).unwrap();
    let file = scratch.dir().join("page-001.png");
    std::fs::write(&file, b"png").unwrap();
    pages
        .put_page(id, &StoredPage::tiny(1, 3), &file)
        .await
        .unwrap();
}
