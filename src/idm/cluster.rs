//! The cluster's membership use cases: making a one-node deployment ready for more nodes
//! (`cluster init`), one-time join tokens, admitting a joining node, status and removal.
//!
//! A join token reads `ghjoin1.{CA fingerprint}.{id}.{secret}`: the joiner pins the cluster
//! CA by the fingerprint, the cluster stores only the secret's digest and redeems the token
//! through raft, so it admits one node once, whichever member the joiner asked.

use gatehouse_raft::{ClusterView, LeaderRefusal};
use gatehouse_storage::model::{CaRecord, JoinTokenRecord};
use gatehouse_storage::{Applied, Command, Proposal, Rejection};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::app::{AppState, NodeWriteError, ProposeError};
use crate::cluster::credentials::NodeCredentials;
pub use crate::cluster::protocol::{kek_context, JoinAnswer, JoinRequest, JoinToken};
use crate::crypto::b64url;
use crate::crypto::ca;

const NODE_CA_KEY_CONTEXT: &str = "cluster-node-ca-key";
/// How long a join token lives unless the operator says otherwise, and at most.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 15 * 60;
pub const MAX_TOKEN_TTL_SECS: u64 = 24 * 3600;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error("{0}")]
    Invalid(String),
    /// The join token is unknown, wrong, expired or used (one answer for all: no oracle).
    #[error("the join token is unknown, wrong, expired or already used")]
    BadToken,
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Refused(Rejection),
    #[error(transparent)]
    Write(#[from] NodeWriteError),
    #[error("the cluster could not do it: {0}")]
    Membership(String),
    #[error("{0}")]
    Internal(String),
}

impl From<LeaderRefusal> for ClusterError {
    fn from(e: LeaderRefusal) -> Self {
        ClusterError::Membership(e.to_string())
    }
}

fn internal(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Internal(e.to_string())
}

fn secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// What `cluster bench` measured on this node: probe entries (they change nothing) proposed
/// one after another by each of `concurrency` tasks inside this process, each acknowledged
/// once a quorum has it on disk and this node applied it.
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub concurrency: usize,
    pub seconds: f64,
    pub writes: u64,
    pub per_second: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub failed: u64,
}

/// The load `cluster bench` may put on a node: at most this many writers, for at most this long.
pub const BENCH_MAX_CONCURRENCY: usize = 1024;
pub const BENCH_MAX_SECONDS: u64 = 60;

