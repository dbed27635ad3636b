//! Operations endpoints: liveness, readiness and Prometheus metrics.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::http::problem::Problem;
use crate::node::AppState;

#[derive(Tags)]
enum OpsTag {
    /// Liveness, readiness and metrics.
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
    /// Not ready: no raft leader known yet.
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
        let status = app.raft.status();
        match status.leader {
            Some(leader) if app.store.read().is_ok() => ReadyResponse::Ready(Json(ReadyStatus {
                status: "ready".into(),
                node_id: format!("{:016x}", status.node_id),
                leader_id: format!("{leader:016x}"),
            })),
            _ => ReadyResponse::NotReady(Json(Problem::new(
                poem::http::StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "no raft leader is known yet",
            ))),
        }
    }

    /// Metrics in the Prometheus text format.
    #[oai(path = "/metrics", method = "get", operation_id = "getMetrics")]
    async fn metrics(&self, app: Data<&Arc<AppState>>) -> PlainText<String> {
        PlainText(app.render_metrics())
    }
}
