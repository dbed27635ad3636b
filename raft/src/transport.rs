//! The node-to-node transport: HTTPS with mutual TLS on the cluster port. The TLS setup
//! (which certificates a peer must present) is the caller's; this module only carries
//! requests. The wire format of each call is in [`rpc`](crate::rpc).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::NodeId;

/// How long connecting to a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Answers from a peer larger than this are refused (a snapshot goes the other way).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Why a call failed, by whether the peer may have acted on it.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing reached the peer: no transport yet, or the connection failed. Safe to retry.
    #[error("peer {addr} is unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The request may have reached the peer; its effect is unknown.
    #[error("call to peer {addr} failed: {reason}")]
    Failed { addr: String, reason: String },
}

/// An HTTPS client that presents this node's certificate and trusts only node certificates.
#[derive(Clone)]
pub struct Transport {
    client: reqwest::Client,
}

impl Transport {
    pub fn new(mut tls: rustls::ClientConfig) -> Result<Transport, String> {
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(true)
            .http2_prior_knowledge()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .http2_keep_alive_timeout(Duration::from_secs(5))
            .no_proxy()
            .tls_info(true)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Transport { client })
    }

    /// Posts `body` as JSON to node `node` at `https://{addr}{path}` and decodes a JSON answer.
    pub async fn call<Req: Serialize, Ans: DeserializeOwned>(
        &self,
        node: NodeId,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Ans, CallError> {
        let bytes = serde_json::to_vec(body).map_err(|e| failed(addr, e))?;
        self.call_bytes(node, addr, path, bytes, timeout).await
    }

    /// Posts raw bytes to node `node` and decodes a JSON answer; an answer from a certificate
    /// of another node is refused.
    pub async fn call_bytes<Ans: DeserializeOwned>(
        &self,
        node: NodeId,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Ans, CallError> {
        let url = format!("https://{addr}{path}");
        crate::crash::point("raft-before-send");
        let sent = self.client.post(&url).timeout(timeout).body(body).send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Err(CallError::Unreachable { addr: addr.to_string(), reason: chain(&e) });
            }
            Err(e) => return Err(failed(addr, chain(&e))),
        };
        let answered_by = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .and_then(crate::identity::node_of);
        if answered_by != Some(node) {
            return Err(failed(addr, format!("answered by {answered_by:x?}, not node {node:016x}")));
        }
        let status = response.status();
        if response.content_length().is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
            return Err(failed(addr, "the answer is too large"));
        }
        let bytes = response.bytes().await.map_err(|e| failed(addr, chain(&e)))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            return Err(failed(addr, format!("HTTP {status}: {text}")));
        }
        serde_json::from_slice(&bytes).map_err(|e| failed(addr, e))
    }
}

fn failed(addr: &str, reason: impl std::fmt::Display) -> CallError {
    CallError::Failed { addr: addr.to_string(), reason: reason.to_string() }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The transport a node uses, set once the node has cluster credentials (`cluster init` or
/// `cluster join`); a one-node deployment never has one.
#[derive(Clone, Default)]
pub struct TransportSlot(Arc<RwLock<Option<Transport>>>);

impl TransportSlot {
    pub fn set(&self, transport: Transport) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(transport);
    }

    pub fn get(&self) -> Option<Transport> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
