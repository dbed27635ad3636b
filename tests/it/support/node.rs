//! `TestNode`: a `gatehouse serve` process on a port-0 listener with its own data dir.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// A base command with a clean environment for the node's settings.
pub fn command(data_dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--data-dir").arg(data_dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("GATEHOUSE_") {
            c.env_remove(k);
        }
    }
    c.env("GATEHOUSE_LOG__LEVEL", "warn");
    c
}

/// Runs a CLI command to completion.
pub fn cli(data_dir: &Path, args: &[&str]) -> Output {
    let out = command(data_dir).args(args).output().expect("run gatehouse");
    out
}

pub struct TestNode {
    pub data_dir: PathBuf,
    pub url: String,
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
        let mut cmd = command(data_dir);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(extra_args);
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
        let mut banner = String::new();
        let mut url = None;
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    banner.push_str(&line);
                    banner.push('\n');
                    if let Some(rest) = line.trim().strip_prefix("issuer:") {
                        url = Some(rest.trim().to_string());
                    }
                    if line.trim().starts_with("Browsers:") && url.is_some() {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let err: Vec<String> = erx.try_iter().collect();
                        return Err(format!("exited with {status}: {}", err.join("\n")));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = child.wait();
                    let err: Vec<String> = erx.try_iter().collect();
                    return Err(format!("stdout closed: {}", err.join("\n")));
                }
            }
        }
        let url = url.ok_or("no issuer line in the banner")?;
        let ca_pem = std::fs::read(data_dir.join("tls/ca.pem")).map_err(|e| e.to_string())?;
        Ok(TestNode { data_dir: data_dir.to_path_buf(), url, ca_pem, banner, log_path: node_log, child })
    }

    /// An HTTPS client that trusts only this node's CA.
    pub fn client(&self) -> reqwest::Client {
        client_for(&self.ca_pem)
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.data_dir, args)
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

pub fn client_for(ca_pem: &[u8]) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(ca_pem).expect("CA PEM");
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
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
