//! The signing-key lifecycle of a tenant: list with states, rotate, prune, and the automatic
//! rotation policy. A rotated key is published in JWKS at once and signs only after the publish
//! delay; a superseded key stays in JWKS until every token it signed has expired.

use std::time::Duration;

use gatehouse_storage::model::{key_states, KeyState, SigningAlg, SigningKeyRecord};
use gatehouse_storage::{Applied, Command, Rejection};
use serde::Serialize;

use crate::app::{AppState, NodeWriteError};
use crate::crypto::keys::{KeyError, KeyMaterial};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    #[error("tenant {0:?} does not exist")]
    UnknownTenant(String),
    #[error(transparent)]
    Refused(Rejection),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Write(#[from] NodeWriteError),
    #[error("storage: {0}")]
    Storage(#[from] gatehouse_storage::StoreError),
    #[error("{0}")]
    Task(String),
}

/// One key as `keys list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyView {
    pub kid: String,
    pub alg: String,
    pub state: KeyState,
    pub created_at_ms: i64,
    pub active_from_ms: i64,
}

/// The keys of `tenant` with their states at `now_ms`.
pub fn views(records: &[SigningKeyRecord], now_ms: i64, max_token_lifetime_ms: i64) -> Vec<KeyView> {
    let states = key_states(records, now_ms, max_token_lifetime_ms);
    records
        .iter()
        .zip(states)
        .map(|(r, (_, state))| KeyView {
            kid: r.kid.clone(),
            alg: r.alg.as_str().to_string(),
            state,
            created_at_ms: r.created_at_ms,
            active_from_ms: r.active_from_ms,
        })
        .collect()
}

