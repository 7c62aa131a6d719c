//! The pdfium side: renderer child processes and the pipe protocol between
//! a PDF worker thread and its renderer.
//!
//! pdfium is not thread-safe (pdfium-render serializes every call behind one
//! process-wide lock), so parallel rendering needs one pdfium per process.
//! Each PDF worker thread owns one long-lived renderer: this same binary
//! started as `jobserver --renderer`, which loads pdfium once and renders the
//! jobs its thread sends it. A process boundary also buys crash isolation
//! (a renderer that dies fails one job) and real cancellation (a render that
//! overruns its deadline is killed, freeing the core at once).
//!
//! * [`protocol`]: the frames on the pipes (requests down, events up).
//! * [`child`]: the renderer process's main loop (the only code that touches
//!   pdfium).
//! * [`process`]: the parent's handle on one renderer: spawn, render, kill.
//! * [`pages`]: page-range syntax (`1-3,7`).
//! * [`engine`]: pdfium's availability and the renderers' counters.
//! * [`memory`]: the renderers' memory budget and each one's share of it.

pub mod child;
pub mod engine;
pub mod memory;
pub mod pages;
pub mod process;
pub mod protocol;
