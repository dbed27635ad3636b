//! The application core: the state every handler, command and job shares, and the one way
//! to change it (`AppState::propose`, a command through raft; `AppState::write` for the few
//! callers that need the whole outcome of a batch). It imports no HTTP, CLI or
//! start-up code; those import it.

pub mod auth_failures;
pub mod cluster_port;
pub mod idempotency;
pub mod limits;
pub mod lockout;
pub mod mail;
pub mod request;
pub mod signers;
pub mod token_audit;

use std::sync::Arc;

use gatehouse_raft::{RaftNode, WriteError};
use gatehouse_storage::{Applied, Command, Outcome, Proposal, Rejection, Store};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::crypto::kek::KekSource;
use crate::crypto::SecretCipher;
use crate::datadir::DataDir;
use crate::metrics::{Metrics, Sample};

/// Everything a request handler may use.
pub struct AppState {
    pub config: Config,
    pub public_url: String,
    pub data_dir: DataDir,
    pub store: Store,
    pub raft: RaftNode,
    pub cipher: Arc<SecretCipher>,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub kek_source: KekSource,
    /// Each tenant's signing keys, parsed once.
    pub signers: signers::Signers,
    /// Group commit of the token endpoint's audit entries.
    pub token_audit: token_audit::TokenAudit,
    /// Rate limits of the OAuth and admin endpoints.
    pub limits: limits::RateLimits,
    /// Failed authentications waiting to be audited, coalesced.
    pub auth_failures: auth_failures::FailureAudit,
    /// Failed sign-ins per account, tallied for raft.
    pub lockout: lockout::Lockout,
    /// Email requests waiting to become messages.
    pub mail: mail::MailQueue,
    /// The passkey relying party, or why passkeys are off (a public URL with an IP address).
    pub webauthn: Result<Arc<webauthn_rs::Webauthn>, String>,
    /// This start founded the cluster (the banner then says how to get admin credentials).
    pub founded: bool,
    /// The node-to-node port, open once this node is a cluster member.
    pub cluster_port: cluster_port::ClusterPort,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeWriteError {
    #[error("no raft leader answered in time; nothing was written")]
    NotLeader,
    #[error("the write could not be committed: {0}")]
    Unavailable(String),
}

/// Why a proposed command did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The state machine refused it (it changed nothing but its audit entry).
    #[error(transparent)]
    Refused(Rejection),
    /// It could not be committed.
    #[error(transparent)]
    Write(#[from] NodeWriteError),
}

impl AppState {
    /// Proposes `command` by `actor` at the node's time and returns what it applied, or why not.
    pub async fn propose(&self, actor: &str, command: Command) -> Result<Applied, ProposeError> {
        let proposal = Proposal { origin: None, at_ms: self.clock.now_ms(), actor: actor.to_string(), command };
        match self.write(proposal).await? {
            Outcome::Applied(applied) => Ok(applied),
            Outcome::Refused(r) => Err(ProposeError::Refused(r)),
        }
    }

    /// The issuer URL of a tenant: the public URL for `default`, `/t/{id}` below it otherwise.
    pub fn issuer_of(&self, tenant: &str) -> String {
        issuer_of(&self.public_url, tenant)
    }

    /// Proposes a command through raft and returns its outcome once applied here.
    /// Under an `Idempotency-Key`, the request's action carries its answer
    /// (`http::idempotency::carry`), so both are applied in one transaction.
    pub async fn write(&self, mut proposal: Proposal) -> Result<Outcome, NodeWriteError> {
        proposal.command = idempotency::carry(self, proposal.command);
        if proposal.origin.is_none() {
            proposal.origin = request::current_origin();
        }
        let outcome = self.raft.write(proposal).await.map_err(|e| match e {
            WriteError::NoLeader(_) => NodeWriteError::NotLeader,
            other => NodeWriteError::Unavailable(other.to_string()),
        })?;
        if let Outcome::Refused(r) = &outcome {
            idempotency::note_refusal(r);
        }
        Ok(outcome)
    }

    /// Whether this node heard from a leader within `cluster.staleness_ms`: its local state
    /// then misses no write older than that (a one-node cluster always has).
    pub fn is_fresh(&self) -> bool {
        let bound = std::time::Duration::from_millis(self.config.cluster.staleness_ms);
        self.raft.leader_contact_age().is_some_and(|age| age <= bound)
    }

    pub fn render_metrics(&self) -> String {
        let status = self.raft.status();
        let audit_entries = self.store.read().and_then(|r| r.audit_head()).map(|h| h.count).unwrap_or(0);
        self.metrics.render(Sample {
            raft_term: status.term,
            raft_is_leader: status.is_leader,
            raft_commit_index: status.commit_index,
            raft_applied_index: status.applied_index,
            db_size_bytes: self.store.file_size(),
            audit_entries,
        })
    }
}

pub fn issuer_of(public_url: &str, tenant: &str) -> String {
    if tenant == "default" {
        public_url.to_string()
    } else {
        format!("{public_url}/t/{tenant}")
    }
}
