//! Three-node clusters of real processes on 127.0.0.1 (or each in a network namespace of its
//! own, for partitions): forming one from zero with `cluster init`, `join-token` and `join`;
//! refused joins; the cluster port's mutual TLS; writes through any node; no acknowledged
//! write lost when the leader, or every node, is killed with SIGKILL under a stream of
//! writes (R3, R21), or when the network splits (R9); and linearizable histories (R1).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::admin::{call, create_client, into_answer, oauth_post, platform_token, token_basic, Answer};
use crate::support::netns::{Direction, Host, Lan};
use crate::support::{cli, free_port, TestNode};

/// Where a member runs: on 127.0.0.1 here, or on a host of a [`Lan`] (its own network
/// namespace, reached through the bridge).
#[derive(Clone)]
struct Place {
    host: String,
    wrapper: Vec<String>,
}

impl Place {
    fn local() -> Place {
        Place { host: "127.0.0.1".into(), wrapper: Vec::new() }
    }

    fn on(host: &Host) -> Place {
        Place { host: host.ip.clone(), wrapper: host.wrapper() }
    }

    /// Runs the node's `args` here and waits for its banner.
    fn start(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<TestNode, String> {
        let wrapper: Vec<&str> = self.wrapper.iter().map(String::as_str).collect();
        TestNode::start_command_wrapped(&wrapper, dir, args, env)
    }
}

/// One member: its process (when running), data dir and cluster port.
struct Member {
    node: Option<TestNode>,
    dir: PathBuf,
    port: u16,
    /// The public URL it was started with, kept across restarts.
    public_url: Option<String>,
    place: Place,
}

impl Member {
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("GATEHOUSE_CLUSTER__LISTEN".into(), format!("{}:{}", self.place.host, self.port)),
            ("GATEHOUSE_MANAGEMENT__LISTEN".into(), format!("{}:0", self.place.host)),
            // Shorter than the defaults (5 s each), so the tests of a node cut off are quick.
            ("GATEHOUSE_CLUSTER__LEADER_WAIT_MS".into(), "2000".into()),
            ("GATEHOUSE_CLUSTER__STALENESS_MS".into(), "1500".into()),
            // Snapshots (and the log purged behind them) every 1,000 entries instead of
            // 20,000, so the tests' write streams go through them.
            ("GATEHOUSE_CLUSTER__SNAPSHOT_EVERY_ENTRIES".into(), "1000".into()),
        ]
    }

    fn signal(&self, signal: &str) {
        let pid = self.node().pid().to_string();
        let ok = std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success();
        assert!(ok, "kill {signal} {pid}");
    }

    fn node(&self) -> &TestNode {
        self.node.as_ref().expect("the member is running")
    }

    /// `serve` again on its data dir, with its cluster port.
    fn restart(&mut self) {
        self.try_restart().unwrap_or_else(|e| panic!("restart: {e}"));
    }

    /// [`Member::restart`], or why the node did not start.
    fn try_restart(&mut self) -> Result<(), String> {
        self.try_restart_with(&[])
    }

    /// [`Member::try_restart`] with more environment (`FAILPOINTS`, say).
    fn try_restart_with(&mut self, extra: &[(&str, &str)]) -> Result<(), String> {
        let env = self.env();
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend_from_slice(extra);
        let listen = format!("{}:0", self.place.host);
        let mut args = vec!["serve", "--listen", &listen];
        if let Some(url) = &self.public_url {
            args.extend(["--public-url", url]);
        }
        self.node = Some(self.place.start(&self.dir, &args, &env)?);
        Ok(())
    }

    fn kill9(&mut self) {
        if let Some(node) = self.node.take() {
            node.kill9();
        }
    }
}

fn start_founder(root: &Path, public_url: Option<&str>, place: Place) -> Member {
    let public_url = public_url.map(String::from);
    let mut m = Member { node: None, dir: root.join("n1"), port: free_port(), public_url, place };
    m.restart();
    m
}

fn join(root: &Path, name: &str, token: &str, peer: &str) -> Result<Member, String> {
    join_as(root, name, token, peer, None, Place::local())
}

fn join_as(
    root: &Path,
    name: &str,
    token: &str,
    peer: &str,
    public_url: Option<&str>,
    place: Place,
) -> Result<Member, String> {
    let m =
        Member { node: None, dir: root.join(name), port: free_port(), public_url: public_url.map(String::from), place };
    let env = m.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let listen = format!("{}:0", m.place.host);
    let mut args = vec!["cluster", "join", "--token", token, "--peer", peer, "--listen", &listen];
    if let Some(url) = public_url {
        args.extend(["--public-url", url]);
    }
    let node = m.place.start(&m.dir, &args, &env)?;
    Ok(Member { node: Some(node), ..m })
}

