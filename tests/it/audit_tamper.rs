//! The tamper suite (A1, A13): records rewritten through redb itself on a stopped copy.

use std::path::{Path, PathBuf};

use gatehouse_storage::tables::AUDIT;
use gatehouse_storage::AuditEntry;
use redb::ReadableTable;

use crate::support::node::{copy_dir, temp_data_dir};
use crate::support::{cli, TestNode};

fn tamper(dir: &Path, change: impl FnOnce(&mut redb::Table<u64, &'static [u8]>)) {
    let db = redb::Database::open(dir.join("gatehouse.redb")).expect("open copy");
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(AUDIT).unwrap();
        change(&mut t);
    }
    txn.commit().unwrap();
}

fn entry(t: &redb::Table<u64, &'static [u8]>, seq: u64) -> AuditEntry {
    AuditEntry::from_bytes(t.get(seq).unwrap().unwrap().value()).expect("entry parses")
}

fn verify(dir: &Path) -> (bool, String, String) {
    let out = cli(dir, &["audit", "verify"]);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn audit_verify_names_the_first_bad_entry_for_every_kind_of_tampering() {
    let (tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    for id in ["t-one", "t-two", "t-three"] {
        assert!(node.cli(&["tenant", "create", id]).status.success());
    }
    assert!(node.stop().success());

    let copy = |name: &str| -> PathBuf {
        let to = tmp.path().join(name);
        copy_dir(&dir, &to);
        to
    };

    let clean = copy("clean");
    let (ok, stdout, stderr) = verify(&clean);
    assert!(ok, "untouched copy must verify: {stderr}");
    assert!(stdout.contains("4 entries"), "bootstrap plus three creates: {stdout}");

    type Case = (&'static str, u64, Box<dyn FnOnce(&mut redb::Table<u64, &'static [u8]>)>);
    let cases: Vec<Case> = vec![
        (
            "edit-one-entry",
            2,
            Box::new(|t| {
                let mut e = entry(t, 2);
                e.target = "tenant:forged".into();
                t.insert(2, e.to_bytes().as_slice()).unwrap();
            }),
        ),
        (
            "edit-with-recomputed-hash",
            3,
            Box::new(|t| {
                let mut e = entry(t, 2);
                e.actor = "someone-else".into();
                e.hash = e.compute_hash();
                t.insert(2, e.to_bytes().as_slice()).unwrap();
            }),
        ),
        (
            "delete-interior-entry",
            2,
            Box::new(|t| {
                t.remove(2).unwrap();
            }),
        ),
        (
            "delete-last-entry",
            4,
            Box::new(|t| {
                t.remove(4).unwrap();
            }),
        ),
        (
            "swap-two-entries",
            2,
            Box::new(|t| {
                let a = t.get(2).unwrap().unwrap().value().to_vec();
                let b = t.get(3).unwrap().unwrap().value().to_vec();
                t.insert(2, b.as_slice()).unwrap();
                t.insert(3, a.as_slice()).unwrap();
            }),
        ),
        (
            "flip-a-byte",
            3,
            Box::new(|t| {
                let mut bytes = t.get(3).unwrap().unwrap().value().to_vec();
                let last = bytes.len() - 40;
                bytes[last] ^= 0x01;
                t.insert(3, bytes.as_slice()).unwrap();
            }),
        ),
    ];
    for (name, bad_seq, change) in cases {
        let target = copy(name);
        tamper(&target, change);
        let (ok, _, stderr) = verify(&target);
        assert!(!ok, "{name}: audit verify passed on a tampered chain");
        assert!(
            stderr.contains(&format!("seq {bad_seq}:")),
            "{name}: expected seq {bad_seq} to be named, got: {stderr}"
        );
    }
    // The untouched copy still passes after all that.
    assert!(verify(&clean).0);
}
