//! `apply`: the deterministic state transition of one command.
//!
//! Every command is checked first and written second, so a refusal writes nothing but its
//! audit entry and a command never half-applies. Callers may apply many commands in one write
//! transaction (group commit); a [`StoreError`] aborts that whole transaction.

use redb::{ReadableTable, Table, WriteTransaction};

use crate::audit::{self, AuditDraft};
use crate::command::{Applied, Command, NewTenant, Outcome, Proposal, Rejection};
use crate::model::tenant::{is_valid_tenant_id, RESERVED_TENANT_IDS};
use crate::model::{key_states, KeyState, SigningKeyRecord, TenantRecord};
use crate::{codec, tables, StoreError};

struct Tables<'t> {
    meta: Table<'t, &'static str, &'static [u8]>,
    tenants: Table<'t, &'static str, &'static [u8]>,
    signing_keys: Table<'t, &'static str, &'static [u8]>,
    data_keys: Table<'t, &'static str, &'static [u8]>,
    audit: Table<'t, u64, &'static [u8]>,
}

/// Applies one proposal and appends its audit entry, inside `txn`.
pub fn apply(txn: &WriteTransaction, proposal: &Proposal) -> Result<Outcome, StoreError> {
    let mut t = Tables {
        meta: txn.open_table(tables::META)?,
        tenants: txn.open_table(tables::TENANTS)?,
        signing_keys: txn.open_table(tables::SIGNING_KEYS)?,
        data_keys: txn.open_table(tables::DATA_KEYS)?,
        audit: txn.open_table(tables::AUDIT)?,
    };
    let (tenant, target) = audit_subject(&proposal.command);
    let outcome = match check(&t, &proposal.command, proposal.at_ms)? {
        Err(rejection) => Outcome::Refused(rejection),
        Ok(()) => Outcome::Applied(write(&mut t, &proposal.command)?),
    };
    let outcome_text = match &outcome {
        Outcome::Applied(_) => "ok".to_string(),
        Outcome::Refused(r) => format!("refused:{}", r.code()),
    };
    audit::append(
        &mut t.meta,
        &mut t.audit,
        AuditDraft {
            at_ms: proposal.at_ms,
            actor: proposal.actor.clone(),
            tenant,
            action: proposal.command.action().to_string(),
            target,
            outcome: outcome_text,
        },
    )?;
    Ok(outcome)
}

fn audit_subject(command: &Command) -> (String, String) {
    match command {
        Command::Bootstrap { cluster, .. } => ("system".into(), format!("cluster:{}", cluster.cluster_id)),
        Command::CreateTenant(n) => (n.tenant.id.clone(), format!("tenant:{}", n.tenant.id)),
        Command::AddSigningKeys { tenant, keys } => {
            let kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
            (tenant.clone(), format!("signing_keys:{}", kids.join(",")))
        }
        Command::PruneSigningKeys { tenant, kids, .. } => (tenant.clone(), format!("signing_keys:{}", kids.join(","))),
    }
}

fn check(t: &Tables<'_>, command: &Command, now_ms: i64) -> Result<Result<(), Rejection>, StoreError> {
    let bootstrapped = t.meta.get(tables::meta_keys::CLUSTER)?.is_some();
    match command {
        Command::Bootstrap { tenants, .. } => {
            if bootstrapped {
                return Ok(Err(Rejection::AlreadyBootstrapped));
            }
            let mut ids = std::collections::HashSet::new();
            let mut data_keys = std::collections::HashSet::new();
            for n in tenants {
                if !ids.insert(n.tenant.id.as_str()) {
                    return Ok(Err(Rejection::TenantExists { id: n.tenant.id.clone() }));
                }
                if !data_keys.insert(n.data_key.id.as_str()) {
                    return Ok(Err(Rejection::DataKeyExists { id: n.data_key.id.clone() }));
                }
                if let Err(r) = check_new_tenant(t, n, true)? {
                    return Ok(Err(r));
                }
            }
            Ok(Ok(()))
        }
        Command::CreateTenant(n) => {
            if !bootstrapped {
                return Ok(Err(Rejection::NotBootstrapped));
            }
            check_new_tenant(t, n, false)
        }
        Command::AddSigningKeys { tenant, keys } => {
            let record: TenantRecord = match t.tenants.get(tenant.as_str())? {
                Some(v) => codec::decode("tenants", tenant, v.value())?,
                None => return Ok(Err(Rejection::UnknownTenant { id: tenant.clone() })),
            };
            let mut kids = std::collections::HashSet::new();
            for k in keys {
                if k.tenant != *tenant || k.private.key_id != record.data_key_id {
                    let what = format!("signing key {} is not sealed under tenant {tenant}'s data key", k.kid);
                    return Ok(Err(Rejection::Inconsistent { what }));
                }
                if !kids.insert(k.kid.as_str()) {
                    return Ok(Err(Rejection::SigningKeyExists { tenant: tenant.clone(), kid: k.kid.clone() }));
                }
                if let Err(r) = check_signing_key(t, k)? {
                    return Ok(Err(r));
                }
            }
            Ok(Ok(()))
        }
        Command::PruneSigningKeys { tenant, kids, max_token_lifetime_ms } => {
            check_prune(t, tenant, kids, *max_token_lifetime_ms, now_ms)
        }
    }
}

