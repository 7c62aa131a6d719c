//! What travels between nodes: a job's message (headers and payload) and
//! the answer the running node sends back to the one that admitted it.
//!
//! A job message's payload is its recorded request as one line of JSON,
//! then, for an upload small enough to travel inline, a newline and the
//! upload's bytes. Everything a node needs before reading the payload
//! (the type, the deadlines, where to answer) is in headers. A node that
//! finds a protocol version it does not know answers the job with an error
//! instead of guessing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::queue::JobError;

/// The version of this format; a node refuses jobs of any other.
pub const PROTOCOL: &str = "1";

pub const H_PROTOCOL: &str = "Job-Protocol";
pub const H_KIND: &str = "Job-Kind";
pub const H_ID: &str = "Job-Id";
/// Unix milliseconds past which the job is answered 504.
pub const H_DEADLINE: &str = "Job-Deadline";
/// Unix milliseconds past which a job not yet started never starts.
pub const H_QUEUE_DEADLINE: &str = "Job-Queue-Deadline";
/// The core subject the admitting node waits on.
pub const H_REPLY: &str = "Job-Reply";
/// Whether bytes follow the request line: `inline` or `none`.
pub const H_INPUT: &str = "Job-Input";

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A job as published.
#[derive(Debug, Clone, PartialEq)]
pub struct JobMessage {
    pub kind: String,
    pub job_id: Uuid,
    pub deadline_ms: u64,
    pub queue_deadline_ms: u64,
    pub reply: String,
    /// The recorded request (`Recorded<Params>` as JSON).
    pub request: Value,
    /// An upload that travels inside the message.
    pub inline: Option<Bytes>,
}

/// Why a message is not a job this node can run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a job message at all: dead-lettered.
    #[error("malformed job message: {0}")]
    Malformed(String),
    /// A job from a node speaking another version: answered with an error.
    #[error("job of protocol {found:?}; this node speaks {PROTOCOL}")]
    Protocol { found: String },
}

impl JobMessage {
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(H_PROTOCOL, PROTOCOL);
        h.insert(H_KIND, self.kind.as_str());
        h.insert(H_ID, self.job_id.to_string().as_str());
        h.insert(H_DEADLINE, self.deadline_ms.to_string().as_str());
        h.insert(
            H_QUEUE_DEADLINE,
            self.queue_deadline_ms.to_string().as_str(),
        );
        h.insert(H_REPLY, self.reply.as_str());
        h.insert(
            H_INPUT,
            if self.inline.is_some() {
                "inline"
            } else {
                "none"
            },
        );
        h
    }

    pub fn payload(&self) -> Bytes {
        let line = self.request.to_string();
        let extra = self.inline.as_ref().map_or(0, |b| b.len() + 1);
        let mut out = BytesMut::with_capacity(line.len() + extra);
        out.put_slice(line.as_bytes());
        if let Some(bytes) = &self.inline {
            out.put_u8(b'\n');
            out.put_slice(bytes);
        }
        out.freeze()
    }

    /// Reads a message's headers and payload.
    pub fn parse(headers: Option<&HeaderMap>, payload: &Bytes) -> Result<JobMessage, WireError> {
        let headers = headers.ok_or_else(|| WireError::Malformed("no headers".into()))?;
        let get = |name: &str| {
            headers
                .get(name)
                .map(|v| v.as_str().to_string())
                .ok_or_else(|| WireError::Malformed(format!("no {name} header")))
        };
        let protocol = get(H_PROTOCOL)?;
        if protocol != PROTOCOL {
            return Err(WireError::Protocol { found: protocol });
        }
        let number = |name: &str| {
            get(name)?
                .parse::<u64>()
                .map_err(|e| WireError::Malformed(format!("{name}: {e}")))
        };
        let job_id = Uuid::parse_str(&get(H_ID)?)
            .map_err(|e| WireError::Malformed(format!("{H_ID}: {e}")))?;
        let inline = match get(H_INPUT)?.as_str() {
            "inline" => true,
            "none" => false,
            other => return Err(WireError::Malformed(format!("{H_INPUT}: {other:?}"))),
        };
        let (line, rest) = match payload.iter().position(|&b| b == b'\n') {
            Some(at) => (payload.slice(..at), Some(payload.slice(at + 1..))),
            None => (payload.clone(), None),
        };
        if inline != rest.is_some() {
            return Err(WireError::Malformed(
                "the payload does not match Job-Input".into(),
            ));
        }
        let request = serde_json::from_slice(&line)
            .map_err(|e| WireError::Malformed(format!("request: {e}")))?;
        Ok(JobMessage {
            kind: get(H_KIND)?,
            job_id,
            deadline_ms: number(H_DEADLINE)?,
            queue_deadline_ms: number(H_QUEUE_DEADLINE)?,
            reply: get(H_REPLY)?,
            request,
            inline: rest,
        })
    }

    /// What is left of the total budget at `now_ms`.
    pub fn left(&self, now_ms: u64) -> Option<Duration> {
        let left = self.deadline_ms.saturating_sub(now_ms);
        (left > 0).then(|| Duration::from_millis(left))
    }
}

