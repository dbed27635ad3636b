//! Every refused start writes nothing and says why in one line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::support::node::{command, copy_dir, temp_data_dir};
use crate::support::{cli, DirSnapshot, TestNode};

/// Runs `serve` and expects it to exit non-zero with a one-line `error:` message.
fn refused_serve(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = command(dir);
    cmd.args(args).args(["serve", "--listen", "127.0.0.1:0"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(!status.success(), "serve should have been refused");
            let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
            assert_eq!(lines.len(), 1, "one error line expected, got: {stderr}");
            return lines[0].to_string();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve with {args:?} {env:?} was not refused: it kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Case {
    name: &'static str,
    prepare: Box<dyn Fn(&Path)>,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    expect: &'static str,
}

#[test]
fn refused_starts_write_nothing() {
    let (tmp, base) = temp_data_dir();
    let init = cli(&base, &["init"]);
    assert!(init.status.success(), "init: {}", String::from_utf8_lossy(&init.stderr));
    let again = cli(&base, &["init"]);
    assert!(!again.status.success(), "init on an initialised dir must fail");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already initialised"));

    let bad_config = tmp.path().join("bad-value.toml");
    std::fs::write(&bad_config, "max_body_bytes = \"lots\"\n").unwrap();
    let unknown_key = tmp.path().join("unknown.toml");
    std::fs::write(&unknown_key, "listen = \"127.0.0.1:0\"\nbogus_key = 1\n").unwrap();
    let unknown_nested = tmp.path().join("unknown-nested.toml");
    std::fs::write(&unknown_nested, "[tls]\nnot_a_key = true\n").unwrap();
    let other_kek = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);

    let path_arg = |p: &PathBuf| p.display().to_string();
    let cases = vec![
        Case {
            name: "bad config value",
            prepare: Box::new(|_| {}),
            args: vec!["--config".into(), path_arg(&bad_config)],
            env: vec![],
            expect: "max_body_bytes",
        },
        Case {
            name: "unknown config key",
            prepare: Box::new(|_| {}),
            args: vec!["--config".into(), path_arg(&unknown_key)],
            env: vec![],
            expect: "bogus_key",
        },
        Case {
            name: "unknown nested key",
            prepare: Box::new(|_| {}),
            args: vec!["--config".into(), path_arg(&unknown_nested)],
            env: vec![],
            expect: "not_a_key",
        },
        Case {
            name: "unknown key from --set",
            prepare: Box::new(|_| {}),
            args: vec!["--set".into(), "nope=1".into()],
            env: vec![],
            expect: "nope",
        },
        Case {
            name: "unknown key from the environment",
            prepare: Box::new(|_| {}),
            args: vec![],
            env: vec![("GATEHOUSE_TLS__BOGUS", "x".into())],
            expect: "bogus",
        },
        Case {
            name: "http public url",
            prepare: Box::new(|_| {}),
            args: vec!["--set".into(), "public_url=http://example.com".into()],
            env: vec![],
            expect: "https",
        },
        Case {
            name: "not a redb file",
            prepare: Box::new(|d| std::fs::write(d.join("gatehouse.redb"), b"this is not a database at all").unwrap()),
            args: vec![],
            env: vec![],
            expect: "not a usable Gatehouse database",
        },
        Case {
            name: "empty database file",
            prepare: Box::new(|d| std::fs::File::create(d.join("gatehouse.redb")).unwrap().set_len(0).unwrap()),
            args: vec![],
            env: vec![],
            expect: "missing or empty",
        },
        Case {
            name: "deleted database",
            prepare: Box::new(|d| std::fs::remove_file(d.join("gatehouse.redb")).unwrap()),
            args: vec![],
            env: vec![],
            expect: "missing or empty",
        },
        Case {
            name: "truncated database",
            prepare: Box::new(|d| {
                let f = std::fs::OpenOptions::new().write(true).open(d.join("gatehouse.redb")).unwrap();
                let len = f.metadata().unwrap().len();
                f.set_len(len / 2).unwrap();
            }),
            args: vec![],
            env: vec![],
            expect: "is corrupted",
        },
        Case {
            name: "world-readable data dir",
            prepare: Box::new(|d| std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap()),
            args: vec![],
            env: vec![],
            expect: "chmod 700",
        },
        Case {
            name: "world-readable kek file",
            prepare: Box::new(|d| {
                std::fs::set_permissions(d.join("kek"), std::fs::Permissions::from_mode(0o644)).unwrap()
            }),
            args: vec![],
            env: vec![],
            expect: "chmod 600",
        },
        Case {
            name: "KEK in the environment differs",
            prepare: Box::new(|_| {}),
            args: vec![],
            env: vec![("GATEHOUSE_KEK", other_kek.clone())],
            expect: "differs",
        },
        Case {
            name: "malformed KEK in the environment",
            prepare: Box::new(|_| {}),
            args: vec![],
            env: vec![("GATEHOUSE_KEK", "short".into())],
            expect: "32 bytes",
        },
        Case {
            name: "kek file missing",
            prepare: Box::new(|d| std::fs::remove_file(d.join("kek")).unwrap()),
            args: vec![],
            env: vec![],
            expect: "no KEK",
        },
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case-{i}"));
        copy_dir(&base, &dir);
        (case.prepare)(&dir);
        let before = DirSnapshot::of(&dir);
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = case.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let line = refused_serve(&dir, &args, &env);
        assert!(line.contains(case.expect), "{}: message {line:?} should mention {:?}", case.name, case.expect);
        assert_eq!(DirSnapshot::of(&dir), before, "{}: the data dir changed", case.name);
    }

    // A bad config on a data dir that does not exist yet creates nothing.
    let fresh = tmp.path().join("fresh");
    refused_serve(&fresh, &["--config", &path_arg(&unknown_key)], &[]);
    assert!(!fresh.exists(), "a refused start created the data dir");
}

#[test]
fn a_second_instance_on_the_same_data_dir_is_refused() {
    let (_tmp, dir) = temp_data_dir();
    let first = TestNode::start(&dir);
    let before = DirSnapshot::of(&dir);
    let line = refused_serve(&dir, &[], &[]);
    assert!(line.contains("in use"), "{line}");
    assert_eq!(DirSnapshot::of(&dir), before, "the second instance changed the data dir");
    assert!(first.cli(&["tenant", "list"]).status.success(), "the first node still serves");
}
