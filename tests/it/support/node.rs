//! `TestNode`: a `gatehouse serve` process on a port-0 listener with its own data dir.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// The optimised binary, for the tests that measure memory and disk: `GATEHOUSE_RELEASE_BIN`, or
/// `release/gatehouse` beside the debug binary's profile directory.
pub fn release_bin() -> PathBuf {
    let path = std::env::var_os("GATEHOUSE_RELEASE_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let debug = Path::new(BIN);
        let target = debug.parent().and_then(Path::parent).unwrap_or(Path::new("target"));
        target.join("release/gatehouse")
    });
    assert!(
        path.is_file(),
        "the release binary {} is missing: run `cargo build --release --locked` first (tests/run-all.sh does)",
        path.display()
    );
    path
}

/// A base command with a clean environment for the node's settings.
pub fn command(data_dir: &Path) -> Command {
    command_of(Path::new(BIN), data_dir)
}

fn command_of(bin: &Path, data_dir: &Path) -> Command {
    wrapped_command(&[], bin, data_dir)
}

/// The node's command run through `wrapper` (a program and its arguments, such as
/// `fiu-run -x`), when one is given.
fn wrapped_command(wrapper: &[&str], bin: &Path, data_dir: &Path) -> Command {
    let mut c = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    c.arg("--data-dir").arg(data_dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("GATEHOUSE_") {
            c.env_remove(k);
        }
    }
    c.env("GATEHOUSE_LOG__LEVEL", "warn");
    // Tests run side by side: each node's management listener takes a free port.
    c.env("GATEHOUSE_MANAGEMENT__LISTEN", "127.0.0.1:0");
    c
}

/// Runs a CLI command to completion.
pub fn cli(data_dir: &Path, args: &[&str]) -> Output {
    let out = command(data_dir).args(args).output().expect("run gatehouse");
    out
}

pub struct TestNode {
    pub data_dir: PathBuf,
    /// The public URL (the default tenant's issuer).
    pub url: String,
    /// Where it listens, as an https URL (the public URL may name another host).
    pub local_url: String,
    /// The management listener (plain HTTP: metrics and probes).
    pub management_url: String,
    pub ca_pem: Vec<u8>,
    pub banner: String,
    log_path: PathBuf,
    child: Child,
}

impl TestNode {
    /// Starts `serve` on 127.0.0.1:0 and waits for its banner.
    pub fn start(data_dir: &Path) -> TestNode {
        Self::start_with(data_dir, &[], &[]).unwrap_or_else(|e| panic!("node did not start: {e}"))
    }