fn ok_stdout(dir: &Path, args: &[&str]) -> String {
    let out = cli(dir, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn join_token(m: &Member, ttl_secs: u64) -> String {
    ok_stdout(&m.dir, &["cluster", "join-token", "--ttl-secs", &ttl_secs.to_string()]).trim().to_string()
}

fn status(m: &Member) -> Option<Value> {
    let out = cli(&m.dir, &["cluster", "status", "--json"]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

/// A member's view: leader, term, and each member's id and role.
type View = (Value, Value, Vec<(String, String)>);

/// The cluster as every running member reports it, once they agree: three voters, one leader,
/// one term. Panics after `within`.
fn wait_for_agreement(members: &[&Member], voters: usize, within: Duration) -> (String, u64) {
    let deadline = Instant::now() + within;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = members.iter().map(|m| status(m)).collect();
        let views: Vec<View> = last
            .iter()
            .flatten()
            .map(|s| {
                let members = s["members"]
                    .as_array()
                    .map(|ms| {
                        ms.iter()
                            .map(|m| {
                                (
                                    m["node_id"].as_str().unwrap_or("").to_string(),
                                    m["role"].as_str().unwrap_or("").to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (s["leader"].clone(), s["term"].clone(), members)
            })
            .collect();
        let agreed = views.len() == members.len()
            && views.windows(2).all(|w| w[0] == w[1])
            && views[0].0.is_string()
            && views[0].2.iter().filter(|(_, role)| role == "voter").count() == voters
            && views[0].2.len() == voters;
        if agreed {
            return (views[0].0.as_str().unwrap().to_string(), views[0].1.as_u64().unwrap());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the members did not agree on {voters} voters within {within:?}: {last:#?}");
}

/// Forms a cluster of three from zero: the second joins through the founder, the third
/// through the second (a follower, so its join is forwarded to the leader).
fn three_nodes(root: &Path) -> Vec<Member> {
    three_nodes_sharing(root, None)
}

/// As [`three_nodes`], every node serving `public_url` when given (as a real deployment does,
/// so a token or an assertion made for one node is good on every node).
fn three_nodes_sharing(root: &Path, public_url: Option<&str>) -> Vec<Member> {
    three_nodes_at(root, public_url, [Place::local(), Place::local(), Place::local()])
}

/// As [`three_nodes_sharing`], each node at its own place.
fn three_nodes_at(root: &Path, public_url: Option<&str>, places: [Place; 3]) -> Vec<Member> {
    let [p1, p2, p3] = places;
    let n1 = start_founder(root, public_url, p1);
    let init: Value = serde_json::from_str(&ok_stdout(&n1.dir, &["cluster", "init"])).unwrap();
    assert_eq!(init["ca_fingerprint"].as_str().map(str::len), Some(64), "{init}");
    let n2 = join_as(root, "n2", &join_token(&n1, 600), &n1.node().local_url, public_url, p2)
        .unwrap_or_else(|e| panic!("join n2: {e}"));
    wait_for_agreement(&[&n1, &n2], 2, Duration::from_secs(30));
    let n3 = join_as(root, "n3", &join_token(&n2, 600), &n2.node().local_url, public_url, p3)
        .unwrap_or_else(|e| panic!("join n3: {e}"));
    wait_for_agreement(&[&n1, &n2, &n3], 3, Duration::from_secs(30));
    vec![n1, n2, n3]
}

#[test]
fn three_nodes_form_from_zero_and_bad_joins_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let members = three_nodes(tmp.path());
    let (n1, n2, n3) = (&members[0], &members[1], &members[2]);

    // A used token, an expired one and one naming another CA are refused; nothing is left
    // behind that would let the dir found a cluster of its own.
    let used = join_token(n1, 600);
    let spare = tempfile::tempdir().unwrap();
    let first = join(spare.path(), "x1", &used, &n1.node().local_url).expect("a fresh token admits a node");
    assert!(status(&first).is_some());
    // A fourth member catches up but stays a learner: a cluster has three voters at most.
    let fourth = format!("{:016x}", node_id_of(&first));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = status(n1).unwrap();
        let member = view["members"].as_array().unwrap().iter().find(|m| m["node_id"] == fourth.as_str()).cloned();
        if member.as_ref().is_some_and(|m| m["lag"].as_u64().is_some_and(|l| l < 64)) {
            std::thread::sleep(Duration::from_secs(1));
            let view = status(n1).unwrap();
            let roles: Vec<&str> =
                view["members"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
            assert_eq!(roles.iter().filter(|r| **r == "voter").count(), 3, "{view}");
            let role = view["members"].as_array().unwrap().iter().find(|m| m["node_id"] == fourth.as_str()).unwrap()
                ["role"]
                .clone();
            assert_eq!(role, "learner", "{view}");
            break;
        }
        assert!(Instant::now() < deadline, "the fourth member did not catch up: {view}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let again = join(spare.path(), "x2", &used, &n1.node().local_url).err().expect("a used token is refused");
    assert!(again.contains("401") && again.contains("already used"), "{again}");
    assert!(!spare.path().join("x2/gatehouse.redb").exists() && !spare.path().join("x2/cluster.joined").exists());
    let expiring = join_token(n1, 1);
    std::thread::sleep(Duration::from_millis(1500));
    let expired = join(spare.path(), "x3", &expiring, &n2.node().local_url).err().expect("an expired token is refused");
    assert!(expired.contains("401"), "{expired}");
    let good = join_token(n1, 600);
    let mut parts: Vec<&str> = good.split('.').collect();
    let foreign = "0".repeat(64);
    parts[1] = &foreign;
    let pinned = join(spare.path(), "x4", &parts.join("."), &n1.node().local_url).err().expect("wrong CA refused");
    assert!(pinned.contains("does not lead to the cluster CA"), "{pinned}");
    // The refusal happened before the token was presented: it still admits a node.
    let still = join(spare.path(), "x5", &good, &n3.node().local_url).expect("the pinned refusal spent nothing");
    drop(still);
    drop(first);

    // Any node takes writes (forwarded to the leader) and serves linearizable reads.
    let created = ok_stdout(&n3.dir, &["tenant", "create", "acme"]);
    assert!(created.contains("acme"), "{created}");
    let listed = ok_stdout(&n2.dir, &["tenant", "list"]);
    assert!(listed.contains("\"acme\""), "a write through one follower is read on another: {listed}");
}

#[tokio::test]
async fn the_cluster_port_refuses_clients_without_a_node_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let members = three_nodes(tmp.path());
    let n1 = &members[0];
    let ca = std::fs::read(n1.dir.join("tls/ca.pem")).unwrap();
    let trusted = reqwest::Certificate::from_pem(&ca).unwrap();
    let client = |identity: Option<reqwest::Identity>| {
        let mut b = reqwest::Client::builder().tls_certs_only([trusted.clone()]).timeout(Duration::from_secs(5));
        if let Some(id) = identity {
            b = b.identity(id);
        }
        b.build().unwrap()
    };
    // The same trust reaches the public port: the refusals below are the certificates'.
    let public = client(None).get(format!("{}/health", n1.node().local_url)).send().await.expect("public port");
    assert_eq!(public.status(), StatusCode::OK);

    let foreign_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let foreign = params.self_signed(&foreign_key).unwrap();
    let identity =
        reqwest::Identity::from_pem(format!("{}{}", foreign.pem(), foreign_key.serialize_pem()).as_bytes()).unwrap();
    let url = format!("https://127.0.0.1:{}/raft/leader", n1.port);
    for (what, identity) in [("no certificate", None), ("a foreign CA's certificate", Some(identity))] {
        let answer = client(identity).post(&url).body("\"Status\"").send().await;
        assert!(answer.is_err(), "{what}: the handshake must fail, got {:?}", answer.map(|r| r.status()));
    }
}

/// Writes of uniquely named organizations from several clients, each through one member.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeSet<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A member's address and an admin token of its issuer, refreshed by `retarget`.
type Target = Arc<Mutex<Option<(String, String, Vec<u8>)>>>;

fn target_of(m: &Member) -> (String, String, Vec<u8>) {
    let node = m.node();
    (node.local_url.clone(), platform_token(node), node.ca_pem.clone())
}

fn start_writers(phase: &str, targets: &[Target]) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut tasks = Vec::new();
    for (w, target) in targets.iter().enumerate() {
        for lane in 0..2 {
            let (stop, acked, target, phase) = (stop.clone(), acked.clone(), target.clone(), phase.to_string());
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Some((url, token, ca)) = target.lock().unwrap().clone() else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    seq += 1;
                    let name = format!("{phase}-w{w}-{lane}-{seq}");
                    let client = crate::support::node::client_for(&ca);
                    let sent = client
                        .post(format!("{url}/admin/v1/tenants/default/organizations"))
                        .bearer_auth(&token)
                        .timeout(Duration::from_secs(10))
                        .json(&json!({ "name": name }))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == StatusCode::CREATED => {
                            acked.lock().unwrap().insert(name);
                        }
                        Ok(r) if r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Ok(r) => panic!("write {name}: unexpected {}", r.status()),
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }));
        }
    }
    Writers { stop, acked, tasks }
}

impl Writers {
    async fn finish(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("writer");
        }
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

/// Every organization name on `m`, read through the admin API (a linearizable read).
async fn organizations(m: &Member) -> Vec<String> {
    let node = m.node();
    let token = platform_token(node);
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/admin/v1/tenants/default/organizations?limit=200", node.local_url);
        if let Some(c) = &cursor {
            let c = percent_encoding::utf8_percent_encode(c, percent_encoding::NON_ALPHANUMERIC);
            url.push_str(&format!("&cursor={c}"));
        }
        let answer =
            into_answer(node.client().request(Method::GET, url).bearer_auth(&token).send().await.unwrap()).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        for item in answer.body["items"].as_array().unwrap() {
            names.push(item["name"].as_str().unwrap().to_string());
        }
        match answer.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return names,
        }
    }
}

/// Checks every acknowledged write is on every member, once, and the members hold the same.
async fn assert_all_present(members: &[Member], acked: &BTreeSet<String>) {
    let mut seen: Vec<BTreeMap<String, usize>> = Vec::new();
    for m in members {
        let mut counts = BTreeMap::new();
        for name in organizations(m).await {
            *counts.entry(name).or_insert(0) += 1;
        }
        let missing: Vec<&String> = acked.iter().filter(|n| !counts.contains_key(*n)).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged writes missing on {}: {missing:?}",
            missing.len(),
            m.dir.display()
        );
        let doubled: Vec<&String> = counts.iter().filter(|(_, c)| **c > 1).map(|(n, _)| n).collect();
        assert!(doubled.is_empty(), "writes applied twice on {}: {doubled:?}", m.dir.display());
        seen.push(counts);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "the members hold different organizations");
}

fn leader_index(members: &[Member], leader: &str) -> usize {
    members.iter().position(|m| status(m).is_some_and(|s| s["node_id"] == leader)).expect("the leader is a member")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_or_every_node_loses_no_acknowledged_write() {
    // It asserts liveness bounds: no heavy test runs beside it.
    let _heavy = crate::support::heavy();
    let tmp = tempfile::tempdir().unwrap();
    let mut members = formed(tmp.path(), None).await;
    let targets: Vec<Target> = members.iter().map(|m| Arc::new(Mutex::new(Some(target_of(m))))).collect();
    let writers = start_writers("leader-kill", &targets);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // SIGKILL the leader under load: the survivors elect a new one.
    let (old_leader, old_term) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    let li = leader_index(&members, &old_leader);
    *targets[li].lock().unwrap() = None;
    let killed_at = Instant::now();
    members[li].kill9();
    let probes: Vec<String> =
        (0..3).filter(|i| *i != li).map(|i| format!("{}/ready", members[i].node().management_url)).collect();
    let probe = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let elected = loop {
        let mut views = Vec::new();
        for url in &probes {
            if let Ok(r) = probe.get(url).send().await {
                views.push(r.json::<Value>().await.unwrap_or_default());
            }
        }
        let new = views.iter().find(|s| s["leader_id"].is_string() && s["leader_id"] != old_leader.as_str());
        if let Some(s) = new {
            break (s["leader_id"].as_str().unwrap().to_string(), killed_at.elapsed());
        }
        assert!(killed_at.elapsed() < Duration::from_secs(10), "no new leader 10 s after the kill: {views:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(elected.1 < Duration::from_secs(2), "a new leader took {:?}", elected.1);
    eprintln!("new leader {} {:?} after the kill (term was {old_term})", elected.0, elected.1);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The old leader comes back as a follower and catches up.
    members[li].restart();
    *targets[li].lock().unwrap() = Some(target_of(&members[li]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked = writers.finish().await;
    assert!(acked.len() > 20, "the writers got only {} writes through", acked.len());
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30));
    assert_all_present(&members, &acked).await;

    // All three killed at once, restarted in another order: everything is still there.
    let writers = start_writers("all-kill", &targets);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for m in members.iter_mut() {
        m.kill9();
    }
    for t in &targets {
        *t.lock().unwrap() = None;
    }
    let more = writers.finish().await;
    for i in [2, 0, 1] {
        members[i].restart();
    }
    for (t, m) in targets.iter().zip(&members) {
        *t.lock().unwrap() = Some(target_of(m));
    }
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30));
    let all: BTreeSet<String> = acked.union(&more).cloned().collect();
    assert_all_present(&members, &all).await;
}

/// R1, R12: a leader SIGKILLed and restarted before its followers' lease runs out does not
/// go on leading its old term (openraft would resume it with the commit index its state
/// machine had made durable, which misses its last writes): it campaigns, the cluster moves to
/// a new term, and a read on it right after the restart sees the write it acknowledged last.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_restarted_at_once_campaigns_and_its_reads_see_its_last_write() {
    // It asserts liveness bounds: no heavy test runs beside it.
    let _heavy = crate::support::heavy();
    let tmp = tempfile::tempdir().unwrap();
    let mut members = formed(tmp.path(), Some("https://id.cluster.test")).await;
    let (leader, term) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    let li = leader_index(&members, &leader);
    // One public name, so the token is good on the restarted node too.
    let token = platform_token(members[li].node());
    let org = json!({ "name": "acknowledged-before-the-crash" });
    let created =
        on(&members[li], Method::POST, "/admin/v1/tenants/default/organizations", Some(&token), Some(&org)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let killed = Instant::now();
    members[li].kill9();
    members[li].restart();
    let down = killed.elapsed();
    // The token from before the crash: minting one would write, and a write moves the commit.
    let seen = organizations_or_error(&members[li], &token).await;
    assert!(
        seen.as_ref().is_ok_and(|names| names.iter().any(|n| n == "acknowledged-before-the-crash")),
        "the restarted leader (down {down:?}) answered without its last acknowledged write: {seen:?}"
    );
    let (_, after) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    assert!(after > term, "the leader of term {term} resumed it after a restart {down:?} long; term now {after}");
}

async fn create_org(m: &Member, token: &str, name: &str) -> StatusCode {
    let path = "/admin/v1/tenants/default/organizations";
    call(m.node(), Method::POST, path, Some(token), Some(&json!({ "name": name }))).await.status
}

async fn ready_leader(m: &Member) -> Option<String> {
    let url = format!("{}/ready", m.node().management_url);
    let probe = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let answer: Value = probe.get(url).send().await.ok()?.json().await.ok()?;
    answer["leader_id"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_serves_no_stale_read_and_a_cut_off_node_refuses_writes() {
    // It asserts liveness bounds: no heavy test runs beside it.
    let _heavy = crate::support::heavy();
    let tmp = tempfile::tempdir().unwrap();
    let members = formed(tmp.path(), None).await;
    let tokens: Vec<String> = members.iter().map(|m| platform_token(m.node())).collect();
    let (leader, _) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    let li = leader_index(&members, &leader);
    assert_eq!(create_org(&members[li], &tokens[li], "before-pause").await, StatusCode::CREATED);

    // R2: pause the leader past the election timeout; the others elect a leader and take a
    // write; the old leader, resumed, must not answer a read without it.
    members[li].signal("-STOP");
    let others: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut new = None;
        for i in &others {
            if let Some(l) = ready_leader(&members[*i]).await.filter(|l| *l != leader) {
                new = Some(l);
            }
        }
        if new.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader while the old one is paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let o = others[0];
    assert_eq!(create_org(&members[o], &tokens[o], "during-pause").await, StatusCode::CREATED);
    members[li].signal("-CONT");
    let read = organizations_or_error(&members[li], &tokens[li]).await;
    match read {
        Ok(names) => assert!(names.contains(&"during-pause".to_string()), "a stale read on the old leader: {names:?}"),
        Err(status) => assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE),
    }

    // A node cut off from both others (they are paused): writes get 503 within the leader
    // wait, introspection turns 503 after the staleness bound, JWKS keeps being served.
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(20));
    let x = &members[others[1]];
    let (client_id, secret) = create_client(x.node(), &tokens[others[1]], "default", &["https://api.test"], &[]).await;
    let issued = token_basic(x.node(), "default", &client_id, &secret, &[("audience", "https://api.test")]).await;
    assert_eq!(issued.status, StatusCode::OK, "{}", issued.body);
    let access = issued.body["access_token"].as_str().unwrap().to_string();
    let form = [("token", access.as_str())];
    let introspect = || oauth_post(x.node(), "default", "introspect", Some((&client_id, &secret)), &form);
    assert_eq!(introspect().await.body["active"], true);
    for i in [li, others[0]] {
        members[i].signal("-STOP");
    }
    let started = Instant::now();
    let refused = create_org(x, &tokens[others[1]], "cut-off").await;
    let took = started.elapsed();
    assert_eq!(refused, StatusCode::SERVICE_UNAVAILABLE);
    // leader_wait_ms is 2 s here; a second more covers a busy machine.
    assert!(took < Duration::from_secs(3), "the refusal took {took:?}");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let stale = introspect().await;
    assert_eq!(stale.status, StatusCode::SERVICE_UNAVAILABLE, "{}", stale.body);
    assert_eq!(stale.body["error"], "temporarily_unavailable");
    let jwks = x.node().client().get(format!("{}/.well-known/jwks.json", x.node().url)).send().await.unwrap();
    assert_eq!(jwks.status(), StatusCode::OK);
    let ready = reqwest::get(format!("{}/ready", x.node().management_url)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Healed: the cut-off node takes writes again and every member holds the same state.
    for i in [li, others[0]] {
        members[i].signal("-CONT");
    }
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(20));
    assert_eq!(create_org(x, &tokens[others[1]], "after-heal").await, StatusCode::CREATED);
    assert_eq!(introspect().await.body["active"], true);
    let expected: BTreeSet<String> = ["before-pause", "during-pause", "after-heal"].map(String::from).into();
    assert_all_present(&members, &expected).await;
}

/// Every member's state digest (`cluster digest`), once they all hold the same one; panics
/// after `within`.
fn wait_for_one_digest(members: &[Member], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let digests: Vec<Value> =
            members.iter().map(|m| serde_json::from_str(&ok_stdout(&m.dir, &["cluster", "digest"])).unwrap()).collect();
        if digests.windows(2).all(|w| w[0]["sha256"] == w[1]["sha256"]) {
            return digests[0]["sha256"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the members' states did not converge: {digests:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes on `m` for `how_long`: every one must be refused (never acknowledged) with 503,
/// each within the leader wait (2 s here, and a second more for a busy machine).
async fn assert_writes_refused(m: &Member, token: &str, how_long: Duration, what: &str) {
    let until = Instant::now() + how_long;
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let started = Instant::now();
        let status = create_org(m, token, &format!("{what}-refused-{n}")).await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "write {n} on the {what}");
        assert!(took < Duration::from_secs(3), "write {n} on the {what} took {took:?} to be refused");
    }
}

/// R9: a minority partition neither commits nor serves stale data. Each node runs in a
/// network namespace of its own on one bridge; faults are nftables drops inside the
/// namespaces. The leader cut off both ways refuses writes and reads with 503 and turns
/// introspection to 503 after the staleness bound, while the other two elect a leader and
/// take writes; a follower that hears nothing from the leader (a one-way fault) refuses
/// writes while the others go on; with the leader and a follower cut from each other (a
/// bridge), the third takes writes. After each heal every acknowledged write is on every node
/// once (the refused ones of the isolated leader nowhere) and the members' state digests are
/// equal; through the first two faults a register written on the majority's side and read on
/// the minority's is checked for linearizability (R1).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_partition_commits_nothing_and_the_cluster_converges_after_healing() {
    let lan = Lan::new(3);
    let tmp = tempfile::tempdir().unwrap();
    let (root, places) = (tmp.path().to_path_buf(), [0, 1, 2].map(|i| Place::on(&lan.hosts[i])));
    let members = tokio::task::spawn_blocking(move || three_nodes_at(&root, None, places)).await.unwrap();
    let tokens: Vec<String> = members.iter().map(|m| platform_token(m.node())).collect();
    let targets: Vec<Target> = members.iter().map(|m| Arc::new(Mutex::new(Some(target_of(m))))).collect();
    let (leader, term) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    let li = leader_index(&members, &leader);
    let others: Vec<usize> = (0..3).filter(|i| *i != li).collect();

    // A client of the old leader's, with a token to introspect there.
    let x = &members[li];
    let (client_id, secret) = create_client(x.node(), &tokens[li], "default", &["https://api.test"], &[]).await;
    let issued = token_basic(x.node(), "default", &client_id, &secret, &[("audience", "https://api.test")]).await;
    assert_eq!(issued.status, StatusCode::OK, "{}", issued.body);
    let access = issued.body["access_token"].as_str().unwrap().to_string();
    let form = [("token", access.as_str())];
    let introspect = || oauth_post(x.node(), "default", "introspect", Some((&client_id, &secret)), &form);
    assert_eq!(introspect().await.body["active"], true);

    // The leader cut off from both others, under writes through every node; the register's
    // writers on the majority's side, and readers on the old leader's.
    let writers = start_writers("isolated-leader", &targets);
    let mut clients: Vec<(Target, bool)> =
        others.iter().flat_map(|o| [(targets[*o].clone(), true), (targets[*o].clone(), true)]).collect();
    clients.extend([(targets[li].clone(), false), (targets[li].clone(), false)]);
    let register = Register::start(&clients, u64::MAX);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cut = Instant::now();
    for o in &others {
        lan.cut(li, *o);
    }
    let majority: Vec<&Member> = others.iter().map(|i| &members[*i]).collect();
    let (new_leader, new_term) = wait_for_agreement(&majority, 3, Duration::from_secs(10));
    let elected = cut.elapsed();
    assert!(new_leader != leader && new_term > term, "the majority kept {leader} in term {term}");
    // Twice the election timeout after the old leader's lease (0.6 s), plus the polling.
    assert!(elected < Duration::from_secs(4), "the majority took {elected:?} to elect a leader");
    assert_writes_refused(x, &tokens[li], Duration::from_secs(3), "isolated leader").await;
    let read = organizations_or_error(x, &tokens[li]).await;
    assert_eq!(read.err(), Some(StatusCode::SERVICE_UNAVAILABLE), "a read on the isolated old leader");
    let stale = introspect().await;
    assert_eq!(stale.status, StatusCode::SERVICE_UNAVAILABLE, "{}", stale.body);
    let o = others[0];
    assert_eq!(create_org(&members[o], &tokens[o], "majority-during-cut").await, StatusCode::CREATED);
    lan.heal();
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(20));
    let mut acked = writers.finish().await;
    assert_linearizable(&register.stopped().await, "the leader cut off");
    acked.insert("majority-during-cut".into());
    assert_eq!(introspect().await.body["active"], true, "introspection after healing");
    wait_for_one_digest(&members, Duration::from_secs(20));
    assert_all_present(&members, &acked).await;
    let names = organizations(&members[o]).await;
    assert!(!names.iter().any(|n| n.contains("refused")), "a refused write took effect: {names:?}");

    // One way: a follower hears nothing from the leader (its packets still go out).
    let (leader, _) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    let li = leader_index(&members, &leader);
    let f = (0..3).find(|i| *i != li).unwrap();
    let writers = start_writers("one-way", &targets);
    reset_register(&members[li], &tokens[li]).await;
    let mut clients: Vec<(Target, bool)> =
        (0..3).filter(|i| *i != f).flat_map(|i| [(targets[i].clone(), true), (targets[i].clone(), true)]).collect();
    clients.extend([(targets[f].clone(), false), (targets[f].clone(), false)]);
    let register = Register::start(&clients, u64::MAX);
    lan.drop(f, li, Direction::Incoming);
    // Once the follower's lease of the leader and its own timeout have run out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_writes_refused(&members[f], &tokens[f], Duration::from_secs(2), "deaf follower").await;
    for n in 0..5 {
        let name = format!("leader-during-one-way-{n}");
        assert_eq!(create_org(&members[li], &tokens[li], &name).await, StatusCode::CREATED, "{name}");
    }
    lan.heal();
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(20));
    let mut acked = writers.finish().await;
    assert_linearizable(&register.stopped().await, "one way");
    acked.extend((0..5).map(|n| format!("leader-during-one-way-{n}")));
    wait_for_one_digest(&members, Duration::from_secs(20));
    assert_all_present(&members, &acked).await;

    // A bridge: the leader and one follower cannot reach each other, both reach the third.
    let (leader, _) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    let li = leader_index(&members, &leader);
    let (a, bridge) = {
        let rest: Vec<usize> = (0..3).filter(|i| *i != li).collect();
        (rest[0], rest[1])
    };
    let writers = start_writers("bridge", &targets);
    lan.cut(li, a);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for n in 0..5 {
        let name = format!("bridge-during-cut-{n}");
        let deadline = Instant::now() + Duration::from_secs(10);
        // The cluster may change leaders once (the cut-off follower's higher term); it
        // settles on a leader both others reach.
        while create_org(&members[bridge], &tokens[bridge], &name).await != StatusCode::CREATED {
            assert!(Instant::now() < deadline, "the bridge node took no write for 10 s: {name}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    lan.heal();
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(20));
    let mut acked = writers.finish().await;
    acked.extend((0..5).map(|n| format!("bridge-during-cut-{n}")));
    wait_for_one_digest(&members, Duration::from_secs(20));
    assert_all_present(&members, &acked).await;
    drop(members);
}

/// R20: a follower whose database was altered while it was stopped refuses to start, naming
/// the corruption, rather than vote or serve with it. Bytes flipped at seeded random places
/// may land where the file holds nothing live; the node then starts and converges to the
/// others' state. Pages overwritten throughout the file are always refused. The others take
/// writes meanwhile, and the node put back with its own file catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_whose_database_was_corrupted_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut members = formed(tmp.path(), None).await;
    let (leader, _) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    let li = leader_index(&members, &leader);
    let token = platform_token(members[li].node());
    let mut acked = BTreeSet::new();
    for i in 0..100 {
        let name = format!("before-corruption-{i}");
        assert_eq!(create_org(&members[li], &token, &name).await, StatusCode::CREATED);
        acked.insert(name);
    }
    let f = (0..3).find(|i| *i != li).unwrap();
    wait_for_one_digest(&members, Duration::from_secs(20));
    let stopped = members[f].node.take().unwrap().stop();
    assert!(stopped.success(), "{stopped:?}");
    let db = members[f].dir.join("gatehouse.redb");
    let pristine = std::fs::read(&db).unwrap();

    // xorshift64 from a fixed seed: the same flips on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut flipped = pristine.clone();
    for _ in 0..32 {
        let at = (next() % flipped.len() as u64) as usize;
        flipped[at] ^= 1 << (next() % 8);
    }
    std::fs::write(&db, &flipped).unwrap();
    match members[f].try_restart() {
        Err(why) => assert!(why.contains("is corrupted"), "a refusal that does not name the corruption: {why}"),
        Ok(()) => {
            wait_for_one_digest(&members, Duration::from_secs(20));
            assert!(members[f].node.take().unwrap().stop().success());
        }
    }

    let mut overwritten = pristine.clone();
    for page in overwritten.chunks_mut(4096).skip(1).step_by(4) {
        page.fill(0xa5);
    }
    std::fs::write(&db, &overwritten).unwrap();
    let why = members[f].try_restart().expect_err("a database with overwritten pages was served");
    assert!(why.contains("is corrupted"), "a refusal that does not name the corruption: {why}");
    for i in 0..20 {
        let name = format!("while-corrupted-{i}");
        assert_eq!(create_org(&members[li], &token, &name).await, StatusCode::CREATED);
        acked.insert(name);
    }

    // Its own file back: it catches up, and every member holds the same state.
    std::fs::write(&db, &pristine).unwrap();
    members[f].restart();
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(20));
    wait_for_one_digest(&members, Duration::from_secs(20));
    assert_all_present(&members, &acked).await;
}

/// A tmpfs mounted on `dir` (made here) for as long as this lives; unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let opts = format!("size={size},mode=0700");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(dir)
            .output()
            .expect("missing tool: mount");
        assert!(
            out.status.success(),
            "mount tmpfs (the disk-full test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir: dir.to_path_buf() }
    }

    /// Writes `ballast` until the disk is full; returns how many bytes it took.
    fn fill(&self) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.join("ballast")).unwrap();
        let chunk = vec![0x5a_u8; 256 * 1024];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => return written,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => return written,
                Err(e) => panic!("ballast: {e}"),
            }
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.join("ballast")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// R8: a node whose disk fills under writes (its data dir on a small tmpfs, filled with a
/// ballast file) stops taking part (it exits with code 70, for its supervisor) without
/// losing or corrupting anything: the other two keep taking writes, and once the ballast is
/// gone the node starts again (its file passes the integrity check) and catches up, every
/// acknowledged write on every node and one state digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_disk_fills_loses_nothing_and_catches_up_once_space_is_freed() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&tmp.path().join("n3"), "48m");
    let mut members = formed(tmp.path(), None).await;
    let full = 2;
    let targets: Vec<Target> =
        members.iter().enumerate().map(|(i, m)| Arc::new(Mutex::new((i != full).then(|| target_of(m))))).collect();
    let writers = start_writers("disk-full", &targets);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let ballast = disk.fill();
    assert!(ballast > 0, "the tmpfs had no room for ballast");
    let status = members[full].node.as_mut().unwrap().wait_exit(Duration::from_secs(60));
    assert_eq!(status.and_then(|s| s.code()), Some(70), "the node whose disk filled did not stop");
    members[full].node = None;
    let at_failure = writers.acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(writers.acked.lock().unwrap().len() > at_failure + 10, "the two others stopped taking writes");

    disk.free();
    members[full].restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = writers.finish().await;
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30));
    wait_for_one_digest(&members, Duration::from_secs(30));
    assert_all_present(&members, &acked).await;
    drop(members);
}

