//! Snapshots of a large state: built, sent in chunks and installed without holding the state
//! in memory, and compact on disk.

use std::io::Read;

use gatehouse_storage::tables::USED_ASSERTIONS;
use gatehouse_storage::Store;
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use redb::ReadableDatabase;
use tokio::io::AsyncWriteExt;

use crate::StateMachine;

/// The process's resident set, in KiB.
fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number of KiB")
}

/// Starts measuring the peak anew: `VmHWM` restarts from the current RSS.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS through /proc/self/clear_refs");
}

/// Fills `store` with `rows` rows of `row_bytes` each (incompressible), in one transaction.
fn fill(store: &Store, rows: usize, row_bytes: usize) {
    let txn = store.db().begin_write().unwrap();
    {
        let mut t = txn.open_table(USED_ASSERTIONS).unwrap();
        let mut value = vec![0u8; row_bytes];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..rows {
            for b in value.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            t.insert(format!("bulk/c/{i:08}").as_str(), value.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_state_is_snapshotted_sent_and_installed_in_bounded_memory() {
    const ROWS: usize = 800;
    const ROW_BYTES: usize = 64 * 1024;
    let state_bytes = (ROWS * ROW_BYTES) as u64; // 50 MiB of values, keys aside
    let (dir_l, dir_f) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Store::open(&dir_l.path().join("gatehouse.redb")).unwrap();
    let follower = Store::open(&dir_f.path().join("gatehouse.redb")).unwrap();
    fill(&leader, ROWS, ROW_BYTES);
    let mut sm_l = StateMachine::new(leader.db().clone(), leader.changes().clone(), leader.path()).unwrap();
    let mut sm_f = StateMachine::new(follower.db().clone(), follower.changes().clone(), follower.path()).unwrap();

    // The two nodes share this process, so each is measured while it alone works: the
    // leader building, then the follower receiving and installing. 30 MiB is 31.5 MB.
    let limit_kib = 30 * 1024;
    let before = rss_kib("VmRSS:");
    reset_peak();
    let snapshot = sm_l.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let grew = rss_kib("VmHWM:").saturating_sub(before);
    assert!(grew <= limit_kib, "building raised RSS by {grew} KiB at its peak");
    let files: Vec<_> = std::fs::read_dir(dir_l.path().join("snapshots")).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "one snapshot file, kept beside the database");
    let size = files[0].metadata().unwrap().len();
    assert!(size >= state_bytes && size * 10 < state_bytes * 12, "{size} bytes for {state_bytes} of state");

    // Sent in 1 MiB chunks, as a transport would, into the follower's receiving file.
    let built = rss_kib("VmRSS:");
    reset_peak();
    let mut received = sm_f.begin_receiving_snapshot().await.unwrap();
    let mut sending = snapshot.snapshot.into_std().await;
    let mut chunk = vec![0u8; 1024 * 1024];
    loop {
        let n = sending.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        received.write_all(&chunk[..n]).await.unwrap();
    }
    received.flush().await.unwrap();
    sm_f.install_snapshot(&snapshot.meta, received).await.unwrap();
    let grew = rss_kib("VmHWM:").saturating_sub(built);
    assert!(grew <= limit_kib, "sending and installing raised RSS by {grew} KiB at its peak");
    let txn = follower.db().begin_read().unwrap();
    let t = txn.open_table(USED_ASSERTIONS).unwrap();
    assert_eq!(redb::ReadableTableMetadata::len(&t).unwrap(), ROWS as u64, "every row arrived");
    let current = sm_f.get_current_snapshot().await.unwrap().expect("the installed snapshot is current");
    assert_eq!(current.meta, snapshot.meta);
    let left: Vec<_> = std::fs::read_dir(dir_f.path().join("snapshots")).unwrap().flatten().collect();
    assert_eq!(left.len(), 1, "the received stream is not left behind: {left:?}");
}

#[tokio::test]
async fn a_damaged_snapshot_is_refused_and_changes_nothing() {
    let (dir_l, dir_f) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Store::open(&dir_l.path().join("gatehouse.redb")).unwrap();
    let follower = Store::open(&dir_f.path().join("gatehouse.redb")).unwrap();
    fill(&leader, 10, 1024);
    fill(&follower, 3, 16);
    let mut sm_l = StateMachine::new(leader.db().clone(), leader.changes().clone(), leader.path()).unwrap();
    let mut sm_f = StateMachine::new(follower.db().clone(), follower.changes().clone(), follower.path()).unwrap();
    let snapshot = sm_l.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let mut bytes = Vec::new();
    snapshot.snapshot.into_std().await.read_to_end(&mut bytes).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let mut received = sm_f.begin_receiving_snapshot().await.unwrap();
    received.write_all(&bytes).await.unwrap();
    assert!(sm_f.install_snapshot(&snapshot.meta, received).await.is_err(), "a flipped bit is found");
    let txn = follower.db().begin_read().unwrap();
    let t = txn.open_table(USED_ASSERTIONS).unwrap();
    assert_eq!(redb::ReadableTableMetadata::len(&t).unwrap(), 3, "the old state is whole");
    assert!(sm_f.get_current_snapshot().await.unwrap().is_none(), "and nothing was named current");
}
