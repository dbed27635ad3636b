//! Tenants, their data keys and their signing keys; the cluster's founding.

use std::collections::HashSet;

use redb::ReadableTable;

use super::{writes, Planned, Stop, Tables};
use crate::command::{Applied, NewTenant, Rejection};
use crate::model::signing_key::signing_key_id;
use crate::model::tenant::{is_valid_tenant_id, RESERVED_TENANT_IDS};
use crate::model::{key_states, ClusterRecord, KeyState, SigningKeyRecord, TenantRecord, TenantStatus};
use crate::table::{tenant_prefix, Row};
use crate::{codec, tables, StoreError};

/// The tenant, refused when unknown.
pub(super) fn existing(t: &Tables<'_>, id: &str) -> Result<TenantRecord, Stop> {
    t.tenants.get(id)?.ok_or_else(|| Rejection::UnknownTenant { id: id.to_string() }.into())
}

/// The tenant, refused when unknown or disabled.
pub(super) fn active(t: &Tables<'_>, id: &str) -> Result<TenantRecord, Stop> {
    let record = existing(t, id)?;
    if record.status != TenantStatus::Active {
        return Err(Rejection::TenantDisabled { id: id.to_string() }.into());
    }
    Ok(record)
}

fn bootstrapped(t: &Tables<'_>) -> Result<bool, StoreError> {
    Ok(t.meta.get(tables::meta_keys::CLUSTER)?.is_some())
}

pub(super) fn bootstrap<'c>(t: &Tables<'_>, cluster: &'c ClusterRecord, tenants: &'c [NewTenant]) -> Planned<'c> {
    if bootstrapped(t)? {
        return Err(Rejection::AlreadyBootstrapped.into());
    }
    let (mut ids, mut data_keys) = (HashSet::new(), HashSet::new());
    for n in tenants {
        if !ids.insert(n.tenant.id.as_str()) {
            return Err(Rejection::TenantExists { id: n.tenant.id.clone() }.into());
        }
        if !data_keys.insert(n.data_key.id.as_str()) {
            return Err(Rejection::DataKeyExists { id: n.data_key.id.clone() }.into());
        }
        check_new(t, n, true)?;
    }
    writes(move |t| {
        t.meta.insert(tables::meta_keys::CLUSTER, codec::encode(cluster).as_slice())?;
        for n in tenants {
            write_new(t, n)?;
        }
        Ok(Applied::Bootstrapped { cluster_id: cluster.cluster_id.clone() })
    })
}

pub(super) fn create<'c>(t: &Tables<'_>, n: &'c NewTenant) -> Planned<'c> {
    if !bootstrapped(t)? {
        return Err(Rejection::NotBootstrapped.into());
    }
    check_new(t, n, false)?;
    writes(move |t| {
        write_new(t, n)?;
        Ok(Applied::TenantCreated { id: n.tenant.id.clone() })
    })
}

fn check_new(t: &Tables<'_>, n: &NewTenant, allow_reserved: bool) -> Result<(), Stop> {
    let id = &n.tenant.id;
    if n.tenant.data_key_id != n.data_key.id {
        return Err(Rejection::Inconsistent { what: format!("tenant {id} names a data key it does not carry") }.into());
    }
    let mut kids = HashSet::new();
    for k in &n.signing_keys {
        if k.tenant != *id || k.private.key_id != n.data_key.id {
            let what = format!("signing key {} does not belong to tenant {id}", k.kid);
            return Err(Rejection::Inconsistent { what }.into());
        }
        if !kids.insert(k.kid.as_str()) {
            return Err(Rejection::SigningKeyExists { tenant: id.clone(), kid: k.kid.clone() }.into());
        }
    }
    if !is_valid_tenant_id(id) {
        return Err(Rejection::InvalidTenantId { id: id.clone() }.into());
    }
    if !allow_reserved && RESERVED_TENANT_IDS.contains(&id.as_str()) {
        return Err(Rejection::ReservedTenantId { id: id.clone() }.into());
    }
    if t.tenants.contains(id)? {
        return Err(Rejection::TenantExists { id: id.clone() }.into());
    }
    if t.data_keys.contains(&n.data_key.id)? {
        return Err(Rejection::DataKeyExists { id: n.data_key.id.clone() }.into());
    }
    for k in &n.signing_keys {
        check_new_signing_key(t, k)?;
    }
    Ok(())
}

fn write_new(t: &mut Tables<'_>, n: &NewTenant) -> Result<(), StoreError> {
    t.tenants.put(&n.tenant)?;
    t.data_keys.put(&n.data_key)?;
    for k in &n.signing_keys {
        t.signing_keys.put(k)?;
    }
    Ok(())
}

