//! Failed sign-ins per account and the holds they earn (S40). The counts arrive coalesced
//! (one command per window for every account that failed in it), so a flood of wrong
//! passwords costs one raft entry per window, not one per attempt.

use super::{writes, Planned, Tables};
use crate::command::{Applied, LoginFailures};
use crate::model::lockout::{lockout_key, LockoutPolicy, LockoutRecord};

pub(super) fn record<'c>(t: &Tables<'_>, policy: &'c LockoutPolicy, failures: &'c [LoginFailures]) -> Planned<'c> {
    let mut updated = Vec::with_capacity(failures.len());
    for f in failures {
        // A tenant deleted since the failures were seen has nothing left to hold.
        if t.tenants.get(&f.tenant)?.is_none() {
            continue;
        }
        let key = lockout_key(&f.tenant, &f.account_sha256);
        let mut record = t.lockouts.get(&key)?.unwrap_or_else(|| LockoutRecord::new(&f.tenant, &f.account_sha256));
        let held_before = record.held_until_ms;
        record.count(f.count, f.last_ms, policy);
        updated.push((record.held_until_ms > held_before, record));
    }
    writes(move |t| {
        let mut held = 0;
        for (newly_held, record) in &updated {
            held += u64::from(*newly_held);
            t.lockouts.put(record)?;
        }
        Ok(Applied::LoginFailuresCounted { held })
    })
}

pub(super) fn clear<'c>(tenant: &'c str, account_sha256: &'c str) -> Planned<'c> {
    writes(move |t| {
        t.lockouts.delete(&lockout_key(tenant, account_sha256))?;
        Ok(Applied::LoginFailuresCleared)
    })
}

pub(super) fn prune<'c>(policy: &'c LockoutPolicy, now_ms: i64) -> Planned<'c> {
    writes(move |t| {
        let count = t.lockouts.delete_under("", |r| r.forgotten_at(now_ms, policy))? as u64;
        Ok(Applied::LockoutsPruned { count })
    })
}