/// R11: a follower cut off (netns drops both ways) while the leader writes past its snapshot
/// policy and purges the log the follower would need; healed, the follower gets a snapshot,
/// and is SIGKILLed while a partial snapshot file is on its disk (receiving or installing).
/// Restarted, it catches up, holds every acknowledged write, its state digest equals the
/// others', and no partial file of the interrupted transfer is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_killed_while_it_installs_a_snapshot_catches_up_after_a_restart() {
    let lan = Lan::new(3);
    let tmp = tempfile::tempdir().unwrap();
    let (root, places) = (tmp.path().to_path_buf(), [0, 1, 2].map(|i| Place::on(&lan.hosts[i])));
    let mut members = tokio::task::spawn_blocking(move || three_nodes_at(&root, None, places)).await.unwrap();
    let (leader, _) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    let li = leader_index(&members, &leader);
    let f = (0..3).find(|i| *i != li).unwrap();
    for o in (0..3).filter(|o| *o != f) {
        lan.cut(f, o);
    }
    // Past two snapshots (every 1,000 entries here), so the log the follower needs is purged.
    let token = platform_token(members[li].node());
    let names: Vec<String> = (0..2500).map(|i| format!("while-cut-off-{i}")).collect();
    let writers = names.chunks(250).map(|chunk| {
        let (m, token, chunk) = (&members[li], token.clone(), chunk.to_vec());
        async move {
            for name in chunk {
                assert_eq!(create_org(m, &token, &name).await, StatusCode::CREATED, "{name}");
            }
        }
    });
    futures_util::future::join_all(writers).await;
    assert!(std::fs::read_dir(members[li].dir.join("snapshots")).unwrap().count() > 0, "the leader took no snapshot");

    let snapshots = members[f].dir.join("snapshots");
    lan.heal();
    let watched = snapshots.clone();
    let partial = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let found = std::fs::read_dir(&watched).ok().and_then(|entries| {
                entries.flatten().map(|e| e.file_name().to_string_lossy().to_string()).find(|n| n.ends_with(".part"))
            });
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    })
    .await
    .unwrap();
    let partial = partial.expect("the follower never had a partial snapshot file");
    members[f].kill9();
    eprintln!("killed the follower while {partial} was on its disk");
    members[f].restart();
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(60));
    wait_for_one_digest(&members, Duration::from_secs(30));
    assert_all_present(&members, &names.into_iter().collect()).await;
    let left: Vec<String> = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(left.is_empty(), "partial snapshot files left after the restart: {left:?}");
    let acked: BTreeSet<String> = (0..2500).map(|i| format!("while-cut-off-{i}")).collect();
    assert_restarts_after_more_writes(&mut members, f, acked).await;
    drop(members);
}