pub(super) fn update<'c>(
    t: &Tables<'_>,
    id: &'c str,
    display_name: &'c str,
    status: TenantStatus,
    self_registration: bool,
    cors_origins: Option<&'c [String]>,
    require_mfa: Option<bool>,
) -> Planned<'c> {
    let mut record = existing(t, id)?;
    writes(move |t| {
        record.display_name = display_name.to_string();
        record.status = status;
        record.self_registration = self_registration;
        if let Some(origins) = cors_origins {
            record.cors_origins = origins.to_vec();
        }
        if let Some(required) = require_mfa {
            record.require_mfa = required;
        }
        t.tenants.put(&record)?;
        Ok(Applied::TenantUpdated { id: id.to_string() })
    })
}

/// Deletes the tenant, its data key (so its sealed secrets are shredded) and every row it owns.
pub(super) fn delete<'c>(t: &Tables<'_>, id: &'c str) -> Planned<'c> {
    if id == "system" || id == "default" {
        return Err(Rejection::TenantProtected { id: id.to_string() }.into());
    }
    let record = existing(t, id)?;
    writes(move |t| {
        t.tenants.delete(id)?;
        t.data_keys.delete(&record.data_key_id)?;
        let prefix = tenant_prefix(id);
        t.signing_keys.delete_under(&prefix, |_| true)?;
        t.clients.delete_under(&prefix, |_| true)?;
        t.bindings.delete_under(&prefix, |_| true)?;
        t.users.delete_under(&prefix, |_| true)?;
        t.organizations.delete_under(&prefix, |_| true)?;
        t.memberships.delete_under(&prefix, |_| true)?;
        t.roles.delete_under(&prefix, |_| true)?;
        t.sessions.delete_under(&prefix, |_| true)?;
        t.lockouts.delete_under(&prefix, |_| true)?;
        t.email_tokens.delete_under(&prefix, |_| true)?;
        t.outbox.delete_under(&prefix, |_| true)?;
        t.passkeys.delete_under(&prefix, |_| true)?;
        t.used_challenges.clear_under(&prefix)?;
        t.avatars.delete_under(&prefix, |_| true)?;
        t.authorization_codes.delete_under(&prefix, |_| true)?;
        t.consents.delete_under(&prefix, |_| true)?;
        t.refresh_families.delete_under(&prefix, |_| true)?;
        t.revoked.clear_under(&prefix)?;
        t.used_assertions.clear_under(&prefix)?;
        Ok(Applied::TenantDeleted { id: id.to_string() })
    })
}

pub(super) fn add_signing_keys<'c>(t: &Tables<'_>, tenant: &'c str, keys: &'c [SigningKeyRecord]) -> Planned<'c> {
    let record = existing(t, tenant)?;
    let mut kids = HashSet::new();
    for k in keys {
        if k.tenant != tenant || k.private.key_id != record.data_key_id {
            let what = format!("signing key {} is not sealed under tenant {tenant}'s data key", k.kid);
            return Err(Rejection::Inconsistent { what }.into());
        }
        if !kids.insert(k.kid.as_str()) {
            return Err(Rejection::SigningKeyExists { tenant: tenant.to_string(), kid: k.kid.clone() }.into());
        }
        check_new_signing_key(t, k)?;
    }
    writes(move |t| {
        for k in keys {
            t.signing_keys.put(k)?;
        }
        let kids = keys.iter().map(|k| k.kid.clone()).collect();
        Ok(Applied::SigningKeysAdded { tenant: tenant.to_string(), kids })
    })
}

fn check_new_signing_key(t: &Tables<'_>, k: &SigningKeyRecord) -> Result<(), Stop> {
    if t.signing_keys.contains(&k.key())? {
        return Err(Rejection::SigningKeyExists { tenant: k.tenant.clone(), kid: k.kid.clone() }.into());
    }
    Ok(())
}

/// Removes retired keys; refused for any key that may still sign or verify a live token.
pub(super) fn prune_signing_keys<'c>(
    t: &Tables<'_>,
    tenant: &'c str,
    kids: &'c [String],
    max_token_lifetime_ms: i64,
    now_ms: i64,
) -> Planned<'c> {
    existing(t, tenant)?;
    let keys = t.signing_keys.under(&tenant_prefix(tenant), |_| true)?;
    let states = key_states(&keys, now_ms, max_token_lifetime_ms);
    for kid in kids {
        match states.iter().find(|(k, _)| k == kid) {
            None => return Err(Rejection::UnknownSigningKey { tenant: tenant.to_string(), kid: kid.clone() }.into()),
            Some((_, KeyState::Retired)) => {}
            Some((_, state)) => {
                let state = format!("{state:?}").to_lowercase();
                return Err(Rejection::SigningKeyStillNeeded { kid: kid.clone(), state }.into());
            }
        }
    }
    writes(move |t| {
        for kid in kids {
            t.signing_keys.delete(&signing_key_id(tenant, kid))?;
        }
        Ok(Applied::SigningKeysPruned { tenant: tenant.to_string(), kids: kids.to_vec() })
    })
}
