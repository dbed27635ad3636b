//! End-user sessions, and self-registration (a user with their first session).

use super::{tenants, users, writes, Planned, Stop, Tables};
use crate::command::{Applied, Registration, Rejection};
use crate::model::session::{session_key, user_sessions_prefix};
use crate::model::{SessionRecord, TenantRecord, UserRecord, UserStatus};
use crate::table::Row;
use crate::StoreError;

/// Platform admins use admin tokens: the `system` tenant has no end-user sessions.
pub(super) fn no_sessions_in_system(tenant: &str) -> Result<(), Stop> {
    if tenant == "system" {
        let what = "the system tenant has no end-user sessions".to_string();
        return Err(Rejection::Inconsistent { what }.into());
    }
    Ok(())
}

pub(super) fn check_new_session(t: &Tables<'_>, s: &SessionRecord) -> Result<(), Stop> {
    if t.sessions.contains(&s.key())? || s.id_sha256.len() != 64 {
        let what = "a session needs a new 64-digit id digest".to_string();
        return Err(Rejection::Inconsistent { what }.into());
    }
    Ok(())
}

/// What a new session of a sign-in without a passkey must be (S44). Decided here, on the
/// applied state, not on the proposer's read: an authenticator confirmed meanwhile (or one a
/// lagging node has not seen) still gets its code asked, and a tenant that began requiring a
/// second factor gets it added first.
pub(super) fn second_factor_rule(
    t: &Tables<'_>,
    tenant: &TenantRecord,
    user: &UserRecord,
    s: &SessionRecord,
) -> Result<(), Stop> {
    if s.pending_mfa {
        return Ok(());
    }
    // A user with an authenticator gives its code, whatever the proposer thought.
    if user.totp.as_ref().is_some_and(|m| m.confirmed) {
        return Err(Rejection::MfaRequired.into());
    }
    if tenant.require_mfa {
        // A passkey is this user's second factor: a password or an email alone may not add
        // another one in its place.
        let prefix = crate::model::passkey::user_passkeys_prefix(&tenant.id, &user.id);
        if !t.passkeys.by_index(&prefix)?.is_empty() {
            return Err(Rejection::PasskeyRequired.into());
        }
        if !s.setup_only {
            return Err(Rejection::MfaSetupRequired.into());
        }
    }
    Ok(())
}

/// A user signed in: refused for a disabled user or tenant.
pub(super) fn start<'c>(t: &Tables<'_>, s: &'c SessionRecord) -> Planned<'c> {
    no_sessions_in_system(&s.tenant)?;
    tenants::active(t, &s.tenant)?;
    let user = users::existing(t, &s.tenant, &s.user_id)?;
    if user.status != UserStatus::Active {
        return Err(Rejection::UserDisabled { user_id: s.user_id.clone() }.into());
    }
    second_factor_rule(t, &tenants::active(t, &s.tenant)?, &user, s)?;
    check_new_session(t, s)?;
    writes(move |t| {
        t.sessions.put(s)?;
        Ok(Applied::SessionStarted { user_id: s.user_id.clone() })
    })
}

/// Moves a live session's last-seen time to the proposal's.
pub(super) fn touch<'c>(t: &Tables<'_>, tenant: &'c str, id_sha256: &'c str, now_ms: i64) -> Planned<'c> {
    let Some(mut session) = t.sessions.get(&session_key(tenant, id_sha256))? else {
        return Err(Rejection::SessionEnded.into());
    };
    if !session.live_at(now_ms) {
        return Err(Rejection::SessionEnded.into());
    }
    writes(move |t| {
        session.last_seen_ms = session.last_seen_ms.max(now_ms);
        t.sessions.put(&session)?;
        Ok(Applied::SessionTouched)
    })
}

pub(super) fn end<'c>(tenant: &'c str, id_sha256: &'c str) -> Planned<'c> {
    writes(move |t| {
        t.sessions.delete(&session_key(tenant, id_sha256))?;
        Ok(Applied::SessionEnded)
    })
}

/// Forgets every session that has ended by `now_ms`.
pub(super) fn prune<'c>(now_ms: i64) -> Planned<'c> {
    writes(move |t| {
        let count = t.sessions.delete_under("", |s| !s.live_at(now_ms))? as u64;
        Ok(Applied::SessionsPruned { count })
    })
}

/// Ends a user's sessions but `except`.
pub(super) fn end_others<'c>(tenant: &'c str, user_id: &'c str, except: Option<&'c str>) -> Planned<'c> {
    writes(move |t| {
        let mut count = 0;
        for s in t.sessions.by_index(&user_sessions_prefix(tenant, user_id))? {
            if s.user_id == user_id && Some(s.id_sha256.as_str()) != except {
                t.sessions.delete(&s.key())?;
                count += 1;
            }
        }
        Ok(Applied::SessionsEnded { count })
    })
}

/// Ends every session of a user (disabled or deleted: S14).
pub(super) fn end_all_of(t: &mut Tables<'_>, tenant: &str, user_id: &str) -> Result<(), StoreError> {
    for s in t.sessions.by_index(&user_sessions_prefix(tenant, user_id))? {
        if s.user_id == user_id {
            t.sessions.delete(&s.key())?;
        }
    }
    Ok(())
}

/// Self-registration: the user, an organization they own when named, and their first
/// session, checked together and written together.
pub(super) fn register<'c>(t: &Tables<'_>, r: &'c Registration) -> Planned<'c> {
    let tenant = tenants::active(t, &r.user.tenant)?;
    if !tenant.self_registration || tenant.id == "system" {
        return Err(Rejection::RegistrationClosed { id: tenant.id }.into());
    }
    users::check_new(t, &r.user)?;
    let subject = format!("user:{}", r.user.id);
    let consistent = r.session.tenant == r.user.tenant && r.session.user_id == r.user.id;
    let owned = r.organization.as_ref().is_none_or(|o| {
        let scope = format!("org:{}", o.organization.id);
        [&o.organization.tenant, &o.membership.tenant, &o.binding.tenant].iter().all(|x| **x == r.user.tenant)
            && o.membership.organization_id == o.organization.id
            && o.membership.user_id == r.user.id
            && o.binding.subject == subject
            && o.binding.role == "owner"
            && o.binding.scope.as_deref() == Some(scope.as_str())
    });
    if !consistent || !owned || r.user.id.contains('/') {
        let what = "a registration's parts must all be the new user's".to_string();
        return Err(Rejection::Inconsistent { what }.into());
    }
    if let Some(o) = &r.organization {
        if t.organizations.contains(&o.organization.key())? {
            return Err(Rejection::AlreadyExists { what: "organization".into(), id: o.organization.id.clone() }.into());
        }
        if t.bindings.contains(&o.binding.key())? {
            return Err(Rejection::BindingExists { id: o.binding.id.clone() }.into());
        }
    }
    second_factor_rule(t, &tenant, &r.user, &r.session)?;
    check_new_session(t, &r.session)?;
    writes(move |t| {
        t.users.put(&r.user)?;
        if let Some(o) = &r.organization {
            t.organizations.put(&o.organization)?;
            t.memberships.put(&o.membership)?;
            t.bindings.put(&o.binding)?;
        }
        t.sessions.put(&r.session)?;
        Ok(Applied::Registered { user_id: r.user.id.clone() })
    })
}
