//! The cluster suite: nodes of the real binary sharing one nats-server and
//! one S3 server, all on 127.0.0.1 (started per test by [`harness`]). Runs
//! with `--features cluster` (scripts/cluster-test.sh); the single-node
//! suite (`tests/api/`) needs no service.
//!
//! Each case ends by checking what every case must leave: every request
//! answered once with an expected status, and no job message left in the
//! type's stream (waiting + running back to 0 on every node's view).

mod bench;
mod harness;
#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::Response;
use serde_json::Value;

use harness::{Engines, Node};
use helpers::{eventually, fixture, retry_after, send_signal};

async fn pdf(node: &Node, query: &str, file: &str) -> Response {
    reqwest::Client::new()
        .post(node.url(&format!("/jobs/pdf{query}")))
        .header("content-type", "application/pdf")
        .body(fixture(file))
        .send()
        .await
        .unwrap()
}

async fn body(response: Response) -> Value {
    response.json().await.unwrap()
}

/// Jobs in the type's cluster-wide queue, as `node` last read them.
async fn cluster_jobs(node: &Node, kind: &str) -> u64 {
    let status = node.status().await;
    status["cluster"]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["kind"] == kind)
        .map(|q| q["jobs"].as_u64().unwrap())
        .unwrap()
}

/// The end of every case: the stream holds no job.
async fn assert_streams_empty(node: &Node) {
    eventually(
        "the cluster's PDF queue is empty",
        Duration::from_secs(10),
        || async { (cluster_jobs(node, "pdf").await == 0).then_some(()) },
    )
    .await;
}

/// Cluster jobs the nodes answered, together.
async fn answered_by(nodes: &[Node]) -> u64 {
    let mut answered = 0;
    for node in nodes {
        answered += node.answered().await;
    }
    answered
}

/// Waits (up to `limit`) until `node` renders a page again.
async fn renders_again(node: &Node, limit: Duration) {
    eventually("a page renders again", limit, || async {
        let after = pdf(node, "?dpi=36&pages=1", "sample.pdf").await;
        (after.status() == 200).then_some(())
    })
    .await;
}

/// Holds `node`'s only PDF worker with a long async job of its own.
async fn hold_worker(node: &Node) {
    let hold = pdf(node, "?mode=async&dpi=300", "many-pages.pdf").await;
    assert_eq!(hold.status(), 202);
    wait_busy(node, 1).await;
}

