//! Users of a tenant, their passwords, organizations and memberships.

use super::access::{keeps_an_owner, remove_bindings_of};
use super::{tenants, writes, Planned, Stop, Tables};
use crate::command::{Applied, Rejection};
use crate::model::user::{membership_key, organization_key, user_key, username_key};
use crate::model::{MembershipRecord, OrganizationRecord, UserRecord, UserStatus};
use crate::table::{tenant_prefix, Row};

/// The user, refused when unknown.
pub(super) fn existing(t: &Tables<'_>, tenant: &str, id: &str) -> Result<UserRecord, Stop> {
    t.users
        .get(&user_key(tenant, id))?
        .ok_or_else(|| Rejection::UnknownUser { tenant: tenant.to_string(), id: id.to_string() }.into())
}

/// The organization, refused when unknown.
pub(super) fn existing_organization(t: &Tables<'_>, tenant: &str, id: &str) -> Result<OrganizationRecord, Stop> {
    t.organizations
        .get(&organization_key(tenant, id))?
        .ok_or_else(|| Rejection::UnknownOrganization { tenant: tenant.to_string(), id: id.to_string() }.into())
}

fn username_taken(t: &Tables<'_>, user: &UserRecord) -> Result<bool, Stop> {
    // The username index is the users table's own; its entries are user ids.
    let holder = t.users.index_value(&username_key(&user.tenant, &user.username))?;
    Ok(holder.is_some_and(|id| id != user.id.as_bytes()))
}

/// A new user's checks: its id is new and its username free.
pub(super) fn check_new(t: &Tables<'_>, u: &UserRecord) -> Result<(), Stop> {
    if t.users.contains(&u.key())? {
        return Err(Rejection::AlreadyExists { what: "user".into(), id: u.id.clone() }.into());
    }
    if username_taken(t, u)? {
        return Err(Rejection::UsernameTaken { tenant: u.tenant.clone(), username: u.username.clone() }.into());
    }
    Ok(())
}

pub(super) fn create<'c>(t: &Tables<'_>, u: &'c UserRecord) -> Planned<'c> {
    tenants::active(t, &u.tenant)?;
    check_new(t, u)?;
    writes(move |t| {
        t.users.put(u)?;
        Ok(Applied::UserCreated { id: u.id.clone() })
    })
}

/// Replaces a user's profile when its revision is still `expected_revision`; the password
/// hash is kept (it changes only by [`set_password`]).
pub(super) fn update<'c>(t: &Tables<'_>, user: &'c UserRecord, expected_revision: u64) -> Planned<'c> {
    let stored = existing(t, &user.tenant, &user.id)?;
    if stored.revision != expected_revision || user.revision != stored.revision + 1 {
        return Err(Rejection::RevisionMismatch { current: stored.revision }.into());
    }
    if username_taken(t, user)? {
        return Err(Rejection::UsernameTaken { tenant: user.tenant.clone(), username: user.username.clone() }.into());
    }
    if user.status != UserStatus::Active && stored.status == UserStatus::Active {
        let subject = format!("user:{}", user.id);
        keeps_an_owner(t, &user.tenant, |b| b.subject == subject)?;
    }
    // A new address is not proven by the old one's proof.
    let email_verified = stored.email_verified && stored.email == user.email;
    // The picture changes only through `SetAvatar`.
    let record = UserRecord {
        password_hash: stored.password_hash,
        totp: stored.totp,
        avatar_sha256: stored.avatar_sha256,
        email_verified,
        ..user.clone()
    };
    writes(move |t| {
        t.users.put(&record)?;
        if record.status != UserStatus::Active {
            super::sessions::end_all_of(t, &record.tenant, &record.id)?;
            super::refresh::revoke_all_of(t, &record.tenant, &record.id)?;
        }
        Ok(Applied::UserUpdated { id: record.id.clone(), revision: record.revision })
    })
}

/// A user's new picture (replacing one they had).
pub(super) fn set_avatar<'c>(t: &Tables<'_>, avatar: &'c crate::model::AvatarRecord, now_ms: i64) -> Planned<'c> {
    let mut user = existing(t, &avatar.tenant, &avatar.user_id)?;
    if user.status != UserStatus::Active {
        return Err(Rejection::UserDisabled { user_id: user.id }.into());
    }
    writes(move |t| {
        user.avatar_sha256 = Some(avatar.sha256.clone());
        user.revision += 1;
        user.updated_at_ms = user.updated_at_ms.max(now_ms);
        t.avatars.put(avatar)?;
        t.users.put(&user)?;
        Ok(Applied::AvatarSet)
    })
}

/// A user's picture removed (none is no error).
pub(super) fn delete_avatar<'c>(t: &Tables<'_>, tenant: &'c str, user_id: &'c str, now_ms: i64) -> Planned<'c> {
    let mut user = existing(t, tenant, user_id)?;
    writes(move |t| {
        if user.avatar_sha256.take().is_some() {
            user.revision += 1;
            user.updated_at_ms = user.updated_at_ms.max(now_ms);
            t.users.put(&user)?;
        }
        t.avatars.delete(&crate::model::avatar::avatar_key(tenant, user_id))?;
        Ok(Applied::AvatarDeleted)
    })
}

