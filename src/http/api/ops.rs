//! Operations endpoints: liveness and readiness on the public port (for probes), and the
//! management listener's routes (metrics, liveness, readiness) on its own plain-HTTP port.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::app::AppState;
use crate::http::problem::Problem;

#[derive(Tags)]
enum OpsTag {
    /// Liveness and readiness.
    Operations,
}

pub struct OpsApi;

#[derive(Debug, Object)]
pub struct HealthStatus {
    /// `ok` when the process serves requests.
    pub status: String,
}

#[derive(Debug, Object)]
pub struct ReadyStatus {
    /// `ready`.
    pub status: String,
    /// This node's raft id, in hex.
    pub node_id: String,
    /// The raft leader's id, in hex.
    pub leader_id: String,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Storage is open and a raft leader is known.
    #[oai(status = 200)]
    Ready(Json<ReadyStatus>),
    /// Not ready: no raft leader known, none heard from within `cluster.staleness_ms`, or (a
    /// joining node) no cluster state yet.
    #[oai(status = 503, content_type = "application/problem+json")]
    NotReady(Json<Problem>),
}

#[OpenApi(tag = "OpsTag::Operations")]
impl OpsApi {
    /// Liveness: the process answers.
    #[oai(path = "/health", method = "get", operation_id = "getHealth")]
    async fn health(&self) -> Json<HealthStatus> {
        Json(HealthStatus { status: "ok".into() })
    }

    /// Readiness: storage open and a raft leader known.
    #[oai(path = "/ready", method = "get", operation_id = "getReady")]
    async fn ready(&self, app: Data<&Arc<AppState>>) -> ReadyResponse {
        readiness(&app)
    }
}

fn readiness(app: &AppState) -> ReadyResponse {
    let status = app.raft.status();
    // A joining node has a leader before it has the cluster's state.
    let has_state = app.store.read().ok().and_then(|r| r.cluster().ok().flatten()).is_some();
    match status.leader {
        Some(leader) if has_state && app.is_fresh() => ReadyResponse::Ready(Json(ReadyStatus {
            status: "ready".into(),
            node_id: format!("{:016x}", status.node_id),
            leader_id: format!("{leader:016x}"),
        })),
        _ => ReadyResponse::NotReady(Json(Problem::new(
            poem::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no raft leader is known or has reached this node lately, or it has not received the cluster's state yet",
        ))),
    }
}

/// The management listener's routes: `/metrics` (Prometheus text), `/health` and `/ready`.
pub fn management_routes(app: Arc<AppState>) -> impl poem::Endpoint {
    use poem::{get, handler, EndpointExt, IntoResponse, Route};

    #[handler]
    fn metrics(app: Data<&Arc<AppState>>) -> poem::Response {
        poem::Response::builder().content_type("text/plain; version=0.0.4; charset=utf-8").body(app.render_metrics())
    }

    #[handler]
    fn health() -> poem::Response {
        poem::web::Json(serde_json::json!({"status": "ok"})).into_response()
    }

    #[handler]
    fn ready(app: Data<&Arc<AppState>>) -> poem::Response {
        match readiness(&app) {
            ReadyResponse::Ready(Json(s)) => poem::web::Json(serde_json::json!({
                "status": s.status, "node_id": s.node_id, "leader_id": s.leader_id,
            }))
            .into_response(),
            ReadyResponse::NotReady(Json(p)) => p.into_response(),
        }
    }

    Route::new().at("/metrics", get(metrics)).at("/health", get(health)).at("/ready", get(ready)).data(app)
}
