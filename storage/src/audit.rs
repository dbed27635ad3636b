//! The audit chain: append inside the command's write transaction, verify offline.
//!
//! Entry bytes, all integers big-endian, each text field `len u32 | UTF-8`:
//! - version 2 (written now): `0x02 | seq u64 | at_ms i64 | actor | tenant | action | target |
//!   outcome | request_id | peer | prev_hash[32] | hash[32]`,
//!   `hash = SHA-256("audit-v2\0" | prev_hash | canonical)`;
//! - version 1 (older entries, still verified): the same without `request_id` and `peer`,
//!   hashed with `"audit-v1\0"`.
//!
//! The canonical bytes are everything before `prev_hash`.

use redb::{ReadableTable, Table};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{codec, tables, StoreError};

/// The version new entries are written in.
pub const ENTRY_VERSION: u8 = 2;
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// What a command asks to be recorded; the chain fields are added on append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDraft {
    pub at_ms: i64,
    pub actor: String,
    pub tenant: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    /// The request that caused it, when one did.
    pub origin: Option<crate::command::Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// The byte layout the entry was written in (1 or 2).
    pub version: u8,
    pub seq: u64,
    pub at_ms: i64,
    pub actor: String,
    pub tenant: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    /// The request id (`X-Request-Id`) of the request that caused it; empty when none did.
    pub request_id: String,
    /// The peer address of that request; empty when none did.
    pub peer: String,
    #[serde(with = "hex_bytes")]
    pub prev_hash: [u8; 32],
    #[serde(with = "hex_bytes")]
    pub hash: [u8; 32],
}

/// The record beside the chain that makes a deleted last entry visible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub v: u8,
    pub count: u64,
    pub last_hash: String,
}

impl AuditHead {
    pub fn empty() -> Self {
        AuditHead { v: 1, count: 0, last_hash: hex::encode(GENESIS_HASH) }
    }
}

impl AuditEntry {
    /// The bytes the hash covers (besides the previous hash).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.actor.len() + self.target.len());
        out.push(self.version);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.at_ms.to_be_bytes());
        let mut fields = vec![&self.actor, &self.tenant, &self.action, &self.target, &self.outcome];
        if self.version >= 2 {
            fields.extend([&self.request_id, &self.peer]);
        }
        for field in fields {
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }

    pub fn compute_hash(&self) -> [u8; 32] {
        let domain: &[u8] = if self.version >= 2 { b"audit-v2\0" } else { b"audit-v1\0" };
        let mut h = Sha256::new();
        h.update(domain);
        h.update(self.prev_hash);
        h.update(self.canonical_bytes());
        h.finalize().into()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.canonical_bytes();
        out.extend_from_slice(&self.prev_hash);
        out.extend_from_slice(&self.hash);
        out
    }

    /// Parses stored bytes; `None` when they are not a well-formed version 1 or 2 entry.
    pub fn from_bytes(bytes: &[u8]) -> Option<AuditEntry> {
        let mut r = ByteReader { rest: bytes };
        let version = *r.take(1)?.first()?;
        if !(1..=2).contains(&version) {
            return None;
        }
        let seq = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let at_ms = i64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let mut text = || -> Option<String> {
            let len = u32::from_be_bytes(r.take(4)?.try_into().ok()?) as usize;
            String::from_utf8(r.take(len)?.to_vec()).ok()
        };
        let (actor, tenant, action, target, outcome) = (text()?, text()?, text()?, text()?, text()?);
        let (request_id, peer) = if version >= 2 { (text()?, text()?) } else { (String::new(), String::new()) };
        let prev_hash: [u8; 32] = r.take(32)?.try_into().ok()?;
        let hash: [u8; 32] = r.take(32)?.try_into().ok()?;
        r.rest.is_empty().then_some(AuditEntry {
            version,
            seq,
            at_ms,
            actor,
            tenant,
            action,
            target,
            outcome,
            request_id,
            peer,
            prev_hash,
            hash,
        })
    }
}

