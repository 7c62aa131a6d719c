//! A test worker for the unit tests of the queue and of async jobs: it
//! reports each start, and each cancellation it sees, on channels, and
//! blocks on gates, so tests wait on signals, not sleeps.

use crossbeam_channel::{Receiver, Sender};

use super::{JobContext, JobError, Worker};

pub(crate) enum TestJob {
    /// Reports start and answers at once.
    Quick(&'static str),
    /// Reports start, then waits for its gate (done) or cancellation.
    Block(&'static str, Receiver<()>),
    /// Reports start, then spins until cancelled and reports that.
    Spin(&'static str),
    /// Panics in the job.
    Panic,
    /// Reports start, waits for cancellation, reports it, then takes until
    /// its gate opens to stop: a worker that does not stop at once.
    SlowToStop(&'static str, Receiver<()>),
    /// Reports start, waits for cancellation, reports it and returns its
    /// output anyway: the last step completing as the cancel arrives.
    FinishDespiteCancel(&'static str),
}

pub(crate) struct TestWorker {
    pub started: Sender<&'static str>,
    pub saw_cancel: Sender<&'static str>,
}

impl Worker for TestWorker {
    type Job = TestJob;
    type Output = &'static str;
    type Error = JobError;

    fn process(&mut self, job: TestJob, ctx: &JobContext) -> Result<&'static str, JobError> {
        let started = |name| {
            let _ = self.started.send(name);
        };
        let saw_cancel = |name| {
            let _ = ctx.cancelled().recv();
            let _ = self.saw_cancel.send(name);
        };
        match job {
            TestJob::Quick(name) => {
                started(name);
                Ok(name)
            }
            TestJob::Block(name, gate) => {
                started(name);
                crossbeam_channel::select! {
                    recv(gate) -> _ => Ok(name),
                    recv(ctx.cancelled()) -> _ => Err(JobError::Cancelled),
                }
            }
            TestJob::Spin(name) => {
                started(name);
                while !ctx.is_cancelled() {
                    std::hint::spin_loop();
                }
                let _ = self.saw_cancel.send(name);
                Err(JobError::Cancelled)
            }
            TestJob::Panic => panic!("boom"),
            TestJob::SlowToStop(name, gate) => {
                started(name);
                saw_cancel(name);
                let _ = gate.recv();
                Err(JobError::Cancelled)
            }
            TestJob::FinishDespiteCancel(name) => {
                started(name);
                saw_cancel(name);
                Ok(name)
            }
        }
    }
}