/// What the running node tells the admitting one on the reply subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// A worker is about to start it (a request: the admitting node
    /// answers whether it still waits).
    Started { node: String, attempt: u64 },
    /// The type's reply.
    Done { reply: Value },
    /// How the job ended otherwise.
    Failed { error: JobError },
}

/// The admitting node's answer to [`Notice::Started`].
pub const STILL_WAITING: &[u8] = b"waiting";
pub const GONE: &[u8] = b"gone";

#[cfg(test)]
mod tests {
    use super::*;

    fn job(inline: Option<&'static [u8]>) -> JobMessage {
        JobMessage {
            kind: "pdf".into(),
            job_id: Uuid::new_v4(),
            deadline_ms: 2_000,
            queue_deadline_ms: 1_500,
            reply: "p.reply.node.x".into(),
            request: serde_json::json!({"dpi": 72, "text": "two\nlines"}),
            inline: inline.map(Bytes::from_static),
        }
    }

    #[test]
    fn a_job_reads_back_as_written_with_and_without_inline_bytes() {
        for inline in [None, Some(&b"%PDF-1.7\n\x00binary\nbytes"[..])] {
            let sent = job(inline);
            let read = JobMessage::parse(Some(&sent.headers()), &sent.payload()).unwrap();
            assert_eq!(read, sent);
        }
    }

    #[test]
    fn another_protocol_is_told_apart_from_a_malformed_message() {
        let sent = job(None);
        let mut headers = sent.headers();
        headers.insert(H_PROTOCOL, "2");
        let err = JobMessage::parse(Some(&headers), &sent.payload()).unwrap_err();
        assert_eq!(err, WireError::Protocol { found: "2".into() });
        let err = JobMessage::parse(None, &sent.payload()).unwrap_err();
        assert!(matches!(err, WireError::Malformed(_)));
        let err = JobMessage::parse(Some(&sent.headers()), &Bytes::from_static(b"{not json"));
        assert!(matches!(err, Err(WireError::Malformed(_))));
        // Bytes where the headers say there are none.
        let payload = Bytes::from_static(b"{}\n%PDF");
        let err = JobMessage::parse(Some(&sent.headers()), &payload).unwrap_err();
        assert!(matches!(err, WireError::Malformed(_)));
    }

    #[test]
    fn notices_and_job_errors_round_trip() {
        for notice in [
            Notice::Started {
                node: "a".into(),
                attempt: 2,
            },
            Notice::Done {
                reply: serde_json::json!({"pages": []}),
            },
            Notice::Failed {
                error: JobError::Timeout { budget_ms: 800 },
            },
            Notice::Failed {
                error: JobError::Cancelled,
            },
        ] {
            let text = serde_json::to_vec(&notice).unwrap();
            assert_eq!(serde_json::from_slice::<Notice>(&text).unwrap(), notice);
        }
    }

    #[test]
    fn the_budget_left_is_measured_from_the_deadline() {
        let sent = job(None);
        assert_eq!(sent.left(1_000), Some(Duration::from_millis(1_000)));
        assert_eq!(sent.left(2_000), None);
    }
}
