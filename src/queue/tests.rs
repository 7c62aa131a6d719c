//! The pool on its own, with a test worker that reports each start on a
//! channel and blocks on a gate, so tests wait on signals, not sleeps.
//! Real OS threads do the work, so tokio time is never paused here.

use super::testing::{TestJob, TestWorker};
use super::*;
use crossbeam_channel::{unbounded, Receiver, Sender};
use futures::FutureExt;
use parking_lot::Mutex;

struct Harness {
    queue: JobQueue<TestWorker>,
    started: Receiver<&'static str>,
    /// One gate for every `Block` job of the test: each send lets one go.
    gate: Sender<()>,
    gate_rx: Receiver<()>,
    saw_cancel: Receiver<&'static str>,
}

const SIGNAL: Duration = Duration::from_secs(5);

/// Options with a total budget of `timeout`.
fn within(timeout: Duration) -> SubmitOptions {
    SubmitOptions {
        timeout: Some(timeout),
        ..SubmitOptions::default()
    }
}

/// The job error a job was answered with; anything else fails the test.
fn job_error<T: std::fmt::Debug>(result: Result<T, QueueError>) -> JobError {
    match result {
        Err(QueueError::Job { source, .. }) => source,
        other => panic!("expected a job error, got {other:?}"),
    }
}

fn harness(workers: usize, capacity: usize, queue_timeout_ms: u64, timeout_ms: u64) -> Harness {
    let (started_tx, started) = unbounded();
    let (gate, gate_rx) = unbounded();
    let (cancel_tx, saw_cancel) = unbounded();
    let config = PoolConfig {
        workers,
        queue_capacity: capacity,
        queue_timeout: Duration::from_millis(queue_timeout_ms),
        timeout: Duration::from_millis(timeout_ms),
        async_timeout: Duration::from_millis(timeout_ms * 2),
    };
    let queue = JobQueue::start("test", config, move |_| TestWorker {
        started: started_tx.clone(),
        saw_cancel: cancel_tx.clone(),
    })
    .unwrap();
    Harness {
        queue,
        started,
        gate,
        gate_rx,
        saw_cancel,
    }
}

type Answer = tokio::task::JoinHandle<Result<Completed<&'static str>, QueueError>>;

/// One worker, busy with job `a` until the gate opens; `capacity` places
/// behind it, each waiting at most `queue_timeout_ms`.
fn busy(capacity: usize, queue_timeout_ms: u64) -> (Harness, Answer) {
    let h = harness(1, capacity, queue_timeout_ms, 5_000);
    let running = h.hold("a");
    (h, running)
}

impl Harness {
    fn spawn(&self, job: TestJob) -> Answer {
        let queue = self.queue.clone();
        tokio::spawn(async move { queue.run(job, SubmitOptions::default()).await })
    }

    /// A job that holds its worker until the test's gate lets it go.
    fn block(&self, name: &'static str) -> TestJob {
        TestJob::Block(name, self.gate_rx.clone())
    }

