//! A running node: startup in order (config, data dir, KEK, database, raft, bootstrap, TLS),
//! the shared application state, serving, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_raft::{RaftNode, StartMode};
use gatehouse_storage::model::{CaRecord, ClusterRecord, Sealed};
use gatehouse_storage::{Applied, Command, Outcome, Proposal, Store};
use poem::listener::Acceptor;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::watch;

use crate::app::AppState;
use crate::clock::SharedClock;
use crate::cluster::credentials::NodeCredentials;
use crate::config::Config;
use crate::crypto::ca::CA_KEY_CONTEXT;
use crate::crypto::kek::LocalKek;
use crate::crypto::{ca, SecretCipher};
use crate::datadir::{self, DataDir};
use crate::http::acceptor::{server_config, TlsAcceptor};
use crate::metrics::Metrics;

/// How long to wait for a raft leader at start.
const LEADER_WAIT: Duration = Duration::from_secs(15);
/// How long in-flight requests may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    DataDir(#[from] datadir::DataDirError),
    #[error(transparent)]
    Kek(#[from] crate::crypto::kek::KekError),
    #[error(transparent)]
    Store(#[from] gatehouse_storage::StoreError),
    #[error(transparent)]
    Raft(#[from] gatehouse_raft::NodeError),
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("control socket {path}: {reason}")]
    Control { path: String, reason: String },
    #[error("cluster: {0}")]
    Join(String),
    #[error("webauthn: {0}")]
    Webauthn(String),
}

/// What to join at this start: the command's arguments, or `cluster.join` in config when the
/// data dir is still fresh (afterwards the node simply starts as the member it became).
fn join_request(config: &Config, join: Option<JoinArgs>) -> Result<Option<JoinArgs>, StartError> {
    if join.is_some() {
        return Ok(join);
    }
    let Some(auto) = &config.cluster.join else { return Ok(None) };
    let dir = DataDir::open_or_create(&config.data_dir)?;
    if dir.is_initialised() || dir.joined_marker().exists() {
        return Ok(None);
    }
    let token = std::fs::read_to_string(&auto.token_file)
        .map_err(|e| StartError::Join(format!("cluster.join.token_file {}: {e}", auto.token_file.display())))?;
    Ok(Some(JoinArgs { peer: auto.peer.clone(), token: token.trim().to_string() }))
}

/// A node that is serving.
pub struct RunningNode {
    pub app: Arc<AppState>,
    pub local_addr: SocketAddr,
    /// Where the management listener (metrics, probes; plain HTTP) is bound.
    pub management_addr: SocketAddr,
    management: tokio::task::JoinHandle<std::io::Result<()>>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    control: tokio::task::JoinHandle<()>,
    jobs: tokio::task::JoinHandle<()>,
}

impl RunningNode {
    pub fn ca_path(&self) -> std::path::PathBuf {
        self.app.data_dir.ca_cert_path()
    }

    /// Stops accepting, drains in-flight requests, stops raft and removes the control socket.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("server stopped with an error: {e}"),
            Err(e) => tracing::warn!("server task: {e}"),
        }
        let _ = self.management.await;
        let _ = self.control.await;
        let _ = self.jobs.await;
        self.app.cluster_port.close().await;
        self.app.raft.shutdown().await;
        if let Err(e) = self.app.store.checkpoint() {
            tracing::warn!("the last applied state was not made durable at shutdown: {e}");
        }
        let _ = std::fs::remove_file(self.app.data_dir.control_socket());
    }
}