pub(super) fn set_password<'c>(t: &Tables<'_>, tenant: &'c str, user_id: &'c str, hash: &'c str) -> Planned<'c> {
    let mut record = existing(t, tenant, user_id)?;
    writes(move |t| {
        record.password_hash = Some(hash.to_string());
        t.users.put(&record)?;
        // A new password is how a compromised account is taken back: its sessions and its
        // refresh tokens end.
        super::sessions::end_all_of(t, tenant, user_id)?;
        super::refresh::revoke_all_of(t, tenant, user_id)?;
        Ok(Applied::PasswordSet { user_id: user_id.to_string() })
    })
}

/// An upgraded hash of the same password: only over the hash it was made from.
pub(super) fn rehash_password<'c>(
    t: &Tables<'_>,
    tenant: &'c str,
    user_id: &'c str,
    previous: &'c str,
    hash: &'c str,
) -> Planned<'c> {
    let mut record = existing(t, tenant, user_id)?;
    if record.password_hash.as_deref() != Some(previous) {
        let what = "the password changed since this hash was made".to_string();
        return Err(Rejection::Inconsistent { what }.into());
    }
    writes(move |t| {
        record.password_hash = Some(hash.to_string());
        t.users.put(&record)?;
        Ok(Applied::PasswordRehashed)
    })
}

/// Deletes a user with its bindings and memberships.
pub(super) fn delete<'c>(t: &Tables<'_>, tenant: &'c str, user_id: &'c str) -> Planned<'c> {
    existing(t, tenant, user_id)?;
    let subject = format!("user:{user_id}");
    keeps_an_owner(t, tenant, |b| b.subject == subject)?;
    writes(move |t| {
        t.users.delete(&user_key(tenant, user_id))?;
        remove_bindings_of(t, tenant, &subject)?;
        super::sessions::end_all_of(t, tenant, user_id)?;
        super::passkeys::delete_all_of(t, tenant, user_id)?;
        t.avatars.delete(&crate::model::avatar::avatar_key(tenant, user_id))?;
        t.memberships.delete_under(&tenant_prefix(tenant), |m| m.user_id == user_id)?;
        t.consents.delete_under(&format!("{tenant}/{user_id}/"), |_| true)?;
        t.refresh_families.delete_under(&tenant_prefix(tenant), |f| f.user_id == user_id)?;
        Ok(Applied::UserDeleted { id: user_id.to_string() })
    })
}

pub(super) fn create_organization<'c>(t: &Tables<'_>, o: &'c OrganizationRecord) -> Planned<'c> {
    tenants::active(t, &o.tenant)?;
    if t.organizations.contains(&o.key())? {
        return Err(Rejection::AlreadyExists { what: "organization".into(), id: o.id.clone() }.into());
    }
    writes(move |t| {
        t.organizations.put(o)?;
        Ok(Applied::OrganizationCreated { id: o.id.clone() })
    })
}

/// Deletes an organization with its memberships and the bindings scoped to it.
pub(super) fn delete_organization<'c>(t: &Tables<'_>, tenant: &'c str, id: &'c str) -> Planned<'c> {
    existing_organization(t, tenant, id)?;
    writes(move |t| {
        t.organizations.delete(&organization_key(tenant, id))?;
        t.memberships.delete_under(&format!("{tenant}/{id}/"), |_| true)?;
        let scope = format!("org:{id}");
        t.bindings.delete_under(&tenant_prefix(tenant), |b| b.scope.as_deref() == Some(scope.as_str()))?;
        Ok(Applied::OrganizationDeleted { id: id.to_string() })
    })
}

pub(super) fn add_member<'c>(t: &Tables<'_>, m: &'c MembershipRecord) -> Planned<'c> {
    existing_organization(t, &m.tenant, &m.organization_id)?;
    existing(t, &m.tenant, &m.user_id)?;
    if t.memberships.contains(&m.key())? {
        let id = format!("{}/{}", m.organization_id, m.user_id);
        return Err(Rejection::AlreadyExists { what: "membership".into(), id }.into());
    }
    writes(move |t| {
        t.memberships.put(m)?;
        Ok(Applied::MemberAdded { organization_id: m.organization_id.clone(), user_id: m.user_id.clone() })
    })
}

pub(super) fn remove_member<'c>(t: &Tables<'_>, tenant: &'c str, org: &'c str, user_id: &'c str) -> Planned<'c> {
    let key = membership_key(tenant, org, user_id);
    if !t.memberships.contains(&key)? {
        return Err(Rejection::NotAMember { organization_id: org.to_string(), user_id: user_id.to_string() }.into());
    }
    writes(move |t| {
        t.memberships.delete(&key)?;
        Ok(Applied::MemberRemoved { organization_id: org.to_string(), user_id: user_id.to_string() })
    })
}
