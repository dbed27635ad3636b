//! A fingerprint of a directory tree: every path, its mode, and each file's SHA-256.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSnapshot(BTreeMap<String, (u32, String)>);

impl DirSnapshot {
    pub fn of(root: &Path) -> DirSnapshot {
        let mut map = BTreeMap::new();
        if root.exists() {
            walk(root, root, &mut map);
        }
        DirSnapshot(map)
    }
}

fn walk(root: &Path, dir: &Path, map: &mut BTreeMap<String, (u32, String)>) {
    let meta = std::fs::metadata(dir).expect("metadata");
    let rel = dir.strip_prefix(root).expect("prefix").display().to_string();
    map.insert(format!("{rel}/"), (meta.permissions().mode(), String::new()));
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        if meta.is_dir() {
            walk(root, &path, map);
        } else {
            let rel = path.strip_prefix(root).expect("prefix").display().to_string();
            let digest = if meta.is_file() {
                hex::encode(Sha256::digest(std::fs::read(&path).expect("read")))
            } else {
                "special".into()
            };
            map.insert(rel, (meta.permissions().mode(), digest));
        }
    }
}
