//! Async jobs: records that outlive the request that made them.

pub mod election;
pub mod store;
