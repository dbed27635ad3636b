//! Second factors: a user's authenticator (TOTP) and its recovery codes, and the completion of
//! a sign-in that waits for one. Every step and every recovery code is spent once, here, in
//! the raft-applied state (S45), so no node can accept it twice.

use super::{sessions, tenants, users, writes, Planned, Stop, Tables};
use crate::command::{Applied, MfaFactor, Rejection};
use crate::model::session::session_key;
use crate::model::user::TotpState;
use crate::model::{Sealed, SessionRecord, UserStatus};

/// A new secret, not confirmed yet; it replaces an earlier unconfirmed one.
pub(super) fn enroll<'c>(t: &Tables<'_>, tenant: &'c str, user_id: &'c str, seed: &'c Sealed) -> Planned<'c> {
    let mut user = users::existing(t, tenant, user_id)?;
    if user.totp.as_ref().is_some_and(|s| s.confirmed) {
        return Err(Rejection::TotpAlreadyConfirmed.into());
    }
    writes(move |t| {
        user.totp = Some(TotpState { seed: seed.clone(), confirmed: false, last_step: 0, recovery_sha256: Vec::new() });
        t.users.put(&user)?;
        Ok(Applied::TotpEnrolled)
    })
}

/// The enrolled secret proven by a code of time step `step`; the recovery codes come with it.
pub(super) fn confirm<'c>(
    t: &Tables<'_>,
    tenant: &'c str,
    user_id: &'c str,
    seed_nonce: &'c str,
    step: u64,
    recovery_sha256: &'c [String],
) -> Planned<'c> {
    let mut user = users::existing(t, tenant, user_id)?;
    let Some(state) = user.totp.as_mut() else { return Err(Rejection::TotpNotEnrolled.into()) };
    if state.confirmed {
        return Err(Rejection::TotpAlreadyConfirmed.into());
    }
    // Enrolled again since the code was checked: that code proves nothing about this seed.
    if state.seed.nonce != seed_nonce {
        return Err(Rejection::TotpNotEnrolled.into());
    }
    state.confirmed = true;
    state.last_step = step;
    state.recovery_sha256 = recovery_sha256.to_vec();
    writes(move |t| {
        t.users.put(&user)?;
        Ok(Applied::TotpConfirmed)
    })
}

/// `state` once `factor` is spent, or the refusal when it was spent already or never existed.
fn spend(state: &TotpState, factor: &MfaFactor) -> Result<TotpState, Stop> {
    let mut next = state.clone();
    match factor {
        MfaFactor::TotpStep(step) if *step > state.last_step => next.last_step = *step,
        MfaFactor::RecoveryCode(sha256) => match next.recovery_sha256.iter().position(|h| h == sha256) {
            Some(at) => {
                next.recovery_sha256.remove(at);
            }
            None => return Err(Rejection::MfaFactorUsed.into()),
        },
        MfaFactor::TotpStep(_) => return Err(Rejection::MfaFactorUsed.into()),
    }
    Ok(next)
}

/// The pending session `pending_sha256` of `user_id`, still live, ends; `session` (a new id)
/// starts; `factor` is spent.
pub(super) fn complete<'c>(
    t: &Tables<'_>,
    tenant: &'c str,
    user_id: &'c str,
    factor: &'c MfaFactor,
    pending_sha256: &'c str,
    session: &'c SessionRecord,
    now_ms: i64,
) -> Planned<'c> {
    tenants::active(t, tenant)?;
    let pending = t.sessions.get(&session_key(tenant, pending_sha256))?;
    let pending = pending.filter(|p| p.user_id == user_id && p.live_at(now_ms)).ok_or(Rejection::SessionEnded)?;
    if !pending.pending_mfa {
        return Err(Rejection::SessionNotPending.into());
    }
    let mut user = users::existing(t, tenant, user_id)?;
    if user.status != UserStatus::Active {
        return Err(Rejection::UserDisabled { user_id: user_id.to_string() }.into());
    }
    let state = user.totp.as_ref().filter(|s| s.confirmed).ok_or(Rejection::TotpNotEnrolled)?;
    user.totp = Some(spend(state, factor)?);
    if session.tenant != tenant || session.user_id != user_id || session.pending_mfa || session.setup_only {
        let what = "the new session must be a full session of the same user".to_string();
        return Err(Rejection::Inconsistent { what }.into());
    }
    sessions::check_new_session(t, session)?;
    writes(move |t| {
        t.users.put(&user)?;
        t.sessions.delete(&session_key(tenant, pending_sha256))?;
        t.sessions.put(session)?;
        Ok(Applied::MfaCompleted { user_id: user_id.to_string() })
    })
}

/// The authenticator removed, once `factor` proved the user holds it.
pub(super) fn disable<'c>(t: &Tables<'_>, tenant: &'c str, user_id: &'c str, factor: &'c MfaFactor) -> Planned<'c> {
    let mut user = users::existing(t, tenant, user_id)?;
    let state = user.totp.as_ref().filter(|s| s.confirmed).ok_or(Rejection::TotpNotEnrolled)?;
    spend(state, factor)?;
    writes(move |t| {
        user.totp = None;
        t.users.put(&user)?;
        Ok(Applied::TotpDisabled)
    })
}
