//! Failed sign-ins per account (S40): how many fell in the current window, and until when the
//! account is held. Accounts are named by the SHA-256 of their normalized name, so a made-up
//! email is counted exactly like a real one (S41) without being stored.

use serde::{Deserialize, Serialize};

use crate::table::{Row, StrTable};
use crate::tables;

/// The lockout rules a proposal carries, so every node applies the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutPolicy {
    /// Failures within `window_ms` that hold the account.
    pub limit: u32,
    pub window_ms: i64,
    /// The first hold; each next one doubles, up to `max_hold_ms`.
    pub first_hold_ms: i64,
    pub max_hold_ms: i64,
    /// A record quiet this long (and not held) is forgotten, and with it the doubling.
    pub forget_after_ms: i64,
}

impl LockoutPolicy {
    /// The hold after `lockouts` earlier ones: doubling, capped.
    pub fn hold_ms(&self, lockouts: u32) -> i64 {
        self.first_hold_ms.saturating_mul(1i64 << lockouts.min(40)).min(self.max_hold_ms).max(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutRecord {
    pub v: u8,
    pub tenant: String,
    /// SHA-256 of the account name (the normalized email), lowercase hex: the table key.
    pub account_sha256: String,
    /// Failures counted since `window_started_ms`; never more than the policy's limit.
    pub failures: u32,
    pub window_started_ms: i64,
    pub last_failure_ms: i64,
    /// How many holds the account had since it was last quiet or signed in.
    pub lockouts: u32,
    /// No password is checked for the account before this time.
    pub held_until_ms: i64,
}

impl LockoutRecord {
    pub fn new(tenant: &str, account_sha256: &str) -> LockoutRecord {
        LockoutRecord {
            v: 1,
            tenant: tenant.to_string(),
            account_sha256: account_sha256.to_string(),
            failures: 0,
            window_started_ms: 0,
            last_failure_ms: 0,
            lockouts: 0,
            held_until_ms: 0,
        }
    }

    /// The failures that still count at `now_ms`.
    pub fn failures_at(&self, now_ms: i64, policy: &LockoutPolicy) -> u32 {
        if now_ms - self.window_started_ms < policy.window_ms {
            self.failures
        } else {
            0
        }
    }

    /// Adds `count` failures, the last at `last_ms`; holds the account once they reach the
    /// limit. Counting starts afresh after a hold, and the next hold is twice as long.
    pub fn count(&mut self, count: u32, last_ms: i64, policy: &LockoutPolicy) {
        if last_ms - self.last_failure_ms >= policy.forget_after_ms {
            self.lockouts = 0;
        }
        if self.failures_at(last_ms, policy) == 0 {
            self.failures = 0;
            self.window_started_ms = last_ms;
        }
        self.failures = self.failures.saturating_add(count).min(policy.limit.max(1));
        self.last_failure_ms = self.last_failure_ms.max(last_ms);
        if self.failures >= policy.limit.max(1) {
            self.held_until_ms = self.held_until_ms.max(last_ms + policy.hold_ms(self.lockouts));
            self.lockouts = self.lockouts.saturating_add(1);
            self.failures = 0;
            self.window_started_ms = last_ms;
        }
    }

    /// Whether nothing of the record matters any more at `now_ms`: not held, and either quiet
    /// for `forget_after_ms` or never held with its failures out of the window (so failures
    /// against made-up emails go after the window, not after a day).
    pub fn forgotten_at(&self, now_ms: i64, policy: &LockoutPolicy) -> bool {
        let quiet = now_ms - self.last_failure_ms >= policy.forget_after_ms;
        let never_held = self.lockouts == 0 && self.failures_at(now_ms, policy) == 0;
        self.held_until_ms <= now_ms && (quiet || never_held)
    }
}

pub fn lockout_key(tenant: &str, account_sha256: &str) -> String {
    format!("{tenant}/{account_sha256}")
}

impl Row for LockoutRecord {
    const TABLE: StrTable = tables::LOCKOUTS;
    const NAME: &'static str = "lockouts";
    fn key(&self) -> String {
        lockout_key(&self.tenant, &self.account_sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: LockoutPolicy = LockoutPolicy {
        limit: 3,
        window_ms: 60_000,
        first_hold_ms: 1_000,
        max_hold_ms: 5_000,
        forget_after_ms: 600_000,
    };

    #[test]
    fn holds_double_up_to_the_cap_and_end() {
        let mut r = LockoutRecord::new("t", "a");
        r.count(2, 10_000, &POLICY);
        assert_eq!((r.failures, r.held_until_ms), (2, 0), "under the limit: counted, not held");
        r.count(5, 11_000, &POLICY);
        assert_eq!((r.failures, r.held_until_ms, r.lockouts), (0, 12_000, 1), "the limit holds for the first hold");
        r.count(3, 13_000, &POLICY);
        assert_eq!(r.held_until_ms, 15_000, "the second hold is twice as long");
        r.count(3, 16_000, &POLICY);
        r.count(3, 21_000, &POLICY);
        assert_eq!(r.held_until_ms, 26_000, "capped at the longest hold");
        assert!(!r.forgotten_at(26_000 + 1, &POLICY), "the doubling is remembered for a while");
        assert!(r.forgotten_at(21_000 + 600_000, &POLICY));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut r = LockoutRecord::new("t", "a");
        r.count(2, 0, &POLICY);
        r.count(2, 61_000, &POLICY);
        assert_eq!((r.failures, r.held_until_ms), (2, 0));
        assert_eq!(r.failures_at(200_000, &POLICY), 0);
    }
}
