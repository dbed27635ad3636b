//! Refresh token families: rotated once per token (the current one only), revoked whole when
//! any older token of theirs comes back (S12), bound to their client (S13).

use super::{clients, users, writes, Planned, Tables};
use crate::command::{Applied, Rejection};
use crate::model::refresh_token::refresh_family_key;
use crate::model::{ClientStatus, CodeToken, RefreshFamilyRecord, UserStatus};

#[allow(clippy::too_many_arguments)]
pub(super) fn rotate<'c>(
    t: &Tables<'_>,
    tenant: &'c str,
    family_id: &'c str,
    client_id: &'c str,
    presented_sha256: &'c str,
    next_sha256: &'c str,
    access: &'c CodeToken,
    now_ms: i64,
) -> Planned<'c> {
    let Some(mut family) = t.refresh_families.get(&refresh_family_key(tenant, family_id))? else {
        return Err(Rejection::RefreshTokenInvalid.into());
    };
    // Another client's token changes nothing of the family (it may not even know it is one).
    if family.client_id != client_id || !family.live_at(now_ms) {
        return Err(Rejection::RefreshTokenInvalid.into());
    }
    if family.current_sha256 != presented_sha256 {
        // A token of the family that is no longer current: someone holds an old one.
        return writes(move |t| {
            revoke_in(t, &mut family)?;
            Ok(Applied::RefreshTokenReused)
        });
    }
    let user = users::existing(t, tenant, &family.user_id)?;
    if user.status != UserStatus::Active {
        return Err(Rejection::UserDisabled { user_id: family.user_id.clone() }.into());
    }
    let client = clients::existing(t, tenant, client_id)?;
    if client.status != ClientStatus::Active {
        return Err(Rejection::ClientDisabled { client_id: client_id.to_string() }.into());
    }
    family.current_sha256 = next_sha256.to_string();
    family.generation += 1;
    family.last_used_ms = now_ms;
    family.last_access = Some(access.clone());
    writes(move |t| {
        t.refresh_families.put(&family)?;
        Ok(Applied::RefreshTokenRotated { family: Box::new(family) })
    })
}

pub(super) fn revoke<'c>(t: &Tables<'_>, tenant: &'c str, family_id: &'c str, client_id: &'c str) -> Planned<'c> {
    let found = t.refresh_families.get(&refresh_family_key(tenant, family_id))?;
    let Some(mut family) = found.filter(|f| f.client_id == client_id) else {
        return Err(Rejection::RefreshTokenInvalid.into());
    };
    writes(move |t| {
        revoke_in(t, &mut family)?;
        Ok(Applied::RefreshFamilyRevoked)
    })
}

/// The family revoked, with the access token it issued last on the deny-list.
pub(super) fn revoke_in(t: &mut Tables<'_>, family: &mut RefreshFamilyRecord) -> Result<(), crate::StoreError> {
    family.revoked = true;
    if let Some(access) = &family.last_access {
        t.revoked.insert(&format!("{}/{}", family.tenant, access.jti), access.exp_ms)?;
    }
    t.refresh_families.put(family)?;
    Ok(())
}

/// Every live family of a user revoked: their password changed (a taken-back account) or
/// they were disabled (S14). Re-enabling them brings none back.
pub(super) fn revoke_all_of(t: &mut Tables<'_>, tenant: &str, user_id: &str) -> Result<(), crate::StoreError> {
    let prefix = crate::table::tenant_prefix(tenant);
    for mut family in t.refresh_families.under(&prefix, |f| f.user_id == user_id && !f.revoked)? {
        revoke_in(t, &mut family)?;
    }
    Ok(())
}

pub(super) fn prune<'c>(now_ms: i64) -> Planned<'c> {
    writes(move |t| {
        let count = t.refresh_families.delete_under("", |f| f.forget_at_ms() <= now_ms)? as u64;
        Ok(Applied::RefreshFamiliesPruned { count })
    })
}
