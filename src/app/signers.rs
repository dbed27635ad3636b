//! Each tenant's signing keys, parsed once and kept until an applied command changes some
//! tenant's keys (`Store::changes`), so a token costs no key read. Only tenants that exist are
//! ever kept: the cache is bounded by the number of tenants, whatever issuers callers make up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::app::AppState;
use crate::crypto::TokenSigner;

/// Each tenant's keys, parsed once and kept until an applied command changes some tenant's
/// keys (`Store::changes`): a token costs no key read. Only tenants that exist are ever kept,
/// so the cache is bounded by the number of tenants, whatever issuers callers make up.
#[derive(Default)]
pub struct Signers {
    by_tenant: Mutex<HashMap<String, (u64, Arc<TokenSigner>)>>,
}

/// Why a tenant's signer is not at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerError {
    /// No such tenant, or one without keys.
    UnknownTenant,
    /// The keys could not be read or opened on this node.
    Unavailable,
}

impl Signers {
    pub fn for_tenant(&self, app: &AppState, tenant: &str) -> Result<Arc<TokenSigner>, SignerError> {
        let generation = app.store.changes().signing_keys();
        if let Some((g, signer)) = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner()).get(tenant) {
            if *g == generation {
                return Ok(signer.clone());
            }
        }
        if !gatehouse_storage::model::tenant::is_valid_tenant_id(tenant) {
            return Err(SignerError::UnknownTenant);
        }
        let records = app.store.read().and_then(|r| r.signing_keys(tenant)).map_err(|e| {
            tracing::error!("reading the signing keys of tenant {tenant}: {e}");
            SignerError::Unavailable
        })?;
        if records.is_empty() {
            return Err(SignerError::UnknownTenant);
        }
        let signer = Arc::new(TokenSigner::load(&records, Some(&app.cipher)).map_err(|e| {
            tracing::error!("loading the signing keys of tenant {tenant}: {e}");
            SignerError::Unavailable
        })?);
        let mut cache = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        // Entries of an older generation are reloaded on their next use; dropping them here
        // also forgets deleted tenants.
        cache.retain(|_, (g, _)| *g == generation);
        cache.insert(tenant.to_string(), (generation, signer.clone()));
        Ok(signer)
    }
}