struct ByteReader<'a> {
    rest: &'a [u8],
}

impl<'a> ByteReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }
}

pub(crate) fn read_head(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<AuditHead, StoreError> {
    match meta.get(tables::meta_keys::AUDIT_HEAD)? {
        Some(v) => codec::decode("meta", tables::meta_keys::AUDIT_HEAD, v.value()),
        None => Ok(AuditHead::empty()),
    }
}

/// Appends one entry and moves the head, inside the caller's write transaction.
pub fn append(
    meta: &mut Table<&'static str, &'static [u8]>,
    audit: &mut Table<u64, &'static [u8]>,
    draft: AuditDraft,
) -> Result<AuditEntry, StoreError> {
    let head = read_head(meta)?;
    let prev_hash = decode_hash(&head.last_hash)
        .ok_or_else(|| StoreError::Database("the audit head's last hash is malformed".into()))?;
    let (request_id, peer) = draft.origin.map(|o| (o.request_id, o.peer)).unwrap_or_default();
    let mut entry = AuditEntry {
        version: ENTRY_VERSION,
        seq: head.count + 1,
        at_ms: draft.at_ms,
        actor: draft.actor,
        tenant: draft.tenant,
        action: draft.action,
        target: draft.target,
        outcome: draft.outcome,
        request_id,
        peer,
        prev_hash,
        hash: [0; 32],
    };
    entry.hash = entry.compute_hash();
    audit.insert(entry.seq, entry.to_bytes().as_slice())?;
    let head = AuditHead { v: 1, count: entry.seq, last_hash: hex::encode(entry.hash) };
    meta.insert(tables::meta_keys::AUDIT_HEAD, codec::encode(&head).as_slice())?;
    Ok(entry)
}

fn decode_hash(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// The result of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub entries: u64,
    pub last_hash: String,
    /// The first problem found, if any.
    pub failure: Option<VerifyFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyFailure {
    /// The first sequence number that does not verify.
    pub seq: u64,
    pub reason: String,
}

/// Walks the chain from genesis and checks every link and the head record.
pub fn verify(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    audit: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<VerifyReport, StoreError> {
    let head = read_head(meta)?;
    let mut expected_seq = 1u64;
    let mut running = GENESIS_HASH;
    let fail = |seq: u64, reason: String, entries: u64, running: [u8; 32]| VerifyReport {
        entries,
        last_hash: hex::encode(running),
        failure: Some(VerifyFailure { seq, reason }),
    };
    for item in audit.iter()? {
        let (key, value) = item?;
        let key = key.value();
        let checked = expected_seq - 1;
        if key != expected_seq {
            return Ok(fail(
                expected_seq,
                format!("entry {expected_seq} is missing (next stored is {key})"),
                checked,
                running,
            ));
        }
        let Some(entry) = AuditEntry::from_bytes(value.value()) else {
            return Ok(fail(key, format!("entry {key} is not a well-formed audit entry"), checked, running));
        };
        if entry.seq != key {
            return Ok(fail(
                key,
                format!("entry stored at {key} claims sequence number {}", entry.seq),
                checked,
                running,
            ));
        }
        if entry.prev_hash != running {
            return Ok(fail(key, format!("entry {key} does not link to the entry before it"), checked, running));
        }
        if entry.compute_hash() != entry.hash {
            return Ok(fail(
                key,
                format!("entry {key} has been altered: its hash does not match its content"),
                checked,
                running,
            ));
        }
        running = entry.hash;
        expected_seq += 1;
    }
    let count = expected_seq - 1;
    if head.count != count {
        let seq = head.count.min(count) + 1;
        return Ok(fail(
            seq,
            format!("the head records {} entries but the chain holds {count}", head.count),
            count,
            running,
        ));
    }
    if decode_hash(&head.last_hash) != Some(running) {
        return Ok(fail(count.max(1), "the head's last hash does not match the chain".into(), count, running));
    }
    Ok(VerifyReport { entries: count, last_hash: hex::encode(running), failure: None })
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }
}
