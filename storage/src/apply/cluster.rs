//! The cluster record's growth: the node intermediate (`cluster init`) and one-time join
//! tokens, redeemed once cluster-wide because redemption is a raft command.

use redb::ReadableTable;

use super::{writes, Planned, Tables};
use crate::codec;
use crate::command::{Applied, Rejection};
use crate::model::cluster::{join_token_key, retired_node_key, JOIN_TOKEN_PREFIX};
use crate::model::{CaRecord, ClusterRecord, JoinTokenRecord};
use crate::{tables, StoreError};

/// Join tokens kept at most; expired ones are forgotten first, so the bound only stops an
/// operator minting tokens in a loop.
pub const MAX_JOIN_TOKENS: usize = 64;

fn cluster(t: &Tables<'_>) -> Result<Option<ClusterRecord>, StoreError> {
    let key = tables::meta_keys::CLUSTER;
    t.meta.get(key)?.map(|v| codec::decode("meta", key, v.value())).transpose()
}

fn join_tokens(t: &Tables<'_>) -> Result<Vec<JoinTokenRecord>, StoreError> {
    let mut found = Vec::new();
    for row in t.meta.range(JOIN_TOKEN_PREFIX..)? {
        let (key, value) = row?;
        if !key.value().starts_with(JOIN_TOKEN_PREFIX) {
            break;
        }
        found.push(codec::decode("meta", key.value(), value.value())?);
    }
    Ok(found)
}

pub(super) fn init<'c>(t: &Tables<'_>, node_ca: &'c CaRecord) -> Planned<'c> {
    let Some(mut record) = cluster(t)? else {
        return Err(Rejection::NotBootstrapped.into());
    };
    if record.node_ca.is_some() {
        return Err(Rejection::ClusterAlreadyInitialised.into());
    }
    writes(move |t| {
        record.node_ca = Some(node_ca.clone());
        t.meta.insert(tables::meta_keys::CLUSTER, codec::encode(&record).as_slice())?;
        Ok(Applied::ClusterInitialised)
    })
}

pub(super) fn retire_node<'c>(node_id: u64, now_ms: i64) -> Planned<'c> {
    writes(move |t| {
        t.meta.insert(retired_node_key(node_id).as_str(), now_ms.to_be_bytes().as_slice())?;
        Ok(Applied::NodeRetired)
    })
}

pub(super) fn issue_join_token<'c>(t: &Tables<'_>, token: &'c JoinTokenRecord, now_ms: i64) -> Planned<'c> {
    if cluster(t)?.and_then(|c| c.node_ca).is_none() {
        return Err(Rejection::ClusterNotInitialised.into());
    }
    let existing = join_tokens(t)?;
    let stale: Vec<String> = existing.iter().filter(|k| !k.usable_at(now_ms)).map(|k| join_token_key(&k.id)).collect();
    if existing.len() - stale.len() >= MAX_JOIN_TOKENS || existing.iter().any(|k| k.id == token.id) {
        let what = format!("at most {MAX_JOIN_TOKENS} unused join tokens, each with a new id");
        return Err(Rejection::Inconsistent { what }.into());
    }
    writes(move |t| {
        for key in &stale {
            t.meta.remove(key.as_str())?;
        }
        t.meta.insert(join_token_key(&token.id).as_str(), codec::encode(token).as_slice())?;
        Ok(Applied::JoinTokenIssued { id: token.id.clone() })
    })
}

pub(super) fn redeem_join_token<'c>(
    t: &Tables<'_>,
    id: &'c str,
    secret_sha256: &'c str,
    node_id: u64,
    now_ms: i64,
) -> Planned<'c> {
    let key = join_token_key(id);
    let stored = t.meta.get(key.as_str()).map_err(StoreError::from)?;
    let found: Option<JoinTokenRecord> = stored.map(|v| codec::decode("meta", &key, v.value())).transpose()?;
    let Some(mut token) = found.filter(|k| k.secret_sha256 == secret_sha256 && k.usable_at(now_ms)) else {
        return Err(Rejection::JoinTokenInvalid.into());
    };
    writes(move |t| {
        token.redeemed_by = Some(node_id);
        t.meta.insert(key.as_str(), codec::encode(&token).as_slice())?;
        Ok(Applied::JoinTokenRedeemed { id: id.to_string() })
    })
}