fn max_lifetime_ms(app: &AppState) -> i64 {
    secs_to_ms(app.config.keys.max_token_lifetime_secs)
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn tenant_keys(app: &AppState, tenant: &str) -> Result<Vec<SigningKeyRecord>, KeysError> {
    let reader = app.store.read()?;
    if reader.tenant(tenant)?.is_none() {
        return Err(KeysError::UnknownTenant(tenant.to_string()));
    }
    Ok(reader.signing_keys(tenant)?)
}

/// The answer a rotation gives, told from its command: the added keys in kid order, as they
/// stand once applied (the newest keys: published, or active when added with `now`).
pub fn added_views(app: &AppState, added: &[SigningKeyRecord]) -> Vec<KeyView> {
    let mut sorted = added.to_vec();
    sorted.sort_by(|a, b| a.kid.cmp(&b.kid));
    views(&sorted, app.clock.now_ms(), max_lifetime_ms(app))
}

/// The answer a prune gives, told from its command before it applies: the keys it removes.
pub fn pruned_views(app: &AppState, tenant: &str, kids: &[String]) -> Result<Vec<KeyView>, KeysError> {
    let all = views(&tenant_keys(app, tenant)?, app.clock.now_ms(), max_lifetime_ms(app));
    Ok(all.into_iter().filter(|v| kids.contains(&v.kid)).collect())
}

pub fn list(app: &AppState, tenant: &str) -> Result<Vec<KeyView>, KeysError> {
    Ok(views(&tenant_keys(app, tenant)?, app.clock.now_ms(), max_lifetime_ms(app)))
}

/// Adds a new ES256 and RS256 key to `tenant`. They sign after the publish delay, or at once
/// with `immediately` (for emergencies: verifiers that cached JWKS may reject new tokens until
/// they refetch it).
pub async fn rotate(app: &AppState, actor: &str, tenant: &str, immediately: bool) -> Result<Vec<KeyView>, KeysError> {
    let data_key_id = {
        let reader = app.store.read()?;
        reader.tenant(tenant)?.ok_or_else(|| KeysError::UnknownTenant(tenant.to_string()))?.data_key_id
    };
    let now = app.clock.now_ms();
    let active_from =
        if immediately { now } else { now.saturating_add(secs_to_ms(app.config.keys.publish_delay_secs)) };
    let (cipher, tenant_id) = (app.cipher.clone(), tenant.to_string());
    // Key generation is CPU-bound (RSA in particular); keep it off the async workers.
    let added = tokio::task::spawn_blocking(move || -> Result<Vec<SigningKeyRecord>, KeyError> {
        [SigningAlg::ES256, SigningAlg::RS256]
            .into_iter()
            .map(|alg| KeyMaterial::generate(alg)?.into_record(&cipher, &tenant_id, &data_key_id, now, active_from))
            .collect()
    })
    .await
    .map_err(|e| KeysError::Task(e.to_string()))??;
    // Both algorithms in one command: a tenant is never half rotated.
    let command = Command::AddSigningKeys { tenant: tenant.to_string(), keys: added.clone() };
    match app.propose(actor, command).await? {
        Applied::SigningKeysAdded { .. } => {}
        other => return Err(super::unexpected(other).into()),
    }
    let all = tenant_keys(app, tenant)?;
    let views = views(&all, now, max_lifetime_ms(app));
    Ok(views.into_iter().filter(|v| added.iter().any(|a| a.kid == v.kid)).collect())
}

/// Removes the tenant's retired keys (every token they signed has expired). With `dry_run`,
/// only lists them. Never removes a key that signs or whose tokens may still be valid: `apply`
/// checks that again at the proposal's time.
pub async fn prune(app: &AppState, actor: &str, tenant: &str, dry_run: bool) -> Result<Vec<KeyView>, KeysError> {
    app.raft.ensure_linearizable().await.map_err(|e| NodeWriteError::Unavailable(e.to_string()))?;
    let now = app.clock.now_ms();
    let retired: Vec<KeyView> = views(&tenant_keys(app, tenant)?, now, max_lifetime_ms(app))
        .into_iter()
        .filter(|v| v.state == KeyState::Retired)
        .collect();
    if dry_run || retired.is_empty() {
        return Ok(retired);
    }
    let command = Command::PruneSigningKeys {
        tenant: tenant.to_string(),
        kids: retired.iter().map(|v| v.kid.clone()).collect(),
        max_token_lifetime_ms: max_lifetime_ms(app),
    };
    match app.propose(actor, command).await? {
        Applied::SigningKeysPruned { .. } => Ok(retired),
        other => Err(super::unexpected(other).into()),
    }
}

/// Whether `tenant` needs a rotation under the policy: its newest key of some algorithm became
/// active longer ago than the interval, and no newer key is waiting to become active.
pub fn rotation_due(records: &[SigningKeyRecord], now_ms: i64, interval_ms: i64) -> bool {
    [SigningAlg::ES256, SigningAlg::RS256].into_iter().any(|alg| {
        let newest = records.iter().filter(|r| r.alg == alg).map(|r| r.active_from_ms).max();
        match newest {
            None => true,
            Some(t) => t <= now_ms && now_ms.saturating_sub(t) >= interval_ms,
        }
    })
}

/// The automatic rotation policy: on the leader, every check interval, rotate each tenant whose
/// keys are due. Runs until `stop` turns true.
pub async fn rotation_job(app: std::sync::Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let interval_ms = secs_to_ms(app.config.keys.rotation_interval_secs);
    if interval_ms == 0 {
        return;
    }
    let every = Duration::from_secs(app.config.keys.rotation_check_secs.max(1));
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(every) => {}
        }
        if !app.raft.status().is_leader {
            continue;
        }
        let tenants = match app.store.read().and_then(|r| r.tenants()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("key rotation check: {e}");
                continue;
            }
        };
        for tenant in tenants {
            let due = app
                .store
                .read()
                .and_then(|r| r.signing_keys(&tenant.id))
                .map(|keys| rotation_due(&keys, app.clock.now_ms(), interval_ms));
            if let Ok(true) = due {
                match rotate(&app, "policy:key-rotation", &tenant.id, false).await {
                    Ok(keys) => tracing::info!(tenant = %tenant.id, added = keys.len(), "rotated signing keys"),
                    Err(e) => tracing::warn!(tenant = %tenant.id, "key rotation failed: {e}"),
                }
            }
        }
    }
}
