//! The parent's handle on one renderer process: spawn it, hand it a job,
//! follow its events, and kill it when the job's deadline passes or its
//! caller goes away.
//!
//! A dedicated reader thread turns the renderer's stdout into a channel, so
//! the worker thread can wait on "next event", "job cancelled" and "deadline"
//! at once with `crossbeam_channel::select!`: a render that overruns is
//! killed at the deadline, not at the end of its page.

use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select};

use super::child::{ENV_LIBRARY, ENV_MAX_PAYLOAD, ENV_MEMORY_LIMIT};
use super::protocol::{read_frame, write_frame, Event, FailKind, PageInfo, Request};

/// How to start a renderer.
#[derive(Debug, Clone)]
pub struct RendererSpec {
    /// Program started as `<exe> --renderer`.
    pub exe: PathBuf,
    pub library: PathBuf,
    pub memory_limit_bytes: u64,
    pub max_payload_bytes: u64,
}

/// How long a new renderer may take to load pdfium and say `Ready`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The renderer reported a problem with the job.
    #[error("{message}")]
    Job { kind: FailKind, message: String },
    /// The renderer process died (crash, killed, out of memory).
    #[error("the renderer process died ({exit}) while rendering this job{}", detail.as_deref().map(|d| format!("; {d}")).unwrap_or_default())]
    Crashed { exit: Exit, detail: Option<String> },
    /// pdfium could not be loaded: no renderer can run.
    #[error("{0}")]
    Unavailable(String),
    /// The renderer could not be started or talked to.
    #[error("renderer failure: {0}")]
    Io(String),
    /// The job was cancelled (caller gone, or its deadline passed); the
    /// renderer was killed.
    #[error("cancelled")]
    Cancelled,
}

/// A job's result: the pages written, in order.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub page_count: u32,
    pub pages: Vec<PageInfo>,
}

pub struct Renderer {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    events: Receiver<Result<Event, String>>,
    reader: Option<JoinHandle<()>>,
    pub pid: u32,
    pub jobs_done: u32,
}

