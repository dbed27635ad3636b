//! Failed authentications, coalesced: identical failures (same tenant, endpoint, presented
//! client, source and reason) within a window become one audit entry with a count and the
//! first and last time, written in one raft entry per window (A11 without a durable write per
//! anonymous request). Memory is bounded: past `max_tracked_keys` distinct failures in a
//! window, new ones are folded into one entry per tenant, endpoint and reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_storage::{AuthFailures, Command, Proposal};

use crate::app::AppState;

/// Longest client id kept in an entry (the rest of a longer one is dropped).
const MAX_CLIENT_ID: usize = 128;
/// Failures per raft entry at most.
const ENTRIES_PER_COMMAND: usize = 1024;
/// Distinct entries per window at most (past it, failures fold into one entry per tenant,
/// endpoint and reason): what a window may add to the audit, whatever the traffic.
const ENTRIES_PER_WINDOW: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: String,
    endpoint: &'static str,
    client_id: String,
    source: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    count: u64,
    first_ms: i64,
    last_ms: i64,
}

/// The failures seen since the last flush.
pub struct FailureAudit {
    pending: Mutex<HashMap<Key, Tally>>,
    max_keys: usize,
}

impl FailureAudit {
    pub fn new(max_keys: usize) -> FailureAudit {
        FailureAudit { pending: Mutex::new(HashMap::new()), max_keys: max_keys.min(ENTRIES_PER_WINDOW) }
    }

    /// Counts one failure. `tenant` is always one that exists (requests for an unknown tenant
    /// are refused before any authentication).
    pub fn record(
        &self,
        at_ms: i64,
        tenant: &str,
        endpoint: &'static str,
        client_id: &str,
        source: Option<std::net::IpAddr>,
        reason: &'static str,
    ) {
        let mut key = Key {
            tenant: tenant.to_string(),
            endpoint,
            client_id: client_id.chars().take(MAX_CLIENT_ID).collect(),
            source: source.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            reason,
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= self.max_keys && !pending.contains_key(&key) {
            key.client_id = "*".into();
            key.source = "*".into();
        }
        let tally = pending.entry(key).or_insert(Tally { count: 0, first_ms: at_ms, last_ms: at_ms });
        tally.count += 1;
        tally.first_ms = tally.first_ms.min(at_ms);
        tally.last_ms = tally.last_ms.max(at_ms);
    }

    fn take(&self) -> Vec<AuthFailures> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let mut out: Vec<AuthFailures> = pending
            .into_iter()
            .map(|(k, t)| AuthFailures {
                tenant: k.tenant,
                endpoint: k.endpoint.to_string(),
                client_id: k.client_id,
                source: k.source,
                reason: k.reason.to_string(),
                count: t.count,
                first_ms: t.first_ms,
                last_ms: t.last_ms,
            })
            .collect();
        // A stable order, so the audit reads the same on every node and in every run.
        out.sort_by(|a, b| (a.first_ms, &a.tenant, &a.client_id).cmp(&(b.first_ms, &b.tenant, &b.client_id)));
        out
    }

    /// Writes what has been counted, one raft entry per chunk.
    pub async fn flush(&self, app: &AppState) {
        let failures = self.take();
        for chunk in failures.chunks(ENTRIES_PER_COMMAND) {
            let command = Command::RecordAuthFailures(chunk.to_vec());
            let proposal = Proposal { origin: None, at_ms: app.clock.now_ms(), actor: "anonymous".into(), command };
            if let Err(e) = app.write(proposal).await {
                tracing::warn!("{} coalesced authentication failures were not audited: {e}", chunk.len());
            }
        }
    }
}

/// Flushes the failures every `window`, and once more when `stop` turns true.
pub async fn flush_job(app: Arc<AppState>, window: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let stopping = tokio::select! {
            _ = stop.wait_for(|s| *s) => true,
            _ = tokio::time::sleep(window) => false,
        };
        app.auth_failures.flush(&app).await;
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_failures_are_one_entry_with_a_count_and_memory_stays_bounded() {
        let audit = FailureAudit::new(4);
        let ip = Some("192.0.2.7".parse().unwrap());
        for t in 0..100 {
            audit.record(1_000 + t, "acme", "token", "c-1", ip, "invalid_client");
        }
        audit.record(5_000, "acme", "token", "c-2", ip, "invalid_client");
        for i in 0..1000 {
            audit.record(6_000, "acme", "token", &format!("made-up-{i}"), ip, "invalid_client");
        }
        let out = audit.take();
        assert!(out.len() <= 5, "{out:?}");
        let c1 = out.iter().find(|f| f.client_id == "c-1").unwrap();
        assert_eq!((c1.count, c1.first_ms, c1.last_ms), (100, 1_000, 1_099));
        let folded = out.iter().find(|f| f.client_id == "*").unwrap();
        assert!(folded.count >= 997, "{folded:?}");
        assert!(audit.take().is_empty(), "taken once");
    }
}