/// Opens (creating when new) the data dir, KEK, database and raft node, and bootstraps a
/// fresh cluster. Shared by `serve` and `init`.
pub async fn prepare(
    config: &Config,
    clock: SharedClock,
    kek_env: Option<&str>,
    public_url: &str,
) -> Result<AppState, StartError> {
    if let Some(value) = kek_env {
        crate::crypto::kek::check_env_format(value)?;
    }
    // Checked before anything is opened: a relying party that cannot work stops the start.
    let webauthn = crate::idm::passkeys::relying_party(&config.webauthn, public_url).map_err(StartError::Webauthn)?;
    let dir = DataDir::open_or_create(&config.data_dir)?;
    let joined = dir.joined_marker().exists();
    if joined && !(dir.node_id_path().exists() && crate::cluster::credentials::NodeCredentials::exist(&dir)) {
        return Err(StartError::Bootstrap(format!(
            "{} was left half-joined by an interrupted `cluster join`: remove it and join again with a new token",
            dir.root().display()
        )));
    }
    let fresh = !dir.is_initialised();
    let kek = LocalKek::load(&dir, kek_env, fresh)?;
    let kek_source = kek.source;
    // An initialised dir whose database is missing or empty is refused, never re-founded.
    let cache_bytes = config.storage.cache_mib.saturating_mul(1024 * 1024);
    let store = Store::open_with(&dir.db_path(), fresh, cache_bytes)?;
    datadir::make_private(&dir.db_path())?;
    let node_id = dir.node_id()?;
    let kek: Arc<dyn crate::crypto::KeyProvider> = Arc::new(kek);
    let cipher = Arc::new(SecretCipher::new(kek, Some(store.clone())));
    // A node that joined a cluster never founds one, even with an empty log.
    let mode = if joined { StartMode::Join } else { StartMode::Bootstrap };
    let options = gatehouse_raft::NodeOptions {
        leader_wait: Duration::from_millis(config.cluster.leader_wait_ms),
        snapshot_every_entries: config.cluster.snapshot_every_entries,
        // Until `cluster init` gives it node credentials, no other node can join.
        sole_voter: !crate::cluster::credentials::NodeCredentials::exist(&dir),
    };
    let raft = RaftNode::start(&store, node_id, &config.cluster.advertised(), mode, options).await?;
    let app = AppState {
        config: config.clone(),
        public_url: public_url.to_string(),
        data_dir: dir,
        store,
        raft,
        cipher,
        clock,
        metrics: Arc::new(Metrics::new()),
        kek_source,
        signers: Default::default(),
        token_audit: Default::default(),
        limits: crate::app::limits::RateLimits::new(&config.rate_limits),
        auth_failures: crate::app::auth_failures::FailureAudit::new(config.rate_limits.max_tracked_keys),
        lockout: crate::app::lockout::Lockout::new(&config.rate_limits),
        mail: crate::app::mail::MailQueue::new(config.email.queue),
        webauthn,
        founded: false,
        cluster_port: Default::default(),
    };
    let mut app = app;
    // A member talks to its peers before anything waits for a leader.
    if NodeCredentials::exist(&app.data_dir) {
        if let Err(e) = crate::cluster::open_port(&app).await {
            app.raft.shutdown().await;
            return Err(StartError::Join(e));
        }
    }
    // A one-voter cluster elects itself at once; a member of a larger one may be the first
    // of its peers back and must not wait for them to start.
    let one_voter = app.raft.status().voters.len() <= 1;
    if mode == StartMode::Bootstrap && one_voter {
        app.raft.wait_for_leader(LEADER_WAIT).await?;
        // Apply every committed entry first: after a crash during the first start, the
        // bootstrap entry may be in the log but not yet applied.
        app.raft.ensure_linearizable().await.map_err(|e| StartError::Bootstrap(e.to_string()))?;
        if app.store.read()?.cluster()?.is_none() {
            bootstrap(&app).await?;
            app.founded = true;
        }
    }
    Ok(app)
}

/// Founds the cluster: its id, CA, and the `system` and `default` tenants with their keys.
async fn bootstrap(app: &AppState) -> Result<(), StartError> {
    let now = app.clock.now_ms();
    let node_id = app.raft.node_id();
    let cipher = app.cipher.clone();
    let command = tokio::task::spawn_blocking(move || -> Result<Command, String> {
        let cluster_id = crate::clock::random_id("");
        let system =
            crate::idm::tenants::new_tenant(&cipher, "system", "System", false, now).map_err(|e| e.to_string())?;
        let default =
            crate::idm::tenants::new_tenant(&cipher, "default", "Default", true, now).map_err(|e| e.to_string())?;
        let issued = ca::generate_ca(&cluster_id, now).map_err(|e| e.to_string())?;
        let key = cipher.seal(&system.data_key.id, CA_KEY_CONTEXT, &issued.key_pkcs8).map_err(|e| e.to_string())?;
        Ok(Command::Bootstrap {
            cluster: ClusterRecord {
                node_ca: None,
                v: 1,
                cluster_id,
                founding_node: node_id,
                ca: CaRecord { cert_pem: issued.cert_pem, key },
                created_at_ms: now,
            },
            tenants: vec![system, default],
        })
    })
    .await
    .map_err(|e| StartError::Bootstrap(e.to_string()))?
    .map_err(StartError::Bootstrap)?;
    let proposal = Proposal { origin: None, at_ms: now, actor: format!("node:{node_id:016x}"), command };
    match app.write(proposal).await.map_err(|e| StartError::Bootstrap(e.to_string()))? {
        Outcome::Applied(Applied::Bootstrapped { .. }) => Ok(()),
        Outcome::Refused(gatehouse_storage::Rejection::AlreadyBootstrapped) => Ok(()),
        other => Err(StartError::Bootstrap(format!("unexpected outcome {other:?}"))),
    }
}

