//! OAuth authorization codes. A code is issued only inside a live, complete session of an
//! active user, to an active client that may use the code grant; it is spent once, here, for
//! its own client and redirect URI (S5, S6), so no two nodes can both redeem it.

use super::{clients, sessions, tenants, users, writes, Planned, Tables};
use crate::command::{Applied, Rejection};
use crate::model::authorization_code::{authorization_code_key, MAX_CODE_LIFETIME_MS};
use crate::model::session::session_key;
use crate::model::{AuthorizationCodeRecord, ClientStatus, CodeRedemption, CodeToken, UserStatus};
use crate::table::Row;

fn inconsistent(what: &str) -> Rejection {
    Rejection::Inconsistent { what: what.to_string() }
}

pub(super) fn issue<'c>(t: &Tables<'_>, code: &'c AuthorizationCodeRecord, now_ms: i64) -> Planned<'c> {
    sessions::no_sessions_in_system(&code.tenant)?;
    tenants::active(t, &code.tenant)?;
    let client = clients::existing(t, &code.tenant, &code.client_id)?;
    if client.status != ClientStatus::Active {
        return Err(Rejection::ClientDisabled { client_id: code.client_id.clone() }.into());
    }
    if !client.grant_types.iter().any(|g| g == "authorization_code") {
        return Err(inconsistent("the client may not use the authorization code grant").into());
    }
    let user = users::existing(t, &code.tenant, &code.user_id)?;
    if user.status != UserStatus::Active {
        return Err(Rejection::UserDisabled { user_id: code.user_id.clone() }.into());
    }
    let session = t.sessions.get(&session_key(&code.tenant, &code.session_sha256))?;
    let signed_in =
        session.filter(|s| s.user_id == code.user_id && s.live_at(now_ms) && !s.pending_mfa && !s.setup_only);
    if signed_in.is_none() {
        return Err(Rejection::SessionEnded.into());
    }
    if code.redeemed.is_some()
        || code.expires_at_ms <= code.created_at_ms
        || code.expires_at_ms - code.created_at_ms > MAX_CODE_LIFETIME_MS
    {
        return Err(inconsistent("a new code is unspent and lives at most 10 minutes").into());
    }
    if t.authorization_codes.contains(&code.key())? {
        return Err(inconsistent("an authorization code needs a new value").into());
    }
    writes(move |t| {
        t.authorization_codes.put(code)?;
        Ok(Applied::AuthorizationCodeIssued)
    })
}

pub(super) fn redeem<'c>(
    t: &Tables<'_>,
    tenant: &'c str,
    code_sha256: &'c str,
    client_id: &'c str,
    redirect_uri: &'c str,
    tokens: &'c [CodeToken],
    now_ms: i64,
) -> Planned<'c> {
    tenants::active(t, tenant)?;
    let key = authorization_code_key(tenant, code_sha256);
    let code = t.authorization_codes.get(&key)?;
    let mut code = code
        .filter(|c| c.expires_at_ms > now_ms && c.client_id == client_id && c.redirect_uri == redirect_uri)
        .ok_or(Rejection::AuthorizationCodeInvalid)?;
    if code.redeemed.is_some() {
        return Err(Rejection::AuthorizationCodeUsed.into());
    }
    // A user disabled, or a session ended, since the code was issued: it grants nothing (S14).
    let user = users::existing(t, tenant, &code.user_id)?;
    if user.status != UserStatus::Active {
        return Err(Rejection::UserDisabled { user_id: code.user_id.clone() }.into());
    }
    let client = clients::existing(t, tenant, client_id)?;
    if client.status != ClientStatus::Active {
        return Err(Rejection::ClientDisabled { client_id: client_id.to_string() }.into());
    }
    code.redeemed = Some(CodeRedemption { at_ms: now_ms, tokens: tokens.to_vec() });
    writes(move |t| {
        t.authorization_codes.put(&code)?;
        Ok(Applied::AuthorizationCodeRedeemed { code: Box::new(code) })
    })
}

pub(super) fn revoke_tokens<'c>(t: &Tables<'_>, tenant: &'c str, code_sha256: &'c str) -> Planned<'c> {
    let key = authorization_code_key(tenant, code_sha256);
    let code = t.authorization_codes.get(&key)?;
    writes(move |t| {
        let Some(code) = code else { return Ok(Applied::CodeTokensRevoked { count: 0 }) };
        let tokens = code.redeemed.map(|r| r.tokens).unwrap_or_default();
        for token in &tokens {
            t.revoked.insert(&format!("{tenant}/{}", token.jti), token.exp_ms)?;
        }
        t.authorization_codes.delete(&key)?;
        Ok(Applied::CodeTokensRevoked { count: tokens.len() as u64 })
    })
}

pub(super) fn prune<'c>(now_ms: i64) -> Planned<'c> {
    writes(move |t| {
        let count = t.authorization_codes.delete_under("", |c| c.expires_at_ms <= now_ms)? as u64;
        Ok(Applied::AuthorizationCodesPruned { count })
    })
}
