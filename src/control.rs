//! The control socket (`control.sock` in the data dir, mode 0600): how CLI commands act on a
//! running node, whose database redb has locked. One JSON request line, one JSON answer line.
//! Only the data dir's owner and root may connect.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::app::AppState;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    Status,
    TenantCreate {
        id: String,
        display_name: Option<String>,
    },
    TenantList,
    AuditVerify,
    KeysList {
        tenant: String,
    },
    KeysRotate {
        tenant: String,
        now: bool,
    },
    KeysPrune {
        tenant: String,
        dry_run: bool,
    },
    /// A short-lived platform admin token (role `owner` on the `system` tenant).
    AdminToken,
    /// Revokes a platform admin token (one `admin token` printed, or any admin token of the
    /// `system` issuer): it stops working everywhere at once, audited.
    AdminRevoke {
        token: String,
    },
    /// Writes a backup of the state to `path` (absolute, a file that does not exist yet),
    /// sealed under the KEK, while the node serves.
    Backup {
        path: String,
    },
    /// Makes this node the first member of a cluster that can grow (keeps all its data).
    ClusterInit,
    /// A one-time join token, valid for `ttl_secs`.
    ClusterJoinToken {
        ttl_secs: u64,
    },
    ClusterStatus,
    /// Takes a node (hex id) out of the cluster.
    ClusterRemove {
        node_id: String,
    },
    /// Measures the replicated write path from inside this process (`cluster bench`).
    ClusterBench {
        concurrency: usize,
        seconds: u64,
    },
    /// A SHA-256 of this node's replicated state (every replicated table, from one read
    /// transaction): members that applied the same log hold the same digest.
    ClusterDigest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl ControlResponse {
    fn ok(data: serde_json::Value) -> Self {
        ControlResponse { ok: true, error: None, data }
    }
    fn err(message: impl Into<String>) -> Self {
        ControlResponse { ok: false, error: Some(message.into()), data: serde_json::Value::Null }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("no running node at {0} (start it with `gatehouse serve`)")]
    NotRunning(String),
    #[error("control socket: {0}")]
    Io(String),
    #[error("the node answered something unreadable: {0}")]
    Protocol(String),
}

/// Binds the socket, replacing a stale one left by a crash (the database lock already proved
/// that no other node runs on this data dir).
pub fn bind(app: &AppState) -> std::io::Result<UnixListener> {
    let path = app.data_dir.control_socket();
    let err = |e: std::io::Error| e;
    if path.exists() {
        std::fs::remove_file(&path).map_err(err)?;
    }
    let listener = UnixListener::bind(&path).map_err(err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

pub async fn serve(app: Arc<AppState>, listener: UnixListener, mut shutdown: watch::Receiver<bool>) {
    let owner = std::fs::metadata(app.data_dir.root()).map(|m| m.uid()).unwrap_or(0);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let uid = stream.peer_cred().map(|c| c.uid()).ok();
                    let allowed = uid.is_some_and(|u| u == owner || u == 0);
                    let app = app.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(app, stream, allowed, uid.unwrap_or(u32::MAX)).await {
                            tracing::warn!("control connection: {e}");
                        }
                    });
                }
                Err(e) => tracing::warn!("control accept: {e}"),
            },
        }
    }
}

/// The longest request line the socket reads, and how long a client may take to send it.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn handle(app: Arc<AppState>, stream: UnixStream, allowed: bool, uid: u32) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let response = if !allowed {
        ControlResponse::err("permission denied: only the data dir's owner or root may use the control socket")
    } else {
        use tokio::io::AsyncReadExt;
        let mut line = String::new();
        let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
        match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
            Err(_) => ControlResponse::err("no request within 10 s"),
            Ok(Err(e)) => ControlResponse::err(format!("reading the request: {e}")),
            Ok(Ok(_)) if !line.ends_with('\n') => ControlResponse::err("the request is not one line of at most 64 KiB"),
            Ok(Ok(_)) => match serde_json::from_str::<ControlRequest>(&line) {
                Ok(req) => execute(&app, req, uid).await,
                Err(e) => ControlResponse::err(format!("unknown request: {e}")),
            },
        }
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