/// `cluster bench` measures the write path with probe entries that change nothing: it
/// counts its writes and none fails, while the audit trail and the tenants stay as they were;
/// a load out of range is refused with a clear error.
#[test]
fn cluster_bench_proposes_probes_that_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let m = start_founder(tmp.path(), None, Place::local());
    let before = (ok_stdout(&m.dir, &["audit", "verify"]), ok_stdout(&m.dir, &["tenant", "list"]));
    let report: Value =
        serde_json::from_str(&ok_stdout(&m.dir, &["cluster", "bench", "--concurrency", "4", "--seconds", "1"]))
            .unwrap();
    assert!(report["writes"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(report["p50_us"].as_u64().unwrap() > 0 && report["p99_us"].as_u64() >= report["p50_us"].as_u64());
    let after = (ok_stdout(&m.dir, &["audit", "verify"]), ok_stdout(&m.dir, &["tenant", "list"]));
    assert_eq!(after, before, "the probes changed the audit trail or the tenants");
    for bad in [["--concurrency", "0", "--seconds", "1"], ["--concurrency", "4", "--seconds", "61"]] {
        let out = cli(&m.dir, &[&["cluster", "bench"][..], &bad[..]].concat());
        assert!(!out.status.success(), "{bad:?} was run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("concurrency must be 1 to 1024 and seconds 1 to 60"), "{err}");
    }
}

/// R6: a crash at each persistence boundary (the raft crate's crash points, built with the
/// `failpoints` feature: `tests/run-all.sh` runs this test with it) loses and doubles nothing.
/// One node at a time is restarted with one point set to abort the process after some passes
/// (the log flush before and after its fsync, the apply before and after its commit, a
/// snapshot built, the log purged behind it, a snapshot installed before and after its
/// commit, the leader about to send), under writes through every node and a register's
/// clients; once it has aborted it is started again without. At the end every acknowledged
/// write is on every node once, the members hold one state digest, and the register's history
/// is linearizable (R1). Truncation of a conflicting log suffix has its point but no run: no
/// fault here makes one.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_at_each_persistence_boundary_loses_and_doubles_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut members = formed(tmp.path(), Some("https://id.cluster.test")).await;
    let targets: Vec<Target> = members.iter().map(|m| Arc::new(Mutex::new(Some(target_of(m))))).collect();
    let writers = start_writers("crash-points", &targets);
    let clients: Vec<(Target, bool)> = targets.iter().map(|t| (t.clone(), true)).collect();
    let register = Register::start(&clients, u64::MAX);
    // (point, passes before it fires, whether the node is first left behind a snapshot)
    let points = [
        ("raft-log-before-flush", 40, false),
        ("raft-log-after-flush", 40, false),
        ("raft-apply-before-commit", 40, false),
        ("raft-apply-after-commit", 40, false),
        ("raft-before-send", 200, false),
        ("raft-snapshot-built", 0, false),
        ("raft-log-purge", 0, false),
        ("raft-snapshot-install-before-commit", 0, true),
        ("raft-snapshot-install-after-commit", 0, true),
    ];
    let mut behind_acked = BTreeSet::new();
    for (k, (point, passes, behind)) in points.into_iter().enumerate() {
        wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30));
        let i = k % 3;
        *targets[i].lock().unwrap() = None;
        assert!(members[i].node.take().unwrap().stop().success(), "{point}: stopping member {i}");
        if behind {
            // Past a snapshot and the purge behind it, so it can only catch up by one.
            let w = (i + 1) % 3;
            let rest: Vec<&Member> = members.iter().filter(|m| m.node.is_some()).collect();
            wait_for_agreement(&rest, 3, Duration::from_secs(30));
            let token = platform_token(members[w].node());
            for n in 0..1200 {
                let name = format!("{point}-behind-{n}");
                let body = json!({ "name": name });
                let path = "/admin/v1/tenants/default/organizations";
                if on(&members[w], Method::POST, path, Some(&token), Some(&body)).await.status == StatusCode::CREATED {
                    behind_acked.insert(name);
                }
            }
        }
        let fire = format!("{point}={passes}*off->return");
        members[i].try_restart_with(&[("FAILPOINTS", &fire)]).unwrap_or_else(|e| panic!("{point}: {e}"));
        // Traffic through it too (forwarded writes reach its send point), unless it is gone
        // already.
        let minted = cli(&members[i].dir, &["admin", "token"]);
        if minted.status.success() {
            let node = members[i].node();
            let token = String::from_utf8(minted.stdout).unwrap().trim().to_string();
            *targets[i].lock().unwrap() = Some((node.local_url.clone(), token, node.ca_pem.clone()));
        }
        let status = members[i].node.as_mut().unwrap().wait_exit(Duration::from_secs(60));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.and_then(|s| s.signal()), Some(6), "{point}: member {i} did not abort there: {status:?}");
        *targets[i].lock().unwrap() = None;
        members[i].node = None;
        if let Err(e) = members[i].try_restart() {
            let kept = tmp.keep();
            panic!("{point}: member {i} did not start again ({e}); dirs in {}", kept.display());
        }
        *targets[i].lock().unwrap() = Some(target_of(&members[i]));
    }
    assert!(behind_acked.len() > 2000, "only {} writes while a node was down", behind_acked.len());
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30));
    let mut acked = writers.finish().await;
    let history = register.stopped().await;
    wait_for_one_digest(&members, Duration::from_secs(30));
    acked.extend(behind_acked);
    assert_all_present(&members, &acked).await;
    assert_linearizable(&history, "crash points");
}

/// R16: a node replaced under writes (a fourth joins and catches up as a learner, the old one
/// is removed, the learner becomes a voter) loses nothing; the removed node, still running and
/// then restarted with its old data, campaigns in vain: the cluster port refuses its votes and
/// appends (it was removed), so the leader and the term stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_replaced_under_writes_loses_nothing_and_cannot_depose_the_leader() {
    let public_url = "https://id.cluster.test";
    let tmp = tempfile::tempdir().unwrap();
    let mut members = formed(tmp.path(), Some(public_url)).await;
    let (leader, term) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    let li = leader_index(&members, &leader);
    let old = (0..3).find(|i| *i != li).unwrap();
    let mut targets: Vec<Target> = members.iter().map(|m| Arc::new(Mutex::new(Some(target_of(m))))).collect();
    targets.remove(old);
    let writers = start_writers("replace", &targets);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (root, token, peer) =
        (tmp.path().to_path_buf(), join_token(&members[li], 600), members[li].node().local_url.clone());
    let fourth =
        tokio::task::spawn_blocking(move || join_as(&root, "n4", &token, &peer, Some(public_url), Place::local()))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("join n4: {e}"));
    let fourth_id = format!("{:016x}", node_id_of(&fourth));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = status(&members[li]).unwrap();
        let caught_up = view["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["node_id"] == fourth_id.as_str() && m["lag"].as_u64().is_some_and(|l| l < 64));
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "the fourth node did not catch up: {view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let removed = format!("{:016x}", node_id_of(&members[old]));
    ok_stdout(&members[li].dir, &["cluster", "remove", &removed]);
    let mut gone = std::mem::replace(&mut members[old], fourth);
    let (now_leader, now_term) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30));
    assert_eq!((now_leader.as_str(), now_term), (leader.as_str(), term), "the replacement moved the leadership");

    // The removed node, left running past its election timeout, then restarted with its data.
    tokio::time::sleep(Duration::from_secs(2)).await;
    gone.kill9();
    gone.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (after_leader, after_term) =
        wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    assert_eq!((after_leader.as_str(), after_term), (leader.as_str(), term), "the removed node deposed the leader");
    let acked = writers.finish().await;
    wait_for_one_digest(&members, Duration::from_secs(30));
    assert_all_present(&members, &acked).await;
    drop(gone);
}

