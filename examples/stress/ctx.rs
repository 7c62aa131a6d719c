//! What the clients of one load phase share: HTTP clients, servers,
//! fixtures, the log; and the one place a request is sent and recorded.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::record::{is_state, lock, Expect, Kind, Log, Record, Res};
use crate::servers::{PDF_TIMEOUT_MS, REPO};

pub struct Fixtures {
    pub docs: Vec<(&'static str, Bytes, u32)>,
    pub truncated: Bytes,
    pub not_a_pdf: Bytes,
}

impl Fixtures {
    pub fn load() -> Result<Self, String> {
        let read = |name: &str| {
            std::fs::read(Path::new(REPO).join("data").join(name))
                .map(Bytes::from)
                .map_err(|e| format!("data/{name}: {e}"))
        };
        Ok(Fixtures {
            docs: vec![
                ("sample.pdf", read("sample.pdf")?, 6),
                ("text.pdf", read("text.pdf")?, 3),
                ("many-pages.pdf", read("many-pages.pdf")?, 40),
                ("encrypted.pdf", read("encrypted.pdf")?, 2),
                ("bad/broken-xref.pdf", read("bad/broken-xref.pdf")?, 6),
            ],
            truncated: read("bad/truncated.pdf")?,
            not_a_pdf: read("bad/not-a-pdf.pdf")?,
        })
    }
}

#[derive(Clone)]
pub struct Target {
    pub base: String,
}

/// Shared by the clients of one load phase; dropping it closes the
/// clients' connections.
pub struct Ctx {
    pub client: reqwest::Client,
    /// A client that never reuses a connection, for requests the server
    /// may answer before reading their body (see [`Ctx::http`]).
    pub fresh: reqwest::Client,
    /// Whether to send those requests on fresh connections.
    pub isolate: bool,
    pub targets: Vec<Target>,
    pub log: Arc<Mutex<Log>>,
    pub fx: Arc<Fixtures>,
    pub stop: AtomicBool,
    /// SIGTERM was sent (shutdown run): an event stream may then end
    /// before its job does (a job kept queued for the next start).
    pub terminated: AtomicBool,
}

/// A string field of a JSON object body.
pub fn json_str(body: &[u8], field: &str) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v[field].as_str().map(str::to_string))
}

pub fn error_text(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text.chars().take(240).collect()
}

/// Checks an answer's body against the server's shapes.
pub fn body_shape(
    status: u16,
    kind: Kind,
    body: &[u8],
    json: Option<&Value>,
) -> Result<(), String> {
    if status == 200 && kind == Kind::PageGet {
        return if body.starts_with(b"\x89PNG") {
            Ok(())
        } else {
            Err("page is not a PNG".into())
        };
    }
    if status == 200 && kind == Kind::JobEvents {
        return if body.starts_with(b"event:") || body.starts_with(b"id:") || body.starts_with(b":")
        {
            Ok(())
        } else {
            Err(format!(
                "event stream does not start with an event: {:?}",
                String::from_utf8_lossy(&body[..body.len().min(120)])
            ))
        };
    }
    if status == 200 && kind == Kind::JobArchive {
        return if body.starts_with(b"PK") {
            Ok(())
        } else {
            Err("archive is not a zip".into())
        };
    }
    let Some(v) = json.filter(|v| v.is_object()) else {
        return Err(format!(
            "body is not a JSON object: {:?}",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        ));
    };
    if status == 200 {
        return if v["job_id"].is_string() {
            Ok(())
        } else {
            Err(format!("200 without job_id: {v}"))
        };
    }
    if status == 202 {
        // An async job's view: its id, its state and where to follow it.
        return if v["job_id"].is_string()
            && v["state"].as_str().is_some_and(is_state)
            && v["links"]["self"].is_string()
        {
            Ok(())
        } else {
            Err(format!("202 without job_id, state or links: {v}"))
        };
    }
    let ok = v["error"].is_string()
        && v["message"].is_string()
        && (v.get("job_id").is_none() || v["job_id"].is_string())
        && v.as_object().is_some_and(|o| {
            o.keys()
                .all(|k| matches!(k.as_str(), "error" | "message" | "job_id"))
        });
    if ok {
        Ok(())
    } else {
        Err(format!("error body not {{error, message, job_id?}}: {v}"))
    }
}

