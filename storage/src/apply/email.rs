//! Email tokens and the outbox. A token and the message carrying it are written together; a
//! token is spent once, here, so no node can accept it twice (S37, S43). Redeeming one proves
//! the user reads the address it went to.

use super::{sessions, tenants, users, writes, Planned, Tables};
use crate::command::{Applied, Redemption, Rejection};
use crate::model::email::{email_token_key, outbox_key, user_tokens_prefix};
use crate::model::{EmailPurpose, EmailTokenRecord, OutboxRecord, UserStatus};
use crate::table::Row;

fn inconsistent(what: &str) -> Rejection {
    Rejection::Inconsistent { what: what.to_string() }
}

pub(super) fn send<'c>(t: &Tables<'_>, token: &'c EmailTokenRecord, message: &'c OutboxRecord) -> Planned<'c> {
    sessions::no_sessions_in_system(&token.tenant)?;
    tenants::active(t, &token.tenant)?;
    let user = users::existing(t, &token.tenant, &token.user_id)?;
    if user.status != UserStatus::Active {
        return Err(Rejection::UserDisabled { user_id: token.user_id.clone() }.into());
    }
    if user.email.as_deref() != Some(token.email.as_str())
        || message.tenant != token.tenant
        || message.to != token.email
        || message.purpose != token.purpose
    {
        return Err(inconsistent("the message must go to the user's address, for its token").into());
    }
    if t.email_tokens.contains(&token.key())? || t.outbox.contains(&message.key())? {
        return Err(inconsistent("an email token and a message need new ids").into());
    }
    writes(move |t| {
        // One live token per user and purpose: a new code replaces the last (S43).
        for earlier in t.email_tokens.by_index(&user_tokens_prefix(&token.tenant, &token.user_id))? {
            if earlier.user_id == token.user_id && earlier.purpose == token.purpose {
                t.email_tokens.delete(&earlier.key())?;
            }
        }
        t.email_tokens.put(token)?;
        t.outbox.put(message)?;
        Ok(Applied::EmailQueued { id: message.id.clone() })
    })
}

pub(super) fn redeem<'c>(
    t: &Tables<'_>,
    tenant: &'c str,
    token_sha256: &'c str,
    purpose: EmailPurpose,
    effect: &'c Redemption,
    now_ms: i64,
) -> Planned<'c> {
    tenants::active(t, tenant)?;
    let key = email_token_key(tenant, token_sha256);
    let token = t.email_tokens.get(&key)?;
    let token =
        token.filter(|k| k.purpose == purpose && k.expires_at_ms > now_ms).ok_or(Rejection::EmailTokenInvalid)?;
    let mut user = users::existing(t, tenant, &token.user_id)?;
    if user.status != UserStatus::Active {
        return Err(Rejection::UserDisabled { user_id: token.user_id.clone() }.into());
    }
    // The address changed since: the token proves nothing about the new one.
    if user.email.as_deref() != Some(token.email.as_str()) {
        return Err(Rejection::EmailTokenInvalid.into());
    }
    let fits = match effect {
        Redemption::SignIn(_) => matches!(purpose, EmailPurpose::SignInCode | EmailPurpose::SignInLink),
        Redemption::SetPassword { .. } => purpose == EmailPurpose::PasswordReset,
        Redemption::Verify => purpose == EmailPurpose::VerifyEmail,
    };
    if !fits {
        return Err(inconsistent("the redemption does not fit the token's purpose").into());
    }
    if let Redemption::SignIn(s) = effect {
        if s.tenant != tenant || s.user_id != token.user_id {
            return Err(inconsistent("the session must be the token user's").into());
        }
        // As for a password: a user with an authenticator still gives a code (S44).
        sessions::second_factor_rule(t, &tenants::active(t, tenant)?, &user, s)?;
        sessions::check_new_session(t, s)?;
    }
    user.email_verified = true;
    user.revision += 1;
    user.updated_at_ms = user.updated_at_ms.max(now_ms);
    writes(move |t| {
        t.email_tokens.delete(&key)?;
        match effect {
            Redemption::SignIn(s) => t.sessions.put(s)?,
            Redemption::SetPassword { password_hash } => {
                user.password_hash = Some(password_hash.clone());
                sessions::end_all_of(t, tenant, &user.id)?;
                super::refresh::revoke_all_of(t, tenant, &user.id)?;
                // Every other link or code the user was sent goes with the old password.
                for other in t.email_tokens.by_index(&user_tokens_prefix(tenant, &user.id))? {
                    if other.user_id == user.id {
                        t.email_tokens.delete(&other.key())?;
                    }
                }
            }
            Redemption::Verify => {}
        }
        t.users.put(&user)?;
        Ok(Applied::EmailTokenRedeemed { user_id: user.id.clone() })
    })
}

pub(super) fn delivered<'c>(tenant: &'c str, id: &'c str) -> Planned<'c> {
    writes(move |t| {
        t.outbox.delete(&outbox_key(tenant, id))?;
        Ok(Applied::EmailDelivered)
    })
}

pub(super) fn deferred<'c>(t: &Tables<'_>, tenant: &'c str, id: &'c str, next_attempt_ms: i64) -> Planned<'c> {
    let message = t.outbox.get(&outbox_key(tenant, id))?;
    writes(move |t| {
        if let Some(mut m) = message {
            m.attempts = m.attempts.saturating_add(1);
            m.next_attempt_ms = next_attempt_ms;
            t.outbox.put(&m)?;
        }
        Ok(Applied::EmailDeferred)
    })
}

pub(super) fn prune<'c>(now_ms: i64) -> Planned<'c> {
    writes(move |t| {
        let tokens = t.email_tokens.delete_under("", |k| k.expires_at_ms <= now_ms)? as u64;
        let messages = t.outbox.delete_under("", |m| m.expires_at_ms <= now_ms)? as u64;
        Ok(Applied::EmailPruned { tokens, messages })
    })
}
