//! `AsyncJobs` on its own: a test worker, the local services, and tokio's
//! clock (paused where no OS thread must make progress).
