//! Joining the cluster, on the public port: `POST /cluster/v1/join`. The one request a node
//! without cluster credentials makes (the cluster port refuses it at the handshake). Its join
//! token in `Authorization` is checked by [`gate`] before the body is read.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::app::AppState;
use crate::http::api::checked::Checked;
use crate::http::problem::{FieldError, Problem};
use crate::idm::cluster::{self, ClusterError, JoinRequest, PresentedToken};

#[derive(Tags)]
enum ClusterTag {
    /// Nodes joining the cluster (`gatehouse cluster join` calls it).
    Cluster,
}

pub struct ClusterApi;

/// A joining node's request.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct JoinInput {
    /// The joining node's id: 16 hex digits.
    #[oai(validator(min_length = 16, max_length = 16))]
    pub node_id: String,
    /// A PKCS#10 certificate signing request (PEM) for its own key, naming its hosts.
    #[oai(validator(max_length = 8192))]
    pub csr_pem: String,
    /// `host:port` of its cluster port.
    #[oai(validator(max_length = 255))]
    pub cluster_address: String,
    /// Its one-time X25519 public key (base64url), which the KEK is sealed to.
    #[oai(validator(max_length = 64))]
    pub kek_public_key: String,
}

/// The KEK, sealed to the joining node's key.
#[derive(Debug, Object)]
pub struct SealedKekView {
    /// The sender's one-time X25519 public key (base64url).
    pub sender_public: String,
    pub sealed: SealedView,
}

/// XChaCha20-Poly1305 ciphertext under the key both sides derive.
#[derive(Debug, Object)]
pub struct SealedView {
    pub key_id: String,
    /// base64url.
    pub nonce: String,
    /// base64url, with its tag.
    pub ciphertext: String,
}

/// What a joining node needs to start as a member.
#[derive(Debug, Object)]
pub struct JoinOutput {
    pub cluster_id: String,
    /// Its node certificate, then the node intermediate (PEM).
    pub node_chain_pem: String,
    /// The cluster CA (PEM).
    pub ca_pem: String,
    pub kek: SealedKekView,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum JoinAnswer {
    /// Admitted as a learner: it is promoted to voter once it has caught up.
    #[oai(status = 200)]
    Joined(Json<JoinOutput>),
    /// Invalid input; `errors` names the field.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No join token, or one that is unknown, wrong, expired or used.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// The body did not arrive within `http.body_read_timeout_secs`.
    #[oai(status = 408, content_type = "application/problem+json")]
    RequestTimeout(Json<Problem>),
    /// The node is already a member, or the cluster is not initialised for more nodes.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// The body is larger than `max_body_bytes`.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// Too many requests from this source; retry after `Retry-After` seconds.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] String),
    /// No leader could admit the node now.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

fn bad_request(err: poem::Error) -> JoinAnswer {
    let detail = err.to_string();
    let mut p = Problem::new(StatusCode::BAD_REQUEST, "invalid_request", detail.clone());
    p.errors = Some(vec![FieldError { field: "body".into(), message: detail }]);
    JoinAnswer::BadRequest(Json(p))
}

fn bad_token() -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "invalid_join_token", ClusterError::BadToken.to_string())
}

fn answer_of(e: ClusterError) -> JoinAnswer {
    match e {
        ClusterError::Invalid(why) => {
            let mut p = Problem::new(StatusCode::BAD_REQUEST, "validation_failed", why.clone());
            p.errors = Some(vec![FieldError { field: "body".into(), message: why }]);
            JoinAnswer::BadRequest(Json(p))
        }
        ClusterError::BadToken => JoinAnswer::Unauthorized(Json(bad_token())),
        ClusterError::Conflict(why) => JoinAnswer::Conflict(Json(Problem::new(StatusCode::CONFLICT, "conflict", why))),
        other => {
            tracing::warn!("cluster join: {other}");
            JoinAnswer::Unavailable(Json(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the node could not be admitted now: {other}"),
            )))
        }
    }
}

#[OpenApi(tag = "ClusterTag::Cluster")]
impl ClusterApi {
    /// Admit a new node: needs a one-time join token (`gatehouse cluster join-token`) as
    /// `Authorization: Bearer {id}.{secret}`; answers its node certificate and the KEK sealed
    /// to its key.
    #[oai(path = "/cluster/v1/join", method = "post", operation_id = "joinCluster")]
    async fn join(&self, app: Data<&Arc<AppState>>, req: &Request, body: Json<Checked<JoinInput>>) -> JoinAnswer {
        let Some(token) = req.extensions().get::<PresentedToken>() else {
            return JoinAnswer::Unauthorized(Json(bad_token()));
        };
        let input = &body.0 .0;
        let request = JoinRequest {
            node_id: input.node_id.clone(),
            csr_pem: input.csr_pem.clone(),
            cluster_address: input.cluster_address.clone(),
            kek_public_key: input.kek_public_key.clone(),
        };
        let outcome = Box::pin(cluster::admit(&app, token, &request)).await;
        if let Err(ClusterError::BadToken) = &outcome {
            // A token spent meanwhile: counted and audited like one refused at the gate.
            let source = req.remote_addr().as_socket_addr().map(|a| a.ip());
            app.limits.failed(source, None);
            app.auth_failures.record(app.clock.now_ms(), "system", "cluster-join", "", source, "invalid_join_token");
        }
        match outcome {
            Ok(a) => JoinAnswer::Joined(Json(JoinOutput {
                cluster_id: a.cluster_id,
                node_chain_pem: a.node_chain_pem,
                ca_pem: a.ca_pem,
                kek: SealedKekView {
                    sender_public: a.kek.sender_public,
                    sealed: SealedView {
                        key_id: a.kek.sealed.key_id,
                        nonce: a.kek.sealed.nonce,
                        ciphertext: a.kek.sealed.ciphertext,
                    },
                },
            })),
            Err(e) => answer_of(e),
        }
    }
}

/// Authenticates a join before its body is read: a missing or wrong token gets 401 at once,
/// counts against the source's failure budget and writes nothing.
pub async fn gate<E: Endpoint>(ep: &E, mut req: Request, app: &AppState) -> poem::Result<Response> {
    if req.uri().path() == "/cluster/v1/join" && req.method() == poem::http::Method::POST {
        let bearer = req
            .headers()
            .get(poem::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        match bearer.map(|b| cluster::authenticate_join(app, &b)) {
            Some(Ok(token)) => {
                req.extensions_mut().insert(token);
            }
            failed => {
                if let Some(Err(e)) = &failed {
                    if !matches!(e, ClusterError::BadToken) {
                        tracing::warn!("cluster join: {e}");
                    }
                }
                // Counted and audited coalesced, like any failed authentication.
                let source = req.remote_addr().as_socket_addr().map(|a| a.ip());
                app.limits.failed(source, None);
                app.auth_failures.record(
                    app.clock.now_ms(),
                    "system",
                    "cluster-join",
                    "",
                    source,
                    "invalid_join_token",
                );
                let mut resp = bad_token().into_response();
                resp.headers_mut().insert(
                    poem::http::header::WWW_AUTHENTICATE,
                    poem::http::HeaderValue::from_static("Bearer realm=\"gatehouse-cluster\""),
                );
                return Ok(resp);
            }
        }
    }
    ep.call(req).await.map(IntoResponse::into_response)
}