/// The organization names on `m`, or the status of a refused read.
async fn organizations_or_error(m: &Member, token: &str) -> Result<Vec<String>, StatusCode> {
    let node = m.node();
    let url = format!("{}/admin/v1/tenants/default/organizations?limit=500", node.local_url);
    let resp = node.client().get(url).bearer_auth(token).send().await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let answer = into_answer(resp).await;
    if answer.status != StatusCode::OK {
        return Err(answer.status);
    }
    Ok(answer.body["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect())
}

/// [`three_nodes_sharing`] from an async test, off its runtime's workers (the processes are
/// started and waited for with blocking calls).
async fn formed(root: &Path, public_url: Option<&'static str>) -> Vec<Member> {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || three_nodes_sharing(&root, public_url)).await.unwrap()
}

/// A request to `path` on the member's own address.
async fn on(m: &Member, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Answer {
    let node = m.node();
    let mut req = node.client().request(method, format!("{}{path}", node.local_url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    into_answer(req.send().await.unwrap()).await
}

/// Polls `check` on every member until it holds everywhere, for at most two seconds (the
/// followers apply a committed write within a heartbeat or two).
async fn on_every_member<F, Fut>(members: &[Member], what: &str, check: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for i in 0..members.len() {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !check(i).await {
            assert!(Instant::now() < deadline, "{what}: not on member {i} within 2 s");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_use_keys_and_sessions_hold_across_the_cluster() {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::Engine;

    let public_url = "https://id.cluster.test";
    let tmp = tempfile::tempdir().unwrap();
    let mut members = formed(tmp.path(), Some(public_url)).await;
    // One admin token, minted on one node, serves on all: one issuer, one set of keys.
    let admin = platform_token(members[0].node());
    for m in &members {
        let a = on(m, Method::GET, "/admin/v1/tenants/default/clients", Some(&admin), None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }

    // S16, R17: one client assertion presented 50 times at once, spread over the three nodes,
    // gets one token.
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    let body = json!({"name": "signer", "client_type": "confidential", "token_endpoint_auth_method": "private_key_jwt",
                      "grant_types": ["client_credentials"], "audiences": ["https://api.test"],
                      "jwks": {"ec": [{"kid": "k1", "x": b64(&point[1..33]), "y": b64(&point[33..65])}]}});
    let c = on(&members[1], Method::POST, "/admin/v1/tenants/default/clients", Some(&admin), Some(&body)).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let id = c.body["client_id"].as_str().unwrap().to_string();
    let now = gatehouse::clock::Clock::now_ms(&gatehouse::clock::SystemClock) / 1000;
    let assertion_with = |jti: &str| {
        let claims = json!({"iss": id, "sub": id, "aud": public_url, "exp": now + 60, "iat": now, "jti": jti});
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref())).unwrap()
    };
    let assertion = assertion_with("once");
    on_every_member(&members, "the new client", |i| {
        let m = &members[i];
        let path = format!("/admin/v1/tenants/default/clients/{id}");
        let admin = admin.clone();
        async move { on(m, Method::GET, &path, Some(&admin), None).await.status == StatusCode::OK }
    })
    .await;
    let statuses = present_everywhere(&members, &assertion, 50).await;
    let granted = statuses.iter().filter(|s| **s == Some(StatusCode::OK)).count();
    assert_eq!(granted, 1, "one assertion, 50 presentations on three nodes at once: {statuses:?}");
    let answers = [Some(StatusCode::OK), Some(StatusCode::UNAUTHORIZED)];
    assert!(statuses.iter().all(|s| answers.contains(s)), "{statuses:?}");

    // S36: a key rotation gives every node the same JWKS.
    ok_stdout(&members[2].dir, &["keys", "rotate"]);
    let jwks = |i: usize| {
        let m = &members[i];
        async move {
            let resp = m.node().client().get(format!("{}/.well-known/jwks.json", m.node().local_url)).send().await;
            resp.unwrap().json::<Value>().await.unwrap()
        }
    };
    let rotated = jwks(2).await;
    assert_eq!(rotated["keys"].as_array().unwrap().len(), 4, "{rotated}");
    on_every_member(&members, "the rotated JWKS", |i| {
        let rotated = rotated.clone();
        let fetch = jwks(i);
        async move { fetch.await == rotated }
    })
    .await;

    // S14, S50: a session started on one node is good on every node, and disabling its user
    // on another ends it on every node.
    let register = json!({"email": "ada@example.com", "password": "cluster-wide-session-password"});
    let r = on(&members[0], Method::POST, "/v1/auth/register", None, Some(&register)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let cookie = r.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let user_id = r.body["user"]["id"].as_str().unwrap().to_string();
    let session = |i: usize| {
        let (client, url, cookie) =
            (members[i].node().client(), format!("{}/v1/auth/session", members[i].node().local_url), cookie.clone());
        async move { client.get(url).header("cookie", cookie).send().await.unwrap().status() }
    };
    on_every_member(&members, "the session", |i| {
        let s = session(i);
        async move { s.await == StatusCode::OK }
    })
    .await;
    let users_path = format!("/admin/v1/tenants/default/users/{user_id}");
    let user = on(&members[2], Method::GET, &users_path, Some(&admin), None).await;
    let put = json!({"username": user.body["username"], "email": user.body["email"],
                     "display_name": user.body["display_name"], "disabled": true});
    let d = on(&members[2], Method::PUT, &users_path, Some(&admin), Some(&put)).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    on_every_member(&members, "the disabled user's session ending", |i| {
        let s = session(i);
        async move { s.await == StatusCode::UNAUTHORIZED }
    })
    .await;

    // R17 again with the leader SIGKILLed in the middle of the burst: at most one token (the
    // winner's answer may be lost with the leader), and nothing but a grant, a refusal or an
    // error for the rest.
    let (leader, _) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    let li = leader_index(&members, &leader);
    let assertion = assertion_with("twice");
    let pid = members[li].node().pid();
    let burst = present_everywhere(&members, &assertion, 50);
    let kill = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    };
    let (statuses, ()) = tokio::join!(burst, kill);
    members[li].kill9();
    let granted = statuses.iter().filter(|s| **s == Some(StatusCode::OK)).count();
    assert!(granted <= 1, "one assertion granted {granted} times with the leader killed: {statuses:?}");
    let answers = [Some(StatusCode::OK), Some(StatusCode::UNAUTHORIZED), Some(StatusCode::SERVICE_UNAVAILABLE), None];
    assert!(statuses.iter().all(|s| answers.contains(s)), "{statuses:?}");
    members[li].restart();
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(20));
    // Once the cluster has settled, it is spent (or, if no presentation reached it, spent now).
    let again = present_everywhere(&members, &assertion, 3).await;
    let regranted = again.iter().filter(|s| **s == Some(StatusCode::OK)).count();
    assert!(granted + regranted <= 1, "granted {granted} in the burst and {regranted} after: {again:?}");
}

/// Presents one client assertion `times` times at once, spread over the members; each
/// answer's status, `None` when the request failed (a node killed under it).
async fn present_everywhere(members: &[Member], assertion: &str, times: usize) -> Vec<Option<StatusCode>> {
    let presented = (0..times).map(|n| {
        let m = &members[n % members.len()];
        let (client, url) = (m.node().client(), format!("{}/oauth2/token", m.node().local_url));
        let assertion = assertion.to_string();
        async move {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ("client_assertion", assertion.as_str()),
            ];
            client.post(url).form(&form).timeout(Duration::from_secs(10)).send().await.ok().map(|r| r.status())
        }
    });
    futures_util::future::join_all(presented).await
}

/// The node credentials in a member's data dir (its KEK is in the dir's `kek` file here).
fn credentials_of(m: &Member) -> gatehouse::cluster::credentials::NodeCredentials {
    let dir = gatehouse::datadir::DataDir::open_existing(&m.dir).unwrap();
    let kek = gatehouse::crypto::LocalKek::load(&dir, None, false).unwrap();
    gatehouse::cluster::credentials::NodeCredentials::load(&dir, &kek).unwrap()
}

fn node_id_of(m: &Member) -> u64 {
    u64::from_str_radix(std::fs::read_to_string(m.dir.join("node.id")).unwrap().trim(), 16).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_certificate_speaks_only_for_its_own_node_and_only_while_it_is_a_member() {
    use gatehouse_raft::rpc::{LeaderOp, LEADER_PATH};
    let tmp = tempfile::tempdir().unwrap();
    let members = formed(tmp.path(), None).await;
    let ids: Vec<u64> = members.iter().map(node_id_of).collect();
    let as_node = |i: usize| {
        gatehouse_raft::Transport::new(credentials_of(&members[i]).cluster_client_config().unwrap()).unwrap()
    };
    let addr = |i: usize| format!("127.0.0.1:{}", members[i].port);
    let wait = Duration::from_secs(5);
    let call = |t: gatehouse_raft::Transport, to: usize, op: LeaderOp| {
        let (id, addr) = (ids[to], addr(to));
        async move { t.call::<_, Value>(id, &addr, LEADER_PATH, &op, wait).await.map_err(|e| e.to_string()) }
    };

    // Node 2's certificate works as node 2 …
    let as_two = call(as_node(1), 0, LeaderOp::Status).await;
    assert!(as_two.is_ok(), "{as_two:?}");
    // … but cannot ask for node 3's promotion,
    let other = call(as_node(1), 0, LeaderOp::Promote { node_id: ids[2] }).await.unwrap_err();
    assert!(other.contains("403") && other.contains("its own promotion"), "{other}");
    // and an answer from another node than the one dialled is refused by the caller.
    let t = as_node(1);
    let wrong = t.call::<_, Value>(ids[2], &addr(0), LEADER_PATH, &LeaderOp::Status, wait).await.unwrap_err();
    assert!(wrong.to_string().contains("not node"), "{wrong}");

    // S60: node 2's certificate cannot campaign or replicate as node 3; the term stays.
    let term = status(&members[0]).unwrap()["term"].as_u64().unwrap();
    let as_three = json!({"term": term + 5, "node_id": ids[2]});
    let forged = [
        (
            gatehouse_raft::rpc::VOTE_PATH,
            json!({"vote": {"leader_id": as_three, "committed": false}, "last_log_id": null}),
        ),
        (
            gatehouse_raft::rpc::APPEND_PATH,
            json!({"vote": {"leader_id": as_three, "committed": true}, "prev_log_id": null, "entries": [], "leader_commit": null}),
        ),
    ];
    for (path, body) in forged {
        let sent = as_node(1).call::<_, Value>(ids[0], &addr(0), path, &body, wait).await.unwrap_err().to_string();
        assert!(sent.contains("403") && sent.contains("cannot speak for"), "{path}: {sent}");
    }
    assert_eq!(status(&members[0]).unwrap()["term"].as_u64(), Some(term), "a forged message moved the term");

    // A removed node's certificate still chains to the node intermediate, but the port
    // refuses it: it is no longer a member.
    ok_stdout(&members[0].dir, &["cluster", "remove", &format!("{:016x}", ids[2])]);
    wait_for_agreement(&[&members[0], &members[1]], 2, Duration::from_secs(20));
    let removed = call(as_node(2), 0, LeaderOp::Status).await.unwrap_err();
    assert!(removed.contains("403") && removed.contains("was removed"), "{removed}");
}

/// One step of a client's history, in real-time order. A client whose request failed goes on
/// as a new client (Jepsen's rule): its request stays open, as it may or may not have happened.
#[derive(Debug, Clone, serde::Serialize)]
enum Step {
    Invoke { client: usize, write: Option<String> },
    Return { client: usize, read: Option<String> },
    Failed { client: usize, why: String },
}

/// The register's operations as the checker sees them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RegisterOp {
    Read(Option<String>),
    Write(String),
}

/// The `default` tenant's display name as a register: a read must see the last write.
struct DisplayName;

/// The `default` tenant's display name when the cluster is founded.
const FIRST_DISPLAY_NAME: &str = "Default";

impl todc_utils::Specification for DisplayName {
    type State = String;
    type Operation = RegisterOp;

    fn init() -> String {
        FIRST_DISPLAY_NAME.to_string()
    }

    fn apply(op: &RegisterOp, state: &String) -> (bool, String) {
        match op {
            RegisterOp::Read(Some(v)) => (v == state, state.clone()),
            RegisterOp::Read(None) => (false, state.clone()),
            RegisterOp::Write(v) => (true, v.clone()),
        }
    }
}

/// Checks a history of the register's writes and reads with todc-utils' Wing–Gong–Lowe
/// checker. An open write (its client never learned the outcome) is closed at the very end of
/// the history, so it may take effect anywhere after it began; an open read is dropped, as it
/// changed and observed nothing.
fn linearizable(history: &[Step]) -> bool {
    use todc_utils::Action::{Call, Response};
    let mut dense: BTreeMap<usize, usize> = BTreeMap::new();
    let mut actions = Vec::new();
    let mut open: BTreeMap<usize, (usize, Option<String>)> = BTreeMap::new();
    for step in history {
        match step {
            Step::Invoke { client, write } => {
                let next = dense.len();
                let p = *dense.entry(*client).or_insert(next);
                open.insert(*client, (actions.len(), write.clone()));
                let op = match write {
                    Some(v) => RegisterOp::Write(v.clone()),
                    None => RegisterOp::Read(None),
                };
                actions.push(Some((p, Call(op))));
            }
            Step::Return { client, read } => {
                let p = dense[client];
                let (_, write) = open.remove(client).expect("a return follows its invocation");
                let op = match (write, read) {
                    (Some(v), _) => RegisterOp::Write(v),
                    (None, read) => RegisterOp::Read(read.clone()),
                };
                actions.push(Some((p, Response(op))));
            }
            Step::Failed { .. } => {}
        }
    }
    for (client, (at, write)) in open {
        match write {
            Some(v) => actions.push(Some((dense[&client], Response(RegisterOp::Write(v))))),
            None => actions[at] = None,
        }
    }
    let actions: Vec<_> = actions.into_iter().flatten().collect();
    todc_utils::WGLChecker::<DisplayName>::is_linearizable(todc_utils::History::from_actions(actions))
}

#[test]
fn the_history_checker_finds_a_stale_read() {
    let stale = [
        Step::Invoke { client: 0, write: Some("v1".into()) },
        Step::Return { client: 0, read: None },
        Step::Invoke { client: 1, write: None },
        Step::Return { client: 1, read: Some(FIRST_DISPLAY_NAME.into()) },
    ];
    assert!(!linearizable(&stale), "a read after an acknowledged write saw the old value");
    let fine = [
        Step::Invoke { client: 0, write: Some("v1".into()) },
        Step::Invoke { client: 1, write: None },
        Step::Return { client: 1, read: Some(FIRST_DISPLAY_NAME.into()) },
        Step::Return { client: 0, read: None },
    ];
    assert!(linearizable(&fine), "concurrent with the write, either value is right");
    let open_write = [
        Step::Invoke { client: 0, write: Some("v1".into()) },
        Step::Failed { client: 0, why: "timeout".into() },
        Step::Invoke { client: 1, write: None },
        Step::Return { client: 1, read: Some(FIRST_DISPLAY_NAME.into()) },
        Step::Invoke { client: 1, write: None },
        Step::Return { client: 1, read: Some("v1".into()) },
    ];
    assert!(linearizable(&open_write), "a write whose outcome is unknown may take effect late");
    let lost = [
        Step::Invoke { client: 0, write: Some("v1".into()) },
        Step::Return { client: 0, read: None },
        Step::Invoke { client: 1, write: None },
        Step::Return { client: 1, read: Some("v1".into()) },
        Step::Invoke { client: 1, write: None },
        Step::Return { client: 1, read: Some(FIRST_DISPLAY_NAME.into()) },
    ];
    assert!(!linearizable(&lost), "a write seen and then gone");
}

/// Clients of the register (the `default` tenant's display name through the admin API),
/// each through one target, writing (two operations in three) or only reading, recording
/// every invocation and outcome. A client whose operation failed goes on under a new id, as
/// the checker needs (its failed operation may still take effect).
struct Register {
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Step>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Register {
    /// Starts one client per `(target, writes)`, each making at most `ops` operations. The
    /// register must hold [`FIRST_DISPLAY_NAME`] (see [`reset_register`]); the values written
    /// are unique to this run.
    fn start(clients: &[(Target, bool)], ops: u64) -> Register {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let history = Arc::new(Mutex::new(Vec::<Step>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (c, (target, writes)) in clients.iter().enumerate() {
            let (target, history, stop, writes) = (target.clone(), history.clone(), stop.clone(), *writes);
            tasks.push(tokio::spawn(async move {
                let mut client = c;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < ops {
                    let Some((url, token, ca)) = target.lock().unwrap().clone() else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    n += 1;
                    let http = crate::support::node::client_for(&ca);
                    let path = format!("{url}/admin/v1/tenants/default");
                    let write = (writes && n % 3 != 0).then(|| format!("r{run}-c{c}-{n}"));
                    history.lock().unwrap().push(Step::Invoke { client, write: write.clone() });
                    let sent = match &write {
                        Some(v) => http.patch(&path).json(&json!({ "display_name": v })),
                        None => http.get(&path),
                    };
                    let answer = sent.bearer_auth(&token).timeout(Duration::from_secs(5)).send().await;
                    let step = match answer {
                        Ok(r) if r.status() == StatusCode::OK => {
                            let body: Value = r.json().await.unwrap_or_default();
                            let read = write.is_none().then(|| body["display_name"].as_str().unwrap_or("").to_string());
                            Step::Return { client, read }
                        }
                        Ok(r) => Step::Failed { client, why: r.status().to_string() },
                        Err(e) => Step::Failed { client, why: e.to_string() },
                    };
                    let failed = matches!(step, Step::Failed { .. });
                    history.lock().unwrap().push(step);
                    if failed {
                        client += 100;
                    }
                    // Spread over a few seconds, so the faults fall inside the history.
                    tokio::time::sleep(Duration::from_millis(if failed { 50 } else { 80 })).await;
                }
            }));
        }
        Register { stop, history, tasks }
    }

    /// Waits (two minutes at most) for every client to make its operations; the history.
    async fn finished(self) -> Vec<Step> {
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(120), t).await.expect("clients finish").expect("client");
        }
        let history = self.history.lock().unwrap().clone();
        history
    }

    /// Stops the clients after their current operation; the history.
    async fn stopped(self) -> Vec<Step> {
        self.stop.store(true, Ordering::Relaxed);
        self.finished().await
    }
}

/// Sets the register back to [`FIRST_DISPLAY_NAME`], the state the checker starts from.
async fn reset_register(m: &Member, token: &str) {
    let body = json!({ "display_name": FIRST_DISPLAY_NAME });
    let reset = on(m, Method::PATCH, "/admin/v1/tenants/default", Some(token), Some(&body)).await;
    assert_eq!(reset.status, StatusCode::OK, "resetting the register: {}", reset.body);
}

/// Checks a register history; on failure keeps it in the temp dir for a look.
fn assert_linearizable(history: &[Step], phase: &str) {
    let completed = history.iter().filter(|s| matches!(s, Step::Return { .. })).count();
    assert!(completed >= 20, "{phase}: only {completed} register operations completed");
    if !linearizable(history) {
        let name = format!("gatehouse-history-{}-{}.json", phase.replace(' ', "-"), std::process::id());
        let kept = std::env::temp_dir().join(name);
        std::fs::write(&kept, serde_json::to_vec_pretty(history).unwrap()).unwrap();
        panic!("{phase}: the register history is not linearizable; kept in {}", kept.display());
    }
}

/// Operations each client of the register test makes.
const OPS_PER_CLIENT: u64 = 40;

/// R1: writes and reads of one register (the `default` tenant's display name, through the
/// admin API) from six clients spread over the three nodes, with the leader killed and
/// restarted meanwhile, form a linearizable history: no acknowledged write lost, reordered or
/// doubled, and no stale read. On failure the history is kept beside the data dirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_register_written_and_read_through_every_node_is_linearizable() {
    let public_url = "https://id.cluster.test";
    let tmp = tempfile::tempdir().unwrap();
    let mut members = formed(tmp.path(), Some(public_url)).await;
    let admin = platform_token(members[0].node());
    let initial = on(&members[0], Method::GET, "/admin/v1/tenants/default", Some(&admin), None).await;
    assert_eq!(initial.body["display_name"], FIRST_DISPLAY_NAME, "{}", initial.body);
    let targets: Vec<Target> = members.iter().map(|m| Arc::new(Mutex::new(Some(target_of(m))))).collect();
    let clients: Vec<(Target, bool)> = (0..6).map(|c| (targets[c % 3].clone(), true)).collect();
    let register = Register::start(&clients, OPS_PER_CLIENT);
    let (leader, _) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    let li = leader_index(&members, &leader);
    tokio::time::sleep(Duration::from_millis(400)).await;
    *targets[li].lock().unwrap() = None;
    members[li].kill9();
    let before_kill = register.history.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    members[li].restart();
    *targets[li].lock().unwrap() = Some(target_of(&members[li]));
    let running = Instant::now();
    let history = register.finished().await;
    eprintln!("clients finished {:?} after the restart", running.elapsed());
    let completed = history.iter().filter(|s| matches!(s, Step::Return { .. })).count();
    // The leader's death falls inside the history, not before or after it.
    assert!(before_kill >= 20 && history.len() >= before_kill + 40, "{before_kill} of {} steps", history.len());
    assert!(completed >= 150, "only {completed} operations completed");
    let checking = Instant::now();
    let verdict = tokio::task::spawn_blocking({
        let history = history.clone();
        move || linearizable(&history)
    })
    .await
    .unwrap();
    eprintln!("checked {} steps in {:?}", history.len(), checking.elapsed());
    if !verdict {
        let kept = tmp.keep();
        std::fs::write(kept.join("history.json"), serde_json::to_vec_pretty(&history).unwrap()).unwrap();
        panic!("not linearizable: the history and the data dirs are in {}", kept.display());
    }
}

/// R11: a node restarted from a wiped data dir (removed, wiped, joined again) catches up from
/// a snapshot, because the leader has purged the log it would need; it ends with the same
/// state as the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_data_dir_was_wiped_rejoins_through_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let mut members = formed(tmp.path(), None).await;
    let (leader, _) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    let li = leader_index(&members, &leader);
    let token = platform_token(members[li].node());
    let names: BTreeSet<String> = (0..1200).map(|i| format!("snap-{i}")).collect();
    let list: Vec<String> = names.iter().cloned().collect();
    let writers = list.chunks(150).map(|chunk| {
        let (m, token, chunk) = (&members[li], token.clone(), chunk.to_vec());
        async move {
            for name in chunk {
                assert_eq!(create_org(m, &token, &name).await, StatusCode::CREATED);
            }
        }
    });
    futures_util::future::join_all(writers).await;
    let snapshots = std::fs::read_dir(members[li].dir.join("snapshots")).unwrap().count();
    assert!(snapshots > 0, "the leader took no snapshot");

    // Take out a follower, wipe its data dir and join it again as a new node.
    let fi = (0..3).find(|i| *i != li).unwrap();
    let removed = node_id_of(&members[fi]);
    ok_stdout(&members[li].dir, &["cluster", "remove", &format!("{removed:016x}")]);
    members[fi].kill9();
    std::fs::remove_dir_all(&members[fi].dir).unwrap();
    let rest: Vec<&Member> = members.iter().filter(|m| m.node.is_some()).collect();
    wait_for_agreement(&rest, 2, Duration::from_secs(20));
    let name = members[fi].dir.file_name().unwrap().to_str().unwrap().to_string();
    let fresh = join(tmp.path(), &name, &join_token(&members[li], 600), &members[li].node().local_url)
        .unwrap_or_else(|e| panic!("rejoin: {e}"));
    members[fi] = fresh;
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(60));
    let installed = std::fs::read_dir(members[fi].dir.join("snapshots")).map(|d| d.count()).unwrap_or(0);
    assert!(installed > 0, "the new node caught up without a snapshot");
    assert_all_present(&members, &names).await;
    assert_restarts_after_more_writes(&mut members, fi, names).await;
}

/// Writes more after member `fi` installed a snapshot, SIGKILLs it and starts it again: it
/// starts from its own log (the install purged the log its snapshot covers, leaving no gap),
/// catches up, and every member holds `acked` and the new writes, with one state digest.
async fn assert_restarts_after_more_writes(members: &mut [Member], fi: usize, mut acked: BTreeSet<String>) {
    let wi = (fi + 1) % members.len();
    let token = platform_token(members[wi].node());
    for n in 0..50 {
        let name = format!("after-the-install-{n}");
        assert_eq!(create_org(&members[wi], &token, &name).await, StatusCode::CREATED, "{name}");
        acked.insert(name);
    }
    members[fi].kill9();
    members[fi].try_restart().unwrap_or_else(|e| panic!("the node that installed a snapshot did not start again: {e}"));
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30));
    wait_for_one_digest(members, Duration::from_secs(30));
    assert_all_present(members, &acked).await;
}

/// A backup taken on a follower under writes to every node, restored into a new data dir
/// with the cluster's KEK: every write acknowledged before the backup began is there (the
/// backup first takes a read index), the audit chain verifies, and without the KEK the
/// restore refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_of_a_follower_under_writes_restores_every_write_acknowledged_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let members = formed(tmp.path(), None).await;
    let targets: Vec<Target> = members.iter().map(|m| Arc::new(Mutex::new(Some(target_of(m))))).collect();
    let writers = start_writers("backup", &targets);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (leader, _) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    let follower = &members[(0..3).find(|i| *i != leader_index(&members, &leader)).unwrap()];
    let file = tmp.path().join("cluster.backup");
    let before: BTreeSet<String> = writers.acked.lock().unwrap().clone();
    let out = cli(&follower.dir, &["backup", file.to_str().unwrap()]);
    assert!(out.status.success(), "backup: {}", String::from_utf8_lossy(&out.stderr));
    let after = writers.finish().await;
    assert!(before.len() > 20 && after.len() > before.len(), "{} then {}", before.len(), after.len());

    let kek = std::fs::read_to_string(follower.dir.join("kek")).unwrap().trim().to_string();
    let restore = |into: &Path, kek: Option<&str>| {
        let mut c = crate::support::node::command(into);
        c.arg("restore").arg(&file);
        if let Some(k) = kek {
            c.env("GATEHOUSE_KEK", k);
        }
        c.output().unwrap()
    };
    let target = tmp.path().join("restored");
    let refused = restore(&target, None);
    assert!(!refused.status.success(), "a restore without the KEK must fail");
    let out = restore(&target, Some(&kek));
    assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
    let mut verify = crate::support::node::command(&target);
    let verify = verify.args(["audit", "verify"]).env("GATEHOUSE_KEK", &kek).output().unwrap();
    assert!(verify.status.success(), "audit verify: {}", String::from_utf8_lossy(&verify.stderr));
    let node = TestNode::start_with(&target, &[], &[("GATEHOUSE_KEK", &kek)]).expect("the restored node serves");
    let restored =
        Member { node: Some(node), dir: target.clone(), port: free_port(), public_url: None, place: Place::local() };
    let names: BTreeSet<String> = organizations(&restored).await.into_iter().collect();
    let missing: Vec<&String> = before.iter().filter(|n| !names.contains(*n)).collect();
    assert!(missing.is_empty(), "{} writes acknowledged before the backup are missing: {missing:?}", missing.len());
}