fn server_key_context(node_id: u64) -> String {
    format!("tls-server-key/{node_id:016x}")
}

/// The names the generated server certificate covers.
pub fn certificate_names(config: &Config, public_url: &str, bound: Option<SocketAddr>) -> Vec<String> {
    config.certificate_names(public_url, bound)
}

/// Writes the CA certificate for clients and makes sure this node has a server certificate
/// for `names`, issuing a new one when the names changed. Returns the rustls config.
pub fn tls_material(app: &AppState, names: &[String]) -> Result<rustls::ServerConfig, StartError> {
    let tls = |e: &dyn std::fmt::Display| StartError::Tls(e.to_string());
    if let (Some(cert_file), Some(key_file)) = (&app.config.tls.cert_file, &app.config.tls.key_file) {
        let chain_pem = std::fs::read(cert_file).map_err(|e| tls(&e))?;
        let key_pem = datadir::read_private(key_file)?;
        let chain: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut chain_pem.as_slice()).collect::<Result<_, _>>().map_err(|e| tls(&e))?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|e| tls(&e))?
            .ok_or_else(|| StartError::Tls(format!("{} holds no private key", key_file.display())))?;
        return server_config(chain, key).map_err(|e| tls(&e));
    }
    let dir = &app.data_dir;
    if dir.joined_marker().exists() {
        // A joined node may have no state yet: it serves the node certificate it was given.
        let creds = NodeCredentials::load(dir, app.cipher.key_provider()).map_err(|e| tls(&e))?;
        let (chain, key) = creds.public_chain();
        return server_config(chain, key).map_err(|e| tls(&e));
    }
    let reader = app.store.read()?;
    let cluster = reader.cluster()?.ok_or_else(|| StartError::Tls("the cluster has no CA yet".into()))?;
    dir.ensure_tls_dir()?;
    let ca_path = dir.ca_cert_path();
    if std::fs::read_to_string(&ca_path).ok().as_deref() != Some(cluster.ca.cert_pem.as_str()) {
        datadir::write_public(&ca_path, cluster.ca.cert_pem.as_bytes())?;
    }
    let node_id = app.raft.node_id();
    let wanted_names = names.join("\n");
    let existing = (|| -> Option<(String, Vec<u8>)> {
        if std::fs::read_to_string(dir.tls_dir().join("server.names")).ok()? != wanted_names {
            return None;
        }
        let cert = std::fs::read_to_string(dir.server_cert_path()).ok()?;
        let parsed = rustls_pemfile::certs(&mut cert.as_bytes()).collect::<Result<Vec<_>, _>>().ok()?;
        if parsed.is_empty() {
            return None;
        }
        let sealed: Sealed = serde_json::from_slice(&datadir::read_private(&dir.server_key_path()).ok()?).ok()?;
        let key = app.cipher.open(&sealed, &server_key_context(node_id)).ok()?;
        Some((cert, key.to_vec()))
    })();
    let (cert_pem, key_der) = match existing {
        Some(found) => found,
        None => {
            let ca_key = app.cipher.open(&cluster.ca.key, CA_KEY_CONTEXT).map_err(|e| tls(&e))?;
            let issued =
                ca::issue_server_cert(&cluster.ca.cert_pem, &ca_key, names, app.clock.now_ms()).map_err(|e| tls(&e))?;
            let system = reader.tenant("system")?.ok_or_else(|| StartError::Tls("no system tenant".into()))?;
            let sealed = app
                .cipher
                .seal(&system.data_key_id, &server_key_context(node_id), &issued.key_pkcs8)
                .map_err(|e| tls(&e))?;
            datadir::write_private(&dir.server_key_path(), &serde_json::to_vec(&sealed).map_err(|e| tls(&e))?)?;
            datadir::write_public(&dir.server_cert_path(), issued.cert_pem.as_bytes())?;
            // Written last: a crash before this point reissues the certificate at next start.
            datadir::write_public(&dir.tls_dir().join("server.names"), wanted_names.as_bytes())?;
            (issued.cert_pem, issued.key_pkcs8.to_vec())
        }
    };
    let mut chain: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<_, _>>().map_err(|e| tls(&e))?;
    // The CA goes last, so a joining node can match it against the fingerprint in its token.
    chain.extend(ca::pem_certs(&cluster.ca.cert_pem).map_err(|e| tls(&e))?);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
    server_config(chain, key).map_err(|e| tls(&e))
}

