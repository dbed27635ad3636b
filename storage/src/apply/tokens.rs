//! Issued and revoked tokens, used client assertions, and coalesced failed authentications.
//! Issuing writes no row: the audit entry is the record.

use super::{clients, tenants, writes, Planned, Stop, Tables};
use crate::audit::{self, AuditDraft};
use crate::command::{Applied, AuthFailures, Command, IssuedToken, Outcome, Rejection};
use crate::model::ClientStatus;
use crate::StoreError;

/// A token may be issued while its tenant and its client (if any) are active.
pub(super) fn issue<'c>(t: &Tables<'_>, issued: &'c IssuedToken) -> Planned<'c> {
    tenants::active(t, &issued.tenant)?;
    if let Some(client_id) = &issued.client_id {
        if clients::existing(t, &issued.tenant, client_id)?.status != ClientStatus::Active {
            return Err(Rejection::ClientDisabled { client_id: client_id.clone() }.into());
        }
    }
    writes(move |_| Ok(Applied::TokenIssued { jti: issued.jti.clone() }))
}

/// The token endpoint's group commit: each token is checked and audited on its own, its
/// client the actor.
pub(super) fn issue_batch(t: &mut Tables<'_>, at_ms: i64, batch: &[IssuedToken]) -> Result<Outcome, StoreError> {
    let mut refused = Vec::with_capacity(batch.len());
    for issued in batch {
        let verdict = match issue(t, issued) {
            Ok(_) => None,
            Err(Stop::Refused(r)) => Some(r),
            Err(Stop::Store(e)) => return Err(e),
        };
        let single = Command::IssueToken(issued.clone());
        let (tenant, target) = single.audit_subject();
        let actor = match &issued.client_id {
            Some(c) => format!("client:{c}"),
            None => issued.subject.clone(),
        };
        let outcome = match &verdict {
            None => "ok".to_string(),
            Some(r) => format!("refused:{}", r.code()),
        };
        let action = single.action().to_string();
        let draft = AuditDraft { at_ms, actor, tenant, action, target, outcome, origin: issued.origin.clone() };
        audit::append(&mut t.meta, &mut t.audit, draft)?;
        refused.push(verdict);
    }
    Ok(Outcome::Applied(Applied::TokensIssued { refused }))
}

/// One audit entry per coalesced failure, with its count and first and last time.
pub(super) fn record_failures(
    t: &mut Tables<'_>,
    at_ms: i64,
    failures: &[AuthFailures],
) -> Result<Outcome, StoreError> {
    for f in failures {
        // The client id is the caller's string: quoted and escaped, so it cannot pose as
        // another field or break a log line.
        let target = format!(
            "{} client:{:?} from {} count={} first_ms={} last_ms={}",
            f.endpoint, f.client_id, f.source, f.count, f.first_ms, f.last_ms
        );
        let draft = AuditDraft {
            at_ms,
            actor: "anonymous".into(),
            tenant: f.tenant.clone(),
            action: "authentication.failed".into(),
            target,
            outcome: format!("refused:{}", f.reason),
            origin: None,
        };
        audit::append(&mut t.meta, &mut t.audit, draft)?;
    }
    Ok(Outcome::Applied(Applied::FailuresRecorded { entries: failures.len() }))
}

/// Puts an access token on its tenant's deny-list until it expires.
pub(super) fn revoke<'c>(t: &Tables<'_>, tenant: &'c str, jti: &'c str, exp_ms: i64) -> Planned<'c> {
    tenants::existing(t, tenant)?;
    writes(move |t| {
        t.revoked.insert(&format!("{tenant}/{jti}"), exp_ms)?;
        Ok(Applied::TokenRevoked { jti: jti.to_string() })
    })
}

/// Records a `private_key_jwt` assertion as used, refusing a replay.
pub(super) fn consume_assertion<'c>(
    t: &Tables<'_>,
    tenant: &'c str,
    client_id: &'c str,
    jti: &'c str,
    exp_ms: i64,
) -> Planned<'c> {
    tenants::active(t, tenant)?;
    let key = format!("{tenant}/{client_id}/{jti}");
    if t.used_assertions.contains(&key)? {
        return Err(Rejection::AssertionReplayed.into());
    }
    writes(move |t| {
        t.used_assertions.insert(&key, exp_ms)?;
        Ok(Applied::AssertionConsumed)
    })
}

/// Forgets deny-list entries and used assertions whose tokens have expired.
pub(super) fn prune_revocations<'c>(now_ms: i64) -> Planned<'c> {
    writes(move |t| {
        let count = t.revoked.prune(now_ms)? + t.used_assertions.prune(now_ms)? + t.used_challenges.prune(now_ms)?;
        Ok(Applied::RevocationsPruned { count })
    })
}
