//! OAuth clients of a tenant.

use super::access::{keeps_an_owner, remove_bindings_of};
use super::{tenants, writes, Planned, Stop, Tables};
use crate::command::{Applied, Rejection};
use crate::model::client::client_key;
use crate::model::{ClientRecord, ClientStatus};
use crate::table::Row;

/// The client, refused when unknown.
pub(super) fn existing(t: &Tables<'_>, tenant: &str, client_id: &str) -> Result<ClientRecord, Stop> {
    t.clients
        .get(&client_key(tenant, client_id))?
        .ok_or_else(|| Rejection::UnknownClient { tenant: tenant.to_string(), client_id: client_id.to_string() }.into())
}

pub(super) fn create<'c>(t: &Tables<'_>, c: &'c ClientRecord) -> Planned<'c> {
    tenants::active(t, &c.tenant)?;
    if t.clients.contains(&c.key())? {
        return Err(Rejection::ClientExists { tenant: c.tenant.clone(), client_id: c.client_id.clone() }.into());
    }
    writes(move |t| {
        t.clients.put(c)?;
        Ok(Applied::ClientCreated { client_id: c.client_id.clone() })
    })
}

/// Replaces a client's settings when its revision is still `expected_revision`; its kind and
/// secret never change this way, and disabling the last active owner is refused.
pub(super) fn update<'c>(t: &Tables<'_>, client: &'c ClientRecord, expected_revision: u64) -> Planned<'c> {
    let stored = existing(t, &client.tenant, &client.client_id)?;
    if stored.revision != expected_revision || client.revision != stored.revision + 1 {
        return Err(Rejection::RevisionMismatch { current: stored.revision }.into());
    }
    if stored.secret_sha256 != client.secret_sha256 || stored.kind != client.kind {
        let what = "an update cannot change a client's kind or secret".to_string();
        return Err(Rejection::Inconsistent { what }.into());
    }
    if client.status != ClientStatus::Active && stored.status == ClientStatus::Active {
        let subject = format!("client:{}", client.client_id);
        keeps_an_owner(t, &client.tenant, |b| b.subject == subject)?;
    }
    writes(move |t| {
        t.clients.put(client)?;
        Ok(Applied::ClientUpdated { client_id: client.client_id.clone(), revision: client.revision })
    })
}

/// Deletes a client with its bindings, so a later client can never inherit them.
pub(super) fn delete<'c>(t: &Tables<'_>, tenant: &'c str, client_id: &'c str) -> Planned<'c> {
    existing(t, tenant, client_id)?;
    let subject = format!("client:{client_id}");
    keeps_an_owner(t, tenant, |b| b.subject == subject)?;
    writes(move |t| {
        t.clients.delete(&client_key(tenant, client_id))?;
        remove_bindings_of(t, tenant, &subject)?;
        t.consents.delete_under(&format!("{tenant}/"), |c| c.client_id == client_id)?;
        t.refresh_families.delete_under(&format!("{tenant}/"), |f| f.client_id == client_id)?;
        Ok(Applied::ClientDeleted { client_id: client_id.to_string() })
    })
}
