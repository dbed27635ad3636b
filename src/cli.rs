//! The command line: parse what the user typed, resolve it into a `Config`, run the command.
//! Every failure ends with one line on stderr and a non-zero exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::clock::SystemClock;
use crate::config::{Config, Overrides};
use crate::control::{self, ControlRequest};
use crate::node;

#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about = "Identity and access management appliance in one binary")]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Data directory [default: ./gatehouse-data]
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// TOML config file
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Set any config key, e.g. `--set tls.names=["id.example.com"]` (repeatable)
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Start the node (creates the data dir, TLS material and keys on first start)
    Serve {
        /// Address to listen on [default: 127.0.0.1:8443]; port 0 picks a free port
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Public URL of the default tenant's issuer [default: https://localhost:8443]
        #[arg(long)]
        public_url: Option<String>,
    },
    /// Create the data dir, keys and TLS material without serving
    Init {
        #[arg(long)]
        public_url: Option<String>,
    },
    /// Print the OpenAPI document
    Openapi,
    /// Manage tenants (on a running node)
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Admin API access (on a running node)
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Signing keys of a tenant: list (also on a stopped data dir), rotate, prune
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Audit chain operations
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Write a backup of the state to FILE, sealed under the KEK (a running node's while it
    /// serves, or a stopped data dir's); never overwrites a file
    Backup { file: PathBuf },
    /// Make a new one-node cluster in the data dir (absent or empty) from a backup; needs the
    /// KEK of the cluster it was taken from in GATEHOUSE_KEK
    Restore { file: PathBuf },
    /// Grow a deployment into a cluster: init, join tokens, join, status, remove
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make this running node the first member of a cluster (keeps its data): creates the
    /// node intermediate under its CA and opens the cluster port (cluster.listen)
    Init,
    /// Print a one-time join token for one more node (on a running member)
    JoinToken {
        /// How long the token can be used, in seconds (1 to 86400)
        #[arg(long, default_value_t = crate::idm::cluster::DEFAULT_TOKEN_TTL_SECS)]
        ttl_secs: u64,
    },
    /// Join a cluster from a fresh data dir, then serve as its member
    Join {
        /// The join token from `cluster join-token`
        #[arg(long, conflicts_with = "token_file", required_unless_present = "token_file")]
        token: Option<String>,
        /// A file holding the token (keeps it out of the process list)
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The HTTPS URL of a member, e.g. https://10.0.0.1:8443
        #[arg(long)]
        peer: String,
        /// Address to listen on [default: 127.0.0.1:8443]
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Public URL of the default tenant's issuer (the same on every member)
        #[arg(long)]
        public_url: Option<String>,
    },
    /// Members, roles, leader, term, commit and applied index, lag per member
    Status {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Take a node out of the cluster (its id in hex, from `cluster status`)
    Remove { node_id: String },
    /// Measure the replicated write path from inside this node's process, without HTTP:
    /// writers propose probe entries (which change nothing) for a while; prints JSON
    Bench {
        /// Writers proposing one probe after another (1 to 1024)
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// How long, in seconds (1 to 60)
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Print a SHA-256 of this node's replicated state and its applied index (JSON): members
    /// that applied the same log print the same digest
    Digest,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Mint a short-lived platform admin token and print it (only the token, for scripts)
    Token,
    /// Revoke a platform admin token, read from standard input (so it never shows in `ps`)
    Revoke,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant: an issuer of its own at /t/ID
    Create {
        id: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List tenants
    List,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the keys with their states (published, active, retiring, retired)
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Add a new ES256 and RS256 key; they sign after keys.publish_delay_secs
    Rotate {
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Sign with the new keys at once (emergencies: cached JWKS may not know them yet)
        #[arg(long)]
        now: bool,
    },
    /// Remove retired keys (every token they signed has expired)
    Prune {
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Only list what would be removed
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the audit chain (a running node's, or a stopped data dir's)
    Verify,
}

pub fn main() -> ExitCode {
    // Single-threaded still: changing the environment is sound only before threads start.
    let _ = KEK_ENV.set(std::env::var("GATEHOUSE_KEK").ok());
    std::env::remove_var("GATEHOUSE_KEK");
    let cli = Cli::parse();
    gatehouse_raft::crash::setup();
    // 8 MiB stacks: the middleware chain around a handler nests deeply, and unoptimised
    // builds keep every future's locals on the stack.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(8 << 20).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ").replace('\n', " ")
}

fn load_config(
    common: &CommonArgs,
    listen: Option<std::net::SocketAddr>,
    public_url: Option<String>,
) -> anyhow::Result<Config> {
    let overrides = Overrides {
        config_file: common.config.clone(),
        data_dir: common.data_dir.clone(),
        listen,
        public_url,
        set: common.set.clone(),
    };
    Ok(Config::load(&overrides)?)
}

fn init_tracing(level: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Commands::Openapi => {
            println!("{}", crate::http::openapi_document());
            Ok(ExitCode::SUCCESS)
        }
        Commands::Serve { listen, public_url } => {
            let config = load_config(&cli.common, listen, public_url)?;
            init_tracing(&config.log.level);
            serve(config, None).await
        }
        Commands::Cluster { command: ClusterCommand::Join { token, token_file, peer, listen, public_url } } => {
            let config = load_config(&cli.common, listen, public_url)?;
            init_tracing(&config.log.level);
            let token = match (token, token_file) {
                (Some(t), _) => t,
                (None, Some(file)) => std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", file.display()))?
                    .trim()
                    .to_string(),
                (None, None) => anyhow::bail!("give --token or --token-file"),
            };
            serve(config, Some(node::JoinArgs { peer, token })).await
        }
        Commands::Cluster { command } => {
            let config = load_config(&cli.common, None, None)?;
            cluster(&config, command).await
        }
        Commands::Init { public_url } => {
            let config = load_config(&cli.common, None, public_url)?;
            init_tracing(&config.log.level);
            init(config).await
        }
        Commands::Tenant { command } => {
            let config = load_config(&cli.common, None, None)?;
            let request = match command {
                TenantCommand::Create { id, display_name } => ControlRequest::TenantCreate { id, display_name },
                TenantCommand::List => ControlRequest::TenantList,
            };
            let answer = control::call(&config.data_dir, &request).await?;
            if !answer.ok {
                anyhow::bail!(answer.error.unwrap_or_else(|| "the node refused the request".into()));
            }
            println!("{}", serde_json::to_string_pretty(&answer.data)?);
            Ok(ExitCode::SUCCESS)
        }
        Commands::Admin { command: AdminCommand::Token } => {
            let config = load_config(&cli.common, None, None)?;
            let answer = control::call(&config.data_dir, &ControlRequest::AdminToken).await?;
            if !answer.ok {
                anyhow::bail!(answer.error.unwrap_or_else(|| "the node refused the request".into()));
            }
            let token = answer.data.get("access_token").and_then(|t| t.as_str()).unwrap_or_default();
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Commands::Admin { command: AdminCommand::Revoke } => {
            let config = load_config(&cli.common, None, None)?;
            let mut token = String::new();
            std::io::Read::read_to_string(&mut std::io::Read::take(std::io::stdin(), 64 * 1024), &mut token)?;
            let request = ControlRequest::AdminRevoke { token: token.trim().to_string() };
            let answer = control::call(&config.data_dir, &request).await?;
            if !answer.ok {
                anyhow::bail!(answer.error.unwrap_or_else(|| "the node refused the request".into()));
            }
            println!("{}", serde_json::to_string_pretty(&answer.data)?);
            Ok(ExitCode::SUCCESS)
        }
        Commands::Keys { command } => {
            let config = load_config(&cli.common, None, None)?;
            keys(&config, command).await
        }
        Commands::Audit { command: AuditCommand::Verify } => {
            let config = load_config(&cli.common, None, None)?;
            audit_verify(&config).await
        }
        Commands::Backup { file } => {
            let config = load_config(&cli.common, None, None)?;
            backup(&config, &file).await
        }
        Commands::Restore { file } => {
            let config = load_config(&cli.common, None, None)?;
            let kek_env = take_kek_env();
            let data_dir = config.data_dir.clone();
            eprintln!("restoring {} into {} ...", file.display(), data_dir.display());
            let restored =
                tokio::task::spawn_blocking(move || crate::backup::restore(&file, &data_dir, kek_env.as_deref()))
                    .await??;
            println!(
                "restored {} tenants and {} audit entries into {}: `serve` starts it as a new one-node cluster \
                 (GATEHOUSE_KEK set as for the backup)",
                restored.tenants,
                restored.audit_entries,
                config.data_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `backup`: through the running node, or from a stopped data dir; shows progress meanwhile.
async fn backup(config: &Config, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let path = std::path::absolute(file)?;
    let progress = tokio::spawn({
        let part = crate::backup::partial_path(&path);
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                if let Ok(meta) = std::fs::metadata(&part) {
                    eprintln!("backup: {:.1} MiB written", meta.len() as f64 / (1024.0 * 1024.0));
                }
            }
        }
    });
    let request = ControlRequest::Backup { path: path.display().to_string() };
    let written = match control::call(&config.data_dir, &request).await {
        Ok(answer) if answer.ok => serde_json::from_value::<crate::backup::Written>(answer.data)?,
        Ok(answer) => {
            progress.abort();
            anyhow::bail!(answer.error.unwrap_or_default())
        }
        Err(control::ControlError::NotRunning(_)) => {
            let dir = crate::datadir::DataDir::open_existing(&config.data_dir)?;
            let kek = crate::crypto::LocalKek::load(&dir, take_kek_env().as_deref(), false)?;
            let db = gatehouse_storage::store::open_read_only(&dir.db_path())?;
            let path = path.clone();
            let written = tokio::task::spawn_blocking(move || {
                crate::backup::write(&path, &kek, |out| gatehouse_storage::snapshot::export_database(&db, out))
            })
            .await?;
            progress.abort();
            written?
        }
        Err(e) => {
            progress.abort();
            return Err(e.into());
        }
    };
    progress.abort();
    println!("backup written: {} ({} bytes, state sha256 {})", written.path, written.bytes, written.state_sha256);
    Ok(ExitCode::SUCCESS)
}

/// `GATEHOUSE_KEK`, taken out of the process environment by `main` before any other thread
/// exists, so nothing reads it from the environment later and no child process inherits it.
/// (The kernel's copy of the initial environment, `/proc/{pid}/environ`, readable by the same
/// user and root only, cannot be scrubbed from safe code; the README says so.)
static KEK_ENV: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn take_kek_env() -> Option<String> {
    KEK_ENV.get().cloned().flatten()
}

/// The `cluster` commands that act on a running member.
async fn cluster(config: &Config, command: ClusterCommand) -> anyhow::Result<ExitCode> {
    let (request, json) = match command {
        ClusterCommand::Init => (ControlRequest::ClusterInit, true),
        ClusterCommand::JoinToken { ttl_secs } => (ControlRequest::ClusterJoinToken { ttl_secs }, false),
        ClusterCommand::Status { json } => (ControlRequest::ClusterStatus, json),
        ClusterCommand::Remove { node_id } => (ControlRequest::ClusterRemove { node_id }, true),
        ClusterCommand::Digest => (ControlRequest::ClusterDigest, true),
        ClusterCommand::Bench { concurrency, seconds } => (ControlRequest::ClusterBench { concurrency, seconds }, true),
        ClusterCommand::Join { .. } => anyhow::bail!("`cluster join` starts a node: it is not a control command"),
    };
    let status = matches!(request, ControlRequest::ClusterStatus);
    let answer = control::call(&config.data_dir, &request).await?;
    if !answer.ok {
        anyhow::bail!(answer.error.unwrap_or_else(|| "the node refused the request".into()));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&answer.data)?);
    } else if status {
        let s: crate::idm::cluster::Status = serde_json::from_value(answer.data)?;
        print_cluster_status(&s);
    } else {
        // join-token: only the token, for scripts.
        println!("{}", answer.data.get("token").and_then(|t| t.as_str()).unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_cluster_status(s: &crate::idm::cluster::Status) {
    let none = || "-".to_string();
    println!(
        "node {} ({}), cluster {}, term {}, leader {}\ncommit index {}, applied index {}, last log index {}",
        s.node_id,
        s.role,
        s.cluster_id.clone().unwrap_or_else(none),
        s.term,
        s.leader.clone().unwrap_or_else(none),
        s.commit_index,
        s.applied_index,
        s.last_log_index
    );
    if let Some(why) = &s.leader_unreachable {
        println!("(members as this node knows them; the leader did not answer: {why})");
    }
    println!("\n{:<18} {:<8} {:<24} {:>10} {:>8}", "NODE", "ROLE", "ADDRESS", "MATCHED", "LAG");
    for m in &s.members {
        let num = |n: Option<u64>| n.map(|v| v.to_string()).unwrap_or_else(none);
        println!("{:<18} {:<8} {:<24} {:>10} {:>8}", m.node_id, m.role, m.address, num(m.matched_index), num(m.lag));
    }
}

async fn serve(config: Config, join: Option<node::JoinArgs>) -> anyhow::Result<ExitCode> {
    let kek_env = take_kek_env();
    let started = std::time::Instant::now();
    let running = node::start(config, Arc::new(SystemClock), kek_env, join).await?;
    print_banner(&running, started.elapsed());
    wait_for_signal().await;
    eprintln!("gatehouse: shutting down");
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn print_banner(running: &node::RunningNode, took: std::time::Duration) {
    let app = &running.app;
    let ca = match &app.config.tls.cert_file {
        Some(operator_cert) => operator_cert.clone(),
        None => running.ca_path(),
    };
    let url = &app.public_url;
    let dir = app.data_dir.root().display();
    let mut text = format!(
        "Gatehouse is ready ({} ms).\n\
         \n  issuer:          {url}\n\
         \x20 system issuer:   {}\n\
         \x20 discovery:       {url}/.well-known/openid-configuration\n\
         \x20 CA certificate:  {}\n\
         \x20 listening on:    {} (node {:016x})\n\
         \x20 management:      http://{} (metrics, health, ready)\n\
         \nNext:\n\
         \x20 curl --cacert {} {url}/.well-known/openid-configuration\n\
         \x20 gatehouse --data-dir {dir} tenant create acme    # issuer {url}/t/acme\n\
         \x20 Browsers: import the CA certificate as a trusted authority, or accept the warning once.\n",
        took.as_millis(),
        app.issuer_of("system"),
        ca.display(),
        running.local_addr,
        app.raft.node_id(),
        running.management_addr,
        ca.display(),
    );
    if app.founded {
        text.push_str(&format!(
            "\nFirst admin credentials: on this machine, as this user, run\n\
             \x20 gatehouse --data-dir {dir} admin token\n\
             It prints a platform admin token (valid {} s) for the admin API at {url}/admin/v1\n\
             (Authorization: Bearer <token>). Use it to register a client in the system tenant and\n\
             bind it to the admin role; that client then gets admin tokens from {}/oauth2/token\n\
             with grant_type=client_credentials and audience={}.\n",
            app.config.oauth.admin_token_lifetime_secs,
            app.issuer_of("system"),
            app.config.oauth.admin_audience,
        ));
    }
    if app.kek_source == crate::crypto::kek::KekSource::DataDirFile {
        text.push_str("\nNote: the KEK is stored in the data dir (fine for development). In production set GATEHOUSE_KEK and remove the kek file.\n");
    }
    // A closed stdout (a pipe whose reader went away) must not bring a serving node down, so
    // write errors are ignored here rather than panicking as println! would.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

async fn init(config: Config) -> anyhow::Result<ExitCode> {
    let dir = crate::datadir::DataDir::open_or_create(&config.data_dir)?;
    if dir.is_initialised() {
        return Err(crate::datadir::DataDirError::AlreadyInitialised { path: dir.root().display().to_string() }.into());
    }
    let public_url = config.public_url.clone().unwrap_or_else(|| config.effective_public_url(config.listen));
    let kek_env = take_kek_env();
    let app = node::prepare(&config, Arc::new(SystemClock), kek_env.as_deref(), &public_url).await?;
    let names = node::certificate_names(&config, &public_url, None);
    let result = node::tls_material(&app, &names);
    app.raft.shutdown().await;
    result?;
    println!(
        "initialised {} (issuer {public_url}, CA {})",
        app.data_dir.root().display(),
        app.data_dir.ca_cert_path().display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<ExitCode> {
    let request = match command {
        KeysCommand::List { tenant } => ControlRequest::KeysList { tenant },
        KeysCommand::Rotate { tenant, now } => ControlRequest::KeysRotate { tenant, now },
        KeysCommand::Prune { tenant, dry_run } => ControlRequest::KeysPrune { tenant, dry_run },
    };
    let offline_tenant = match &request {
        ControlRequest::KeysList { tenant } => Some(tenant.clone()),
        _ => None,
    };
    let data = match (control::call(&config.data_dir, &request).await, offline_tenant) {
        (Ok(answer), _) if answer.ok => answer.data,
        (Ok(answer), _) => anyhow::bail!(answer.error.unwrap_or_else(|| "the node refused the request".into())),
        // `keys list` also reads a stopped data dir.
        (Err(control::ControlError::NotRunning(_)), Some(tenant)) => offline_key_list(config, &tenant)?,
        (Err(e), _) => return Err(e.into()),
    };
    println!("{}", serde_json::to_string_pretty(&data)?);
    Ok(ExitCode::SUCCESS)
}

fn offline_key_list(config: &Config, tenant: &str) -> anyhow::Result<serde_json::Value> {
    let dir = crate::datadir::DataDir::open_existing(&config.data_dir)?;
    let db = gatehouse_storage::store::open_read_only(&dir.db_path())?;
    let reader = gatehouse_storage::Reader::begin(&db)?;
    if reader.tenant(tenant)?.is_none() {
        anyhow::bail!("tenant {tenant:?} does not exist");
    }
    let records = reader.signing_keys(tenant)?;
    let lifetime = i64::try_from(config.keys.max_token_lifetime_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let now = crate::clock::Clock::now_ms(&SystemClock);
    Ok(serde_json::to_value(crate::idm::keys::views(&records, now, lifetime))?)
}

async fn audit_verify(config: &Config) -> anyhow::Result<ExitCode> {
    let report = match control::call(&config.data_dir, &ControlRequest::AuditVerify).await {
        Ok(answer) if answer.ok => serde_json::from_value::<ReportView>(answer.data)?,
        Ok(answer) => anyhow::bail!(answer.error.unwrap_or_default()),
        Err(control::ControlError::NotRunning(_)) => {
            let dir = crate::datadir::DataDir::open_existing(&config.data_dir)?;
            let db = gatehouse_storage::store::open_read_only(&dir.db_path())?;
            let reader = gatehouse_storage::Reader::begin(&db)?;
            let r = reader.verify_audit()?;
            ReportView {
                entries: r.entries,
                last_hash: r.last_hash,
                failure: r.failure.map(|f| FailureView { seq: f.seq, reason: f.reason }),
            }
        }
        Err(e) => return Err(e.into()),
    };
    match report.failure {
        None => {
            println!("audit chain verified: {} entries, last hash {}", report.entries, report.last_hash);
            Ok(ExitCode::SUCCESS)
        }
        Some(f) => {
            eprintln!("audit chain broken at seq {}: {}", f.seq, f.reason);
            Ok(ExitCode::FAILURE)
        }
    }
}

#[derive(serde::Deserialize)]
struct ReportView {
    entries: u64,
    last_hash: String,
    failure: Option<FailureView>,
}

#[derive(serde::Deserialize)]
struct FailureView {
    seq: u64,
    reason: String,
}
