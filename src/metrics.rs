//! Prometheus metrics: request counters and latencies, raft gauges, storage and audit sizes.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub tenant: String,
    pub grant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub tenant: String,
    pub method: String,
    pub result: String,
}

/// Sampled values, set at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sample {
    pub raft_term: u64,
    pub raft_is_leader: bool,
    pub raft_commit_index: u64,
    pub raft_applied_index: u64,
    pub db_size_bytes: u64,
    pub audit_entries: u64,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    pub tokens_issued: Family<TokenLabels, Counter>,
    pub logins: Family<LoginLabels, Counter>,
    pub login_duration: Histogram,
    raft_term: Gauge<i64, std::sync::atomic::AtomicI64>,
    raft_is_leader: Gauge<i64, std::sync::atomic::AtomicI64>,
    raft_commit_index: Gauge<i64, std::sync::atomic::AtomicI64>,
    raft_applied_index: Gauge<i64, std::sync::atomic::AtomicI64>,
    db_size_bytes: Gauge<i64, std::sync::atomic::AtomicI64>,
    audit_entries: Gauge<i64, std::sync::atomic::AtomicI64>,
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::<RequestLabels, Counter>::default();
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.5, 12))
        });
        let tokens_issued = Family::<TokenLabels, Counter>::default();
        let logins = Family::<LoginLabels, Counter>::default();
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            http_requests,
            http_duration,
            tokens_issued,
            logins,
            login_duration: Histogram::new(exponential_buckets(0.002, 2.0, 12)),
            raft_term: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_commit_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            db_size_bytes: Gauge::default(),
            audit_entries: Gauge::default(),
        };
        let r = &mut registry;
        r.register("gatehouse_http_requests", "HTTP requests by route, method and status", m.http_requests.clone());
        r.register("gatehouse_http_request_duration_seconds", "HTTP request latency by route", m.http_duration.clone());
        r.register("gatehouse_tokens_issued", "Tokens issued by tenant and grant", m.tokens_issued.clone());
        r.register("gatehouse_logins", "Login attempts by tenant, method and result", m.logins.clone());
        r.register(
            "gatehouse_login_duration_seconds",
            "Time to answer a sign-in (password checks included)",
            m.login_duration.clone(),
        );
        r.register("gatehouse_raft_term", "Current raft term", m.raft_term.clone());
        r.register("gatehouse_raft_is_leader", "1 when this node is the raft leader", m.raft_is_leader.clone());
        r.register("gatehouse_raft_commit_index", "Last committed raft log index", m.raft_commit_index.clone());
        r.register("gatehouse_raft_applied_index", "Last applied raft log index", m.raft_applied_index.clone());
        r.register("gatehouse_db_size_bytes", "Size of the database file", m.db_size_bytes.clone());
        // A gauge sampled from the chain's head (it only grows); named as the design's counter.
        r.register("gatehouse_audit_entries_total", "Entries in the audit chain", m.audit_entries.clone());
        if let Ok(mut reg) = m.registry.lock() {
            *reg = registry;
        }
        m
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.http_requests
            .get_or_create(&RequestLabels { route: route.into(), method: method.into(), status: status.to_string() })
            .inc();
        self.http_duration.get_or_create(&RouteLabels { route: route.into() }).observe(took.as_secs_f64());
    }

    pub fn count_token_issued(&self, tenant: &str, grant: &str) {
        self.tokens_issued.get_or_create(&TokenLabels { tenant: tenant.into(), grant: grant.into() }).inc();
    }

    /// Renders the text format after setting the sampled values.
    pub fn render(&self, s: Sample) -> String {
        self.raft_term.set(as_i64(s.raft_term));
        self.raft_is_leader.set(i64::from(s.raft_is_leader));
        self.raft_commit_index.set(as_i64(s.raft_commit_index));
        self.raft_applied_index.set(as_i64(s.raft_applied_index));
        self.db_size_bytes.set(as_i64(s.db_size_bytes));
        self.audit_entries.set(as_i64(s.audit_entries));
        let mut out = String::new();
        if let Ok(reg) = self.registry.lock() {
            if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
                tracing::error!("encoding metrics: {e}");
            }
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