/// R7: a follower whose fsyncs start failing (libfiu's `fiu-run`, enabled at run time with
/// `fiu-ctrl`) stops: it exits with code 70 instead of serving on after a failed fsync. The two
/// others keep taking writes; restarted without the fault, it catches up, and every
/// acknowledged write is on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_whose_fsync_fails_stops_and_catches_up_after_a_restart() {
    for tool in ["fiu-run", "fiu-ctrl"] {
        let found = std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
        assert!(
            found.status.success(),
            "missing tool: {tool} (Debian package fiu-utils; tests/run-all.sh installs it)"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut members = formed(tmp.path(), None).await;
    let (leader, _) = wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(10));
    let fi = (0..3).find(|i| *i != leader_index(&members, &leader)).unwrap();
    // The follower again, under fiu-run (its faults off for now).
    let stopped = members[fi].node.take().unwrap().stop();
    assert!(stopped.success());
    let env = members[fi].env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    members[fi].node =
        Some(TestNode::start_wrapped(&["fiu-run", "-x"], &members[fi].dir, &env).expect("under fiu-run"));
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(20));

    let targets: Vec<Target> =
        members.iter().enumerate().map(|(i, m)| Arc::new(Mutex::new((i != fi).then(|| target_of(m))))).collect();
    let writers = start_writers("fsync", &targets);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pid = members[fi].node().pid().to_string();
    let ctrl =
        std::process::Command::new("fiu-ctrl").args(["-c", "enable name=posix/io/sync/*", &pid]).status().unwrap();
    assert!(ctrl.success(), "fiu-ctrl");
    let status = members[fi].node.as_mut().unwrap().wait_exit(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(70), "the follower did not stop after its fsync failed");
    let at_failure = writers.acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(writers.acked.lock().unwrap().len() > at_failure + 10, "the two others stopped taking writes");

    members[fi].node = None;
    members[fi].restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = writers.finish().await;
    wait_for_agreement(&members.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30));
    assert_all_present(&members, &acked).await;
}

