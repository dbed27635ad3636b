//! The cluster port: raft's messages and the requests members make of the leader, over
//! HTTPS with mutual TLS. The handshake already refused every client without a certificate
//! of this cluster's node intermediate; each handler then takes the caller's node id from its
//! certificate and refuses a node that is not a member, or that speaks for another node (a
//! vote or an append in someone else's name, a promotion of someone else).

use std::sync::Arc;

use gatehouse_raft::rpc::{self, LeaderOp};
use gatehouse_raft::types::NodeId;
use gatehouse_raft::{identity, RaftNode};
use gatehouse_storage::Store;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Body, EndpointExt, Request, Response, Route};
use serde::Serialize;
use tokio::sync::watch;

use crate::http::acceptor::TlsAcceptor;
use crate::http::edge::{self, ClientCertificates, EdgeLimits};

/// The largest message a peer may send (an append batch, or a snapshot chunk of openraft's
/// default 3 MiB with room to spare).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

fn answer<T: Serialize>(value: &T) -> Response {
    Response::builder().content_type("application/json").body(serde_json::to_vec(value).unwrap_or_default())
}

async fn read(body: Body) -> Result<bytes::Bytes, Response> {
    body.into_bytes_limit(MAX_MESSAGE_BYTES)
        .await
        .map_err(|e| Response::builder().status(StatusCode::PAYLOAD_TOO_LARGE).body(e.to_string()))
}

fn undecodable(e: impl std::fmt::Display) -> Response {
    Response::builder().status(StatusCode::BAD_REQUEST).body(format!("undecodable message: {e}"))
}

fn forbidden(why: String) -> Response {
    Response::builder().status(StatusCode::FORBIDDEN).body(why)
}

/// Who may send a message: raft's replication (append, snapshot) comes from the leader,
/// which a lagging node may not know as a member yet; votes and requests of the leader come
/// from members.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    NotRetired,
    Member,
}

/// The node calling, named by its certificate, if it may send this message: never a node
/// removed from the cluster (`RetireNode`, replicated), and for `Needs::Member` only one in
/// the membership this node knows.
fn caller(req: &Request, node: &RaftNode, store: &Store, needs: Needs) -> Result<NodeId, Response> {
    let named =
        req.extensions().get::<ClientCertificates>().and_then(|c| c.0.first().and_then(|cert| identity::node_of(cert)));
    let Some(id) = named else {
        return Err(forbidden("the client certificate names no node".into()));
    };
    // A storage error refuses: the port fails closed.
    if store.read().and_then(|r| r.is_retired(id)).unwrap_or(true) {
        return Err(forbidden(format!("node {id:016x} was removed from this cluster")));
    }
    if needs == Needs::Member && !node.admits_peer(id) {
        return Err(forbidden(format!("node {id:016x} is not a member of this cluster")));
    }
    Ok(id)
}

/// The calling node and its message's bytes: authenticated before the body is read.
async fn authenticated(
    req: &Request,
    node: &RaftNode,
    store: &Store,
    needs: Needs,
    body: Body,
) -> Result<(NodeId, bytes::Bytes), Response> {
    let caller = caller(req, node, store, needs)?;
    Ok((caller, read(body).await?))
}

/// A raft answer, or 403 for a message sent in another node's name.
fn raft_answer<T: Serialize>(result: Result<T, gatehouse_raft::node::Impersonation>) -> Response {
    match result {
        Ok(a) => answer(&a),
        Err(e) => forbidden(e.to_string()),
    }
}

#[handler]
async fn append(req: &Request, Data(node): Data<&RaftNode>, Data(store): Data<&Store>, body: Body) -> Response {
    let (caller, bytes) = match authenticated(req, node, store, Needs::NotRetired, body).await {
        Ok(message) => message,
        Err(refused) => return refused,
    };
    match serde_json::from_slice(&bytes) {
        Ok(rpc) => raft_answer(node.append_entries(caller, rpc).await),
        Err(e) => undecodable(e),
    }
}

#[handler]
async fn vote(req: &Request, Data(node): Data<&RaftNode>, Data(store): Data<&Store>, body: Body) -> Response {
    let (caller, bytes) = match authenticated(req, node, store, Needs::Member, body).await {
        Ok(message) => message,
        Err(refused) => return refused,
    };
    match serde_json::from_slice(&bytes) {
        Ok(rpc) => raft_answer(node.vote(caller, rpc).await),
        Err(e) => undecodable(e),
    }
}

#[handler]
async fn snapshot(req: &Request, Data(node): Data<&RaftNode>, Data(store): Data<&Store>, body: Body) -> Response {
    let (caller, bytes) = match authenticated(req, node, store, Needs::NotRetired, body).await {
        Ok(message) => message,
        Err(refused) => return refused,
    };
    match rpc::unframe_snapshot_chunk(&bytes) {
        Some(rpc) => raft_answer(node.install_snapshot(caller, rpc).await),
        None => undecodable("a malformed snapshot chunk"),
    }
}

#[handler]
async fn leader(req: &Request, Data(node): Data<&RaftNode>, Data(store): Data<&Store>, body: Body) -> Response {
    let (caller, bytes) = match authenticated(req, node, store, Needs::Member, body).await {
        Ok(message) => message,
        Err(refused) => return refused,
    };
    match serde_json::from_slice::<LeaderOp>(&bytes) {
        Ok(LeaderOp::Promote { node_id }) if node_id != caller => {
            forbidden(format!("node {caller:016x} may ask only for its own promotion"))
        }
        Ok(op) => answer(&node.serve_leader_op(op).await),
        Err(e) => undecodable(e),
    }
}

/// Connections the cluster port keeps open at most, in all and per peer address.
const CLUSTER_CONNECTIONS: usize = 64;
const CLUSTER_PER_SOURCE: usize = 16;

/// Serves the cluster port on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    node: RaftNode,
    store: Store,
    http: &crate::config::HttpConfig,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::new(listener, Arc::new(tls))?;
    let routes = Route::new()
        .at(rpc::APPEND_PATH, poem::post(append))
        .at(rpc::VOTE_PATH, poem::post(vote))
        .at(rpc::SNAPSHOT_PATH, poem::post(snapshot))
        .at(rpc::LEADER_PATH, poem::post(leader))
        .data(node)
        .data(store);
    let limits = EdgeLimits {
        max_connections: CLUSTER_CONNECTIONS.min(http.max_connections),
        max_connections_per_source: CLUSTER_PER_SOURCE,
        ..EdgeLimits::from_config(http)
    };
    edge::serve(acceptor, routes, limits, stop, std::time::Duration::from_secs(2)).await
}
