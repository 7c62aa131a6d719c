//! Worker types: one module each, all with the same parts (a job struct, an
//! output struct, an error enum, a per-thread context that implements
//! [`crate::queue::Worker`], and a synchronous `process` with no tokio in it).
//!
//! The generic queue and thread pool in [`crate::queue`] run them; routes in
//! [`crate::routes`] turn HTTP requests into their jobs.

pub mod message;
pub mod pdf;
