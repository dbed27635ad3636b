//! Group commit of token audit entries: requests queue their `IssuedToken`, and one task
//! proposes whatever has queued as a single `IssueTokens` raft entry (a few batches in flight
//! at once). Each request gets its answer only after its entry is committed and applied (A10).
//! The queue is bounded: past it, requests wait for room (only authenticated clients that were
//! just issued a token ever queue).

use std::sync::{Arc, Mutex};

use gatehouse_storage::{Applied, Command, IssuedToken, Outcome, Proposal, Rejection};

use crate::app::AppState;

/// Why a token's audit entry was not committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditRefusal {
    /// The client was disabled or deleted meanwhile.
    ClientGone,
    /// `apply` refused the entry for another reason.
    Refused(String),
    /// The node could not commit it.
    Unavailable,
}

type AuditReply = tokio::sync::oneshot::Sender<Result<(), AuditRefusal>>;

/// Tokens per raft entry at most, raft entries in flight at once, and tokens queued at most.
const AUDIT_BATCH_MAX: usize = 1024;
const AUDIT_BATCHES_IN_FLIGHT: usize = 4;
const AUDIT_QUEUE: usize = 16 * 1024;

pub struct TokenAudit {
    queue: tokio::sync::mpsc::Sender<(IssuedToken, AuditReply)>,
    receiver: Mutex<Option<tokio::sync::mpsc::Receiver<(IssuedToken, AuditReply)>>>,
}

impl Default for TokenAudit {
    fn default() -> Self {
        let (queue, receiver) = tokio::sync::mpsc::channel(AUDIT_QUEUE);
        TokenAudit { queue, receiver: Mutex::new(Some(receiver)) }
    }
}

impl TokenAudit {
    /// Waits until the token's audit entry is committed.
    pub async fn record(&self, issued: IssuedToken) -> Result<(), AuditRefusal> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue.send((issued, reply)).await.map_err(|_| AuditRefusal::Unavailable)?;
        answer.await.map_err(|_| AuditRefusal::Unavailable)?
    }
}

/// The batching task of [`TokenAudit`]; runs until `stop` turns true.
pub async fn token_audit_job(app: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(mut queue) = app.token_audit.receiver.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    let in_flight = Arc::new(tokio::sync::Semaphore::new(AUDIT_BATCHES_IN_FLIGHT));
    loop {
        let first = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            item = queue.recv() => match item {
                Some(item) => item,
                None => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        // Everything that queued while waiting joins this batch.
        let mut batch = vec![first];
        while batch.len() < AUDIT_BATCH_MAX {
            match queue.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (items, replies): (Vec<IssuedToken>, Vec<AuditReply>) = batch.into_iter().unzip();
            let proposal = Proposal {
                origin: None,
                at_ms: app.clock.now_ms(),
                actor: "token-endpoint".into(),
                command: Command::IssueTokens(items),
            };
            let results: Vec<Result<(), AuditRefusal>> = match app.write(proposal).await {
                Ok(Outcome::Applied(Applied::TokensIssued { refused })) if refused.len() == replies.len() => refused
                    .into_iter()
                    .map(|r| match r {
                        None => Ok(()),
                        Some(Rejection::ClientDisabled { .. } | Rejection::UnknownClient { .. }) => {
                            Err(AuditRefusal::ClientGone)
                        }
                        Some(other) => Err(AuditRefusal::Refused(other.to_string())),
                    })
                    .collect(),
                other => {
                    tracing::warn!("token audit batch failed: {other:?}");
                    replies.iter().map(|_| Err(AuditRefusal::Unavailable)).collect()
                }
            };
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        });
    }
}