    /// Runs a job with default options and waits for its answer.
    async fn run(&self, job: TestJob) -> Result<Completed<&'static str>, QueueError> {
        self.queue.run(job, SubmitOptions::default()).await
    }

    /// Admits a job with default options without waiting.
    fn submit(&self, job: TestJob) -> Pending<TestWorker> {
        self.queue
            .submit(job, SubmitOptions::default())
            .expect("the queue has room")
    }

    /// Starts a job that holds the worker until the gate opens.
    fn hold(&self, name: &'static str) -> Answer {
        let running = self.spawn(self.block(name));
        self.expect_start(name);
        running
    }

    fn expect_start(&self, name: &str) {
        let got = self
            .started
            .recv_timeout(SIGNAL)
            .expect("a job should start");
        assert_eq!(got, name, "expected {name} to start next");
    }

    /// Runs a quick job and checks that it is the only one to start:
    /// whatever was skipped (`what`) never ran.
    async fn next_runs_alone(&self, what: &str) {
        let next = self.run(TestJob::Quick("next")).await;
        assert_eq!(next.unwrap().output, "next");
        self.expect_start("next");
        assert!(self.started.try_recv().is_err(), "{what}");
    }

    /// Joins the pool off the async threads, giving running jobs `grace`.
    async fn join(&self, grace: Duration) {
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || queue.join(grace))
            .await
            .unwrap();
    }

    /// Waits until `depth` jobs are queued (the submit tasks run
    /// concurrently with the test).
    async fn until_depth(&self, depth: usize) {
        let deadline = Instant::now() + SIGNAL;
        while self.queue.depth() != depth {
            assert!(
                Instant::now() < deadline,
                "queue never reached depth {depth}"
            );
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_on_the_first_poll_with_a_retry_after() {
    let (h, running) = busy(1, 5_000);
    let queued = h.spawn(TestJob::Quick("b"));
    h.until_depth(1).await;

    let refused = h
        .queue
        .run(TestJob::Quick("c"), SubmitOptions::default())
        .now_or_never()
        .expect("a full queue must answer without waiting");
    match refused {
        Err(QueueError::Full { retry_after, .. }) => assert!(retry_after >= 1),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(h.queue.stats().rejected.load(Ordering::Relaxed), 1);

    h.gate.send(()).unwrap();
    assert_eq!(running.await.unwrap().unwrap().output, "a");
    assert_eq!(queued.await.unwrap().unwrap().output, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_queue_budget_gets_504_and_is_never_started() {
    let (h, running) = busy(4, 50);

    let waited = h.run(TestJob::Quick("late")).await;
    match job_error(waited) {
        JobError::QueueTimeout { waited_ms } => {
            assert!(waited_ms >= 50, "answered after {waited_ms} ms")
        }
        other => panic!("expected a queue timeout, got {other:?}"),
    }

    h.gate.send(()).unwrap();
    running.await.unwrap().unwrap();
    h.next_runs_alone("the abandoned job must not run").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_past_its_deadline_gets_504_and_is_told_to_stop() {
    let h = harness(1, 4, 5_000, 5_000);
    let options = within(Duration::from_millis(100));
    let result = h.queue.run(TestJob::Spin("spin"), options).await;
    assert_eq!(job_error(result), JobError::Timeout { budget_ms: 100 });
    assert_eq!(h.saw_cancel.recv_timeout(SIGNAL), Ok("spin"));
    assert_eq!(h.queue.stats().timeout.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_may_shorten_its_deadline_but_never_lengthen_it() {
    let h = harness(1, 4, 200, 200);
    let options = within(Duration::from_secs(60));
    let result = h.queue.run(TestJob::Spin("spin"), options).await;
    assert_eq!(
        job_error(result),
        JobError::Timeout { budget_ms: 200 },
        "the server's 200 ms budget must win"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_caller_went_away_is_skipped_when_dequeued() {
    let (h, running) = busy(4, 5_000);
    let gone = h.spawn(TestJob::Quick("gone"));
    h.until_depth(1).await;
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());

    h.gate.send(()).unwrap();
    running.await.unwrap().unwrap();
    let next = h.run(TestJob::Quick("next")).await;
    assert_eq!(next.unwrap().output, "next");
    h.expect_start("next");
    assert_eq!(h.queue.stats().cancelled.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_whose_caller_went_away_is_cancelled() {
    let h = harness(1, 4, 5_000, 5_000);
    let spinning = h.spawn(TestJob::Spin("spin"));
    h.expect_start("spin");
    spinning.abort();
    assert_eq!(h.saw_cancel.recv_timeout(SIGNAL), Ok("spin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_costs_one_answer_and_not_the_thread() {
    let h = harness(1, 4, 5_000, 5_000);
    let result = h.run(TestJob::Panic).await;
    assert_eq!(job_error(result), JobError::Panicked("boom".into()));
    let next = h.run(TestJob::Quick("after")).await;
    let next = next.expect("the same thread serves the next job");
    assert_eq!(next.worker, "test-worker-0");
    assert_eq!(h.queue.live_workers(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_answers_queued_jobs_503_refuses_new_ones_and_lets_running_ones_finish() {
    let (h, running) = busy(4, 5_000);
    let queued = h.spawn(TestJob::Quick("b"));
    h.until_depth(1).await;

    h.queue.begin_drain();
    assert_eq!(job_error(queued.await.unwrap()), JobError::ShuttingDown);
    assert!(matches!(
        h.run(TestJob::Quick("c")).await,
        Err(QueueError::ShuttingDown)
    ));
    h.gate.send(()).unwrap();
    assert_eq!(running.await.unwrap().unwrap().output, "a");
    h.join(Duration::from_secs(5)).await;
    assert_eq!(h.queue.live_workers(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_cancels_jobs_still_running_when_the_grace_period_ends() {
    let h = harness(1, 4, 5_000, 60_000);
    let spinning = h.spawn(TestJob::Spin("spin"));
    h.expect_start("spin");
    h.join(Duration::from_millis(50)).await;
    assert_eq!(h.saw_cancel.try_recv(), Ok("spin"));
    assert!(spinning.await.unwrap().is_err());
}

#[tokio::test]
async fn a_pool_whose_context_keeps_failing_gives_up_and_has_no_live_workers() {
    let config = PoolConfig::new(1, 1, Duration::from_secs(1));
    let queue: JobQueue<TestWorker> =
        JobQueue::start("broken", config, |_| panic!("cannot build the context")).unwrap();
    let deadline = Instant::now() + SIGNAL;
    while queue.live_workers() > 0 {
        assert!(Instant::now() < deadline, "the worker thread never gave up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn retry_after_grows_with_the_queue_ahead_and_shrinks_with_workers() {
    let h = harness(2, 8, 5_000, 5_000);
    h.queue.inner.stats.record_run(Duration::from_secs(3));
    // Empty queue: one job ahead (the caller's own) over 2 workers.
    assert_eq!(h.queue.retry_after_secs(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_cancelled_through_its_handle_is_answered_at_once_and_never_runs() {
    let (h, running) = busy(4, 5_000);
    let pending = h.submit(TestJob::Quick("never"));
    let handle = pending.handle();
    assert_eq!(
        handle.position(),
        Some(0),
        "next in line behind nothing queued"
    );
    let waiter = tokio::spawn(pending.wait());
    handle.cancel();
    let answer = tokio::time::timeout(SIGNAL, waiter)
        .await
        .expect("a cancelled queued job is answered without waiting for a worker")
        .unwrap();
    assert_eq!(job_error(answer), JobError::Cancelled);
    assert_eq!(handle.position(), None, "no longer queued");
    h.gate.send(()).unwrap();
    running.await.unwrap().unwrap();
    h.next_runs_alone("the cancelled job never started").await;
    assert_eq!(h.queue.stats().cancelled.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_count_the_jobs_ahead_and_move_up_as_workers_take_jobs() {
    let (h, running) = busy(4, 5_000);
    let first = h.submit(h.block("b"));
    let second = h.submit(TestJob::Quick("c"));
    let (first_handle, second_handle) = (first.handle(), second.handle());
    assert_eq!(first_handle.position(), Some(0));
    assert_eq!(second_handle.position(), Some(1));
    let first = tokio::spawn(first.wait());
    let second = tokio::spawn(second.wait());
    h.gate.send(()).unwrap();
    h.expect_start("b");
    assert_eq!(first_handle.position(), None, "running, not queued");
    assert_eq!(second_handle.position(), Some(0));
    h.gate.send(()).unwrap();
    running.await.unwrap().unwrap();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl JobObserver for Recorder {
    fn started(&self, worker: &str) {
        self.0.lock().push(format!("started on {worker}"));
    }
    fn total(&self, total: u64) {
        self.0.lock().push(format!("total {total}"));
    }
    fn page(&self, done: u64, page: &crate::storage::StoredPage) {
        self.0.lock().push(format!("page {done}: {}", page.page));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_hears_of_the_start_on_the_worker_thread() {
    let h = harness(1, 4, 5_000, 5_000);
    let recorder = Arc::new(Recorder::default());
    let options = SubmitOptions {
        observer: Some(Arc::clone(&recorder) as Arc<dyn JobObserver>),
        ..SubmitOptions::default()
    };
    h.queue.run(TestJob::Quick("seen"), options).await.unwrap();
    assert_eq!(
        *recorder.0.lock(),
        vec!["started on test-worker-0".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_job_runs_under_the_async_budget_and_may_queue_for_all_of_it() {
    // Attached jobs: queue budget 50 ms, total 100 ms. Detached: 200 ms
    // (twice the total, see `harness`), and this one asks for 150 ms.
    let h = harness(1, 4, 50, 100);
    let detached = SubmitOptions {
        detached: true,
        ..SubmitOptions::default()
    };
    let running = h.queue.submit(h.block("a"), detached.clone()).unwrap();
    let running = tokio::spawn(running.wait());
    h.expect_start("a");
    let options = SubmitOptions {
        timeout: Some(Duration::from_millis(150)),
        ..detached
    };
    let started = Instant::now();
    let waited = h.queue.run(TestJob::Quick("late"), options).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(job_error(waited), JobError::QueueTimeout { .. }),
        "a queue timeout"
    );
    assert!(
        elapsed >= Duration::from_millis(150),
        "gave up after {elapsed:?}: an attached budget applied"
    );
    h.gate.send(()).unwrap();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_places_count_against_the_capacity_and_come_back_when_dropped_or_used() {
    let (h, running) = busy(2, 5_000);
    let first = h.queue.reserve().expect("a place");
    let second = h.queue.reserve().expect("a second place");
    assert!(matches!(h.queue.reserve(), Err(QueueError::Full { .. })));
    assert!(
        matches!(
            h.queue
                .submit(TestJob::Quick("no room"), SubmitOptions::default()),
            Err(QueueError::Full { .. })
        ),
        "reservations take the places a plain submit would"
    );
    drop(first);
    assert_eq!(h.queue.places_taken(), 1, "a dropped place comes back");
    let pending = h
        .queue
        .submit_in(second, TestJob::Quick("reserved"), SubmitOptions::default())
        .expect("a reserved place admits its job");
    assert_eq!(h.queue.places_taken(), 1, "the place is now the job's");
    h.gate.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(pending.wait().await.unwrap().output, "reserved");
    assert_eq!(h.queue.places_taken(), 0, "freed when a worker took it");
}
