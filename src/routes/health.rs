//! Probes: `/livez` and `/readyz`. Never queued, never rate-limited, and
//! cheap: they read atomics and thread handles only (and `/readyz` the
//! page store's free space, a `statvfs` at most once a second), so they
//! stay fast when every worker is busy and every queue is full.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::disk::Shortage;
use crate::state::AppState;

/// One pool's health, as the probes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHealth {
    pub queue: &'static str,
    pub live_workers: usize,
    pub depth: usize,
    pub capacity: usize,
    /// The worker type's engine, and why it cannot take jobs now.
    pub engine: &'static str,
    pub unavailable: Option<String>,
}

/// Every registered worker type's pool.
pub fn pools(state: &AppState) -> Vec<PoolHealth> {
    state
        .kinds
        .iter()
        .map(|kind| {
            let pool = kind.pool();
            PoolHealth {
                queue: kind.name(),
                live_workers: pool.live_workers(),
                depth: pool.depth(),
                capacity: pool.config().queue_capacity,
                engine: kind.engine(),
                unavailable: kind.unavailable(),
            }
        })
        .collect()
}

/// Live unless a pool has lost every worker thread (and it is not merely
/// shutting down): a pool restarts a failed worker itself, so a pool with
/// none left cannot be restored and the process should be replaced.
pub fn liveness(pools: &[PoolHealth], draining: bool) -> (StatusCode, Value) {
    let dead: Vec<&str> = pools
        .iter()
        .filter(|p| p.live_workers == 0 && !draining)
        .map(|p| p.queue)
        .collect();
    if dead.is_empty() {
        (StatusCode::OK, json!({"status": "ok"}))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "dead", "dead_pools": dead}),
        )
    }
}

/// Ready when jobs can be taken now: not draining, every worker type's
/// engine available (pdfium loadable), every pool with live workers and
/// room in its queue, and free space at or above `MIN_FREE_DISK_MB` where
/// pages are stored (`disk`).
pub fn readiness(
    pools: &[PoolHealth],
    draining: bool,
    disk: Option<Shortage>,
) -> (StatusCode, Value) {
    let mut failed = Vec::new();
    if draining {
        failed.push(json!({"check": "draining", "message": "server is shutting down"}));
    }
    if let Some(shortage) = disk {
        failed.push(json!({"check": "disk", "message": shortage.to_string()}));
    }
    for pool in pools {
        if let Some(reason) = &pool.unavailable {
            failed.push(json!({"check": pool.engine, "queue": pool.queue, "message": reason}));
        }
    }
    for pool in pools {
        if pool.live_workers == 0 {
            failed.push(json!({"check": "workers", "queue": pool.queue, "message": "no live worker threads"}));
        }
        if pool.depth >= pool.capacity {
            failed.push(json!({"check": "queue", "queue": pool.queue, "message": "queue is full"}));
        }
    }
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        json!({"ready": failed.is_empty(), "failed": failed}),
    )
}

/// Liveness: 200 unless a worker pool has lost every thread.
#[utoipa::path(get, path = "/livez", tag = "health",
    responses((status = 200, description = "Alive", body = Object), (status = 503, description = "A pool is dead", body = Object)))]
pub async fn livez(State(state): State<AppState>) -> Response {
    let (status, body) = liveness(&pools(&state), state.is_draining());
    (status, Json(body)).into_response()
}

/// Readiness: 200 when jobs can be taken now, else 503 naming the failed checks.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready", body = Object), (status = 503, description = "Not ready; `failed` lists the checks", body = Object)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (status, body) = ready_now(&state);
    (status, Json(body)).into_response()
}

/// [`readiness`] of this server now; in cluster mode a type's fullness
/// is not checked (it is cluster-wide) and the node must be able to reach
/// the engine and not be fenced (`cluster`).
pub fn ready_now(state: &AppState) -> (StatusCode, Value) {
    let mut pools = pools(state);
    if let Some(cluster) = &state.cluster {
        // Fullness of a type the cluster runs is cluster-wide: its submits
        // get a fast 503, and no other node would be freer.
        for pool in pools.iter_mut().filter(|p| cluster.handles(p.queue)) {
            pool.capacity = usize::MAX;
        }
    }
    let (mut status, mut body) = readiness(&pools, state.is_draining(), state.disk_shortage());
    if let Some(reason) = state.cluster.as_ref().and_then(|c| c.not_ready()) {
        status = StatusCode::SERVICE_UNAVAILABLE;
        body["ready"] = json!(false);
        if let Some(failed) = body["failed"].as_array_mut() {
            failed.push(json!({"check": "cluster", "message": reason}));
        }
    }
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(live_workers: usize, depth: usize) -> PoolHealth {
        PoolHealth {
            queue: "pdf",
            live_workers,
            depth,
            capacity: 4,
            engine: "pdfium",
            unavailable: None,
        }
    }

    #[test]
    fn liveness_fails_only_when_a_pool_has_no_workers_left() {
        assert_eq!(liveness(&[pool(2, 4)], false).0, StatusCode::OK);
        let (status, body) = liveness(&[pool(0, 0)], false);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["dead_pools"][0], "pdf");
        assert_eq!(
            liveness(&[pool(0, 0)], true).0,
            StatusCode::OK,
            "draining is not death"
        );
    }

    #[test]
    fn readiness_names_every_failed_check() {
        assert_eq!(readiness(&[pool(2, 0)], false, None).0, StatusCode::OK);
        let broken = PoolHealth {
            unavailable: Some("no pdfium".into()),
            ..pool(0, 4)
        };
        let low = Shortage::of(Some(1 << 20), 512);
        let (status, body) = readiness(&[broken], true, low);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let checks: Vec<&str> = body["failed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["check"].as_str().unwrap())
            .collect();
        assert_eq!(checks, ["draining", "disk", "pdfium", "workers", "queue"]);
        let disk = &body["failed"][1]["message"];
        assert!(
            disk.as_str().unwrap().contains("1 MB free"),
            "the free MB and the floor: {disk}"
        );
    }
}
