//! Passkeys: added with the challenge of their registration, used with the challenge of a
//! sign-in. Each challenge is spent once, here, cluster-wide (S46, S47), and a sign-in moves the
//! credential's counter on only from the value it was checked against.

use super::{sessions, tenants, users, writes, Planned, Tables};
use crate::command::{Applied, Rejection, SpentChallenge};
use crate::model::passkey::{passkey_key, user_passkeys_prefix, MAX_PER_USER};
use crate::model::{PasskeyRecord, SessionRecord, UserStatus};
use crate::table::Row;

fn challenge_key(tenant: &str, challenge: &SpentChallenge) -> String {
    format!("{tenant}/{}", challenge.id)
}

/// Not spent, and not expired at the proposal's time (a spent one is forgotten only after it
/// expires, so an expired one is refused whether or not it is still remembered).
fn unspent(t: &Tables<'_>, tenant: &str, challenge: &SpentChallenge, now_ms: i64) -> Result<(), super::Stop> {
    if challenge.id.len() < 32
        || challenge.expires_at_ms <= now_ms
        || t.used_challenges.contains(&challenge_key(tenant, challenge))?
    {
        return Err(Rejection::ChallengeUsed.into());
    }
    Ok(())
}

pub(super) fn add<'c>(
    t: &Tables<'_>,
    passkey: &'c PasskeyRecord,
    challenge: &'c SpentChallenge,
    now_ms: i64,
) -> Planned<'c> {
    sessions::no_sessions_in_system(&passkey.tenant)?;
    tenants::active(t, &passkey.tenant)?;
    let user = users::existing(t, &passkey.tenant, &passkey.user_id)?;
    if user.status != UserStatus::Active {
        return Err(Rejection::UserDisabled { user_id: user.id }.into());
    }
    unspent(t, &passkey.tenant, challenge, now_ms)?;
    if t.passkeys.by_index(&user_passkeys_prefix(&passkey.tenant, &passkey.user_id))?.len() >= MAX_PER_USER {
        return Err(Rejection::PasskeyLimit { max: MAX_PER_USER }.into());
    }
    // Registered to nobody yet, this user included (S46).
    if t.passkeys.contains(&passkey.key())? {
        return Err(Rejection::PasskeyExists.into());
    }
    writes(move |t| {
        t.used_challenges.insert(&challenge_key(&passkey.tenant, challenge), challenge.expires_at_ms)?;
        t.passkeys.put(passkey)?;
        Ok(Applied::PasskeyAdded)
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn sign_in<'c>(
    t: &Tables<'_>,
    tenant: &'c str,
    credential_id: &'c str,
    challenge: &'c SpentChallenge,
    sign_count_was: u32,
    sign_count: u32,
    updated: &'c str,
    session: &'c SessionRecord,
    now_ms: i64,
) -> Planned<'c> {
    sessions::no_sessions_in_system(tenant)?;
    tenants::active(t, tenant)?;
    unspent(t, tenant, challenge, now_ms)?;
    let mut passkey = t.passkeys.get(&passkey_key(tenant, credential_id))?.ok_or(Rejection::UnknownPasskey)?;
    if passkey.user_id != session.user_id || session.tenant != tenant || session.pending_mfa || session.setup_only {
        let what = "the session must be a full session of the passkey's user".to_string();
        return Err(Rejection::Inconsistent { what }.into());
    }
    if passkey.sign_count != sign_count_was {
        return Err(Rejection::PasskeyCounterChanged.into());
    }
    let user = users::existing(t, tenant, &passkey.user_id)?;
    if user.status != UserStatus::Active {
        return Err(Rejection::UserDisabled { user_id: user.id }.into());
    }
    sessions::check_new_session(t, session)?;
    passkey.sign_count = sign_count;
    passkey.passkey = updated.to_string();
    passkey.last_used_ms = now_ms;
    writes(move |t| {
        t.used_challenges.insert(&challenge_key(tenant, challenge), challenge.expires_at_ms)?;
        t.passkeys.put(&passkey)?;
        t.sessions.put(session)?;
        Ok(Applied::SessionStarted { user_id: session.user_id.clone() })
    })
}

pub(super) fn delete<'c>(t: &Tables<'_>, tenant: &'c str, user_id: &'c str, credential_id: &'c str) -> Planned<'c> {
    let key = passkey_key(tenant, credential_id);
    if t.passkeys.get(&key)?.is_none_or(|p| p.user_id != user_id) {
        return Err(Rejection::UnknownPasskey.into());
    }
    writes(move |t| {
        t.passkeys.delete(&key)?;
        Ok(Applied::PasskeyDeleted)
    })
}

/// Removes every passkey of a user (deleted).
pub(super) fn delete_all_of(t: &mut Tables<'_>, tenant: &str, user_id: &str) -> Result<(), crate::StoreError> {
    for p in t.passkeys.by_index(&user_passkeys_prefix(tenant, user_id))? {
        if p.user_id == user_id {
            t.passkeys.delete(&p.key())?;
        }
    }
    Ok(())
}
