//! Answers remembered under an `Idempotency-Key`, written in the same transaction as the
//! action they answer.

use super::{plan, writes, Planned, Tables};
use crate::command::{Applied, Command, Rejection};
use crate::model::IdempotentResponse;
use crate::table::Row;

/// Does `inner` and remembers `answer` with it; refused while an unexpired answer holds the
/// key (an answer past its 24 h is gone for readers, so it no longer holds it either).
pub(super) fn answered<'c>(
    t: &Tables<'_>,
    inner: &'c Command,
    answer: &'c IdempotentResponse,
    now_ms: i64,
) -> Planned<'c> {
    if t.idempotency.get(&answer.key())?.is_some_and(|kept| kept.expires_at_ms >= now_ms) {
        return Err(Rejection::IdempotencyKeyUsed.into());
    }
    if matches!(inner, Command::Idempotent { .. } | Command::IssueTokens(_) | Command::RecordAuthFailures(_)) {
        let what = "only a single action can be answered under an Idempotency-Key".to_string();
        return Err(Rejection::Inconsistent { what }.into());
    }
    let action = plan(t, inner, now_ms)?;
    writes(move |t| {
        let applied = action(t)?;
        t.idempotency.put(answer)?;
        Ok(applied)
    })
}

/// Remembers an answer on its own: for actions that are not a single command (a key rotation).
pub(super) fn remember<'c>(t: &Tables<'_>, r: &'c IdempotentResponse) -> Planned<'c> {
    if t.idempotency.contains(&r.key())? {
        return Err(Rejection::AlreadyExists { what: "idempotency record".into(), id: r.scope.clone() }.into());
    }
    writes(move |t| {
        t.idempotency.put(r)?;
        Ok(Applied::ResponseRemembered)
    })
}

/// Forgets the answers past their expiry.
pub(super) fn prune<'c>(now_ms: i64) -> Planned<'c> {
    writes(move |t| {
        let count = t.idempotency.delete_under("", |r| r.expires_at_ms < now_ms)? as u64;
        Ok(Applied::IdempotencyPruned { count })
    })
}
