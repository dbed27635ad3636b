//! Micro-benchmarks of the hot paths: `apply` of one command, a write through single-node raft
//! against one bare durable redb commit (same run, same disk), ES256/RS256 token signing
//! and verification through jsonwebtoken's aws-lc backend, and one argon2id password hash. Run with `cargo bench --bench core`;
//! `cargo test --benches` runs each once as a test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::crypto::kek::{KekSource, LocalKek};
use gatehouse::crypto::keys::KeyMaterial;
use gatehouse::crypto::{KeyProvider, SecretCipher, TokenSigner};
use gatehouse_raft::{RaftNode, StartMode};
use gatehouse_storage::model::{
    CaRecord, ClusterRecord, DataKeyRecord, PublicJwk, Sealed, SigningAlg, SigningKeyRecord, TenantRecord, TenantStatus,
};
use gatehouse_storage::{Command, NewTenant, Proposal, Store};
use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};

fn sealed(key_id: &str) -> Sealed {
    Sealed { key_id: key_id.into(), nonce: "A".repeat(32), ciphertext: "B".repeat(180) }
}

/// A tenant as `tenant create` proposes it (two keys), with placeholder ciphertexts.
fn new_tenant(id: &str) -> NewTenant {
    let dk = format!("dk-{id}");
    let key = |alg, kid: &str| SigningKeyRecord {
        v: 1,
        tenant: id.into(),
        kid: kid.into(),
        alg,
        public: PublicJwk::EC { crv: "P-256".into(), x: "x".repeat(43), y: "y".repeat(43) },
        public_spki: "s".repeat(120),
        private: sealed(&dk),
        created_at_ms: 1,
        active_from_ms: 1,
    };
    NewTenant {
        tenant: TenantRecord {
            v: 1,
            id: id.into(),
            display_name: id.into(),
            status: TenantStatus::Active,
            self_registration: false,
            data_key_id: dk.clone(),
            created_at_ms: 1,
            cors_origins: Vec::new(),
            require_mfa: false,
        },
        data_key: DataKeyRecord {
            v: 1,
            id: dk.clone(),
            scope: format!("tenant:{id}"),
            wrapped: sealed("kek"),
            created_at_ms: 1,
        },
        signing_keys: vec![key(SigningAlg::ES256, &format!("{id}-es")), key(SigningAlg::RS256, &format!("{id}-rs"))],
    }
}

fn bootstrap() -> Proposal {
    let cluster = ClusterRecord {
        node_ca: None,
        v: 1,
        cluster_id: "bench".into(),
        founding_node: 1,
        ca: CaRecord { cert_pem: "pem".into(), key: sealed("dk-system") },
        created_at_ms: 1,
    };
    Proposal {
        origin: None,
        at_ms: 1,
        actor: "bench".into(),
        command: Command::Bootstrap { cluster, tenants: vec![new_tenant("system")] },
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn next_create() -> Proposal {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Proposal {
        origin: None,
        at_ms: 2,
        actor: "bench".into(),
        command: Command::CreateTenant(new_tenant(&format!("t{n}"))),
    }
}

fn storage(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("gatehouse.redb")).unwrap();
    {
        let txn = store.db().begin_write().unwrap();
        gatehouse_storage::apply(&txn, &bootstrap()).unwrap();
        txn.commit().unwrap();
    }
    c.bench_function("apply/create_tenant_non_durable_txn", |b| {
        b.iter(|| {
            let mut txn = store.db().begin_write().unwrap();
            txn.set_durability(redb::Durability::None).unwrap();
            gatehouse_storage::apply(&txn, &next_create()).unwrap();
            txn.commit().unwrap();
        })
    });

    let bare_dir = tempfile::tempdir().unwrap();
    let bare = redb::Database::create(bare_dir.path().join("bare.redb")).unwrap();
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
    let payload = vec![7u8; 600];
    let mut i = 0u64;
    let mut group = c.benchmark_group("write");
    group.bench_function("bare_durable_redb_commit", |b| {
        b.iter(|| {
            i += 1;
            let txn = bare.begin_write().unwrap();
            txn.open_table(T).unwrap().insert(i, payload.as_slice()).unwrap();
            txn.commit().unwrap();
        })
    });

    // The redb work of one raft write without openraft: a durable log commit of the entry,
    // then the apply in a non-durable transaction, on one file.
    let split_dir = tempfile::tempdir().unwrap();
    let split = Store::open(&split_dir.path().join("gatehouse.redb")).unwrap();
    {
        let txn = split.db().begin_write().unwrap();
        gatehouse_storage::apply(&txn, &bootstrap()).unwrap();
        txn.commit().unwrap();
    }
    let mut index = 0u64;
    group.bench_function("storage_work_of_one_raft_write", |b| {
        b.iter(|| {
            index += 1;
            let proposal = next_create();
            let entry = serde_json::to_vec(&proposal).unwrap();
            let txn = split.db().begin_write().unwrap();
            txn.open_table(gatehouse_storage::tables::RAFT_LOG).unwrap().insert(index, entry.as_slice()).unwrap();
            txn.commit().unwrap();
            let mut txn = split.db().begin_write().unwrap();
            txn.set_durability(redb::Durability::None).unwrap();
            gatehouse_storage::apply(&txn, &proposal).unwrap();
            txn.commit().unwrap();
        })
    });

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let raft_dir = tempfile::tempdir().unwrap();
    let raft_store = Store::open(&raft_dir.path().join("gatehouse.redb")).unwrap();
    let node = rt.block_on(async {
        let node =
            RaftNode::start(&raft_store, 1, "127.0.0.1:0", StartMode::Bootstrap, Default::default()).await.unwrap();
        node.wait_for_leader(std::time::Duration::from_secs(10)).await.unwrap();
        node.write(bootstrap()).await.unwrap();
        node
    });
    group.bench_function("raft_single_node_create_tenant", |b| {
        b.iter(|| rt.block_on(node.write(next_create())).unwrap())
    });
    group.finish();
    rt.block_on(node.shutdown());
}

#[derive(Serialize, Deserialize)]
struct AccessClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    jti: String,
    client_id: String,
    scope: String,
    tenant: String,
    roles: Vec<String>,
}