/// Joining a cluster at start: a member's public URL and a one-time token.
#[derive(Debug, Clone)]
pub struct JoinArgs {
    pub peer: String,
    pub token: String,
}

/// Starts a node and serves until [`RunningNode::shutdown`]. With `join` (or `cluster.join`
/// in config, on a fresh data dir) it first joins that cluster instead of founding one.
pub async fn start(
    config: Config,
    clock: SharedClock,
    kek_env: Option<String>,
    join: Option<JoinArgs>,
) -> Result<RunningNode, StartError> {
    // Bind first: a busy port then fails before the data dir is created or touched.
    let listener = tokio::net::TcpListener::bind(config.listen).await;
    let listener = match listener {
        Ok(l) => l,
        Err(e) => return Err(StartError::Bind { addr: config.listen, reason: e.to_string() }),
    };
    let bound = listener.local_addr().map_err(|e| StartError::Bind { addr: config.listen, reason: e.to_string() })?;
    let management_listener = tokio::net::TcpListener::bind(config.management.listen)
        .await
        .map_err(|e| StartError::Bind { addr: config.management.listen, reason: e.to_string() })?;
    let management_addr = management_listener
        .local_addr()
        .map_err(|e| StartError::Bind { addr: config.management.listen, reason: e.to_string() })?;
    let public_url = config.effective_public_url(bound);
    if let Some(join) = join_request(&config, join)? {
        let names = certificate_names(&config, &public_url, Some(bound));
        crate::cluster::join::enroll(&config, &names, &join.token, &join.peer, kek_env.as_deref())
            .await
            .map_err(|e| StartError::Join(e.to_string()))?;
    }
    let app = Arc::new(prepare(&config, clock, kek_env.as_deref(), &public_url).await?);
    let names = certificate_names(&config, &public_url, Some(bound));
    let tls = match tls_material(&app, &names) {
        Ok(t) => t,
        Err(e) => {
            app.raft.shutdown().await;
            return Err(e);
        }
    };
    let acceptor = TlsAcceptor::new(listener, Arc::new(tls))
        .map_err(|e| StartError::Bind { addr: bound, reason: e.to_string() })?;
    let local_addr = acceptor.local_addr().first().and_then(|a| a.as_socket_addr().copied()).unwrap_or(bound);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let control = match crate::control::bind(&app) {
        Ok(l) => tokio::spawn(crate::control::serve(app.clone(), l, shutdown_rx.clone())),
        Err(e) => {
            app.raft.shutdown().await;
            let path = app.data_dir.control_socket().display().to_string();
            return Err(StartError::Control { path, reason: e.to_string() });
        }
    };
    let jobs = crate::jobs::spawn(app.clone(), shutdown_rx.clone());
    {
        // R7: raft stops on its own only after a storage failure (a failed log write or
        // fsync). Then the process exits non-zero rather than serve on: a supervisor restarts
        // it, redb recovers from its last good commit and the node catches up from the leader.
        let (app, stop) = (app.clone(), shutdown_rx.clone());
        tokio::spawn(async move {
            app.raft.stopped().await;
            if !*stop.borrow() {
                tracing::error!("raft stopped after a storage failure; exiting so this node restarts clean");
                std::process::exit(70);
            }
        });
    }
    if app.data_dir.joined_marker().exists() {
        // A learner asks to become a voter once it has caught up.
        let (app, mut stop) = (app.clone(), shutdown_rx.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = app.raft.become_voter() => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
    let routes = crate::http::routes(app.clone());
    let rx = shutdown_rx;
    let limits = crate::http::edge::EdgeLimits::from_config(&app.config.http);
    let management = {
        let acceptor = poem::listener::TcpAcceptor::from_tokio(management_listener)
            .map_err(|e| StartError::Bind { addr: management_addr, reason: e.to_string() })?;
        let routes = crate::http::api::ops::management_routes(app.clone());
        let limits = crate::http::edge::EdgeLimits::for_management(&app.config.http);
        tokio::spawn(crate::http::edge::serve(acceptor, routes, limits, rx.clone(), DRAIN))
    };
    let server = tokio::spawn(crate::http::edge::serve(acceptor, routes, limits, rx, DRAIN));
    Ok(RunningNode { app, local_addr, management_addr, management, shutdown, server, control, jobs })
}
