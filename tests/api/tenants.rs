//! Tenants: API keys, every job route closed to other tenants, idempotency
//! keys and rate limits per tenant, fair shares of a queue, and the
//! operators' routes on their own listener.

use std::time::Duration;

use jobserver::config::{Config, PoolConfig, RateLimitConfig};
use jobserver::tenants::Tenants;
use serde_json::{json, Value};

use crate::helpers::{
    accepted_id, assert_error, fixture, retry_after, spawn_app, test_config, wait_until, Api,
    TestApp,
};

const ALICE: &str = "alice-key-0123456789";
const BOB: &str = "bob-key-0123456789ab";

fn keyed(mut config: Config) -> Config {
    let keys = format!("alice={ALICE},bob={BOB}");
    config.tenants = Tenants::from_lookup(&|name| match name {
        "API_KEYS" => Some(keys.clone()),
        _ => None,
    })
    .expect("valid keys");
    config
}

async fn keyed_app() -> TestApp {
    spawn_app(keyed(test_config())).await
}

#[tokio::test]
async fn with_keys_on_a_job_route_without_a_known_key_is_401_and_probes_stay_open() {
    let app = keyed_app().await;
    let missing = app.message(json!({"text": "x"})).await;
    assert_eq!(
        missing.headers()["www-authenticate"],
        "Bearer realm=\"jobserver\""
    );
    assert_error(missing, 401, "unauthorized").await;
    let wrong = app.as_key("not-a-key-0123456789");
    assert_error(
        wrong.message(json!({"text": "x"})).await,
        401,
        "unauthorized",
    )
    .await;
    let id = uuid::Uuid::new_v4();
    assert_error(app.get(&format!("/jobs/{id}")).await, 401, "unauthorized").await;
    let basic = app
        .get_with(
            &format!("/jobs/{id}"),
            ("authorization", "Basic YWxpY2U6eA=="),
        )
        .await;
    assert_error(basic, 401, "unauthorized").await;
    for path in ["/livez", "/readyz", "/openapi.json"] {
        assert_eq!(app.get(path).await.status(), 200, "{path} needs no key");
    }
    let alice = app.as_key(ALICE);
    assert_eq!(alice.message(json!({"text": "x"})).await.status(), 200);
}

/// Every route of one job, as `api` sees job `id`: the statuses.
async fn job_routes(api: &Api, id: &str) -> Vec<(String, u16)> {
    let mut seen = Vec::new();
    for path in [
        format!("/jobs/{id}"),
        format!("/jobs/{id}/events"),
        format!("/jobs/{id}/pages/1"),
        format!("/jobs/{id}/archive"),
    ] {
        let status = api.get(&path).await.status().as_u16();
        seen.push((path, status));
    }
    seen
}

#[tokio::test]
async fn another_tenant_gets_404_on_every_route_of_a_job_and_its_owner_gets_it() {
    let app = keyed_app().await;
    let (alice, bob) = (app.as_key(ALICE), app.as_key(BOB));
    let id = alice
        .submit_pdf("?dpi=36&pages=1", fixture("sample.pdf"))
        .await;
    alice
        .job_until(&id, "done", |view| view["state"] == "done")
        .await;
    for (path, status) in job_routes(&bob, &id).await {
        assert_eq!(status, 404, "bob on {path}");
    }
    assert_error(bob.cancel(&id).await, 404, "not_found").await;
    for (path, status) in job_routes(&alice, &id).await {
        assert_eq!(status, 200, "alice on {path}");
    }
    // A sync job's pages belong to its tenant too.
    let sync = alice
        .upload_pdf("?dpi=36&pages=1", fixture("sample.pdf"))
        .await;
    assert_eq!(sync.status(), 200);
    let body: Value = sync.json().await.unwrap();
    let url = body["pages"][0]["url"].as_str().expect("a page url");
    assert_eq!(alice.get(url).await.status(), 200);
    assert_error(bob.get(url).await, 404, "not_found").await;
}

#[tokio::test]
async fn two_tenants_may_use_the_same_idempotency_key_for_different_jobs() {
    let app = keyed_app().await;
    let (alice, bob) = (app.as_key(ALICE), app.as_key(BOB));
    async fn send(api: &Api, text: &str) -> reqwest::Response {
        let key = ("idempotency-key", "order-17");
        api.post_json_with("/jobs/message?mode=async", key, json!({"text": text}))
            .await
    }
    let a = accepted_id(send(&alice, "alice's").await).await;
    let b = accepted_id(send(&bob, "bob's").await).await;
    assert_ne!(a, b, "two tenants, two jobs");
    let again = send(&alice, "alice's").await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(accepted_id(again).await, a);
}