impl Renderer {
    /// Starts a renderer and waits until pdfium is loaded.
    pub fn spawn(spec: &RendererSpec) -> Result<Renderer, RenderError> {
        let mut child = Command::new(&spec.exe)
            .arg("--renderer")
            .env(ENV_LIBRARY, &spec.library)
            .env(ENV_MEMORY_LIMIT, spec.memory_limit_bytes.to_string())
            .env(ENV_MAX_PAYLOAD, spec.max_payload_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| RenderError::Io(format!("cannot start {}: {e}", spec.exe.display())))?;
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => (stdin, stdout),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RenderError::Io("renderer pipes missing".into()));
            }
        };
        let (tx, events) = crossbeam_channel::unbounded();
        let reader = std::thread::Builder::new()
            .name(format!("renderer-io-{}", child.id()))
            .spawn(move || {
                let mut stdout = BufReader::new(stdout);
                loop {
                    let event = match read_frame::<Event>(&mut stdout, 0) {
                        Ok(Some((event, _))) => Ok(event),
                        Ok(None) => break,
                        Err(e) => Err(e.to_string()),
                    };
                    let stop = event.is_err();
                    if tx.send(event).is_err() || stop {
                        break;
                    }
                }
            })
            .map_err(|e| RenderError::Io(format!("cannot start the renderer's reader: {e}")))?;
        let pid = child.id();
        let mut renderer = Renderer {
            child,
            stdin: BufWriter::new(stdin),
            events,
            reader: Some(reader),
            pid,
            jobs_done: 0,
        };
        match renderer.events.recv_timeout(START_TIMEOUT) {
            Ok(Ok(Event::Ready { .. })) => Ok(renderer),
            Ok(Ok(Event::Failed { message, .. })) => {
                renderer.kill();
                Err(RenderError::Unavailable(message))
            }
            Ok(other) => {
                renderer.kill();
                Err(RenderError::Io(format!(
                    "renderer did not start: {other:?}"
                )))
            }
            Err(_) => {
                let status = renderer.kill();
                Err(RenderError::Io(format!(
                    "renderer exited before it was ready ({status})"
                )))
            }
        }
    }

    /// Renders one job. `on_page` sees each page as it is written. Returns
    /// early, killing the renderer, when `cancelled` disconnects or
    /// `deadline` passes; after any error but `Job`, the renderer is dead
    /// and must be replaced.
    pub fn render(
        &mut self,
        request: &Request,
        payload: &[u8],
        cancelled: &Receiver<crate::queue::Never>,
        deadline: Instant,
        mut on_opened: impl FnMut(u32),
        mut on_page: impl FnMut(&PageInfo),
    ) -> Result<Rendered, RenderError> {
        self.send(request, payload)?;
        let mut page_count = 0;
        let mut pages = Vec::new();
        let event_rx = self.events.clone();
        loop {
            let event = match wait_any(&[&event_rx], cancelled, deadline) {
                Waited::Event(_, event) => event,
                Waited::Cancelled => {
                    self.kill();
                    return Err(RenderError::Cancelled);
                }
            };
            match event {
                Ok(Ok(Event::Opened {
                    page_count: n,
                    rendering,
                })) => {
                    page_count = n;
                    on_opened(rendering);
                }
                Ok(Ok(Event::Page(page))) => {
                    on_page(&page);
                    pages.push(page);
                }
                Ok(Ok(Event::Done)) => {
                    self.jobs_done += 1;
                    return Ok(Rendered { page_count, pages });
                }
                Ok(Ok(Event::Failed { kind, message })) => {
                    self.jobs_done += 1;
                    return Err(RenderError::Job { kind, message });
                }
                Ok(Ok(Event::Ready { .. })) => {
                    let exit = self.kill();
                    return Err(RenderError::Io(format!(
                        "renderer restarted mid-job ({exit})"
                    )));
                }
                Ok(Err(_)) | Err(_) => {
                    let exit = self.kill();
                    return Err(RenderError::Crashed { exit, detail: None });
                }
            }
        }
    }

    /// Sends a job without waiting for its events (see [`Renderer::events`]).
    /// On failure the renderer is dead and has been reaped.
    pub fn send(&mut self, request: &Request, payload: &[u8]) -> Result<(), RenderError> {
        write_frame(&mut self.stdin, request, payload).map_err(|e| {
            let exit = self.kill();
            RenderError::Crashed {
                exit,
                detail: Some(format!("sending the job failed: {e}")),
            }
        })
    }

    /// The renderer's events; an `Err` or a disconnect means it died.
    pub fn events(&self) -> &Receiver<Result<Event, String>> {
        &self.events
    }

    /// Whether the process still runs; reaps it if it has exited.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory of the renderer, from `/proc` (Linux).
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// Kills the process (if it still runs), reaps it so no zombie is left,
    /// and says how it ended.
    pub fn kill(&mut self) -> Exit {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                let _ = self.child.kill();
                self.child.wait().ok()
            }
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status.map_or(Exit::Unknown, Exit::of)
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a renderer process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    Unknown,
}

impl Exit {
    fn of(status: ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Unknown,
        }
    }

    /// `abort()`: what pdfium (and Rust's allocation-failure handler) do
    /// when an allocation fails under the renderer's memory cap.
    pub fn is_abort(self) -> bool {
        self == Exit::Signal(libc::SIGABRT)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(libc::SIGKILL) => f.write_str("killed by SIGKILL"),
            Exit::Signal(libc::SIGSEGV) => f.write_str("crashed with SIGSEGV"),
            Exit::Signal(libc::SIGABRT) => f.write_str("aborted (SIGABRT), possibly out of memory"),
            Exit::Signal(signal) => write!(f, "killed by signal {signal}"),
            Exit::Unknown => f.write_str("unknown exit"),
        }
    }
}

/// What [`wait_any`] saw first.
pub enum Waited {
    /// An event (or the end of the stream: the renderer died) on the
    /// receiver at this index.
    Event(
        usize,
        Result<Result<Event, String>, crossbeam_channel::RecvError>,
    ),
    /// The job was cancelled or its deadline passed.
    Cancelled,
}

/// Waits for the next event of any of `events` (renderers working on one
/// job), for cancellation, or for the deadline, whichever comes first.
pub fn wait_any(
    events: &[&Receiver<Result<Event, String>>],
    cancelled: &Receiver<crate::queue::Never>,
    deadline: Instant,
) -> Waited {
    let mut select = Select::new();
    for rx in events {
        select.recv(rx);
    }
    let cancel = select.recv(cancelled);
    let timeout = deadline.saturating_duration_since(Instant::now());
    let Ok(op) = select.select_timeout(timeout) else {
        return Waited::Cancelled;
    };
    if op.index() == cancel {
        let _ = op.recv(cancelled);
        return Waited::Cancelled;
    }
    let i = op.index();
    Waited::Event(i, op.recv(events[i]))
}
