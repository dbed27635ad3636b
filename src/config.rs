//! Configuration in layers: TOML file (unknown keys refused), then `GATEHOUSE_` environment
//! variables (`__` separates levels), then flags and `--set key=value`; one validated `Config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Environment variables read directly rather than as config keys.
const NON_CONFIG_ENV: [&str; 1] = ["KEK"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the node keeps its database, TLS material and control socket.
    pub data_dir: PathBuf,
    /// Address the HTTPS server binds. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// The URL clients use; the `default` tenant's issuer. Derived from `listen` when unset.
    pub public_url: Option<String>,
    /// Request bodies larger than this get 413 before parsing.
    pub max_body_bytes: usize,
    pub http: HttpConfig,
    pub rate_limits: RateLimitConfig,
    pub management: ManagementConfig,
    pub tls: TlsConfig,
    pub cluster: ClusterConfig,
    pub keys: KeysConfig,
    pub oauth: OAuthConfig,
    pub storage: StorageConfig,
    pub passwords: PasswordConfig,
    pub sessions: SessionConfig,
    pub email: EmailConfig,
    pub webauthn: WebauthnConfig,
    pub log: LogConfig,
}

/// What a connection to the HTTPS port may cost the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// A request head must arrive in full within this many seconds.
    pub header_read_timeout_secs: u64,
    /// A request body must arrive in full within this many seconds (408 otherwise).
    pub body_read_timeout_secs: u64,
    /// A connection that moves no byte for this long is closed.
    pub idle_timeout_secs: u64,
    /// The request line and headers together may take at most this many bytes (431 beyond).
    pub max_header_bytes: usize,
    /// A request may carry at most this many headers (431 beyond).
    pub max_headers: usize,
    /// Connections open at once at most; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Connections open at once from one source address at most.
    pub max_connections_per_source: usize,
    /// `Strict-Transport-Security`: `auto` sends it unless the public URL's host is
    /// `localhost` or a loopback address; `always` or `never` decide outright.
    pub hsts: HstsMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HstsMode {
    Auto,
    Always,
    Never,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_connections: 4096,
            max_connections_per_source: 256,
            hsts: HstsMode::Auto,
        }
    }
}

/// Rate limits of the OAuth and admin endpoints (429 with `Retry-After` beyond them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Turns every limit off (for benchmarks against a peer; never in production).
    pub enabled: bool,
    /// Requests per second one source address may send to `/oauth2/*` and `/admin/v1`.
    pub per_source_per_sec: u32,
    /// How many requests above that rate a source may send at once.
    pub per_source_burst: u32,
    /// Failed authentications per minute one source address may have before it gets 429.
    pub failures_per_source_per_min: u32,
    /// Failed authentications per minute one client id may have before it gets 429.
    pub failures_per_client_per_min: u32,
    /// Self-registrations per minute one source address may make before it gets 429.
    pub registrations_per_source_per_min: u32,
    /// Email requests (sign-in code, sign-in link, password reset) per minute one source
    /// address may make before it gets 429.
    pub email_requests_per_source_per_min: u32,
    /// Messages one account may be sent per hour; further requests for it send nothing.
    pub emails_per_account_per_hour: u32,
    /// How many source addresses and client ids the limiter remembers at most; past that, new
    /// ones share one budget until the old ones are forgotten.
    pub max_tracked_keys: usize,
    /// Identical failed authentications (same client, source and reason) within this window
    /// are written as one audit entry with a count.
    pub failure_audit_window_secs: u64,
    /// Failed sign-ins of one account (known or not) within `lockout_window_secs`, from any
    /// source, that hold it: no password is checked for it during the hold (S40).
    pub lockout_after_failures: u32,
    pub lockout_window_secs: u64,
    /// The first hold; each next one doubles, up to `lockout_max_hold_secs`.
    pub lockout_first_hold_secs: u64,
    pub lockout_max_hold_secs: u64,
    /// An account that had no failure for this long starts again from the first hold.
    pub lockout_forget_after_secs: u64,
    /// Failures are written through raft at most this often, all accounts in one entry (an
    /// account that reaches its limit is written at once).
    pub lockout_flush_ms: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            per_source_per_sec: 50_000,
            per_source_burst: 10_000,
            failures_per_source_per_min: 30,
            failures_per_client_per_min: 30,
            registrations_per_source_per_min: 10,
            email_requests_per_source_per_min: 10,
            emails_per_account_per_hour: 10,
            max_tracked_keys: 100_000,
            failure_audit_window_secs: 10,
            lockout_after_failures: 10,
            lockout_window_secs: 15 * 60,
            lockout_first_hold_secs: 60,
            lockout_max_hold_secs: 3600,
            lockout_forget_after_secs: 24 * 3600,
            lockout_flush_ms: 500,
        }
    }
}