/// A request with a session cookie to `path` on the member's own address.
async fn with_cookie(m: &Member, path: &str, cookie: Option<&str>, body: &Value) -> Answer {
    let node = m.node();
    let mut req = node.client().post(format!("{}{path}", node.local_url)).json(body);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    into_answer(req.send().await.unwrap()).await
}

fn cookie_of(a: &Answer) -> String {
    a.headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_totp_step_and_an_email_code_are_each_accepted_once_across_three_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let members = formed(tmp.path(), Some("https://id.cluster.test")).await;
    let (email, password) = ("ada@example.com", "plenty long enough passphrase");
    let credentials = json!({"email": email, "password": password});
    let r = with_cookie(&members[0], "/v1/auth/register", None, &credentials).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let cookie = cookie_of(&r);

    // An authenticator, confirmed with this step's code; the next step's code is then the one
    // that completes a sign-in, once.
    let enrolled = with_cookie(&members[0], "/v1/auth/mfa/totp/enroll", Some(&cookie), &json!({})).await;
    assert_eq!(enrolled.status, StatusCode::OK, "{}", enrolled.body);
    let totp = totp_rs::TOTP::from_url(enrolled.body["otpauth_uri"].as_str().unwrap()).unwrap();
    // The node checks codes against the wall clock, and so does this test.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let confirm = json!({"code": totp.generate(now)});
    let confirmed = with_cookie(&members[0], "/v1/auth/mfa/totp/confirm", Some(&cookie), &confirm).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    let next_step_code = totp.generate(now + 30);

    // Fifty sign-ins waiting for their code, spread over the three nodes.
    let mut pending = Vec::new();
    for i in 0..50 {
        let m = &members[i % 3];
        let r = with_cookie(m, "/v1/auth/login", None, &credentials).await;
        assert_eq!((r.status, &r.body["mfa_required"]), (StatusCode::OK, &json!(true)), "{}", r.body);
        pending.push((i % 3, cookie_of(&r)));
    }
    let code = json!({"code": next_step_code});
    let answers = futures_util::future::join_all(
        pending.iter().map(|(at, c)| with_cookie(&members[*at], "/v1/auth/mfa/totp/challenge", Some(c), &code)),
    )
    .await;
    let accepted = answers.iter().filter(|a| a.status == StatusCode::OK).count();
    assert_eq!(accepted, 1, "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());

    // An email code asked for once, tried fifty times at once over the three nodes, by another
    // account (the 49 wrong codes above hold this one: wrong codes count like wrong passwords).
    let email = "bob@example.com";
    let r = with_cookie(&members[0], "/v1/auth/register", None, &json!({"email": email, "password": password})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let admin = tokio::task::block_in_place(|| platform_token(members[0].node()));
    let asked = with_cookie(&members[1], "/v1/auth/email-otp/request", None, &json!({"email": email})).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        let mailbox = on(&members[2], Method::GET, "/admin/v1/tenants/default/mailbox", Some(&admin), None).await;
        let found = mailbox.body["items"].as_array().into_iter().flatten().find(|m| m["purpose"] == "sign_in_code");
        if let Some(m) = found {
            let body = m["body"].as_str().unwrap();
            break body
                .split_whitespace()
                .find(|w| w.len() == 6 && w.bytes().all(|b| b.is_ascii_digit()))
                .unwrap()
                .to_string();
        }
        assert!(Instant::now() < deadline, "no sign-in code in the mailbox");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let attempt = json!({"email": email, "code": code});
    let answers = futures_util::future::join_all(
        (0..50).map(|i| with_cookie(&members[i % 3], "/v1/auth/email-otp/verify", None, &attempt)),
    )
    .await;
    let accepted = answers.iter().filter(|a| a.status == StatusCode::OK).count();
    assert_eq!(accepted, 1, "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
}

/// A GET with a session cookie to `path` on the member's own address.
async fn get_with_cookie(m: &Member, path: &str, cookie: &str) -> Answer {
    let node = m.node();
    into_answer(node.client().get(format!("{}{path}", node.local_url)).header("cookie", cookie).send().await.unwrap())
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_passkey_challenge_is_spent_once_across_three_nodes_and_a_logout_ends_the_session_everywhere() {
    use crate::support::soft_passkey::SoftPasskey;
    let public_url = "https://id.cluster.test";
    let tmp = tempfile::tempdir().unwrap();
    let members = formed(tmp.path(), Some(public_url)).await;
    let credentials = json!({"email": "ada@example.com", "password": "plenty long enough passphrase"});
    let r = with_cookie(&members[0], "/v1/auth/register", None, &credentials).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let cookie = cookie_of(&r);

    // A registration begun on one node finishes on another: the ceremony is sealed under the
    // tenant's key, which every node holds.
    let mut passkey = SoftPasskey::new(public_url);
    let begun = with_cookie(&members[0], "/v1/auth/passkeys/register/begin", Some(&cookie), &json!({})).await;
    assert_eq!(begun.status, StatusCode::OK, "{}", begun.body);
    let answer = json!({"ceremony": begun.body["ceremony"], "credential": passkey.register(&begun.body["options"])});
    let added = with_cookie(&members[1], "/v1/auth/passkeys/register/finish", Some(&cookie), &answer).await;
    assert!(added.status.is_success(), "{}: {}", added.status, added.body);
    on_every_member(&members, "the new passkey", |i| {
        let (m, cookie) = (&members[i], cookie.clone());
        async move {
            let listed = get_with_cookie(m, "/v1/auth/passkeys/credentials", &cookie).await;
            listed.body["items"].as_array().is_some_and(|a| a.len() == 1)
        }
    })
    .await;

    // S47: one sign-in ceremony, its one assertion finished 30 times at once over the three
    // nodes: one session.
    let begun = with_cookie(&members[2], "/v1/auth/passkeys/login/begin", None, &json!({})).await;
    assert_eq!(begun.status, StatusCode::OK, "{}", begun.body);
    let answer = json!({"ceremony": begun.body["ceremony"], "credential": passkey.sign_in(&begun.body["options"])});
    let answers = futures_util::future::join_all(
        (0..30).map(|i| with_cookie(&members[i % 3], "/v1/auth/passkeys/login/finish", None, &answer)),
    )
    .await;
    let statuses: Vec<_> = answers.iter().map(|a| a.status).collect();
    let winners: Vec<_> = answers.iter().filter(|a| a.status == StatusCode::OK).collect();
    assert_eq!(winners.len(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| matches!(s.as_u16(), 200 | 400)), "{statuses:?}");
    let signed_in = cookie_of(winners[0]);
    // The counter alone would also stop a second use of that one answer; a new answer to the
    // same challenge (its counter moved on, checked against the stored one) is stopped by the
    // spent challenge, on every node.
    let fresh = json!({"ceremony": begun.body["ceremony"], "credential": passkey.sign_in(&begun.body["options"])});
    on_every_member(&members, "the passkey's new counter", |i| {
        let (m, c) = (&members[i], signed_in.clone());
        async move { get_with_cookie(m, "/v1/auth/session", &c).await.status == StatusCode::OK }
    })
    .await;
    for m in &members {
        let again = with_cookie(m, "/v1/auth/passkeys/login/finish", None, &fresh).await;
        assert_eq!(
            (again.status, &again.body["type"]),
            (StatusCode::BAD_REQUEST, &json!("urn:gatehouse:problem:invalid_ceremony")),
            "{}",
            again.body
        );
    }

    // S50: the session is good on every node, and a logout on one ends it on every node.
    on_every_member(&members, "the passkey session", |i| {
        let (m, c) = (&members[i], signed_in.clone());
        async move { get_with_cookie(m, "/v1/auth/session", &c).await.status == StatusCode::OK }
    })
    .await;
    let out = with_cookie(&members[1], "/v1/auth/logout", Some(&signed_in), &json!({})).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.body);
    on_every_member(&members, "the logout", |i| {
        let (m, c) = (&members[i], signed_in.clone());
        async move { get_with_cookie(m, "/v1/auth/session", &c).await.status == StatusCode::UNAUTHORIZED }
    })
    .await;

    // A fresh ceremony signs in again (the counter moved on), on another node.
    let begun = with_cookie(&members[0], "/v1/auth/passkeys/login/begin", None, &json!({})).await;
    let answer = json!({"ceremony": begun.body["ceremony"], "credential": passkey.sign_in(&begun.body["options"])});
    let again = with_cookie(&members[0], "/v1/auth/passkeys/login/finish", None, &answer).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
}

/// A JSON POST to `path` on the member's own address, from `source`.
async fn post_from(m: &Member, source: std::net::IpAddr, path: &str, cookie: Option<&str>, body: &Value) -> Answer {
    let node = m.node();
    let mut req = node.client_from(source).post(format!("{}{path}", node.local_url)).json(body);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    into_answer(req.send().await.unwrap()).await
}

/// A 429 for the account's hold (the first hold is a minute), not for a share still in use (1 s).
fn is_held(a: &Answer) -> bool {
    let wait = a.header("retry-after").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    a.status == StatusCode::TOO_MANY_REQUESTS && wait >= 30
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_passwords_and_codes_from_many_sources_over_three_nodes_hold_the_account_on_every_node() {
    use std::net::IpAddr;
    let tmp = tempfile::tempdir().unwrap();
    let members = formed(tmp.path(), Some("https://id.cluster.test")).await;
    let password = "plenty long enough passphrase";
    let (carol, dan, erin) = ("carol@example.com", "dan@example.com", "erin@example.com");
    let mut cookies = Vec::new();
    for email in [carol, dan, erin] {
        let r =
            with_cookie(&members[0], "/v1/auth/register", None, &json!({"email": email, "password": password})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        cookies.push(cookie_of(&r));
    }
    // Thirty sources, each under its own budget of failures (30 a minute), so only the
    // account's budget (10 failures) can hold anything.
    let source = |n: usize| IpAddr::from([127, 0, 1, u8::try_from(n % 30 + 1).unwrap()]);
    let bystander = IpAddr::from([127, 0, 2, 1]);

    // Exactly the limit of wrong passwords at once, all to one node: it may check only its share
    // (4) at a time, but the others wait for the share to free rather than being refused, so
    // all ten are checked and the account is held.
    let wrong_erin = json!({"email": erin, "password": "not the right passphrase"});
    let answers = futures_util::future::join_all(
        (0..10).map(|n| post_from(&members[1], source(n), "/v1/auth/login", None, &wrong_erin)),
    )
    .await;
    let statuses: Vec<_> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(statuses, [401; 10], "each of the limit's attempts is checked");
    let a =
        post_from(&members[1], bystander, "/v1/auth/login", None, &json!({"email": erin, "password": password})).await;
    assert!(is_held(&a), "the right password after the limit: {} {:?}", a.status, a.headers);

    // S40: 300 wrong passwords at once over the three nodes. Each node checks only its share of
    // what is left of the account's budget, so at most 10 + 2 × 4 are checked; and attempts
    // refused only for a share wait for it, so at least the limit is checked and the burst
    // itself brings the hold.
    let wrong = json!({"email": carol, "password": "not the right passphrase"});
    let answers = futures_util::future::join_all(
        (0..300).map(|n| post_from(&members[n % 3], source(n), "/v1/auth/login", None, &wrong)),
    )
    .await;
    let statuses: Vec<_> = answers.iter().map(|a| a.status.as_u16()).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!((10..=18).contains(&checked), "{checked} passwords checked: {statuses:?}");
    assert!(statuses.iter().all(|s| matches!(s, 401 | 429 | 503)), "{statuses:?}");
    // Then even the right password is held, on every node, while another account signs in
    // from the same source. (Each node is first asked with a wrong password until it answers
    // the hold itself, a wait of the first hold's length: the right one, on a node a moment
    // behind, would be a sign-in, which clears the account's failures.)
    on_every_member(&members, "carol's hold", |i| {
        let (m, wrong) = (&members[i], wrong.clone());
        async move { is_held(&post_from(m, bystander, "/v1/auth/login", None, &wrong).await) }
    })
    .await;
    let right = json!({"email": carol, "password": password});
    for (i, m) in members.iter().enumerate() {
        let a = post_from(m, bystander, "/v1/auth/login", None, &right).await;
        assert!(is_held(&a), "the right password on member {i}: {} {:?}", a.status, a.headers);
    }

    // The same for codes: dan confirms an authenticator, then three sign-ins (one per node)
    // wait for a code, and 50 wrong codes arrive at once.
    let enrolled = with_cookie(&members[0], "/v1/auth/mfa/totp/enroll", Some(&cookies[1]), &json!({})).await;
    assert_eq!(enrolled.status, StatusCode::OK, "{}", enrolled.body);
    let totp = totp_rs::TOTP::from_url(enrolled.body["otpauth_uri"].as_str().unwrap()).unwrap();
    // The node checks codes against the wall clock, and so does this test.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let confirm = json!({"code": totp.generate(now)});
    let confirmed = with_cookie(&members[0], "/v1/auth/mfa/totp/confirm", Some(&cookies[1]), &confirm).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    let mut pending = Vec::new();
    for m in &members {
        let r = post_from(m, bystander, "/v1/auth/login", None, &json!({"email": dan, "password": password})).await;
        assert_eq!((r.status, &r.body["mfa_required"]), (StatusCode::OK, &json!(true)), "{}", r.body);
        pending.push(cookie_of(&r));
    }
    let good: Vec<String> = (0..4).map(|k| totp.generate(now + 30 * k)).collect();
    let wrong_codes: Vec<String> =
        (0..60).map(|n| format!("{:06}", 100_003 * n % 1_000_000)).filter(|c| !good.contains(c)).take(50).collect();
    let answers = futures_util::future::join_all(wrong_codes.iter().enumerate().map(|(n, code)| {
        let body = json!({"code": code});
        let (m, cookie) = (&members[n % 3], pending[n % 3].clone());
        async move { post_from(m, source(n), "/v1/auth/mfa/totp/challenge", Some(&cookie), &body).await }
    }))
    .await;
    let statuses: Vec<_> = answers.iter().map(|a| a.status.as_u16()).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!((10..=18).contains(&checked), "{checked} codes checked: {statuses:?}");
    assert!(statuses.iter().all(|s| matches!(s, 401 | 429 | 503)), "{statuses:?}");
    // Then even the right code is held on every node (once each node has seen the hold: a
    // wrong code asks, since it costs nothing once the account is held).
    let probe = json!({"code": wrong_codes[0]});
    on_every_member(&members, "dan's hold", |i| {
        let (m, cookie, probe) = (&members[i], pending[i].clone(), probe.clone());
        async move { is_held(&post_from(m, bystander, "/v1/auth/mfa/totp/challenge", Some(&cookie), &probe).await) }
    })
    .await;
    for (i, m) in members.iter().enumerate() {
        #[allow(clippy::disallowed_methods)]
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let body = json!({"code": totp.generate(now)});
        let a = post_from(m, bystander, "/v1/auth/mfa/totp/challenge", Some(&pending[i]), &body).await;
        assert!(is_held(&a), "the right code on member {i}: {} {:?}", a.status, a.headers);
    }
}