async fn execute(app: &AppState, req: ControlRequest, uid: u32) -> ControlResponse {
    match req {
        ControlRequest::Status => {
            let s = app.raft.status();
            ControlResponse::ok(serde_json::json!({
                "node_id": format!("{:016x}", s.node_id),
                "term": s.term,
                "is_leader": s.is_leader,
                "applied_index": s.applied_index,
                "public_url": app.public_url,
            }))
        }
        ControlRequest::TenantCreate { id, display_name } => {
            match crate::idm::tenants::create(app, &format!("cli:uid:{uid}"), &id, display_name.as_deref()).await {
                Ok(t) => ControlResponse::ok(serde_json::json!({"id": t.id, "issuer": app.issuer_of(&t.id)})),
                Err(e) => ControlResponse::err(e.to_string()),
            }
        }
        ControlRequest::TenantList => {
            if let Err(e) = app.raft.ensure_linearizable().await {
                return ControlResponse::err(e.to_string());
            }
            match app.store.read().and_then(|r| r.tenants()) {
                Ok(ts) => ControlResponse::ok(serde_json::json!(ts
                    .iter()
                    .map(|t| serde_json::json!({"id": t.id, "display_name": t.display_name, "issuer": app.issuer_of(&t.id)}))
                    .collect::<Vec<_>>())),
                Err(e) => ControlResponse::err(e.to_string()),
            }
        }
        ControlRequest::KeysList { tenant } => match crate::idm::keys::list(app, &tenant) {
            Ok(keys) => ControlResponse::ok(serde_json::to_value(keys).unwrap_or_default()),
            Err(e) => ControlResponse::err(e.to_string()),
        },
        ControlRequest::KeysRotate { tenant, now } => {
            match crate::idm::keys::rotate(app, &format!("cli:uid:{uid}"), &tenant, now).await {
                Ok(keys) => ControlResponse::ok(serde_json::to_value(keys).unwrap_or_default()),
                Err(e) => ControlResponse::err(e.to_string()),
            }
        }
        ControlRequest::KeysPrune { tenant, dry_run } => {
            match crate::idm::keys::prune(app, &format!("cli:uid:{uid}"), &tenant, dry_run).await {
                Ok(keys) => ControlResponse::ok(serde_json::to_value(keys).unwrap_or_default()),
                Err(e) => ControlResponse::err(e.to_string()),
            }
        }
        ControlRequest::AdminToken => {
            match crate::idm::tokens::mint_admin_token(app, &format!("cli:uid:{uid}")).await {
                Ok((token, expires_in)) => ControlResponse::ok(serde_json::json!({
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": expires_in,
                    "audience": app.config.oauth.admin_audience,
                })),
                Err(e) => ControlResponse::err(format!("could not mint a token: {e:?}")),
            }
        }
        ControlRequest::Backup { path } => {
            let path = std::path::PathBuf::from(path);
            if !path.is_absolute() {
                return ControlResponse::err("the backup path must be absolute");
            }
            // On a follower, first apply everything the cluster acknowledged before now.
            if let Err(e) = app.raft.ensure_linearizable().await {
                return ControlResponse::err(format!("no leader confirmed the state to back up: {e}"));
            }
            let (store, cipher) = (app.store.clone(), app.cipher.clone());
            let written = tokio::task::spawn_blocking(move || {
                crate::backup::write(&path, cipher.key_provider(), |out| {
                    gatehouse_storage::snapshot::export_database(store.db().as_ref(), out)
                })
            })
            .await;
            match written {
                Ok(Ok(w)) => ControlResponse::ok(serde_json::to_value(w).unwrap_or_default()),
                Ok(Err(e)) => ControlResponse::err(e.to_string()),
                Err(e) => ControlResponse::err(format!("the backup task failed: {e}")),
            }
        }
        ControlRequest::AdminRevoke { token } => {
            match crate::idm::tokens::revoke_admin_token(app, &format!("cli:uid:{uid}"), &token).await {
                Ok(jti) => ControlResponse::ok(serde_json::json!({ "revoked": jti })),
                Err(e) => ControlResponse::err(e),
            }
        }
        ControlRequest::ClusterInit => match crate::idm::cluster::init(app, &format!("cli:uid:{uid}")).await {
            Ok(done) => ControlResponse::ok(serde_json::to_value(done).unwrap_or_default()),
            Err(e) => ControlResponse::err(e.to_string()),
        },
        ControlRequest::ClusterJoinToken { ttl_secs } => {
            match crate::idm::cluster::issue_join_token(app, &format!("cli:uid:{uid}"), ttl_secs).await {
                Ok((token, expires_at_ms)) => {
                    ControlResponse::ok(serde_json::json!({ "token": token, "expires_at_ms": expires_at_ms }))
                }
                Err(e) => ControlResponse::err(e.to_string()),
            }
        }
        ControlRequest::ClusterStatus => {
            ControlResponse::ok(serde_json::to_value(crate::idm::cluster::status(app).await).unwrap_or_default())
        }
        ControlRequest::ClusterBench { concurrency, seconds } => {
            let actor = format!("cli:uid:{uid}");
            match crate::idm::cluster::bench_writes(app, &actor, concurrency, seconds).await {
                Ok(report) => ControlResponse::ok(serde_json::to_value(report).unwrap_or_default()),
                Err(e) => ControlResponse::err(e.to_string()),
            }
        }
        ControlRequest::ClusterDigest => {
            let db = app.store.db().clone();
            let digest = tokio::task::spawn_blocking(move || gatehouse_storage::snapshot::digest(db.as_ref())).await;
            match digest {
                Ok(Ok(d)) => ControlResponse::ok(serde_json::json!({
                    "sha256": d.sha256, "bytes": d.bytes, "applied_index": d.applied_index,
                })),
                Ok(Err(e)) => ControlResponse::err(e.to_string()),
                Err(e) => ControlResponse::err(e.to_string()),
            }
        }
        ControlRequest::ClusterRemove { node_id } => {
            match crate::idm::cluster::remove(app, &format!("cli:uid:{uid}"), &node_id).await {
                Ok(()) => ControlResponse::ok(serde_json::json!({ "removed": node_id })),
                Err(e) => ControlResponse::err(e.to_string()),
            }
        }
        ControlRequest::AuditVerify => match app.store.read().and_then(|r| r.verify_audit()) {
            Ok(report) => ControlResponse::ok(serde_json::to_value(report).unwrap_or_default()),
            Err(e) => ControlResponse::err(e.to_string()),
        },
    }
}

/// Sends one request to the node serving `data_dir`.
pub async fn call(data_dir: &Path, req: &ControlRequest) -> Result<ControlResponse, ControlError> {
    let path = data_dir.join("control.sock");
    let stream =
        UnixStream::connect(&path).await.map_err(|_| ControlError::NotRunning(data_dir.display().to_string()))?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::Protocol(e.to_string()))?;
    line.push(b'\n');
    write.write_all(&line).await.map_err(|e| ControlError::Io(e.to_string()))?;
    let mut lines = BufReader::new(read).lines();
    let answer = lines
        .next_line()
        .await
        .map_err(|e| ControlError::Io(e.to_string()))?
        .ok_or_else(|| ControlError::Protocol("the node closed the connection".into()))?;
    serde_json::from_str(&answer).map_err(|e| ControlError::Protocol(e.to_string()))
}