fn check_prune(
    t: &Tables<'_>,
    tenant: &str,
    kids: &[String],
    max_token_lifetime_ms: i64,
    now_ms: i64,
) -> Result<Result<(), Rejection>, StoreError> {
    if t.tenants.get(tenant)?.is_none() {
        return Ok(Err(Rejection::UnknownTenant { id: tenant.to_string() }));
    }
    let keys = tenant_keys(t, tenant)?;
    let states = key_states(&keys, now_ms, max_token_lifetime_ms);
    for kid in kids {
        match states.iter().find(|(k, _)| k == kid) {
            None => return Ok(Err(Rejection::UnknownSigningKey { tenant: tenant.to_string(), kid: kid.clone() })),
            Some((_, KeyState::Retired)) => {}
            Some((_, state)) => {
                let state = format!("{state:?}").to_lowercase();
                return Ok(Err(Rejection::SigningKeyStillNeeded { kid: kid.clone(), state }));
            }
        }
    }
    Ok(Ok(()))
}

fn tenant_keys(t: &Tables<'_>, tenant: &str) -> Result<Vec<SigningKeyRecord>, StoreError> {
    let (start, end) = (format!("{tenant}/"), format!("{tenant}0"));
    let mut keys = Vec::new();
    for item in t.signing_keys.range(start.as_str()..end.as_str())? {
        let (k, v) = item?;
        keys.push(codec::decode("signing_keys", k.value(), v.value())?);
    }
    Ok(keys)
}

fn check_new_tenant(t: &Tables<'_>, n: &NewTenant, allow_reserved: bool) -> Result<Result<(), Rejection>, StoreError> {
    let id = &n.tenant.id;
    if n.tenant.data_key_id != n.data_key.id {
        return Ok(Err(Rejection::Inconsistent { what: format!("tenant {id} names a data key it does not carry") }));
    }
    let mut kids = std::collections::HashSet::new();
    for k in &n.signing_keys {
        if k.tenant != *id || k.private.key_id != n.data_key.id {
            return Ok(Err(Rejection::Inconsistent {
                what: format!("signing key {} does not belong to tenant {id}", k.kid),
            }));
        }
        if !kids.insert(k.kid.as_str()) {
            return Ok(Err(Rejection::SigningKeyExists { tenant: id.clone(), kid: k.kid.clone() }));
        }
    }
    if !is_valid_tenant_id(id) {
        return Ok(Err(Rejection::InvalidTenantId { id: id.clone() }));
    }
    if !allow_reserved && RESERVED_TENANT_IDS.contains(&id.as_str()) {
        return Ok(Err(Rejection::ReservedTenantId { id: id.clone() }));
    }
    if t.tenants.get(id.as_str())?.is_some() {
        return Ok(Err(Rejection::TenantExists { id: id.clone() }));
    }
    if t.data_keys.get(n.data_key.id.as_str())?.is_some() {
        return Ok(Err(Rejection::DataKeyExists { id: n.data_key.id.clone() }));
    }
    for k in &n.signing_keys {
        if let Err(r) = check_signing_key(t, k)? {
            return Ok(Err(r));
        }
    }
    Ok(Ok(()))
}

fn check_signing_key(t: &Tables<'_>, k: &SigningKeyRecord) -> Result<Result<(), Rejection>, StoreError> {
    if t.signing_keys.get(k.table_key().as_str())?.is_some() {
        return Ok(Err(Rejection::SigningKeyExists { tenant: k.tenant.clone(), kid: k.kid.clone() }));
    }
    Ok(Ok(()))
}

fn write(t: &mut Tables<'_>, command: &Command) -> Result<Applied, StoreError> {
    match command {
        Command::Bootstrap { cluster, tenants } => {
            t.meta.insert(tables::meta_keys::CLUSTER, codec::encode(cluster).as_slice())?;
            for n in tenants {
                write_new_tenant(t, n)?;
            }
            Ok(Applied::Bootstrapped { cluster_id: cluster.cluster_id.clone() })
        }
        Command::CreateTenant(n) => {
            write_new_tenant(t, n)?;
            Ok(Applied::TenantCreated { id: n.tenant.id.clone() })
        }
        Command::AddSigningKeys { tenant, keys } => {
            for k in keys {
                t.signing_keys.insert(k.table_key().as_str(), codec::encode(k).as_slice())?;
            }
            Ok(Applied::SigningKeysAdded { tenant: tenant.clone(), kids: keys.iter().map(|k| k.kid.clone()).collect() })
        }
        Command::PruneSigningKeys { tenant, kids, .. } => {
            for kid in kids {
                t.signing_keys.remove(crate::model::signing_key::signing_key_id(tenant, kid).as_str())?;
            }
            Ok(Applied::SigningKeysPruned { tenant: tenant.clone(), kids: kids.clone() })
        }
    }
}

fn write_new_tenant(t: &mut Tables<'_>, n: &NewTenant) -> Result<(), StoreError> {
    t.tenants.insert(n.tenant.id.as_str(), codec::encode(&n.tenant).as_slice())?;
    t.data_keys.insert(n.data_key.id.as_str(), codec::encode(&n.data_key).as_slice())?;
    for k in &n.signing_keys {
        t.signing_keys.insert(k.table_key().as_str(), codec::encode(k).as_slice())?;
    }
    Ok(())
}