/// End-user sign-in sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// A session ends this long after its sign-in, however much it is used.
    pub absolute_timeout_secs: u64,
    /// A session ends when unused this long.
    pub idle_timeout_secs: u64,
    /// Sign-in factors (an authenticator, a passkey) change only within this long of a
    /// sign-in; older sessions sign in again first (S48). Checked by the node serving the
    /// request, so keep it the same on every node (the timeouts are stamped on each session).
    pub recent_sign_in_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig { absolute_timeout_secs: 12 * 3600, idle_timeout_secs: 30 * 60, recent_sign_in_secs: 10 * 60 }
    }
}

/// Passkeys (WebAuthn): the relying party end users' browsers see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebauthnConfig {
    /// The relying party id, a host name (never an IP address); the public URL's host when unset.
    /// The public URL's origin must be it or one of its subdomains.
    pub rp_id: Option<String>,
    /// The name authenticators show.
    pub rp_name: String,
    /// Origins accepted besides the public URL's (another front end on a subdomain, say).
    pub extra_origins: Vec<String>,
}

impl Default for WebauthnConfig {
    fn default() -> Self {
        WebauthnConfig { rp_id: None, rp_name: "Gatehouse".into(), extra_origins: Vec::new() }
    }
}

/// Email: sign-in codes and links, password resets and address checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// The SMTP relay: `smtps://user:pass@host:465` (implicit TLS), `smtp://host:587?tls=required`
    /// (STARTTLS), or `smtp://127.0.0.1:25` (plain, for a local relay). Unset: messages stay in
    /// the dev mailbox, `GET /admin/v1/tenants/{tenant}/mailbox`.
    pub smtp_url: Option<String>,
    /// The sender, `Name <address>` or an address.
    pub from: String,
    /// How long a sign-in code is good for.
    pub code_lifetime_secs: u64,
    /// How long a sign-in, reset or verification link is good for.
    pub link_lifetime_secs: u64,
    /// Email requests waiting to be handled at most; past it, requests get 503.
    pub queue: usize,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            smtp_url: None,
            from: "Gatehouse <no-reply@gatehouse.invalid>".into(),
            code_lifetime_secs: 600,
            link_lifetime_secs: 900,
            queue: 1024,
        }
    }
}

/// The management listener: plain HTTP for metrics and probes, never on the public port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementConfig {
    /// Address of `/metrics`, `/health` and `/ready`. Keep it on loopback or a private
    /// network: metrics name the tenants. Port 0 picks a free port (printed in the banner).
    pub listen: SocketAddr,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig { listen: SocketAddr::from(([127, 0, 0, 1], 9464)) }
    }
}

/// Tokens and the admin API's audience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// The audience every admin API token must carry (fail-closed).
    pub admin_audience: String,
    /// Access token lifetime for clients that do not set their own.
    pub access_token_lifetime_secs: u64,
    /// Lifetime of the platform admin tokens `gatehouse admin token` mints.
    pub admin_token_lifetime_secs: u64,
    /// How long an authorization code may wait for its redemption (at most 600, S5).
    pub authorization_code_lifetime_secs: u64,
    /// A refresh token family unused this long ends.
    pub refresh_token_idle_secs: u64,
    /// A refresh token family ends this long after its grant, used or not.
    pub refresh_token_lifetime_secs: u64,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            admin_audience: "gatehouse-admin".into(),
            access_token_lifetime_secs: 600,
            admin_token_lifetime_secs: 900,
            authorization_code_lifetime_secs: 60,
            refresh_token_idle_secs: 14 * 24 * 3600,
            refresh_token_lifetime_secs: 30 * 24 * 3600,
        }
    }
}

