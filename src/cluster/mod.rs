//! The cluster: a member's node credentials, the cluster port (raft over mutual TLS), and
//! joining a cluster from a fresh data dir. The membership use cases (init, tokens, admit,
//! status, remove) are in `idm::cluster`; raft itself is in the `gatehouse-raft` crate.

pub mod credentials;
pub mod join;
pub mod port;
pub mod protocol;

use crate::app::AppState;
use credentials::NodeCredentials;

/// Opens the cluster port with this node's credentials and gives raft its transport. Does
/// nothing when it is open already.
pub async fn open_port(app: &AppState) -> Result<(), String> {
    let mut task = app.cluster_port.task.lock().await;
    if task.is_some() {
        return Ok(());
    }
    let creds = NodeCredentials::load(&app.data_dir, app.cipher.key_provider()).map_err(|e| e.to_string())?;
    let server = creds.cluster_server_config().map_err(|e| format!("cluster port TLS: {e}"))?;
    let client = creds.cluster_client_config().map_err(|e| format!("cluster client TLS: {e}"))?;
    let transport = gatehouse_raft::Transport::new(client)?;
    let addr = app.config.cluster.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (cluster.listen): {e}"))?;
    app.raft.set_transport(transport);
    let (node, store, http) = (app.raft.clone(), app.store.clone(), app.config.http.clone());
    let stop = app.cluster_port.stop.subscribe();
    *task = Some(tokio::spawn(async move {
        if let Err(e) = port::serve(listener, server, node, store, &http, stop).await {
            tracing::error!("the cluster port stopped: {e}");
        }
    }));
    tracing::info!("cluster port listening on {addr}");
    Ok(())
}