async fn wait_busy(node: &Node, busy: u64) {
    let what = format!("{} has {busy} busy PDF workers", node.name);
    eventually(&what, Duration::from_secs(10), || async {
        (node.queue("pdf").await["busy_workers"].as_u64() == Some(busy)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn any_node_runs_a_sync_job_and_every_node_serves_its_pages() {
    let engines = Engines::start().await;
    // Inputs past 4 KiB travel through the object store.
    let env = [("CLUSTER_INLINE_MAX_BYTES", "4096")];
    let nodes = [
        engines.node("a", &env),
        engines.node("b", &env),
        engines.node("c", &env),
    ];
    for (i, node) in nodes.iter().enumerate() {
        let file = if i == 0 { "text.pdf" } else { "sample.pdf" };
        let response = pdf(node, "?dpi=36&pages=1-2", file).await;
        assert_eq!(response.status(), 200, "submitted on {}", node.name);
        let reply = body(response).await;
        assert_eq!(reply["pages"].as_array().unwrap().len(), 2);
        let url = reply["pages"][1]["url"].as_str().unwrap();
        let mut served = Vec::new();
        for other in &nodes {
            let page = reqwest::get(other.url(url)).await.unwrap();
            assert_eq!(page.status(), 200, "page 2 from {}", other.name);
            assert_eq!(page.headers()["content-type"], "image/png");
            served.push(page.bytes().await.unwrap());
        }
        assert!(
            served.windows(2).all(|w| w[0] == w[1]),
            "the same page everywhere"
        );
        assert_eq!(
            served[0].len() as u64,
            reply["pages"][1]["bytes"].as_u64().unwrap()
        );
    }
    let answered = answered_by(&nodes).await;
    assert_eq!(answered, 3, "each job answered once, by some node");
    assert_streams_empty(&nodes[0]).await;
}

#[tokio::test]
async fn the_cluster_admits_waiting_plus_running_up_to_its_capacity_and_refuses_the_rest_at_once() {
    let engines = Engines::start().await;
    let env = [("CLUSTER_PDF_CAPACITY", "3")];
    let nodes = [engines.node("a", &env), engines.node("b", &env)];
    let started = Instant::now();
    let sends = (0..10).map(|i| {
        let node = &nodes[i % 2];
        async move {
            let t0 = Instant::now();
            let response = pdf(node, "?dpi=150", "many-pages.pdf").await;
            (response, t0.elapsed())
        }
    });
    let sampler = async {
        let mut most = 0;
        while started.elapsed() < Duration::from_secs(2) {
            most = most.max(cluster_jobs(&nodes[0], "pdf").await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        most
    };
    let (answers, most) = tokio::join!(join_all(sends), sampler);
    let (mut ok, mut refused) = (0, 0);
    for (response, took) in answers {
        match response.status().as_u16() {
            200 => ok += 1,
            503 => {
                refused += 1;
                assert!(retry_after(&response) >= 1);
                assert!(
                    took < Duration::from_secs(1),
                    "a 503 comes at once ({took:?})"
                );
                assert_eq!(body(response).await["error"], "queue_full");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok + refused, 10, "every request answered once");
    assert!(
        (3..=5).contains(&ok),
        "3 admitted at once, a few more as places free: {ok}"
    );
    assert!(
        most <= 3,
        "waiting + running never above the capacity: {most}"
    );
    assert_streams_empty(&nodes[0]).await;
}

#[tokio::test]
async fn a_deadline_on_one_node_kills_the_render_on_another() {
    let engines = Engines::start().await;
    let nodes = [engines.node("a", &[]), engines.node("b", &[])];
    // An async job holds a's only worker: a's sync job must run on b.
    hold_worker(&nodes[0]).await;
    let t0 = Instant::now();
    let response = pdf(&nodes[0], "?dpi=300&timeout_ms=800", "many-pages.pdf").await;
    let took = t0.elapsed();
    assert_eq!(response.status(), 504);
    // `queue_timeout` when b had not started it by then (a loaded machine).
    let error = body(response).await["error"].clone();
    assert!(error == "timeout" || error == "queue_timeout", "{error}");
    assert!(
        took < Duration::from_millis(1500),
        "504 near the deadline: {took:?}"
    );
    // b ran it and stops: its worker is idle again and the job counted as
    // a timeout there.
    wait_busy(&nodes[1], 0).await;
    let stopped = t0.elapsed();
    assert!(
        stopped < Duration::from_secs(3),
        "b's render killed soon after: {stopped:?}"
    );
    let b = nodes[1].queue("pdf").await;
    assert_eq!(b["jobs"]["ok"], 0, "b never finished it");
    assert_streams_empty(&nodes[1]).await;
}

#[tokio::test]
async fn a_client_gone_takes_its_job_out_of_the_cluster_and_kills_its_render() {
    let engines = Engines::start().await;
    let nodes = [engines.node("a", &[]), engines.node("b", &[])];
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let mut gone = Vec::new();
    for node in &nodes {
        let sent = client
            .post(node.url("/jobs/pdf?dpi=300"))
            .header("content-type", "application/pdf")
            .body(fixture("many-pages.pdf"))
            .send();
        gone.push(sent);
    }
    for result in join_all(gone).await {
        assert!(result.unwrap_err().is_timeout());
    }
    for node in &nodes {
        wait_busy(node, 0).await;
        assert_eq!(node.queue("pdf").await["jobs"]["ok"], 0);
    }
    assert_streams_empty(&nodes[0]).await;
}

#[tokio::test]
async fn a_node_killed_mid_job_loses_it_to_another_which_answers_once() {
    let engines = Engines::start().await;
    let mut nodes = [
        engines.node("a", &[]),
        engines.node("b", &[]),
        engines.node("c", &[]),
    ];
    // c admits; its worker is held, so a or b runs the job.
    hold_worker(&nodes[2]).await;
    let url = nodes[2].url("/jobs/pdf?dpi=200&timeout_ms=30000");
    let job = tokio::spawn(
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/pdf")
            .body(fixture("many-pages.pdf"))
            .send(),
    );
    let runner = eventually("a or b runs the job", Duration::from_secs(10), || async {
        for (i, node) in nodes[..2].iter().enumerate() {
            if node.queue("pdf").await["busy_workers"] == 1 {
                return Some(i);
            }
        }
        None
    })
    .await;
    let killed_at = Instant::now();
    nodes[runner].kill();
    let response = job.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "answered by the other node");
    let reply = body(response).await;
    assert_eq!(reply["pages"].as_array().unwrap().len(), 40);
    let took = killed_at.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "after the ack wait ({took:?})"
    );
    let other = 1 - runner;
    assert_eq!(
        nodes[other].answered().await,
        1,
        "the survivor answered it once"
    );
    assert_streams_empty(&nodes[other]).await;
}

#[tokio::test]
async fn an_engine_paused_shorter_than_the_ack_wait_refuses_new_jobs_fast_and_loses_none() {
    let engines = Engines::start().await;
    let nodes = [engines.node("a", &[]), engines.node("b", &[])];
    let running = run_long(&nodes, "?dpi=200").await;
    send_signal(engines.nats_pid(), "STOP");
    let t0 = Instant::now();
    let refused = pdf(&nodes[0], "?dpi=36&pages=1", "sample.pdf").await;
    let took = t0.elapsed();
    let status = refused.status();
    send_signal(engines.nats_pid(), "CONT");
    assert_eq!(status, 503, "no hang while the engine is away");
    assert!(
        took < Duration::from_millis(2500),
        "refused within the publish timeout: {took:?}"
    );
    let done = running.await.unwrap();
    assert_eq!(done.status(), 200, "the running job ends once");
    let after = pdf(&nodes[0], "?dpi=36&pages=1", "sample.pdf").await;
    assert_eq!(after.status(), 200, "jobs are taken again");
    assert_streams_empty(&nodes[0]).await;
}

#[tokio::test]
async fn a_malformed_message_is_dead_lettered_and_the_node_carries_on() {
    let engines = Engines::start().await;
    let node = engines.node("a", &[]);
    let client = async_nats::connect(engines.nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let subject = format!("{}.jobs.pdf", engines.prefix);
    let ack = js
        .publish(subject.clone(), "not a job".into())
        .await
        .unwrap();
    ack.await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Job-Protocol", "99");
    let ack = js
        .publish_with_headers(subject, headers, "{}".into())
        .await
        .unwrap();
    ack.await.unwrap();
    eventually(
        "both messages are handled",
        Duration::from_secs(10),
        || async {
            let ran = &node.status().await["cluster"]["ran"];
            (ran["dead_lettered"] == 1 && ran["refused_protocol"] == 1).then_some(())
        },
    )
    .await;
    let mut dead = js
        .get_stream(format!("{}_DEAD", engines.prefix))
        .await
        .unwrap();
    assert_eq!(dead.info().await.unwrap().state.messages, 1);
    let response = pdf(&node, "?dpi=36&pages=1", "sample.pdf").await;
    assert_eq!(response.status(), 200, "the node carries on");
    assert_streams_empty(&node).await;
}

/// A job running on any node, and which node: held until answered.
async fn run_long(nodes: &[Node], query: &str) -> tokio::task::JoinHandle<Response> {
    let url = nodes[0].url(&format!("/jobs/pdf{query}"));
    let job = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/pdf")
            .body(fixture("many-pages.pdf"))
            .send()
            .await
            .unwrap()
    });
    eventually("a node runs the job", Duration::from_secs(10), || async {
        for node in nodes {
            if node.queue("pdf").await["busy_workers"] == 1 {
                return Some(());
            }
        }
        None
    })
    .await;
    job
}

#[tokio::test]
async fn an_engine_killed_and_restarted_on_its_store_ends_the_running_job_once() {
    let mut engines = Engines::start().await;
    let nodes = [engines.node("a", &[]), engines.node("b", &[])];
    let job = run_long(&nodes, "?dpi=200").await;
    engines.restart_nats().await;
    let response = job.await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "the running job ends once, answered"
    );
    assert_eq!(answered_by(&nodes).await, 1);
    renders_again(&nodes[1], Duration::from_secs(10)).await;
    assert_streams_empty(&nodes[0]).await;
}

#[tokio::test]
async fn an_object_store_outage_fails_the_job_within_its_budget_and_the_next_one_renders() {
    let engines = Engines::start().await;
    let nodes = [engines.node("a", &[]), engines.node("b", &[])];
    engines.stop_s3();
    let t0 = Instant::now();
    let response = pdf(&nodes[0], "?dpi=72&pages=1-3&timeout_ms=3000", "sample.pdf").await;
    let took = t0.elapsed();
    engines.resume_s3();
    let status = response.status().as_u16();
    assert!(matches!(status, 500 | 504), "a clean failure, got {status}");
    assert!(
        took < Duration::from_secs(4),
        "within the job's budget: {took:?}"
    );
    renders_again(&nodes[1], Duration::from_secs(40)).await;
    assert_streams_empty(&nodes[0]).await;
}