/// The signing-key lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// A rotated key is in JWKS this long before it signs, so verifiers can cache it first.
    pub publish_delay_secs: u64,
    /// The longest lifetime of any token a key signs: a superseded key stays in JWKS this long.
    pub max_token_lifetime_secs: u64,
    /// Rotate each tenant's keys automatically when the active key is this old (0: never).
    pub rotation_interval_secs: u64,
    /// How often the leader checks whether a rotation is due.
    pub rotation_check_secs: u64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            publish_delay_secs: 3600,
            max_token_lifetime_secs: 3600,
            rotation_interval_secs: 90 * 24 * 3600,
            rotation_check_secs: 600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain to serve instead of the generated one.
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the generated server certificate.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Where the node-to-node port (mutual TLS) listens, once the node is a cluster member
    /// (`cluster init` or `cluster join`). A one-node deployment never opens it.
    pub listen: SocketAddr,
    /// The `host:port` peers dial to reach this node's cluster port; `listen` when unset.
    pub advertise: Option<String>,
    /// How long a write or a linearizable read waits for a leader before it is answered 503.
    pub leader_wait_ms: u64,
    /// A node that has heard from no leader for longer than this answers introspection with
    /// 503 and is not ready, so a revocation made elsewhere is never missed for longer.
    pub staleness_ms: u64,
    /// A snapshot of the state is taken after this many log entries, and the log before it
    /// is dropped but for a tail; a node that fell further behind catches up from the snapshot.
    pub snapshot_every_entries: u64,
    /// Join a cluster on first start instead of founding one (what `cluster join` does).
    pub join: Option<JoinConfig>,
}

/// Joining at first start, for automation such as a StatefulSet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinConfig {
    /// The HTTPS URL of a member, e.g. `https://gatehouse-0.gatehouse:8443`.
    pub peer: String,
    /// A file holding the one-time join token (`gatehouse cluster join-token`).
    pub token_file: PathBuf,
}

impl ClusterConfig {
    /// The address recorded in the raft membership for this node.
    pub fn advertised(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| self.listen.to_string())
    }
}

/// Password hashing (argon2id). Stored hashes made with other parameters are upgraded at
/// the next successful sign-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Memory per hash in KiB (at least OWASP's 19456).
    pub argon2_memory_kib: u32,
    /// Passes over that memory (at least 2).
    pub argon2_iterations: u32,
    /// Lanes (1 to 16).
    pub argon2_parallelism: u32,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        PasswordConfig { argon2_memory_kib: 19 * 1024, argon2_iterations: 2, argon2_parallelism: 1 }
    }
}

/// The database file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Memory the database may use for its page cache and write buffer together, in MiB.
    /// Reads beyond it come from the operating system's file cache.
    pub cache_mib: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { cache_mib: gatehouse_storage::store::DEFAULT_CACHE_BYTES / (1024 * 1024) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `gatehouse=debug,info`.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./gatehouse-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_url: Some("https://localhost:8443".into()),
            max_body_bytes: 64 * 1024,
            http: HttpConfig::default(),
            rate_limits: RateLimitConfig::default(),
            management: ManagementConfig::default(),
            tls: TlsConfig::default(),
            cluster: ClusterConfig::default(),
            keys: KeysConfig::default(),
            oauth: OAuthConfig::default(),
            storage: StorageConfig::default(),
            passwords: PasswordConfig::default(),
            sessions: SessionConfig::default(),
            email: EmailConfig::default(),
            webauthn: WebauthnConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8444)),
            advertise: None,
            leader_wait_ms: 5_000,
            staleness_ms: 5_000,
            snapshot_every_entries: 20_000,
            join: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info,openraft=warn".into() }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("--set expects key=value, got {0:?}")]
    BadSet(String),
}

/// What the command line contributes on top of file and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub public_url: Option<String>,
    pub set: Vec<String>,
}