/// Measures the replicated write path without HTTP: `concurrency` writers propose probes
/// through raft (here, or forwarded to the leader) for `seconds`.
pub async fn bench_writes(
    app: &AppState,
    actor: &str,
    concurrency: usize,
    seconds: u64,
) -> Result<BenchReport, ClusterError> {
    if !(1..=BENCH_MAX_CONCURRENCY).contains(&concurrency) || !(1..=BENCH_MAX_SECONDS).contains(&seconds) {
        return Err(ClusterError::Invalid(format!(
            "concurrency must be 1 to {BENCH_MAX_CONCURRENCY} and seconds 1 to {BENCH_MAX_SECONDS}"
        )));
    }
    // One at a time: the bounds above are then the whole load a bench puts on the node.
    static RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if RUNNING.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return Err(ClusterError::Conflict("a bench is already running on this node".into()));
    }
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            RUNNING.store(false, std::sync::atomic::Ordering::Release);
        }
    }
    let _done = Done;
    let started = std::time::Instant::now();
    let until = started + std::time::Duration::from_secs(seconds);
    let writers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (raft, clock, actor) = (app.raft.clone(), app.clock.clone(), actor.to_string());
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (Vec::new(), 0u64);
                while std::time::Instant::now() < until {
                    let sent = std::time::Instant::now();
                    let proposal =
                        Proposal { origin: None, at_ms: clock.now_ms(), actor: actor.clone(), command: Command::Probe };
                    match raft.write(proposal).await {
                        Ok(_) => latencies.push(sent.elapsed().as_micros() as u64),
                        Err(_) => {
                            failed += 1;
                            // A refusal can come back at once: do not spin on it.
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let (mut latencies, mut failed) = (Vec::new(), 0u64);
    for w in writers {
        let (l, f) = w.await.map_err(internal)?;
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at =
        |q: f64| latencies.get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0);
    Ok(BenchReport {
        concurrency,
        seconds: elapsed,
        writes: latencies.len() as u64,
        per_second: latencies.len() as f64 / elapsed,
        p50_us: at(0.5),
        p99_us: at(0.99),
        max_us: latencies.last().copied().unwrap_or(0),
        failed,
    })
}

/// The fingerprint of the cluster CA this node holds.
pub fn ca_fingerprint(app: &AppState) -> Result<String, ClusterError> {
    let cluster = app.store.read().and_then(|r| r.cluster()).map_err(internal)?;
    let cluster = cluster.ok_or_else(|| ClusterError::Conflict("this node has no cluster state yet".into()))?;
    let der = ca::pem_certs(&cluster.ca.cert_pem).map_err(internal)?;
    Ok(ca::fingerprint(der.first().ok_or_else(|| internal("the cluster CA is empty"))?))
}

/// What `cluster init` reports.
#[derive(Debug, Serialize, Deserialize)]
pub struct Initialised {
    pub cluster_id: String,
    pub ca_fingerprint: String,
    pub cluster_address: String,
}

/// Makes this one-node deployment the first member of a cluster, keeping all its data and
/// its CA: a node intermediate under the CA, this node's node certificate, its cluster
/// address in the membership, and the cluster port opened. Running it again completes an
/// interrupted run and changes nothing else.
pub async fn init(app: &AppState, actor: &str) -> Result<Initialised, ClusterError> {
    let reader = app.store.read().map_err(internal)?;
    let cluster =
        reader.cluster().map_err(internal)?.ok_or_else(|| ClusterError::Conflict("no cluster state".into()))?;
    let system = reader.tenant("system").map_err(internal)?.ok_or_else(|| internal("no system tenant"))?;
    drop(reader);
    let node_ca = match cluster.node_ca {
        Some(existing) => existing,
        None => {
            let root_key = app.cipher.open(&cluster.ca.key, ca::CA_KEY_CONTEXT).map_err(internal)?;
            let issued = ca::generate_node_ca(&cluster.ca.cert_pem, &root_key, &cluster.cluster_id, app.clock.now_ms())
                .map_err(internal)?;
            let key = app.cipher.seal(&system.data_key_id, NODE_CA_KEY_CONTEXT, &issued.key_pkcs8).map_err(internal)?;
            let node_ca = CaRecord { cert_pem: issued.cert_pem, key };
            match app.propose(actor, Command::InitCluster { node_ca: node_ca.clone() }).await {
                Ok(Applied::ClusterInitialised) => node_ca,
                // Another run won the race: use what it stored.
                Err(ProposeError::Refused(Rejection::ClusterAlreadyInitialised)) => current_node_ca(app)?,
                Ok(other) => return Err(crate::idm::unexpected(other).into()),
                Err(e) => return Err(e.into()),
            }
        }
    };
    if !NodeCredentials::exist(&app.data_dir) {
        let (key, csr) = ca::node_key_and_csr(app.raft.node_id(), &app.config.certificate_names(&app.public_url, None))
            .map_err(internal)?;
        let chain = sign_for(app, &node_ca, &csr, app.raft.node_id())?;
        NodeCredentials::save(&app.data_dir, app.cipher.key_provider(), &chain, &key).map_err(internal)?;
    }
    let address = app.config.cluster.advertised();
    app.raft.set_own_address(&address).await?;
    crate::cluster::open_port(app).await.map_err(ClusterError::Internal)?;
    Ok(Initialised { cluster_id: cluster.cluster_id, ca_fingerprint: ca_fingerprint(app)?, cluster_address: address })
}

fn current_node_ca(app: &AppState) -> Result<CaRecord, ClusterError> {
    let cluster = app.store.read().and_then(|r| r.cluster()).map_err(internal)?;
    cluster.and_then(|c| c.node_ca).ok_or_else(|| ClusterError::Conflict("run `gatehouse cluster init` first".into()))
}

/// Signs a node's request; answers the chain (node certificate, node intermediate) in PEM.
fn sign_for(app: &AppState, node_ca: &CaRecord, csr_pem: &str, node_id: u64) -> Result<String, ClusterError> {
    let key = app.cipher.open(&node_ca.key, NODE_CA_KEY_CONTEXT).map_err(internal)?;
    let cert = ca::sign_node_csr(&node_ca.cert_pem, &key, csr_pem, node_id, app.clock.now_ms())
        .map_err(|e| ClusterError::Invalid(e.to_string()))?;
    Ok(format!("{cert}{}", node_ca.cert_pem))
}

/// Mints a one-time join token valid for `ttl_secs`.
pub async fn issue_join_token(app: &AppState, actor: &str, ttl_secs: u64) -> Result<(String, i64), ClusterError> {
    if !(1..=MAX_TOKEN_TTL_SECS).contains(&ttl_secs) {
        return Err(ClusterError::Invalid(format!("the token lifetime must be 1 to {MAX_TOKEN_TTL_SECS} s")));
    }
    let fingerprint = ca_fingerprint(app)?;
    let mut secret = [0u8; 32];
    crate::clock::random_bytes(&mut secret);
    let token = JoinToken { ca_fingerprint: fingerprint, id: crate::clock::random_id("jt-"), secret: b64url(&secret) };
    let now = app.clock.now_ms();
    let expires_at_ms = now + (ttl_secs as i64) * 1000;
    let record = JoinTokenRecord {
        v: 1,
        id: token.id.clone(),
        secret_sha256: secret_digest(&token.secret),
        issued_at_ms: now,
        expires_at_ms,
        redeemed_by: None,
    };
    match app.propose(actor, Command::IssueJoinToken(record)).await? {
        Applied::JoinTokenIssued { .. } => Ok((token.render(), expires_at_ms)),
        other => Err(crate::idm::unexpected(other).into()),
    }
}

/// A join token as presented (`Authorization: Bearer {id}.{secret}`), checked here.
#[derive(Debug, Clone)]
pub struct PresentedToken {
    pub id: String,
    secret_sha256: String,
}

/// Checks a presented join token against this node's state, writing nothing: a wrong token
/// costs no raft write.
pub fn authenticate_join(app: &AppState, bearer: &str) -> Result<PresentedToken, ClusterError> {
    let (id, secret) = bearer.split_once('.').ok_or(ClusterError::BadToken)?;
    if id.is_empty() || id.len() > 64 || secret.len() > 64 {
        return Err(ClusterError::BadToken);
    }
    let digest = secret_digest(secret);
    let now = app.clock.now_ms();
    let token = app.store.read().and_then(|r| r.join_token(id)).map_err(internal)?;
    token
        .filter(|t| constant_time_eq(t.secret_sha256.as_bytes(), digest.as_bytes()) && t.usable_at(now))
        .ok_or(ClusterError::BadToken)?;
    Ok(PresentedToken { id: id.to_string(), secret_sha256: digest })
}

/// Admits a joining node whose token [`authenticate_join`] accepted: signs its request,
/// redeems the token through raft (once, cluster-wide: a join whose answer was lost needs a
/// new token, and the learner it added is removed with `cluster remove`), redeems the token through raft (once, cluster-wide), seals the KEK to it and adds
/// it as a learner. It is promoted to voter once it has caught up, at its own request.
pub async fn admit(app: &AppState, token: &PresentedToken, req: &JoinRequest) -> Result<JoinAnswer, ClusterError> {
    let node_id = u64::from_str_radix(&req.node_id, 16)
        .ok()
        .filter(|id| *id != 0 && req.node_id.len() == 16)
        .ok_or_else(|| ClusterError::Invalid("node_id must be 16 hex digits, not all zero".into()))?;
    let status = app.raft.status();
    if status.voters.iter().chain(&status.learners).any(|(id, _)| *id == node_id) {
        return Err(ClusterError::Conflict(format!("node {node_id:016x} is already a member")));
    }
    let addr = req.cluster_address.as_str();
    let valid_addr = addr.len() <= 255
        && addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
    if !valid_addr {
        return Err(ClusterError::Invalid("cluster_address must be host:port".into()));
    }
    let cluster =
        app.store.read().and_then(|r| r.cluster()).map_err(internal)?.ok_or_else(|| internal("no cluster"))?;
    let node_ca =
        cluster.node_ca.clone().ok_or_else(|| ClusterError::Conflict("run `gatehouse cluster init` first".into()))?;
    // Everything that could refuse the joiner's input comes before the token is spent.
    let chain = sign_for(app, &node_ca, &req.csr_pem, node_id)?;
    let context = kek_context(&token.id, node_id);
    let kek = app
        .cipher
        .key_provider()
        .seal_to(&req.kek_public_key, &context)
        .map_err(|e| ClusterError::Invalid(format!("kek_public_key: {e}")))?;
    let redeem = Command::RedeemJoinToken { id: token.id.clone(), secret_sha256: token.secret_sha256.clone(), node_id };
    match app.propose(&format!("node-join:{node_id:016x}"), redeem).await {
        Ok(Applied::JoinTokenRedeemed { .. }) => {}
        Err(ProposeError::Refused(Rejection::JoinTokenInvalid)) => return Err(ClusterError::BadToken),
        Ok(other) => return Err(crate::idm::unexpected(other).into()),
        Err(e) => return Err(e.into()),
    }
    app.raft.add_learner(node_id, addr).await?;
    Ok(JoinAnswer { cluster_id: cluster.cluster_id, node_chain_pem: chain, ca_pem: cluster.ca.cert_pem, kek })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `cluster status`: this node's view and, when a leader answers, the leader's.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub node_id: String,
    pub cluster_id: Option<String>,
    pub role: String,
    pub term: u64,
    pub leader: Option<String>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub members: Vec<MemberStatus>,
    /// Why the leader's view is missing, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_unreachable: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberStatus {
    pub node_id: String,
    pub address: String,
    pub role: String,
    pub matched_index: Option<u64>,
    pub lag: Option<u64>,
}

pub async fn status(app: &AppState) -> Status {
    let s = app.raft.status();
    let cluster_id = app.store.read().and_then(|r| r.cluster()).ok().flatten().map(|c| c.cluster_id);
    let role = if s.is_leader {
        "leader"
    } else if s.voters.iter().any(|(id, _)| *id == s.node_id) {
        "follower"
    } else {
        "learner"
    };
    let local_members = || {
        let voters = s.voters.iter().map(|(id, a)| (id, a, "voter"));
        let learners = s.learners.iter().map(|(id, a)| (id, a, "learner"));
        voters
            .chain(learners)
            .map(|(id, a, role)| MemberStatus {
                node_id: format!("{id:016x}"),
                address: a.clone(),
                role: role.into(),
                matched_index: None,
                lag: None,
            })
            .collect()
    };
    let (members, leader_unreachable) = match app.raft.cluster_view().await {
        Ok(view) => (members_of(&view), None),
        Err(e) => (local_members(), Some(e.to_string())),
    };
    Status {
        node_id: format!("{:016x}", s.node_id),
        cluster_id,
        role: role.into(),
        term: s.term,
        leader: s.leader.map(|l| format!("{l:016x}")),
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        last_log_index: s.last_log_index,
        members,
        leader_unreachable,
    }
}

fn members_of(view: &ClusterView) -> Vec<MemberStatus> {
    let mut members: Vec<MemberStatus> = view
        .members
        .iter()
        .map(|m| MemberStatus {
            node_id: format!("{:016x}", m.node_id),
            address: m.addr.clone(),
            role: m.role.clone(),
            matched_index: m.matched_index,
            lag: m.lag,
        })
        .collect();
    members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    members
}

/// `cluster remove NODE_ID`.
pub async fn remove(app: &AppState, actor: &str, node_id: &str) -> Result<(), ClusterError> {
    let id =
        u64::from_str_radix(node_id, 16).map_err(|_| ClusterError::Invalid("the node id is 16 hex digits".into()))?;
    let status = app.raft.status();
    if !status.voters.iter().chain(&status.learners).any(|(n, _)| *n == id) {
        return Err(ClusterError::Invalid(format!("node {id:016x} is not a member of this cluster")));
    }
    if status.voters.len() == 1 && status.voters[0].0 == id {
        return Err(ClusterError::Conflict("the last voter cannot be removed".into()));
    }
    // Retired first: from the moment it commits, no member's cluster port takes the node's
    // certificate, whatever membership that member knows.
    match app.propose(actor, Command::RetireNode { node_id: id }).await? {
        Applied::NodeRetired => {}
        other => return Err(crate::idm::unexpected(other).into()),
    }
    app.raft.remove(id).await.map_err(Into::into)
}