impl Ctx {
    pub fn new(
        targets: Vec<Target>,
        log: Arc<Mutex<Log>>,
        fx: Arc<Fixtures>,
        isolate: bool,
    ) -> Arc<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            // Far above any deadline the server gives a job: hitting it
            // means a request that was never answered.
            .timeout(Duration::from_millis(PDF_TIMEOUT_MS + 12_000))
            .build()
            .expect("reqwest client");
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(PDF_TIMEOUT_MS + 12_000))
            .pool_max_idle_per_host(0)
            .build()
            .expect("reqwest client");
        Arc::new(Ctx {
            client,
            fresh,
            isolate,
            targets,
            log,
            fx,
            stop: AtomicBool::new(false),
            terminated: AtomicBool::new(false),
        })
    }

    /// The client for a kind of request. A server that answers before
    /// reading a request's body (413, 415, a 400 from the query, a 429)
    /// cannot reuse the connection; unless it says `Connection: close`, a
    /// client that reuses it fails its next request. The run probes this
    /// first ([`crate::probes::early_answer_probe`]); if the server lacks the header,
    /// malformed and rate-limited requests go on fresh connections so the
    /// other clients' pooled connections stay out of that race (the issue
    /// is reported as a finding), and every transport error still counts.
    pub fn http(&self, kind: Kind) -> &reqwest::Client {
        match kind {
            Kind::Malformed | Kind::RateLimited if self.isolate => &self.fresh,
            _ => &self.client,
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn url(&self, target: usize, path: &str) -> String {
        format!("{}{}", self.targets[target].base, path)
    }

    /// Sleeps, waking early when the phase stops.
    pub async fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopped() && Instant::now() < end {
            let left = end.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
    }

    /// Sends one request, records its outcome, and returns the status,
    /// headers and body of an HTTP answer. `hang_up` drops the request after
    /// that long.
    pub async fn exec(
        &self,
        kind: Kind,
        case: &'static str,
        target: usize,
        expect: Expect,
        request: reqwest::RequestBuilder,
        hang_up: Option<Duration>,
    ) -> Option<(u16, reqwest::header::HeaderMap, Bytes)> {
        let started = Instant::now();
        let exchange = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        };
        let outcome = match hang_up {
            Some(after) => tokio::time::timeout(after, exchange).await.ok(),
            None => Some(exchange.await),
        };
        let finished = Instant::now();
        let (res, answer) = match outcome {
            None => (Res::Dropped, None),
            Some(Err(e)) => (Res::Conn(error_text(&e)), None),
            Some(Ok((status, headers, body))) => {
                let retry_after = headers.contains_key("retry-after");
                let json: Option<Value> = serde_json::from_slice(&body).ok();
                let field = |name: &str| {
                    json.as_ref()
                        .and_then(|v| v.get(name))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                let res = Res::Http {
                    status,
                    code: if status < 300 { None } else { field("error") },
                    message: if status < 300 {
                        String::new()
                    } else {
                        field("message").unwrap_or_default()
                    },
                    job_id: field("job_id"),
                    shape: body_shape(status, kind, &body, json.as_ref()),
                    retry_after,
                };
                (res, Some((status, headers, body)))
            }
        };
        lock(&self.log).records.push(Record {
            kind,
            case,
            target,
            expect,
            started,
            finished,
            res,
        });
        answer
    }

    /// `GET path` on server A, about an async job, where only 200 is
    /// expected; the body if it came.
    pub async fn get_ok(&self, kind: Kind, case: &'static str, path: &str) -> Option<Bytes> {
        let request = self.client.get(self.url(0, path));
        match self
            .exec(kind, case, 0, Expect::AnyOf(&[200]), request, None)
            .await
        {
            Some((200, _, body)) => Some(body),
            _ => None,
        }
    }

    pub fn problem(&self, text: String) {
        lock(&self.log).problems.push(text);
    }
}
