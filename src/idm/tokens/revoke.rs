//! Revocation: the replicated deny-list, platform admin tokens, and pruning expired entries.

use std::sync::Arc;

use gatehouse_storage::model::ClientRecord;
use gatehouse_storage::{Command, Proposal};

use crate::app::{AppState, ProposeError};

use super::*;

/// Revokes a platform admin token (the `system` issuer, the admin audience): its `jti` goes on
/// the deny-list through raft, audited with the operator as actor. Answers the `jti`, or why
/// the token is not one that can be revoked here.
pub async fn revoke_admin_token(app: &AppState, actor: &str, token: &str) -> Result<String, String> {
    let claims = verify_access_token(app, "system", token.trim(), Some(&app.config.oauth.admin_audience))
        .map_err(|e| format!("not a valid platform admin token: {e}"))?;
    let command = Command::RevokeToken {
        tenant: "system".into(),
        jti: claims.jti.clone(),
        exp_ms: claims.exp.saturating_mul(1000),
    };
    app.propose(actor, command).await.map_err(|e| e.to_string())?;
    Ok(claims.jti)
}

/// RFC 7009: revokes an access token of this tenant that was issued to `client`. Tokens that
/// do not verify, or belong to another client, are ignored (the answer is the same).
pub async fn revoke(app: &AppState, client: &ClientRecord, token: &str) -> Result<(), TokenFailure> {
    let claims = match verify_access_token(app, &client.tenant, token, None) {
        Ok(c) => c,
        Err(InvalidToken::Unavailable) => return Err(TokenFailure::Unavailable),
        Err(_) => return Ok(()),
    };
    if claims.client_id != client.client_id {
        return Ok(());
    }
    let command = Command::RevokeToken {
        tenant: client.tenant.clone(),
        jti: claims.jti,
        exp_ms: claims.exp.saturating_mul(1000),
    };
    match app.propose(&format!("client:{}", client.client_id), command).await {
        Ok(_) => Ok(()),
        Err(ProposeError::Refused(r)) => {
            tracing::warn!("revocation refused: {r}");
            Ok(())
        }
        Err(ProposeError::Write(e)) => Err(e.into()),
    }
}

/// How often the leader drops deny-list entries of expired tokens.
const REVOCATION_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// On the leader, every few minutes, prunes the revocation deny-list of tokens that have
/// expired (they fail verification on `exp` anyway) and remembered idempotent answers older
/// than a day. Runs until `stop` turns true.
pub async fn revocation_pruning_job(app: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(REVOCATION_PRUNE_EVERY) => {}
        }
        if !app.raft.status().is_leader {
            continue;
        }
        let now_ms = app.clock.now_ms();
        let policy = app.lockout.policy();
        let due = app.store.read().and_then(|r| {
            let later = (
                r.forgotten_lockouts(now_ms, &policy)?,
                r.expired_email(now_ms)?,
                r.expired_authorization_codes(now_ms)?,
                r.expired_refresh_families(now_ms)?,
            );
            Ok((r.expired_revocations(now_ms)?, r.expired_idempotency(now_ms)?, r.ended_sessions(now_ms)?, later))
        });
        let (revocations, answers, sessions, (lockouts, email, codes, families)) = match due {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!("pruning check: {e}");
                continue;
            }
        };
        let commands = [
            (revocations, Command::PruneRevocations),
            (answers, Command::PruneIdempotency),
            (sessions, Command::PruneSessions),
            (lockouts, Command::PruneLockouts { policy }),
            (email, Command::PruneEmail),
            (codes, Command::PruneAuthorizationCodes),
            (families, Command::PruneRefreshFamilies),
        ];
        for (_, command) in commands.into_iter().filter(|(n, _)| *n > 0) {
            let proposal = Proposal { origin: None, at_ms: now_ms, actor: "policy:pruning".into(), command };
            if let Err(e) = app.write(proposal).await {
                tracing::warn!("pruning: {e}");
            }
        }
    }
}