impl Config {
    /// Loads file, environment and overrides, in that order, then validates.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_with_env(overrides, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        // A listen address given without a public URL means "derive it from the bound port".
        let listen_set_without_url = overrides.listen.is_some() && overrides.public_url.is_none();
        if let Some(path) = &overrides.config_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::File { path: path.display().to_string(), reason: e.to_string() })?;
            fig = fig.merge(Toml::string(&text));
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        fig = merge_env(fig, &env);
        if let Some(d) = &overrides.data_dir {
            fig = fig.merge(("data_dir", d.display().to_string()));
        }
        if let Some(l) = overrides.listen {
            fig = fig.merge(("listen", l.to_string()));
        }
        if let Some(u) = &overrides.public_url {
            fig = fig.merge(("public_url", u.clone()));
        }
        for item in &overrides.set {
            let (key, value) = item.split_once('=').ok_or_else(|| ConfigError::BadSet(item.clone()))?;
            fig = fig.merge((key.trim(), parse_value(value)));
        }
        let mut config: Config = fig.extract().map_err(|e| ConfigError::Invalid(flatten_figment(e)))?;
        let defaults = Config::default();
        // A listen address other than the default, with the public URL left at its default,
        // means "derive the public URL from the address actually bound".
        if (listen_set_without_url || config.listen != defaults.listen) && config.public_url == defaults.public_url {
            config.public_url = None;
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.public_url {
            validate_public_url(url)?;
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid("max_body_bytes must be at least 1024".into()));
        }
        let http = &self.http;
        for (name, secs) in [
            ("http.header_read_timeout_secs", http.header_read_timeout_secs),
            ("http.body_read_timeout_secs", http.body_read_timeout_secs),
            ("http.idle_timeout_secs", http.idle_timeout_secs),
        ] {
            if secs == 0 || secs > 3600 {
                return Err(ConfigError::Invalid(format!("{name} must be between 1 and 3600")));
            }
        }
        if !(4096..=1024 * 1024).contains(&http.max_header_bytes) {
            return Err(ConfigError::Invalid("http.max_header_bytes must be between 4096 and 1048576".into()));
        }
        if !(16..=1000).contains(&http.max_headers) {
            return Err(ConfigError::Invalid("http.max_headers must be between 16 and 1000".into()));
        }
        if http.max_connections == 0 || http.max_connections_per_source == 0 {
            return Err(ConfigError::Invalid(
                "http.max_connections and http.max_connections_per_source must be at least 1".into(),
            ));
        }
        let limits = &self.rate_limits;
        for (name, n) in [
            ("rate_limits.per_source_per_sec", limits.per_source_per_sec),
            ("rate_limits.per_source_burst", limits.per_source_burst),
            ("rate_limits.failures_per_source_per_min", limits.failures_per_source_per_min),
            ("rate_limits.failures_per_client_per_min", limits.failures_per_client_per_min),
            ("rate_limits.email_requests_per_source_per_min", limits.email_requests_per_source_per_min),
            ("rate_limits.emails_per_account_per_hour", limits.emails_per_account_per_hour),
        ] {
            if n == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be at least 1 (turn limits off with rate_limits.enabled = false)"
                )));
            }
        }
        if limits.max_tracked_keys < 16 {
            return Err(ConfigError::Invalid("rate_limits.max_tracked_keys must be at least 16".into()));
        }
        if limits.failure_audit_window_secs == 0 || limits.failure_audit_window_secs > 3600 {
            return Err(ConfigError::Invalid(
                "rate_limits.failure_audit_window_secs must be between 1 and 3600".into(),
            ));
        }
        if limits.lockout_after_failures == 0
            || limits.lockout_window_secs == 0
            || limits.lockout_first_hold_secs == 0
            || limits.lockout_first_hold_secs > limits.lockout_max_hold_secs
            || limits.lockout_max_hold_secs > 7 * 24 * 3600
            || limits.lockout_forget_after_secs < limits.lockout_max_hold_secs
            || !(10..=60_000).contains(&limits.lockout_flush_ms)
        {
            return Err(ConfigError::Invalid(
                "rate_limits.lockout_*: after_failures, window_secs and first_hold_secs at least 1; first_hold_secs \
                 at most max_hold_secs (at most a week) and forget_after_secs at least max_hold_secs; flush_ms \
                 10 to 60000"
                    .into(),
            ));
        }
        let s = &self.sessions;
        if !(1..=30 * 86_400).contains(&s.absolute_timeout_secs)
            || !(1..=s.absolute_timeout_secs).contains(&s.idle_timeout_secs)
            || !(1..=s.absolute_timeout_secs).contains(&s.recent_sign_in_secs)
        {
            return Err(ConfigError::Invalid(
                "sessions: absolute_timeout_secs 1 to 2592000 (30 days); idle_timeout_secs and recent_sign_in_secs \
                 1 to absolute_timeout_secs"
                    .into(),
            ));
        }
        let e = &self.email;
        if !(60..=86_400).contains(&e.code_lifetime_secs)
            || !(60..=86_400).contains(&e.link_lifetime_secs)
            || !(1..=1_000_000).contains(&e.queue)
        {
            return Err(ConfigError::Invalid(
                "email: code_lifetime_secs and link_lifetime_secs 60 to 86400, queue 1 to 1000000".into(),
            ));
        }
        if e.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::Invalid(format!("email.from is not an address: {:?}", e.from)));
        }
        if let Some(url) = &e.smtp_url {
            let parsed = url.parse::<poem::http::Uri>().ok();
            if !parsed.is_some_and(|u| matches!(u.scheme_str(), Some("smtp" | "smtps")) && u.host().is_some()) {
                return Err(ConfigError::Invalid(format!(
                    "email.smtp_url must be smtp://host[:port][?tls=required] or smtps://host[:port], not {url:?}"
                )));
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Invalid("tls.cert_file and tls.key_file must be set together".into()));
        }
        let p = &self.passwords;
        if !(19 * 1024..=1024 * 1024).contains(&p.argon2_memory_kib)
            || !(2..=16).contains(&p.argon2_iterations)
            || !(1..=16).contains(&p.argon2_parallelism)
        {
            return Err(ConfigError::Invalid(
                "passwords: argon2_memory_kib 19456 to 1048576, argon2_iterations 2 to 16, argon2_parallelism 1 to 16"
                    .into(),
            ));
        }
        if !(1..=65_536).contains(&self.storage.cache_mib) {
            return Err(ConfigError::Invalid("storage.cache_mib must be between 1 and 65536".into()));
        }
        if self.keys.rotation_check_secs == 0 {
            return Err(ConfigError::Invalid("keys.rotation_check_secs must be at least 1".into()));
        }
        if self.keys.rotation_interval_secs != 0 && self.keys.rotation_interval_secs <= self.keys.publish_delay_secs {
            return Err(ConfigError::Invalid(
                "keys.rotation_interval_secs must be longer than keys.publish_delay_secs (or 0 to turn rotation off)"
                    .into(),
            ));
        }
        let max = self.keys.max_token_lifetime_secs;
        for (name, secs) in [
            ("oauth.access_token_lifetime_secs", self.oauth.access_token_lifetime_secs),
            ("oauth.admin_token_lifetime_secs", self.oauth.admin_token_lifetime_secs),
        ] {
            // A key stays in JWKS for keys.max_token_lifetime_secs after it stops signing, so
            // no token may outlive that.
            if secs == 0 || secs > max {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be between 1 and keys.max_token_lifetime_secs ({max})"
                )));
            }
        }
        let (idle, lifetime) = (self.oauth.refresh_token_idle_secs, self.oauth.refresh_token_lifetime_secs);
        if idle == 0 || lifetime < idle || lifetime > 366 * 24 * 3600 {
            return Err(ConfigError::Invalid(
                "oauth.refresh_token_idle_secs must be at least 1 and at most oauth.refresh_token_lifetime_secs, which is at most 366 days"
                    .into(),
            ));
        }
        if !(1..=600).contains(&self.oauth.authorization_code_lifetime_secs) {
            return Err(ConfigError::Invalid("oauth.authorization_code_lifetime_secs must be 1 to 600".into()));
        }
        if self.oauth.admin_audience.trim().is_empty() || self.oauth.admin_audience.len() > 256 {
            return Err(ConfigError::Invalid("oauth.admin_audience must be 1 to 256 characters".into()));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::Invalid(format!("log.level {:?}: {e}", self.log.level)));
        }
        if !(100..=600_000).contains(&self.cluster.staleness_ms) {
            return Err(ConfigError::Invalid("cluster.staleness_ms must be between 100 and 600000".into()));
        }
        if !(100..=10_000_000).contains(&self.cluster.snapshot_every_entries) {
            return Err(ConfigError::Invalid("cluster.snapshot_every_entries must be between 100 and 10000000".into()));
        }
        if !(500..=60_000).contains(&self.cluster.leader_wait_ms) {
            return Err(ConfigError::Invalid("cluster.leader_wait_ms must be between 500 and 60000".into()));
        }
        if let Some(addr) = &self.cluster.advertise {
            if addr.parse::<SocketAddr>().is_err()
                && !addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            {
                return Err(ConfigError::Invalid(format!("cluster.advertise {addr:?} must be host:port")));
            }
        }
        if let Some(join) = &self.cluster.join {
            if !join.peer.starts_with("https://") {
                return Err(ConfigError::Invalid(format!("cluster.join.peer {:?} must be an https URL", join.peer)));
            }
        }
        Ok(())
    }

    /// The names the generated server certificate covers: loopback, the public URL's host,
    /// `tls.names`, the cluster address's host and the address bound.
    pub fn certificate_names(&self, public_url: &str, bound: Option<SocketAddr>) -> Vec<String> {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        if let Ok(uri) = public_url.parse::<poem::http::Uri>() {
            if let Some(host) = uri.host() {
                names.push(host.trim_start_matches('[').trim_end_matches(']').to_string());
            }
        }
        names.extend(self.tls.names.iter().cloned());
        // Members dial each other by their cluster address, joiners this port by the same host.
        if let Some((host, _)) = self.cluster.advertised().rsplit_once(':') {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if !host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
                names.push(host.to_string());
            }
        }
        if let Some(addr) = bound {
            if !addr.ip().is_unspecified() {
                names.push(addr.ip().to_string());
            }
        }
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names
    }

    /// The public URL, or the one derived from the address actually bound.
    pub fn effective_public_url(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.clone(),
            None => match bound.ip() {
                ip if ip.is_unspecified() => format!("https://localhost:{}", bound.port()),
                std::net::IpAddr::V6(ip) => format!("https://[{ip}]:{}", bound.port()),
                ip => format!("https://{ip}:{}", bound.port()),
            },
        }
    }

    /// Whether answers carry `Strict-Transport-Security` for this public URL.
    pub fn sends_hsts(&self, public_url: &str) -> bool {
        match self.http.hsts {
            HstsMode::Always => true,
            HstsMode::Never => false,
            HstsMode::Auto => {
                let host = public_url.parse::<poem::http::Uri>().ok().and_then(|u| u.host().map(str::to_string));
                let host = host.unwrap_or_default();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let loopback = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                !(loopback || host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost"))
            }
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("gatehouse.redb")
    }

    pub fn data_path(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }
}

/// Merges `GATEHOUSE_A__B=v` as key `a.b`. The environment is passed in (not read by
/// figment's own provider) so tests can give their own.
fn merge_env(fig: Figment, env: &[(String, String)]) -> Figment {
    let mut fig = fig;
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("GATEHOUSE_") else {
            continue;
        };
        if NON_CONFIG_ENV.iter().any(|n| rest.eq_ignore_ascii_case(n)) || rest.is_empty() {
            continue;
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        fig = fig.merge((key, parse_value(v)));
    }
    fig
}

/// A TOML value (`8443`, `true`, `["a", "b"]`), or else the text as a string.
fn parse_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

fn flatten_figment(e: figment::Error) -> String {
    e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

fn validate_public_url(url: &str) -> Result<(), ConfigError> {
    let uri: poem::http::Uri =
        url.parse().map_err(|_| ConfigError::Invalid(format!("public_url {url:?} is not a URL")))?;
    if uri.scheme_str() != Some("https") {
        return Err(ConfigError::Invalid(format!("public_url {url:?} must use https")));
    }
    if uri.host().is_none() || uri.query().is_some() || url.ends_with('/') || url.contains('#') {
        return Err(ConfigError::Invalid(format!(
            "public_url {url:?} must be https://host[:port][/path] without a trailing slash, query or fragment"
        )));
    }
    Ok(())
}

/// True when only the owner may read or enter `path`.
pub fn is_private(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o077 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(overrides: Overrides, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load_with_env(&overrides, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_serve_a_developer() {
        let c = load(Overrides::default(), &[]).unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://localhost:8443"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.cluster.listen.to_string(), "127.0.0.1:8444");
        assert_eq!(c.max_body_bytes, 65536);
    }

    #[test]
    fn layers_apply_in_order_file_env_flags_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.toml");
        std::fs::write(&file, "max_body_bytes = 2048\n[tls]\nnames = [\"file.example\"]\n").unwrap();
        let env = [
            ("GATEHOUSE_MAX_BODY_BYTES", "4096"),
            ("GATEHOUSE_TLS__NAMES", "[\"env.example\"]"),
            ("GATEHOUSE_KEK", "ignored"),
        ];
        let c = load(Overrides { config_file: Some(file.clone()), ..Default::default() }, &env).unwrap();
        assert_eq!(c.max_body_bytes, 4096, "environment beats the file");
        assert_eq!(c.tls.names, vec!["env.example".to_string()], "__ nests");
        let set = Overrides { config_file: Some(file), set: vec!["max_body_bytes=8192".into()], ..Default::default() };
        assert_eq!(load(set, &env).unwrap().max_body_bytes, 8192, "--set beats the environment");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_the_key() {
        for (overrides, env, needle) in [
            (Overrides { set: vec!["bogus=1".into()], ..Default::default() }, vec![], "bogus"),
            (Overrides::default(), vec![("GATEHOUSE_CLUSTER__NOPE", "1")], "nope"),
            (Overrides { set: vec!["max_body_bytes=lots".into()], ..Default::default() }, vec![], "max_body_bytes"),
            (Overrides { set: vec!["no-equals-sign".into()], ..Default::default() }, vec![], "key=value"),
            (
                Overrides { public_url: Some("https://x.example/".into()), ..Default::default() },
                vec![],
                "trailing slash",
            ),
        ] {
            let err = load(overrides, &env).expect_err("refused").to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle}");
        }
    }

    #[test]
    fn hsts_is_sent_for_public_hosts_only_unless_configured() {
        let c = load(Overrides::default(), &[]).unwrap();
        assert!(!c.sends_hsts("https://localhost:8443"));
        assert!(!c.sends_hsts("https://127.0.0.1:9"));
        assert!(!c.sends_hsts("https://[::1]:9"));
        assert!(c.sends_hsts("https://id.example.com"));
        let always = load(Overrides { set: vec!["http.hsts=\"always\"".into()], ..Default::default() }, &[]).unwrap();
        assert!(always.sends_hsts("https://localhost:8443"));
        let never = load(Overrides { set: vec!["http.hsts=never".into()], ..Default::default() }, &[]).unwrap();
        assert!(!never.sends_hsts("https://id.example.com"));
    }

    #[test]
    fn a_listen_address_without_a_public_url_derives_it_from_the_bound_port() {
        let c = load(Overrides { listen: Some("127.0.0.1:0".parse().unwrap()), ..Default::default() }, &[]).unwrap();
        assert_eq!(c.public_url, None);
        assert_eq!(c.effective_public_url("127.0.0.1:40123".parse().unwrap()), "https://127.0.0.1:40123");
        let c = load(Overrides::default(), &[("GATEHOUSE_LISTEN", "0.0.0.0:0")]).unwrap();
        assert_eq!(c.effective_public_url("0.0.0.0:5555".parse().unwrap()), "https://localhost:5555");
        let explicit = Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            public_url: Some("https://id.example.com".into()),
            ..Default::default()
        };
        assert_eq!(load(explicit, &[]).unwrap().public_url.as_deref(), Some("https://id.example.com"));
    }
}