fn tokens(c: &mut Criterion) {
    let kek: Arc<dyn KeyProvider> = Arc::new(LocalKek::from_bytes([9; 32], KekSource::Environment));
    let cipher = SecretCipher::new(kek, None);
    cipher.new_data_key("dk-bench", "tenant:bench", 0);
    let records: Vec<SigningKeyRecord> = [SigningAlg::ES256, SigningAlg::RS256]
        .into_iter()
        .map(|alg| KeyMaterial::generate(alg).unwrap().into_record(&cipher, "bench", "dk-bench", 0, 0).unwrap())
        .collect();
    let signer = TokenSigner::load(&records, Some(&cipher)).unwrap();
    let now = 1_800_000_000;
    let claims = AccessClaims {
        iss: "https://id.example.com/t/bench".into(),
        sub: "client:svc-orders".into(),
        aud: "https://api.example.com".into(),
        exp: now + 300,
        iat: now,
        jti: "0f8e2c1e7a9b4d3c8e6f5a4b3c2d1e0f".into(),
        client_id: "svc-orders".into(),
        scope: "orders:read orders:write".into(),
        tenant: "bench".into(),
        roles: vec!["service".into()],
    };
    let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["https://api.example.com"]);
    validation.set_issuer(&["https://id.example.com/t/bench"]);
    validation.validate_exp = false;
    for alg in [SigningAlg::ES256, SigningAlg::RS256] {
        let name = alg.as_str();
        c.bench_function(&format!("token/{name}_sign"), |b| b.iter(|| signer.sign(alg, "at+jwt", &claims, 0).unwrap()));
        let token = signer.sign(alg, "at+jwt", &claims, 0).unwrap();
        c.bench_function(&format!("token/{name}_verify"), |b| {
            b.iter(|| signer.verify::<AccessClaims>(&token, &validation).unwrap())
        });
    }
}

/// One argon2id hash with the production defaults (19456 KiB, 2 passes, 1 lane) on one
/// thread: the raw rate `benches/signin.sh` sets sign-in throughput against.
fn passwords(c: &mut Criterion) {
    let params = gatehouse::idm::users::argon2_params(&gatehouse::config::PasswordConfig::default()).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    let mut group = c.benchmark_group("passwords");
    group.sample_size(20);
    group.bench_function("argon2id_hash", |b| {
        b.iter(|| argon.hash_password_into(b"bench-sign-in-password", b"sixteen-byte-slt", &mut out).unwrap())
    });
    group.finish();
}

criterion_group!(benches, storage, tokens, passwords);
criterion_main!(benches);