#[tokio::test]
async fn rate_limits_count_per_tenant_not_per_address() {
    let mut config = keyed(test_config());
    config.rate_limit = RateLimitConfig {
        per_minute: 1,
        burst: 2,
    };
    let app = spawn_app(config).await;
    let (alice, bob) = (app.as_key(ALICE), app.as_key(BOB));
    for _ in 0..2 {
        assert_eq!(alice.message(json!({"text": "x"})).await.status(), 200);
    }
    let limited = alice.message(json!({"text": "x"})).await;
    assert!(retry_after(&limited) >= 1);
    assert_error(limited, 429, "rate_limited").await;
    assert_eq!(
        bob.message(json!({"text": "x"})).await.status(),
        200,
        "bob has his own budget on the same address"
    );
}

#[tokio::test]
async fn a_tenant_flooding_a_queue_gets_its_share_once_another_waits() {
    let mut config = keyed(test_config());
    config.message =
        PoolConfig::new(1, 4, Duration::from_secs(30)).with_async_timeout(Duration::from_secs(30));
    config.admin_bind_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_app(config).await;
    let (alice, bob) = (app.as_key(ALICE), app.as_key(BOB));
    let long = json!({"text": "a", "work_ms": 20_000});
    let mut alices = vec![alice.submit_running_message(20_000).await];
    for _ in 0..4 {
        alices.push(alice.submit_message(long.clone()).await);
    }
    assert_eq!(app.depth("message"), 4);
    // Alone, alice took the whole queue; bob finds it full, and waits.
    let full = bob.async_message(long.clone()).await;
    assert_error(full, 503, "queue_full").await;
    // A place frees as alice's next job starts: it is bob's, not hers.
    assert_eq!(alice.cancel(&alices[0]).await.status(), 202);
    wait_until("the next job starts", || app.depth("message") == 3).await;
    let over = alice.async_message(long.clone()).await;
    assert!(retry_after(&over) >= 1);
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["error"], "fair_share", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("2 of 4"),
        "{body}"
    );
    let bobs = accepted_id(bob.async_message(long.clone()).await).await;
    let (_, status) = app.admin().get_json("/status").await;
    assert_eq!(
        status["queues"][0]["tenants"],
        json!({"alice": 3, "bob": 1}),
        "{status}"
    );
    for id in alices.iter().skip(1).chain([&bobs]) {
        let _ = app
            .as_key(if *id == bobs { BOB } else { ALICE })
            .cancel(id)
            .await;
    }
}

#[tokio::test]
async fn the_operators_routes_live_on_the_admin_listener_with_job_ids() {
    let mut config = keyed(test_config());
    config.admin_bind_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_app(config).await;
    let alice = app.as_key(ALICE);
    let done = alice.message(json!({"text": "x"})).await;
    let job_id = done.json::<Value>().await.unwrap()["job_id"].clone();
    for path in ["/status", "/metrics", "/"] {
        assert_eq!(
            app.get(path).await.status(),
            404,
            "{path} off the main listener"
        );
        assert_eq!(
            alice.get(path).await.status(),
            404,
            "{path}, even with a key"
        );
    }
    let admin = app.admin();
    assert_eq!(admin.get("/").await.status(), 200, "the dashboard");
    assert!(admin.metrics().await.contains("jobserver_"));
    let (status, body) = admin.get_json("/status").await;
    assert_eq!(status, 200);
    let recent = &body["queues"][0]["recent_jobs"][0];
    assert_eq!(recent["job_id"], job_id, "{body}");
    assert_eq!(admin.get("/livez").await.status(), 200);
}

#[tokio::test]
async fn with_keys_on_and_no_admin_listener_status_shows_no_job_ids() {
    let app = keyed_app().await;
    let alice = app.as_key(ALICE);
    assert_eq!(alice.message(json!({"text": "x"})).await.status(), 200);
    let (status, body) = app.get_json("/status").await;
    assert_eq!(status, 200, "/status needs no key");
    let queue = &body["queues"][0];
    assert_eq!(queue["recent_jobs"][0]["job_id"], Value::Null, "{body}");
    assert_eq!(queue["recent_jobs"][0]["outcome"], "ok", "{body}");
    assert_eq!(queue["tenants"], json!({}), "{body}");
}
