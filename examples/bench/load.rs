//! The load generator: requests with their status and latency, sent in
//! a closed loop (C clients back to back) or an open loop (a fixed rate).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::knobs::Knobs;
use crate::server::{Server, SAMPLE_NAME};

/// What a request asks for: a prepared URL and JSON body.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub body: Bytes,
    /// PDF replies list their pages: count them for pages/s.
    pub count_pages: bool,
}

impl Target {
    pub fn message(server: &Server, work_ms: u64) -> Target {
        Target {
            url: format!("{}/jobs/message", server.base),
            body: Bytes::from(format!(r#"{{"text":"bench","work_ms":{work_ms}}}"#)),
            count_pages: false,
        }
    }

    pub fn pdf(server: &Server, knobs: &Knobs) -> Target {
        Target {
            url: format!("{}/jobs/pdf", server.base),
            body: Bytes::from(
                serde_json::json!({
                    "path": SAMPLE_NAME,
                    "dpi": knobs.pdf_dpi,
                    "pages": knobs.pdf_pages,
                })
                .to_string(),
            ),
            count_pages: true,
        }
    }
}

/// One request's outcome.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// HTTP status; 0 for a transport error (refused, reset, timed out).
    pub status: u16,
    /// From just before sending to the last byte of the body.
    pub latency: Duration,
    /// Pages a 200 PDF reply lists; 0 otherwise.
    pub pages: u32,
}

/// Every sample of one measured run and its wall time (first send to last
/// answer).
pub struct Run {
    pub samples: Vec<Sample>,
    pub wall: Duration,
    /// Open loop only: the arrival rate actually achieved.
    pub offered_rps: Option<f64>,
}

pub async fn send(client: &reqwest::Client, target: &Target) -> Sample {
    let started = Instant::now();
    let result = client
        .post(&target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(target.body.clone())
        .send()
        .await;
    let (status, pages) = match result {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(body) if status == 200 && target.count_pages => (status, count_pages(&body)),
                Ok(_) => (status, 0),
                Err(_) => (0, 0),
            }
        }
        Err(_) => (0, 0),
    };
    Sample {
        status,
        latency: started.elapsed(),
        pages,
    }
}

pub fn count_pages(body: &[u8]) -> u32 {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("pages")?.as_array().map(Vec::len))
        .map_or(0, |n| n as u32)
}

/// How a run offers its requests.
#[derive(Debug, Clone, Copy)]
pub enum Offer {
    /// `concurrency` clients, each sending its next request as soon as the
    /// previous answer arrives (each sends at least one).
    Closed { concurrency: usize },
    /// Requests sent at a fixed rate whatever the answers (an open loop,
    /// like independent users); latency is measured from each request's
    /// actual send, and the achieved rate is reported, since on a busy host
    /// the sender can fall behind its schedule.
    Open { rate: f64 },
}

/// Requests offered as `offer` says until `duration` has passed; those in
/// flight at the end are waited for and counted.
pub async fn offer(
    client: &reqwest::Client,
    target: &Target,
    offer: Offer,
    duration: Duration,
) -> Run {
    let started = Instant::now();
    let target = Arc::new(target.clone());
    let mut tasks = JoinSet::new();
    let sent = match offer {
        Offer::Closed { concurrency } => {
            for _ in 0..concurrency {
                let client = client.clone();
                let target = Arc::clone(&target);
                tasks.spawn(async move {
                    let mut samples = Vec::new();
                    loop {
                        samples.push(send(&client, &target).await);
                        if started.elapsed() >= duration {
                            return samples;
                        }
                    }
                });
            }
            None
        }
        Offer::Open { rate } => {
            let count = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
            for i in 0..count {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let client = client.clone();
                let target = Arc::clone(&target);
                tasks.spawn(async move { vec![send(&client, &target).await] });
            }
            Some(count as f64 / started.elapsed().as_secs_f64().max(1e-9))
        }
    };
    Run {
        samples: join_all(tasks).await.concat(),
        wall: started.elapsed(),
        offered_rps: sent,
    }
}

/// Waits for every task of a run; their results in the order they end.
async fn join_all<T: 'static>(mut tasks: JoinSet<T>) -> Vec<T> {
    let mut done = Vec::with_capacity(tasks.len());
    while let Some(result) = tasks.join_next().await {
        // A load task cannot panic short of a bug in this file.
        done.push(result.expect("a load task panicked"));
    }
    done
}