    pub fn start_with(data_dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Result<TestNode, String> {
        Self::start_bin(Path::new(BIN), data_dir, extra_args, env)
    }

    /// Starts the debug binary on a fixed `listen` address (for a public URL named in advance).
    pub fn start_listening(data_dir: &Path, listen: &str, extra_args: &[&str]) -> Result<TestNode, String> {
        let mut args = vec!["serve", "--listen", listen];
        args.extend_from_slice(extra_args);
        Self::spawn(Path::new(BIN), data_dir, &args, &[])
    }

    /// Starts the release binary (production build, production defaults but for `extra_args`).
    pub fn start_release(data_dir: &Path, extra_args: &[&str]) -> TestNode {
        Self::start_bin(&release_bin(), data_dir, extra_args, &[])
            .unwrap_or_else(|e| panic!("release node did not start: {e}"))
    }

    fn start_bin(bin: &Path, data_dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Result<TestNode, String> {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra_args);
        Self::spawn(bin, data_dir, &args, env)
    }

    /// Runs `args` (a command that serves, such as `cluster join …`) through `wrapper` (e.g.
    /// `ip netns exec NS`; none when empty) and waits for the banner.
    pub fn start_command_wrapped(
        wrapper: &[&str],
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<TestNode, String> {
        Self::spawn_wrapped(wrapper, Path::new(BIN), data_dir, args, env)
    }

    /// `serve` on 127.0.0.1:0 run through `wrapper` (e.g. `fiu-run -x`, for fault injection).
    pub fn start_wrapped(wrapper: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> Result<TestNode, String> {
        Self::spawn_wrapped(wrapper, Path::new(BIN), data_dir, &["serve", "--listen", "127.0.0.1:0"], env)
    }

    fn spawn(bin: &Path, data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<TestNode, String> {
        Self::spawn_wrapped(&[], bin, data_dir, args, env)
    }

    fn spawn_wrapped(
        wrapper: &[&str],
        bin: &Path,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<TestNode, String> {
        let mut cmd = wrapped_command(wrapper, bin, data_dir);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            // Keep draining after the banner: the node must never see a closed stdout.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (etx, erx) = mpsc::channel::<String>();
        // The node's log, kept beside its data dir for a failing test to show.
        let log_path = data_dir.with_extension("log");
        let node_log = log_path.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).ok();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = log.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let _ = etx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut local = None;
        let mut banner = String::new();
        let mut url = None;
        let mut management_url = String::new();
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    banner.push_str(&line);
                    banner.push('\n');
                    if let Some(rest) = line.trim().strip_prefix("issuer:") {
                        url = Some(rest.trim().to_string());
                    }
                    if let Some(rest) = line.trim().strip_prefix("listening on:") {
                        local = rest.split_whitespace().next().map(str::to_string);
                    }
                    if let Some(rest) = line.trim().strip_prefix("management:") {
                        management_url = rest.split_whitespace().next().unwrap_or_default().to_string();
                    }
                    if line.trim().starts_with("Browsers:") && url.is_some() {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("exited with {status}: {}", all_of(&erx)));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = child.wait();
                    return Err(format!("stdout closed: {}", all_of(&erx)));
                }
            }
        }
        let url = url.ok_or("no issuer line in the banner")?;
        let ca_pem = std::fs::read(data_dir.join("tls/ca.pem")).map_err(|e| e.to_string())?;
        Ok(TestNode {
            data_dir: data_dir.to_path_buf(),
            local_url: local.map(|l| format!("https://{l}")).unwrap_or_else(|| url.clone()),
            url,
            management_url,
            ca_pem,
            banner,
            log_path: node_log,
            child,
        })
    }

    /// An HTTPS client that trusts only this node's CA.
    pub fn client(&self) -> reqwest::Client {
        client_for(&self.ca_pem)
    }

    /// As [`TestNode::client`], its connections coming from `source` (any address of
    /// 127.0.0.0/8 reaches a node on loopback), so a test can speak for many sources.
    pub fn client_from(&self, source: std::net::IpAddr) -> reqwest::Client {
        client_builder(&self.ca_pem).local_address(source).build().expect("client")
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.data_dir, args)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// The size of the node's database file, in bytes.
    #[allow(dead_code)] // used by the disk tests
    pub fn db_bytes(&self) -> u64 {
        std::fs::metadata(self.data_dir.join("gatehouse.redb")).map(|m| m.len()).expect("database file")
    }

    /// Waits up to `within` for the process to exit on its own; its status, if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether the process is still running (not exited, not a zombie).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    pub fn addr(&self) -> String {
        self.url.trim_start_matches("https://").to_string()
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn stop(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("node did not stop within 30 s of SIGTERM");
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let status = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            eprintln!("--- node {} (exited: {status:?}) log:\n{log}--- end of node log", self.url);
        }
    }
}

/// Every line the stderr reader sends until the process's stderr closes (within 5 s): the
/// reader may still be behind when stdout closes.
fn all_of(lines: &mpsc::Receiver<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut all = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => all.push(line),
            Err(_) => break,
        }
    }
    all.join("\n")
}

pub fn client_for(ca_pem: &[u8]) -> reqwest::Client {
    client_builder(ca_pem).build().expect("client")
}

/// A client that trusts only `ca_pem`, follows no redirect and gives up after 20 s.
fn client_builder(ca_pem: &[u8]) -> reqwest::ClientBuilder {
    let cert = reqwest::Certificate::from_pem(ca_pem).expect("CA PEM");
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
}

/// A fresh temp dir and the (not yet existing) data dir inside it.
pub fn temp_data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    (tmp, data)
}

/// Copies a data dir (a stopped node's), keeping modes.
pub fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().expect("cp");
    assert!(status.success(), "cp -a failed");
}

/// A raw TLS connection to the node speaking HTTP/1.1, for clients that misbehave on purpose.
pub async fn raw_tls(node: &TestNode) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    raw_tls_checked(node).await.expect("TLS handshake")
}

/// As [`raw_tls`], with the handshake's failure as a value.
pub async fn raw_tls_checked(
    node: &TestNode,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut node.ca_pem.as_slice()) {
        roots.add(cert.expect("CA certificate")).expect("add CA");
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(node.addr()).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await
}
