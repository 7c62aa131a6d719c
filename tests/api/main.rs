//! End-to-end tests: the real server on 127.0.0.1:0, driven over HTTP.
//! One test binary (faster to link than one per file), one module per area.

mod admission;
mod cargo_run;
mod connections;
mod dashboard;
mod fuzz;
mod helpers;
mod hostile;
mod jobs;
mod limits;
mod message;
mod observability;
mod pdf;
mod plugin;
mod protocol;
mod router;
mod shutdown;
mod spool;
mod tenants;
