//! The packaging under `packaging/`: the Kubernetes manifests parse, and they, the container
//! image and the systemd unit start the same binary with config keys that exist (the config
//! loader refuses unknown keys, in files and in `GATEHOUSE_*` variables alike).

use std::path::{Path, PathBuf};

use gatehouse::config::{Config, Overrides};

fn packaging(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Loads a config as the node would: `file` (TOML text) and then `env`.
fn load(file: Option<&str>, env: &[(String, String)]) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let config_file: Option<PathBuf> = file.map(|text| {
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(&path, text).unwrap();
        path
    });
    let overrides = Overrides { config_file, ..Default::default() };
    Config::load_with_env(&overrides, env.to_vec()).map_err(|e| e.to_string())
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn the_check_refuses_a_key_that_does_not_exist() {
    assert!(load(None, &env(&[("GATEHOUSE_CLUSTER__NO_SUCH_KEY", "1")])).is_err());
    assert!(load(Some("[cluster]\nno_such_key = 1\n"), &[]).is_err());
}

#[test]
fn the_statefulset_parses_and_configures_existing_keys() {
    let text = packaging("kubernetes/gatehouse.yaml");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("each document parses"))
        .collect();
    let kind = |d: &serde_yaml::Value| d["kind"].as_str().unwrap_or_default().to_string();
    let config_map = docs.iter().find(|d| kind(d) == "ConfigMap").expect("a ConfigMap");
    let toml = config_map["data"]["gatehouse.toml"].as_str().expect("gatehouse.toml in the ConfigMap");
    let set = docs.iter().find(|d| kind(d) == "StatefulSet").expect("a StatefulSet");
    assert_eq!(set["spec"]["replicas"].as_u64(), Some(3));
    let container = &set["spec"]["template"]["spec"]["containers"][0];

    // The variables it sets, and those its start script exports, for a joining pod.
    let mut vars = Vec::new();
    for var in container["env"].as_sequence().expect("env") {
        let name = var["name"].as_str().unwrap().to_string();
        if let (true, Some(value)) = (name.starts_with("GATEHOUSE_"), var["value"].as_str()) {
            vars.push((name, value.replace("$(POD_NAME)", "gatehouse-1")));
        }
    }
    let script = container["args"][0].as_str().expect("the start script");
    let export = regex::Regex::new(r#"export (GATEHOUSE_[A-Z_]+)="([^"]*)""#).unwrap();
    for c in export.captures_iter(script) {
        vars.push((c[1].to_string(), c[2].replace("$POD_NAME", "gatehouse-1")));
    }
    assert!(vars.iter().any(|(k, _)| k == "GATEHOUSE_CLUSTER__JOIN__PEER"), "the pods join: {vars:?}");
    assert!(
        script.contains("exec gatehouse --data-dir /var/lib/gatehouse --config /etc/gatehouse/gatehouse.toml serve"),
        "{script}"
    );
    let config = load(Some(toml), &vars).unwrap_or_else(|e| panic!("the StatefulSet's config: {e}"));
    let join = config.cluster.join.clone().expect("cluster.join from the variables");
    assert_eq!(join.token_file, PathBuf::from("/etc/gatehouse/join/gatehouse-1"));
    assert_eq!(config.cluster.advertised(), "gatehouse-1.gatehouse-peers:8444");
}

#[test]
fn the_container_image_configures_existing_keys() {
    let text = packaging("container/Containerfile");
    let pair = regex::Regex::new(r"(GATEHOUSE_[A-Z_]+)=(\S+)").unwrap();
    let vars: Vec<(String, String)> =
        pair.captures_iter(&text).map(|c| (c[1].to_string(), c[2].trim_end_matches('\\').to_string())).collect();
    assert!(vars.len() >= 3, "{vars:?}");
    load(None, &vars).unwrap_or_else(|e| panic!("the image's environment: {e}"));
    assert!(text.contains(r#"ENTRYPOINT ["gatehouse", "--data-dir", "/var/lib/gatehouse"]"#));
    assert!(text.contains(r#"CMD ["serve"]"#));
}

#[test]
fn the_systemd_unit_and_its_cluster_settings_use_existing_keys() {
    let text = packaging("systemd/gatehouse.service");
    assert!(text.contains(
        "ExecStart=/usr/bin/gatehouse --data-dir /var/lib/gatehouse --config /etc/gatehouse/gatehouse.toml serve"
    ));
    // The `[cluster.join]` lines its comment tells operators to add.
    let lines: Vec<&str> = text.lines().map(|l| l.trim_start_matches('#').trim()).collect();
    let at = lines.iter().position(|l| *l == "[cluster.join]").expect("the join settings");
    let snippet = lines[at..at + 3].join("\n");
    let config = load(Some(&snippet), &[]).unwrap_or_else(|e| panic!("{snippet}: {e}"));
    assert!(config.cluster.join.is_some());
    load(Some(&packaging("gatehouse.example.toml")), &[]).expect("the example config");
}
