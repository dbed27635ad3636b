//! The shape of `src/` that ARCHITECTURE.md promises: no import circle between its modules
//! (`crate::…` paths outside test code), so shared state, use cases, HTTP and start-up depend
//! one way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`http/api/admin`) -> file, for every source file of the binary's library.
fn modules(root: &Path) -> BTreeMap<String, std::path::PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().with_extension("");
                let mut name = rel.to_string_lossy().replace('\\', "/");
                if let Some(parent) = name.strip_suffix("/mod") {
                    name = parent.to_string();
                }
                if name != "lib" && name != "main" {
                    out.insert(name, path);
                }
            }
        }
    }
    out
}

/// The longest module prefix of a `crate::a::b::c` path that is a file of ours.
fn resolve(mods: &BTreeMap<String, std::path::PathBuf>, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = path.split("::").collect();
    while !parts.is_empty() {
        let candidate = parts.join("/");
        if mods.contains_key(&candidate) {
            return Some(candidate);
        }
        parts.pop();
    }
    None
}

#[test]
fn src_has_no_import_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&root);
    let path_re = regex::Regex::new(r"crate::([a-z_]+(?:::[a-z_]+)*)").unwrap();
    let group_re = regex::Regex::new(r"use crate::([a-z_:]+)::\{([^}]*)\}").unwrap();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, file) in &mods {
        let text = std::fs::read_to_string(file).unwrap();
        // Test modules sit at the end of a file and may use anything.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        let mut edges = BTreeSet::new();
        let mut add = |target: Option<String>| {
            if let Some(t) = target.filter(|t| t != name && !name.starts_with(&format!("{t}/"))) {
                edges.insert(t);
            }
        };
        for cap in path_re.captures_iter(text) {
            add(resolve(&mods, &cap[1]));
        }
        for cap in group_re.captures_iter(text) {
            for item in cap[2].split(',').map(|i| i.trim().split(" as ").next().unwrap_or_default()) {
                if !item.is_empty() {
                    add(resolve(&mods, &format!("{}::{item}", &cap[1])).or_else(|| resolve(&mods, &cap[1])));
                }
            }
        }
        graph.insert(name.clone(), edges);
    }
    // A module that can reach itself is in a circle; name the first one found with its path.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, trail)) = stack.pop() {
            for next in &graph[&at] {
                if next == start {
                    panic!("import circle in src/: {} -> {start}", trail.join(" -> "));
                }
                if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    assert!(graph.len() > 20, "the walk found the modules: {:?}", graph.keys());
}
