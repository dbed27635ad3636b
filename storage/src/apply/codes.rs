//! OAuth authorization codes. A code is issued only inside a live, complete session of an
//! active user, to an active client that may use the code grant, for one of its redirect URIs;
//! it is spent once, here, for its own client and redirect URI (S5, S6), so no two nodes can
//! both redeem it, and a second use revokes what the first issued in the same write. Consents
//! (what a user allowed a client) live here too.

use super::{clients, sessions, tenants, users, writes, Planned, Stop, Tables};
use crate::command::{Applied, Rejection};
use crate::model::authorization_code::{authorization_code_key, MAX_CODE_LIFETIME_MS};
use crate::model::session::session_key;
use crate::model::{AuthorizationCodeRecord, ClientStatus, CodeRedemption, CodeToken, ConsentRecord, UserStatus};
use crate::table::Row;

fn inconsistent(what: &str) -> Rejection {
    Rejection::Inconsistent { what: what.to_string() }
}

pub(super) fn issue<'c>(t: &Tables<'_>, code: &'c AuthorizationCodeRecord, now_ms: i64) -> Planned<'c> {
    sessions::no_sessions_in_system(&code.tenant)?;
    tenants::active(t, &code.tenant)?;
    let client = code_client(t, &code.tenant, &code.client_id)?;
    if !client.accepts_redirect_uri(&code.redirect_uri) {
        return Err(inconsistent("the redirect URI is not one of the client's").into());
    }
    let user = users::existing(t, &code.tenant, &code.user_id)?;
    if user.status != UserStatus::Active {
        return Err(Rejection::UserDisabled { user_id: code.user_id.clone() }.into());
    }
    signed_in(t, code, now_ms)?;
    // The lifetime is measured from the proposal's time, not the proposer's claim.
    if code.redeemed.is_some() || code.expires_at_ms <= now_ms || code.expires_at_ms > now_ms + MAX_CODE_LIFETIME_MS {
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

/// The client, active and allowed the code grant.
fn code_client(t: &Tables<'_>, tenant: &str, client_id: &str) -> Result<crate::model::ClientRecord, Stop> {
    let client = clients::existing(t, tenant, client_id)?;
    if client.status != ClientStatus::Active {
        return Err(Rejection::ClientDisabled { client_id: client_id.to_string() }.into());
    }
    if !client.grant_types.iter().any(|g| g == "authorization_code") {
        return Err(Rejection::UnauthorizedGrant.into());
    }
    Ok(client)
}

/// The code's session is live, complete and its user's: signing out, a password reset or a
/// disabled user ends what it grants (S14).
fn signed_in(t: &Tables<'_>, code: &AuthorizationCodeRecord, now_ms: i64) -> Result<(), Stop> {
    let session = t.sessions.get(&session_key(&code.tenant, &code.session_sha256))?;
    match session {
        Some(s) if s.user_id == code.user_id && s.live_at(now_ms) && !s.pending_mfa && !s.setup_only => Ok(()),
        _ => Err(Rejection::SessionEnded.into()),
    }
}

/// Spends a code. A code spent before, whoever presents it and however, is a replay: the
/// tokens the first use issued go on the deny-list in this same write (S5), and the answer
/// says so.
#[allow(clippy::too_many_arguments)]
pub(super) fn redeem<'c>(
    t: &Tables<'_>,
    tenant: &'c str,
    code_sha256: &'c str,
    client_id: &'c str,
    redirect_uri: &'c str,
    tokens: &'c [CodeToken],
    refresh: Option<&'c crate::model::RefreshFamilyRecord>,
    now_ms: i64,
) -> Planned<'c> {
    tenants::active(t, tenant)?;
    let key = authorization_code_key(tenant, code_sha256);
    let Some(mut code) = t.authorization_codes.get(&key)? else {
        return Err(Rejection::AuthorizationCodeInvalid.into());
    };
    if let Some(first) = code.redeemed.clone() {
        let family = match &first.refresh_family {
            Some(id) => t.refresh_families.get(&crate::model::refresh_token::refresh_family_key(tenant, id))?,
            None => None,
        };
        return writes(move |t| {
            for token in &first.tokens {
                t.revoked.insert(&format!("{tenant}/{}", token.jti), token.exp_ms)?;
            }
            if let Some(mut family) = family {
                super::refresh::revoke_in(t, &mut family)?;
            }
            Ok(Applied::AuthorizationCodeReused { revoked: first.tokens.len() as u64 })
        });
    }
    if code.expires_at_ms <= now_ms || code.client_id != client_id || code.redirect_uri != redirect_uri {
        return Err(Rejection::AuthorizationCodeInvalid.into());
    }
    let user = users::existing(t, tenant, &code.user_id)?;
    if user.status != UserStatus::Active {
        return Err(Rejection::UserDisabled { user_id: code.user_id.clone() }.into());
    }
    code_client(t, tenant, client_id)?;
    signed_in(t, &code, now_ms)?;
    if let Some(f) = refresh {
        let fits = f.tenant == tenant && f.client_id == client_id && f.user_id == code.user_id && f.generation == 0;
        if !fits || !f.live_at(now_ms) || t.refresh_families.contains(&f.key())? {
            return Err(inconsistent("a new refresh family of this grant, live and unused").into());
        }
    }
    code.redeemed = Some(CodeRedemption {
        at_ms: now_ms,
        tokens: tokens.to_vec(),
        refresh_family: refresh.map(|f| f.family_id.clone()),
    });
    writes(move |t| {
        if let Some(f) = refresh {
            t.refresh_families.put(f)?;
        }
        t.authorization_codes.put(&code)?;
        Ok(Applied::AuthorizationCodeRedeemed { code: Box::new(code) })
    })
}

pub(super) fn prune<'c>(now_ms: i64) -> Planned<'c> {
    writes(move |t| {
        let count = t.authorization_codes.delete_under("", |c| c.forget_at_ms() <= now_ms)? as u64;
        Ok(Applied::AuthorizationCodesPruned { count })
    })
}

/// Adds `consent`'s scopes to what the user allowed the client before.
pub(super) fn grant_consent<'c>(t: &Tables<'_>, consent: &'c ConsentRecord) -> Planned<'c> {
    tenants::active(t, &consent.tenant)?;
    let user = users::existing(t, &consent.tenant, &consent.user_id)?;
    if user.status != UserStatus::Active {
        return Err(Rejection::UserDisabled { user_id: consent.user_id.clone() }.into());
    }
    let client = clients::existing(t, &consent.tenant, &consent.client_id)?;
    if client.status != ClientStatus::Active {
        return Err(Rejection::ClientDisabled { client_id: consent.client_id.clone() }.into());
    }
    let mut merged = t.consents.get(&consent.key())?.map(|c| c.scopes).unwrap_or_default();
    merged.extend(consent.scopes.iter().cloned());
    merged.sort();
    merged.dedup();
    let record = ConsentRecord { scopes: merged, ..consent.clone() };
    writes(move |t| {
        t.consents.put(&record)?;
        Ok(Applied::ConsentGranted)
    })
}
