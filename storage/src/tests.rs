//! Storage tests on real redb files: schema versions, audit encoding, apply semantics, snapshots.

use redb::{Database, ReadableDatabase};

use crate::audit::{AuditEntry, GENESIS_HASH};
use crate::command::{Applied, Command, IssuedToken, NewTenant, Outcome, Proposal, Rejection};
use crate::model::{
    BindingRecord, CaRecord, ClientKind, ClientRecord, ClientStatus, ClusterRecord, DataKeyRecord, JoinTokenRecord,
    PublicJwk, Sealed, SigningAlg, SigningKeyRecord, TenantRecord, TenantStatus,
};
use crate::schema::{self, SchemaAction, CURRENT_VERSION};
use crate::{snapshot, tables, Store, StoreError};

fn sealed(key_id: &str) -> Sealed {
    Sealed { key_id: key_id.into(), nonce: "bm9uY2U".into(), ciphertext: "Y2lwaGVydGV4dA".into() }
}

fn new_tenant(id: &str) -> NewTenant {
    let dk = format!("dk-{id}");
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
            wrapped: sealed("kek-1"),
            created_at_ms: 1,
        },
        signing_keys: vec![SigningKeyRecord {
            v: 1,
            tenant: id.into(),
            kid: format!("kid-{id}"),
            alg: SigningAlg::ES256,
            public: PublicJwk::EC { crv: "P-256".into(), x: "x".into(), y: "y".into() },
            public_spki: "spki".into(),
            private: sealed(&dk),
            created_at_ms: 1,
            active_from_ms: 1,
        }],
    }
}

fn bootstrap() -> Proposal {
    Proposal {
        origin: None,
        at_ms: 1_000,
        actor: "node:1".into(),
        command: Command::Bootstrap {
            cluster: ClusterRecord {
                node_ca: None,
                v: 1,
                cluster_id: "c1".into(),
                founding_node: 1,
                ca: CaRecord { cert_pem: "pem".into(), key: sealed("dk-system") },
                created_at_ms: 1_000,
            },
            tenants: vec![new_tenant("system"), new_tenant("default")],
        },
    }
}

fn create(id: &str, at_ms: i64) -> Proposal {
    Proposal { origin: None, at_ms, actor: "cli:uid:0".into(), command: Command::CreateTenant(new_tenant(id)) }
}

fn apply_all(store: &Store, proposals: &[Proposal]) -> Vec<Outcome> {
    let txn = store.db().begin_write().unwrap();
    let out = proposals.iter().map(|p| crate::apply(&txn, p).unwrap()).collect();
    txn.commit().unwrap();
    out
}

fn exported(store: &Store) -> Vec<u8> {
    let mut out = Vec::new();
    let summary = snapshot::export(&store.db().begin_read().unwrap(), &mut out).unwrap();
    assert_eq!(summary.bytes, out.len() as u64);
    out
}

fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("gatehouse.redb")).unwrap();
    (dir, store)
}

#[test]
fn a_new_database_gets_the_current_schema() {
    let (_d, store) = fresh();
    assert_eq!(store.schema_action(), SchemaAction::Created);
    let again = Store::open(store.path());
    assert!(matches!(again, Err(StoreError::Locked { .. })), "a second open of a locked file is refused");
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        schema::set_version(&txn, CURRENT_VERSION + 7).unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path).err().expect("refused");
    assert_eq!(std::fs::read(&path).unwrap(), before, "a refused open leaves the file as it was");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported } if found == CURRENT_VERSION + 7 && supported == CURRENT_VERSION)
    );
    assert!(err.to_string().contains("newer than this binary supports"), "{err}");
}

/// Version 1 kept the audit chain without a head record; opening migrates it to version 2.
#[test]
fn a_version_1_database_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.redb");
    let mut prev = GENESIS_HASH;
    let mut last = GENESIS_HASH;
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut audit = txn.open_table(tables::AUDIT).unwrap();
            for seq in 1..=3u64 {
                let mut e = AuditEntry {
                    version: 1,
                    seq,
                    at_ms: seq as i64,
                    actor: "node:1".into(),
                    tenant: "system".into(),
                    action: "tenant.create".into(),
                    target: format!("tenant:t{seq}"),
                    outcome: "ok".into(),
                    request_id: String::new(),
                    peer: String::new(),
                    prev_hash: prev,
                    hash: [0; 32],
                };
                e.hash = e.compute_hash();
                prev = e.hash;
                last = e.hash;
                audit.insert(seq, e.to_bytes().as_slice()).unwrap();
            }
        }
        txn.open_table(tables::META).unwrap();
        schema::set_version(&txn, 1).unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_action(), SchemaAction::Migrated { from: 1 });
    let reader = store.read().unwrap();
    let head = reader.audit_head().unwrap();
    assert_eq!(head.count, 3);
    assert_eq!(head.last_hash, hex::encode(last));
    let report = reader.verify_audit().unwrap();
    assert!(report.failure.is_none(), "{report:?}");
    let version = reader.meta_raw(tables::meta_keys::SCHEMA_VERSION).unwrap().unwrap();
    assert_eq!(version, CURRENT_VERSION.to_be_bytes().to_vec());
    drop(reader);
    drop(store);
    assert_eq!(Store::open(&path).unwrap().schema_action(), SchemaAction::UpToDate);
}

#[test]
fn audit_entry_bytes_round_trip_and_reject_malformed_input() {
    let texts = ["", "a", "tenant:äöü-🙂", &"x".repeat(1000)];
    for (i, (text, version)) in texts.iter().flat_map(|t| [(t, 1u8), (t, 2u8)]).enumerate() {
        let mut e = AuditEntry {
            version,
            seq: i as u64 + 1,
            at_ms: -5 + i as i64,
            actor: text.to_string(),
            tenant: "t".into(),
            action: text.to_string(),
            target: "x".into(),
            outcome: "ok".into(),
            request_id: if version == 2 { format!("req-{i}") } else { String::new() },
            peer: if version == 2 { "127.0.0.1:9".into() } else { String::new() },
            prev_hash: [i as u8; 32],
            hash: [0; 32],
        };
        e.hash = e.compute_hash();
        let bytes = e.to_bytes();
        let parsed = AuditEntry::from_bytes(&bytes).expect("parses");
        assert_eq!(parsed, e);
        assert_eq!(parsed.to_bytes(), bytes, "serialize(parse(bytes)) == bytes");
        assert!(AuditEntry::from_bytes(&bytes[..bytes.len() - 1]).is_none(), "truncated");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(AuditEntry::from_bytes(&longer).is_none(), "trailing bytes");
        let mut other_version = bytes.clone();
        other_version[0] = 3;
        assert!(AuditEntry::from_bytes(&other_version).is_none(), "unknown version");
    }
}

#[test]
fn a_refusal_writes_only_its_audit_entry() {
    let (_d, store) = fresh();
    let out = apply_all(&store, &[bootstrap(), create("acme", 2_000)]);
    assert!(matches!(out[0], Outcome::Applied(Applied::Bootstrapped { .. })));
    assert!(matches!(out[1], Outcome::Applied(Applied::TenantCreated { .. })));
    let state = |store: &Store| {
        let r = store.read().unwrap();
        (r.tenants().unwrap(), r.signing_keys("acme").unwrap(), r.cluster().unwrap(), r.data_key("dk-acme").unwrap())
    };
    let before = state(&store);

    let mut clash = create("acme", 3_000);
    if let Command::CreateTenant(n) = &mut clash.command {
        n.data_key.id = "dk-other".into();
        n.tenant.data_key_id = "dk-other".into();
        n.signing_keys[0].private.key_id = "dk-other".into();
    }
    let out = apply_all(&store, &[clash, create("system", 3_001), bootstrap(), create("Not_Valid", 3_002)]);
    assert_eq!(out[0], Outcome::Refused(Rejection::TenantExists { id: "acme".into() }));
    assert_eq!(out[1], Outcome::Refused(Rejection::ReservedTenantId { id: "system".into() }));
    assert_eq!(out[2], Outcome::Refused(Rejection::AlreadyBootstrapped));
    assert_eq!(out[3], Outcome::Refused(Rejection::InvalidTenantId { id: "Not_Valid".into() }));

    let reader = store.read().unwrap();
    assert_eq!(reader.tenants().unwrap().len(), 3);
    assert!(reader.data_key("dk-other").unwrap().is_none(), "nothing of a refused command is stored");
    let entries = reader.audit_entries(1, 100).unwrap();
    assert_eq!(entries.len(), 6);
    assert_eq!(entries[2].outcome, "refused:tenant_exists");
    assert_eq!(entries[2].actor, "cli:uid:0");
    assert_eq!(entries[2].at_ms, 3_000, "the time comes from the command");
    assert!(reader.verify_audit().unwrap().failure.is_none());
    drop(reader);
    assert_eq!(state(&store), before, "apart from the audit chain, the state is exactly as before");
}

#[test]
fn apply_is_deterministic_and_snapshots_round_trip() {
    let proposals = [bootstrap(), create("acme", 2_000), create("acme", 2_001), create("beta", 2_002)];
    let (_a, a) = fresh();
    let (_b, b) = fresh();
    apply_all(&a, &proposals);
    apply_all(&b, &proposals);
    let export_a = exported(&a);
    let export_b = exported(&b);
    assert_eq!(export_a, export_b, "the same commands give the same state on every node");

    let (_c, c) = fresh();
    apply_all(&c, &[create("stale", 5)]); // state that the snapshot must replace
    let txn = c.db().begin_write().unwrap();
    snapshot::import(&txn, export_a.as_slice()).unwrap();
    txn.commit().unwrap();
    let export_c = exported(&c);
    assert_eq!(export_c, export_a);
    assert!(c.read().unwrap().tenant("stale").unwrap().is_none());
    assert!(c.read().unwrap().verify_audit().unwrap().failure.is_none());

    let txn = c.db().begin_write().unwrap();
    assert!(snapshot::import(&txn, &export_a[..export_a.len() - 3]).is_err(), "a truncated snapshot is refused");
    drop(txn);
    let mut altered = export_a.clone();
    altered[20] ^= 1;
    let txn = c.db().begin_write().unwrap();
    let err = snapshot::import(&txn, altered.as_slice()).unwrap_err();
    assert!(err.to_string().contains("checksum") || err.to_string().contains("truncated"), "{err}");
    drop(txn);
    let mut longer = export_a.clone();
    longer.push(0);
    let txn = c.db().begin_write().unwrap();
    assert!(snapshot::import(&txn, longer.as_slice()).is_err(), "trailing bytes are refused");
    drop(txn);
    assert_eq!(exported(&c), export_a, "a refused import changed nothing");
}

/// R20: a file whose pages were overwritten outside redb is refused as corrupted, with a
/// message that says what to do, instead of being served (or panicking the open).
#[test]
fn a_database_altered_outside_redb_is_refused_as_corrupted() {
    let (dir, store) = fresh();
    let creates: Vec<Proposal> = (0..200).map(|i| create(&format!("tenant-{i}"), 1_000 + i)).collect();
    apply_all(&store, &[bootstrap()]);
    apply_all(&store, &creates);
    store.checkpoint().unwrap();
    drop(store);
    let path = dir.path().join("gatehouse.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    for page in bytes.chunks_mut(4096).skip(1).step_by(4) {
        page.fill(0xa5);
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = Store::open_existing(&path).err().expect("an altered file was opened");
    assert!(matches!(err, StoreError::Corrupted { .. }), "{err:?}");
    assert!(err.to_string().contains("join again") && err.to_string().contains("restore"), "{err}");
}

#[test]
fn open_existing_refuses_a_missing_or_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.redb");
    assert!(matches!(Store::open_existing(&path), Err(StoreError::NotADatabase { .. })));
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(Store::open_existing(&path), Err(StoreError::NotADatabase { .. })));
    assert_eq!(std::fs::read(&path).unwrap().len(), 0, "nothing was written");
}

#[test]
fn a_file_that_is_not_redb_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.redb");
    std::fs::write(&path, b"SQLite format 3\0 definitely not redb").unwrap();
    let err = Store::open(&path).err().expect("refused");
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"SQLite format 3\0 definitely not redb");
}

fn key(tenant: &str, kid: &str, alg: SigningAlg, active_from_ms: i64) -> SigningKeyRecord {
    SigningKeyRecord {
        v: 1,
        tenant: tenant.into(),
        kid: kid.into(),
        alg,
        public: PublicJwk::EC { crv: "P-256".into(), x: "x".into(), y: "y".into() },
        public_spki: "spki".into(),
        private: sealed(&format!("dk-{tenant}")),
        created_at_ms: active_from_ms,
        active_from_ms,
    }
}

#[test]
fn key_states_follow_publish_activation_and_token_lifetime() {
    use crate::model::{key_states, KeyState};
    // old active from 0; new published at 100, active from 200; tokens live 50.
    let keys = vec![
        key("t", "old", SigningAlg::ES256, 0),
        key("t", "new", SigningAlg::ES256, 200),
        key("t", "rsa", SigningAlg::RS256, 0),
    ];
    let at = |now| key_states(&keys, now, 50).into_iter().map(|(_, s)| s).collect::<Vec<_>>();
    assert_eq!(at(150), [KeyState::Active, KeyState::Published, KeyState::Active]);
    assert_eq!(at(200), [KeyState::Retiring, KeyState::Active, KeyState::Active]);
    assert_eq!(at(249), [KeyState::Retiring, KeyState::Active, KeyState::Active]);
    assert_eq!(at(250), [KeyState::Retired, KeyState::Active, KeyState::Active]);
}

#[test]
fn prune_refuses_keys_that_sign_or_whose_tokens_may_be_valid() {
    let (_d, store) = fresh();
    apply_all(&store, &[bootstrap(), create("acme", 10)]);
    let add = |kid: &str, active_from| Proposal {
        origin: None,
        at_ms: 100,
        actor: "cli:uid:0".into(),
        command: Command::AddSigningKeys {
            tenant: "acme".into(),
            keys: vec![key("acme", kid, SigningAlg::ES256, active_from)],
        },
    };
    let prune = |kids: &[&str], at_ms| Proposal {
        origin: None,
        at_ms,
        actor: "cli:uid:0".into(),
        command: Command::PruneSigningKeys {
            tenant: "acme".into(),
            kids: kids.iter().map(|k| k.to_string()).collect(),
            max_token_lifetime_ms: 50,
        },
    };
    let out = apply_all(
        &store,
        &[add("next", 200), prune(&["next"], 150), prune(&["kid-acme"], 150), prune(&["kid-acme"], 220)],
    );
    assert!(matches!(out[0], Outcome::Applied(Applied::SigningKeysAdded { .. })));
    assert!(
        matches!(&out[1], Outcome::Refused(Rejection::SigningKeyStillNeeded { state, .. }) if state == "published")
    );
    assert!(matches!(&out[2], Outcome::Refused(Rejection::SigningKeyStillNeeded { state, .. }) if state == "active"));
    assert!(matches!(&out[3], Outcome::Refused(Rejection::SigningKeyStillNeeded { state, .. }) if state == "retiring"));
    let out = apply_all(&store, &[prune(&["nope"], 300), prune(&["kid-acme", "next"], 300), prune(&["kid-acme"], 300)]);
    assert!(matches!(out[0], Outcome::Refused(Rejection::UnknownSigningKey { .. })));
    assert!(
        matches!(&out[1], Outcome::Refused(Rejection::SigningKeyStillNeeded { kid, .. }) if kid == "next"),
        "all or nothing"
    );
    assert!(matches!(out[2], Outcome::Applied(Applied::SigningKeysPruned { .. })));
    let kids: Vec<String> = store.read().unwrap().signing_keys("acme").unwrap().into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, vec!["next".to_string()]);
}

fn client(tenant: &str, id: &str) -> ClientRecord {
    ClientRecord {
        v: 1,
        tenant: tenant.into(),
        client_id: id.into(),
        name: "svc".into(),
        kind: ClientKind::Confidential,
        auth_method: "client_secret_basic".into(),
        secret_sha256: Some("00".repeat(32)),
        grant_types: vec!["client_credentials".into()],
        scopes: vec![],
        audiences: vec!["api".into()],
        redirect_uris: vec![],
        jwks: None,
        id_token_signed_response_alg: None,
        first_party: false,
        post_logout_redirect_uris: Vec::new(),
        access_token_lifetime_secs: 600,
        status: ClientStatus::Active,
        created_at_ms: 10,
        updated_at_ms: 10,
        revision: 1,
    }
}

fn by(at_ms: i64, command: Command) -> Proposal {
    Proposal { origin: None, at_ms, actor: "admin:system:test".into(), command }
}

fn issue(tenant: &str, client_id: &str, jti: &str) -> Command {
    Command::IssueToken(IssuedToken {
        tenant: tenant.into(),
        client_id: Some(client_id.into()),
        subject: client_id.into(),
        jti: jti.into(),
        grant: "client_credentials".into(),
        scope: String::new(),
        audience: "api".into(),
        exp_ms: 1_000,
        origin: None,
    })
}

#[test]
fn clients_bindings_and_tokens_follow_the_state() {
    let (_d, store) = fresh();
    apply_all(&store, &[bootstrap(), create("acme", 10)]);
    let binding = |id: &str, subject: &str, role: &str| BindingRecord {
        v: 1,
        tenant: "acme".into(),
        id: id.into(),
        subject: subject.into(),
        role: role.into(),
        scope: None,
        created_at_ms: 20,
    };
    let mut disabled = client("acme", "c1");
    disabled.status = ClientStatus::Disabled;
    disabled.revision = 2;
    let out = apply_all(
        &store,
        &[
            by(20, Command::CreateClient(client("acme", "c1"))),
            by(21, Command::CreateClient(client("acme", "c1"))),
            by(22, Command::CreateClient(client("nowhere", "c2"))),
            by(23, Command::CreateBinding(binding("b1", "client:c1", "admin"))),
            by(24, Command::CreateBinding(binding("b2", "client:c1", "superuser"))),
            by(25, Command::CreateBinding(binding("b3", "client:other", "admin"))),
            by(26, issue("acme", "c1", "j1")),
            by(27, issue("acme", "ghost", "j2")),
            by(28, Command::UpdateClient { client: disabled.clone(), expected_revision: 7 }),
            by(29, Command::UpdateClient { client: disabled, expected_revision: 1 }),
            by(30, issue("acme", "c1", "j3")),
        ],
    );
    assert!(matches!(out[0], Outcome::Applied(Applied::ClientCreated { .. })));
    assert!(matches!(out[1], Outcome::Refused(Rejection::ClientExists { .. })), "{:?}", out[1]);
    assert!(matches!(out[2], Outcome::Refused(Rejection::UnknownTenant { .. })));
    assert!(matches!(out[3], Outcome::Applied(Applied::BindingCreated { .. })));
    assert!(matches!(out[4], Outcome::Refused(Rejection::UnknownRole { .. })));
    assert!(matches!(out[5], Outcome::Refused(Rejection::UnknownClient { .. })));
    assert!(matches!(out[6], Outcome::Applied(Applied::TokenIssued { .. })));
    assert!(matches!(out[7], Outcome::Refused(Rejection::UnknownClient { .. })));
    assert!(matches!(out[8], Outcome::Refused(Rejection::RevisionMismatch { current: 1 })));
    assert!(matches!(out[9], Outcome::Applied(Applied::ClientUpdated { revision: 2, .. })));
    assert!(matches!(out[10], Outcome::Refused(Rejection::ClientDisabled { .. })), "a disabled client gets no token");

    let reader = store.read().unwrap();
    assert_eq!(reader.roles_of("acme", "client:c1").unwrap(), vec!["admin".to_string()]);
    assert_eq!(reader.clients("acme", None, 10).unwrap().len(), 1);
    assert!(reader.clients("default", None, 10).unwrap().is_empty(), "tenants do not share clients");
    drop(reader);

    // Deleting the client takes its bindings with it.
    apply_all(&store, &[by(31, Command::DeleteClient { tenant: "acme".into(), client_id: "c1".into() })]);
    let reader = store.read().unwrap();
    assert!(reader.client("acme", "c1").unwrap().is_none());
    assert!(reader.bindings("acme", None, 10).unwrap().is_empty());
    // Every command, applied or refused, has its audit entry.
    assert!(reader.verify_audit().unwrap().failure.is_none());
}

#[test]
fn revocations_last_until_the_token_expires_then_are_pruned() {
    let (_d, store) = fresh();
    apply_all(&store, &[bootstrap()]);
    let revoke =
        |jti: &str, exp_ms| by(100, Command::RevokeToken { tenant: "default".into(), jti: jti.into(), exp_ms });
    apply_all(&store, &[revoke("early", 500), revoke("late", 5_000)]);
    assert!(store.read().unwrap().is_revoked("default", "early").unwrap());
    assert!(!store.read().unwrap().is_revoked("system", "early").unwrap(), "per tenant");
    let out = apply_all(&store, &[by(1_000, Command::PruneRevocations)]);
    assert!(matches!(out[0], Outcome::Applied(Applied::RevocationsPruned { count: 1 })));
    let reader = store.read().unwrap();
    assert!(!reader.is_revoked("default", "early").unwrap(), "expired: pruned");
    assert!(reader.is_revoked("default", "late").unwrap(), "still valid: kept");
}

#[test]
fn a_failed_client_authentication_writes_only_its_audit_entry() {
    let (_d, store) = fresh();
    apply_all(&store, &[bootstrap()]);
    let before = store.read().unwrap().audit_head().unwrap().count;
    let out = apply_all(
        &store,
        &[by(
            5,
            Command::ClientAuthenticationFailed {
                tenant: "default".into(),
                client_id: "x".into(),
                endpoint: "token".into(),
            },
        )],
    );
    assert!(matches!(out[0], Outcome::Refused(Rejection::ClientAuthenticationFailed)));
    let reader = store.read().unwrap();
    assert_eq!(reader.audit_head().unwrap().count, before + 1);
    let last = reader.audit_entries(before + 1, 1).unwrap();
    assert_eq!(last[0].outcome, "refused:client_authentication_failed");
}

#[test]
fn an_idempotent_action_and_its_answer_apply_together_and_only_once() {
    use crate::model::IdempotentResponse;
    let (_dir, store) = fresh();
    let answer = |status: u16| IdempotentResponse {
        v: 1,
        scope: "scope-1".into(),
        request_sha256: "digest".into(),
        status,
        body: "{}".into(),
        etag: None,
        created_at_ms: 2_000,
        expires_at_ms: 90_000_000,
    };
    let wrapped =
        |id: &str| Command::Idempotent { inner: Box::new(Command::CreateTenant(new_tenant(id))), answer: answer(201) };
    let out = apply_all(&store, &[bootstrap(), by(2_000, wrapped("acme")), by(2_001, wrapped("acme-again"))]);
    assert!(matches!(out[1], Outcome::Applied(Applied::TenantCreated { .. })), "{:?}", out[1]);
    assert!(matches!(out[2], Outcome::Refused(Rejection::IdempotencyKeyUsed)), "{:?}", out[2]);
    let r = store.read().unwrap();
    assert!(r.tenant("acme").unwrap().is_some(), "the action applied");
    assert!(r.tenant("acme-again").unwrap().is_none(), "the second action under the key did not");
    assert_eq!(
        r.idempotent_response("scope-1", 3_000).unwrap().map(|a| a.status),
        Some(201),
        "the answer is remembered"
    );
    // Past its expiry the answer no longer holds the key: a new action under it applies.
    let late = by(90_000_001, wrapped("acme-later"));
    let out = apply_all(&store, &[late]);
    assert!(matches!(out[0], Outcome::Applied(Applied::TenantCreated { .. })), "{:?}", out[0]);
    // An action that is refused remembers nothing, so the key stays usable.
    let (_dir, store) = fresh();
    let refused =
        Command::Idempotent { inner: Box::new(Command::DeleteTenant { id: "nobody".into() }), answer: answer(204) };
    let out = apply_all(&store, &[bootstrap(), by(2_000, refused)]);
    assert!(matches!(out[1], Outcome::Refused(_)));
    assert!(store.read().unwrap().idempotent_response("scope-1", 3_000).unwrap().is_none());
}

fn index_entries(store: &Store) -> Vec<String> {
    use redb::ReadableTable;
    let txn = store.db().begin_read().unwrap();
    let index = txn.open_table(tables::BINDINGS_BY_SUBJECT).unwrap();
    index.iter().unwrap().map(|i| i.unwrap().0.value().to_string()).collect()
}

fn bound(id: &str, subject: &str, role: &str, scope: Option<&str>) -> Command {
    Command::CreateBinding(BindingRecord {
        v: 1,
        tenant: "acme".into(),
        id: id.into(),
        subject: subject.into(),
        role: role.into(),
        scope: scope.map(str::to_string),
        created_at_ms: 20,
    })
}

fn acme_with_two_subjects() -> (tempfile::TempDir, Store) {
    let (d, store) = fresh();
    apply_all(&store, &[bootstrap(), create("acme", 10)]);
    let out = apply_all(
        &store,
        &[
            by(20, Command::CreateClient(client("acme", "c1"))),
            by(21, Command::CreateClient(client("acme", "c10"))),
            by(22, bound("b1", "client:c1", "admin", None)),
            by(23, bound("b2", "client:c1", "viewer", Some("project:x"))),
            by(24, bound("b3", "client:c10", "owner", None)),
        ],
    );
    assert!(out.iter().all(|o| matches!(o, Outcome::Applied(_))), "{out:?}");
    (d, store)
}

#[test]
fn the_subject_index_follows_every_binding_write() {
    let (_d, store) = acme_with_two_subjects();
    let reader = store.read().unwrap();
    // `client:c1` is a prefix of `client:c10` as a string, never as an index range.
    assert_eq!(reader.roles_of("acme", "client:c1").unwrap(), vec!["admin".to_string()]);
    assert_eq!(reader.roles_held("acme", "client:c1").unwrap(), vec!["admin".to_string(), "viewer".to_string()]);
    assert_eq!(reader.roles_of("acme", "client:c10").unwrap(), vec!["owner".to_string()]);
    drop(reader);
    assert_eq!(index_entries(&store).len(), 3);

    let out = apply_all(
        &store,
        &[
            by(30, Command::DeleteBinding { tenant: "acme".into(), id: "b1".into() }),
            by(31, bound("b/4", "client:c1", "admin", None)),
            by(32, bound("b5", "client:c1/x", "admin", None)),
        ],
    );
    assert!(matches!(out[0], Outcome::Applied(Applied::BindingDeleted { .. })));
    assert!(matches!(out[1], Outcome::Refused(Rejection::Inconsistent { .. })), "{:?}", out[1]);
    assert!(matches!(out[2], Outcome::Refused(Rejection::Inconsistent { .. })), "{:?}", out[2]);
    assert!(store.read().unwrap().roles_of("acme", "client:c1").unwrap().is_empty());
    assert_eq!(index_entries(&store).len(), 2);

    apply_all(&store, &[by(40, Command::DeleteClient { tenant: "acme".into(), client_id: "c1".into() })]);
    assert_eq!(index_entries(&store), vec!["acme/client:c10/b3".to_string()]);
    apply_all(&store, &[by(41, Command::DeleteTenant { id: "acme".into() })]);
    assert!(index_entries(&store).is_empty(), "a deleted tenant leaves no index entry");
}

#[test]
fn an_installed_snapshot_rebuilds_the_subject_index_and_never_carries_it() {
    let (_a, a) = acme_with_two_subjects();
    let export = exported(&a);
    assert!(!export.windows(b"client:c10/b3".len()).any(|w| w == b"client:c10/b3"), "the index is not shipped");

    let (_c, c) = fresh();
    apply_all(&c, &[bootstrap(), create("acme", 10), by(20, Command::CreateClient(client("acme", "c1")))]);
    apply_all(&c, &[by(22, bound("stale", "client:c1", "member", None))]);
    let txn = c.db().begin_write().unwrap();
    snapshot::import(&txn, export.as_slice()).unwrap();
    txn.commit().unwrap();
    assert_eq!(index_entries(&c), index_entries(&a), "rebuilt, with nothing left of the replaced state");
    assert_eq!(c.read().unwrap().roles_of("acme", "client:c10").unwrap(), vec!["owner".to_string()]);
}

#[test]
fn a_version_3_database_gets_its_subject_index() {
    let (dir, store) = acme_with_two_subjects();
    // Make it what version 3 wrote: no index, version 3.
    let txn = store.db().begin_write().unwrap();
    txn.delete_table(tables::BINDINGS_BY_SUBJECT).unwrap();
    schema::set_version(&txn, 3).unwrap();
    txn.commit().unwrap();
    let path = store.path().to_path_buf();
    drop(store);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_action(), SchemaAction::Migrated { from: 3 });
    assert_eq!(store.read().unwrap().roles_of("acme", "client:c10").unwrap(), vec!["owner".to_string()]);
    assert_eq!(index_entries(&store).len(), 3);
    drop(dir);
}

#[test]
fn a_guarded_change_is_refused_once_its_subject_holds_more_roles() {
    let (_d, store) = acme_with_two_subjects();
    let guard = |roles: &[&str]| crate::HeldRoles {
        tenant: "acme".into(),
        subject: "client:c1".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    };
    let delete = Command::DeleteClient { tenant: "acme".into(), client_id: "c1".into() };
    let guarded = |roles: &[&str]| Command::Guarded { inner: Box::new(delete.clone()), holds_at_most: guard(roles) };
    // c1 holds admin and viewer; a caller checked against admin alone acts on a stale view.
    let out = apply_all(&store, &[by(50, guarded(&["admin"]))]);
    assert!(matches!(&out[0], Outcome::Refused(Rejection::RolesChanged { subject }) if subject == "client:c1"));
    assert!(store.read().unwrap().client("acme", "c1").unwrap().is_some(), "nothing changed");
    // A guard covers only the command on its own subject, and never a wrapper.
    let elsewhere = Command::Guarded {
        inner: Box::new(Command::DeleteClient { tenant: "acme".into(), client_id: "c10".into() }),
        holds_at_most: guard(&["admin", "viewer", "owner"]),
    };
    let wrapped =
        Command::Guarded { inner: Box::new(guarded(&["admin", "viewer"])), holds_at_most: guard(&["admin", "viewer"]) };
    let out = apply_all(&store, &[by(50, elsewhere), by(50, wrapped)]);
    assert!(out.iter().all(|o| matches!(o, Outcome::Refused(Rejection::Inconsistent { .. }))), "{out:?}");
    let out = apply_all(&store, &[by(51, guarded(&["admin", "viewer"]))]);
    assert!(matches!(out[0], Outcome::Applied(Applied::ClientDeleted { .. })), "{:?}", out[0]);
    let reader = store.read().unwrap();
    assert!(reader.client("acme", "c1").unwrap().is_none());
    let entries = reader.audit_entries(1, 1_000).unwrap();
    let refused = entries.iter().find(|e| e.outcome == "refused:roles_changed").expect("the refusal is audited");
    assert_eq!(refused.action, "client.delete", "audited as the action it guarded");
}

fn registration(tenant: &str, user_id: &str, username: &str, session: &str, with_org: bool) -> Command {
    let user = crate::model::UserRecord {
        v: 1,
        tenant: tenant.into(),
        id: user_id.into(),
        username: username.into(),
        email: Some(username.into()),
        display_name: username.into(),
        status: crate::model::UserStatus::Active,
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        created_at_ms: 20,
        updated_at_ms: 20,
        revision: 1,
        totp: None,
        email_verified: false,
        locale: None,
        avatar_sha256: None,
    };
    let session = crate::model::SessionRecord {
        v: 1,
        tenant: tenant.into(),
        id_sha256: session.repeat(64 / session.len()),
        user_id: user_id.into(),
        method: "register".into(),
        created_at_ms: 20,
        expires_at_ms: 20 + 3_600_000,
        idle_timeout_ms: 600_000,
        last_seen_ms: 20,
        pending_mfa: false,
        setup_only: false,
    };
    let organization = with_org.then(|| crate::OwnedOrganization {
        organization: crate::model::OrganizationRecord {
            v: 1,
            tenant: tenant.into(),
            id: format!("o-{user_id}"),
            name: "Smoke".into(),
            created_at_ms: 20,
        },
        membership: crate::model::MembershipRecord {
            v: 1,
            tenant: tenant.into(),
            organization_id: format!("o-{user_id}"),
            user_id: user_id.into(),
            created_at_ms: 20,
        },
        binding: BindingRecord {
            v: 1,
            tenant: tenant.into(),
            id: format!("b-{user_id}"),
            subject: format!("user:{user_id}"),
            role: "owner".into(),
            scope: Some(format!("org:o-{user_id}")),
            created_at_ms: 20,
        },
    });
    Command::Register(Box::new(crate::Registration { user, session, organization }))
}

#[test]
fn registration_is_all_or_nothing_and_sessions_end_with_their_user() {
    let (_d, store) = fresh();
    let mut open = new_tenant("shop");
    open.tenant.self_registration = true;
    let open = Proposal { origin: None, at_ms: 10, actor: "cli:uid:0".into(), command: Command::CreateTenant(open) };
    apply_all(&store, &[bootstrap(), create("closed", 10), open]);
    let out = apply_all(
        &store,
        &[
            by(20, registration("closed", "u1", "a@example.com", "a", false)),
            by(21, registration("shop", "u1", "a@example.com", "a", true)),
            by(22, registration("shop", "u2", "A@example.com", "b", true)),
        ],
    );
    assert!(matches!(out[0], Outcome::Refused(Rejection::RegistrationClosed { .. })), "{:?}", out[0]);
    assert!(matches!(out[1], Outcome::Applied(Applied::Registered { .. })), "{:?}", out[1]);
    assert!(matches!(out[2], Outcome::Refused(Rejection::UsernameTaken { .. })), "a taken email: {:?}", out[2]);
    let reader = store.read().unwrap();
    assert!(reader.user("shop", "u2").unwrap().is_none(), "nothing of a refused registration is written");
    assert!(reader.session("shop", &"b".repeat(64)).unwrap().is_none());
    assert_eq!(reader.roles_held("shop", "user:u1").unwrap(), vec!["owner".to_string()], "owner of the organization");
    assert!(reader.roles_of("shop", "user:u1").unwrap().is_empty(), "but not of the tenant");
    assert!(reader.session("shop", &"a".repeat(64)).unwrap().unwrap().live_at(100));
    drop(reader);

    // Touching keeps it alive; an idle or ended session cannot be touched back to life.
    let touch = |at| by(at, Command::TouchSession { tenant: "shop".into(), id_sha256: "a".repeat(64) });
    let out = apply_all(&store, &[touch(500_000), touch(2_000_000)]);
    assert!(matches!(out[0], Outcome::Applied(Applied::SessionTouched)));
    assert!(matches!(out[1], Outcome::Refused(Rejection::SessionEnded)), "idle past its timeout: {:?}", out[1]);

    // A second session; disabling the user ends both at once.
    let mut second = match registration("shop", "u1", "a@example.com", "c", false) {
        Command::Register(r) => r.session,
        _ => unreachable!(),
    };
    second.method = "password".into();
    let out = apply_all(&store, &[by(30, Command::StartSession(second))]);
    assert!(matches!(out[0], Outcome::Applied(Applied::SessionStarted { .. })), "{:?}", out[0]);
    let mut user = store.read().unwrap().user("shop", "u1").unwrap().unwrap();
    user.status = crate::model::UserStatus::Disabled;
    user.revision = 2;
    apply_all(&store, &[by(40, Command::UpdateUser { user, expected_revision: 1 })]);
    let reader = store.read().unwrap();
    assert!(reader.session("shop", &"a".repeat(64)).unwrap().is_none());
    assert!(reader.session("shop", &"c".repeat(64)).unwrap().is_none());
    assert!(reader.verify_audit().unwrap().failure.is_none());
}

#[test]
fn sessions_end_with_a_new_password_are_pruned_when_over_and_never_exist_in_system() {
    let (_d, store) = fresh();
    let mut open = new_tenant("shop");
    open.tenant.self_registration = true;
    let open = Proposal { origin: None, at_ms: 10, actor: "cli:uid:0".into(), command: Command::CreateTenant(open) };
    apply_all(&store, &[bootstrap(), open, by(21, registration("shop", "u1", "a@example.com", "a", false))]);
    let session = |tag: &str, tenant: &str| match registration(tenant, "u1", "a@example.com", tag, false) {
        Command::Register(r) => r.session,
        _ => unreachable!(),
    };
    let out = apply_all(
        &store,
        &[by(22, Command::StartSession(session("b", "shop"))), by(22, Command::StartSession(session("c", "system")))],
    );
    assert!(matches!(out[0], Outcome::Applied(Applied::SessionStarted { .. })));
    assert!(matches!(out[1], Outcome::Refused(Rejection::Inconsistent { .. })), "no sessions in system: {:?}", out[1]);
    let set =
        Command::SetPassword { tenant: "shop".into(), user_id: "u1".into(), password_hash: "$argon2id$new".into() };
    apply_all(&store, &[by(23, set)]);
    let reader = store.read().unwrap();
    assert!(reader.session("shop", &"a".repeat(64)).unwrap().is_none(), "a new password ends every session");
    assert!(reader.session("shop", &"b".repeat(64)).unwrap().is_none());
    drop(reader);

    apply_all(&store, &[by(30, Command::StartSession(session("d", "shop")))]);
    let out = apply_all(&store, &[by(31, Command::PruneSessions), by(30 + 3_600_001, Command::PruneSessions)]);
    assert!(matches!(out[0], Outcome::Applied(Applied::SessionsPruned { count: 0 })), "{:?}", out[0]);
    assert!(matches!(out[1], Outcome::Applied(Applied::SessionsPruned { count: 1 })), "{:?}", out[1]);
    assert_eq!(store.read().unwrap().ended_sessions(i64::MAX).unwrap(), 0);
}

fn join_token(id: &str, expires_at_ms: i64) -> JoinTokenRecord {
    JoinTokenRecord {
        v: 1,
        id: id.into(),
        secret_sha256: format!("{id}-digest"),
        issued_at_ms: 1_000,
        expires_at_ms,
        redeemed_by: None,
    }
}

#[test]
fn join_tokens_need_cluster_init_and_admit_one_node_once_before_they_expire() {
    let (_d, store) = fresh();
    apply_all(&store, &[bootstrap()]);
    let redeem = |id: &str, digest: &str, node_id: u64, at_ms: i64| {
        by(at_ms, Command::RedeemJoinToken { id: id.into(), secret_sha256: digest.into(), node_id })
    };
    let node_ca = CaRecord { cert_pem: "node-ca".into(), key: sealed("dk-system") };
    let out = apply_all(
        &store,
        &[
            by(1_000, Command::IssueJoinToken(join_token("early", 9_000))),
            by(1_000, Command::InitCluster { node_ca: node_ca.clone() }),
            by(1_000, Command::InitCluster { node_ca }),
            by(1_000, Command::IssueJoinToken(join_token("t1", 5_000))),
            by(1_000, Command::IssueJoinToken(join_token("t2", 5_000))),
            redeem("t1", "wrong-digest", 7, 2_000),
            redeem("t1", "t1-digest", 7, 2_000),
            redeem("t1", "t1-digest", 8, 2_001),
            redeem("t2", "t2-digest", 8, 5_000),
            redeem("absent", "absent-digest", 8, 2_000),
            redeem("t1", "t1-digest", 7, 2_002),
        ],
    );
    assert_eq!(out[0], Outcome::Refused(Rejection::ClusterNotInitialised));
    assert_eq!(out[1], Outcome::Applied(Applied::ClusterInitialised));
    assert_eq!(out[2], Outcome::Refused(Rejection::ClusterAlreadyInitialised));
    assert!(matches!(out[3], Outcome::Applied(Applied::JoinTokenIssued { .. })));
    assert_eq!(out[5], Outcome::Refused(Rejection::JoinTokenInvalid), "a wrong secret");
    assert_eq!(out[6], Outcome::Applied(Applied::JoinTokenRedeemed { id: "t1".into() }));
    assert_eq!(out[7], Outcome::Refused(Rejection::JoinTokenInvalid), "a second use");
    assert_eq!(out[8], Outcome::Refused(Rejection::JoinTokenInvalid), "an expired token");
    assert_eq!(out[9], Outcome::Refused(Rejection::JoinTokenInvalid), "an unknown token");
    assert_eq!(out[10], Outcome::Refused(Rejection::JoinTokenInvalid), "a second use by the same node");
    let reader = store.read().unwrap();
    assert_eq!(reader.join_token("t1").unwrap().unwrap().redeemed_by, Some(7));
    assert_eq!(reader.cluster().unwrap().unwrap().node_ca.unwrap().cert_pem, "node-ca");
    drop(reader);
    // Issuing forgets the tokens that can no longer be used.
    apply_all(&store, &[by(6_000, Command::IssueJoinToken(join_token("t3", 9_000)))]);
    let reader = store.read().unwrap();
    assert!(reader.join_token("t1").unwrap().is_none() && reader.join_token("t2").unwrap().is_none());
    assert!(reader.join_token("t3").unwrap().is_some());
    drop(reader);
    // A removed node is retired for good, and only that node.
    let out = apply_all(&store, &[by(7_000, Command::RetireNode { node_id: 7 })]);
    assert_eq!(out[0], Outcome::Applied(Applied::NodeRetired));
    let reader = store.read().unwrap();
    assert!(reader.is_retired(7).unwrap() && !reader.is_retired(8).unwrap());
}

fn session_of(tenant: &str, user_id: &str, digit: &str, pending_mfa: bool) -> crate::model::SessionRecord {
    crate::model::SessionRecord {
        v: 1,
        tenant: tenant.into(),
        id_sha256: digit.repeat(64),
        user_id: user_id.into(),
        method: "password".into(),
        created_at_ms: 30,
        expires_at_ms: 30 + 3_600_000,
        idle_timeout_ms: 600_000,
        last_seen_ms: 30,
        pending_mfa,
        setup_only: false,
    }
}

/// S45: a TOTP step and a recovery code are each accepted once, in apply; a sign-in waiting
/// for its second factor ends and a full session (a new id) starts in the same write; an
/// admin update of the user keeps the authenticator.
#[test]
fn second_factors_are_spent_once_and_complete_a_pending_sign_in() {
    use crate::command::MfaFactor;
    let (_d, store) = fresh();
    let mut shop = new_tenant("shop");
    shop.tenant.self_registration = true;
    let shop = Proposal { origin: None, at_ms: 10, actor: "cli:uid:0".into(), command: Command::CreateTenant(shop) };
    apply_all(&store, &[bootstrap(), shop]);
    let at = |at_ms: i64, command: Command| Proposal { origin: None, at_ms, actor: "user:u1".into(), command };
    let refused = |out: &Outcome| match out {
        Outcome::Refused(r) => r.code(),
        Outcome::Applied(a) => panic!("applied: {a:?}"),
    };
    let out = apply_all(&store, &[at(20, registration("shop", "u1", "a@example.com", "a", false))]);
    assert!(matches!(out[0], Outcome::Applied(_)), "{:?}", out[0]);
    let (tenant, user_id) = ("shop".to_string(), "u1".to_string());
    let enroll = Command::EnrollTotp { tenant: tenant.clone(), user_id: user_id.clone(), seed: sealed("dk-shop") };
    let confirm = |step: u64| Command::ConfirmTotp {
        tenant: tenant.clone(),
        user_id: user_id.clone(),
        seed_nonce: sealed("dk-shop").nonce,
        step,
        recovery_sha256: vec!["r1".repeat(32), "r2".repeat(32)],
    };
    let complete = |factor: MfaFactor, pending: &str, new: &str| Command::CompleteMfa {
        tenant: tenant.clone(),
        user_id: user_id.clone(),
        factor,
        pending_sha256: pending.repeat(64),
        session: session_of("shop", "u1", new, false),
    };
    let out = apply_all(&store, &[at(21, complete(MfaFactor::TotpStep(5), "p", "q")), at(22, confirm(5))]);
    assert_eq!(refused(&out[0]), "session_ended", "no pending session");
    assert_eq!(refused(&out[1]), "totp_not_enrolled");
    let out = apply_all(&store, &[at(23, enroll.clone()), at(24, confirm(100)), at(25, enroll.clone())]);
    assert!(matches!(out[0], Outcome::Applied(Applied::TotpEnrolled)), "{:?}", out[0]);
    assert!(matches!(out[1], Outcome::Applied(Applied::TotpConfirmed)), "{:?}", out[1]);
    assert_eq!(refused(&out[2]), "totp_already_confirmed");

    // A full session of a user with an authenticator is refused: it must wait for a code.
    let full = Command::StartSession(session_of("shop", "u1", "9", false));
    assert_eq!(refused(&apply_all(&store, &[at(29, full)])[0]), "mfa_required");

    // A pending sign-in completes once per step, and only with a later step.
    let pending = |digit: &str| Command::StartSession(session_of("shop", "u1", digit, true));
    let out = apply_all(
        &store,
        &[
            at(30, pending("1")),
            at(31, complete(MfaFactor::TotpStep(100), "1", "2")),
            at(32, complete(MfaFactor::TotpStep(101), "1", "2")),
            at(33, complete(MfaFactor::TotpStep(101), "2", "3")),
        ],
    );
    assert!(matches!(out[0], Outcome::Applied(_)), "{:?}", out[0]);
    assert_eq!(refused(&out[1]), "mfa_factor_used", "the step confirmation spent");
    assert!(matches!(out[2], Outcome::Applied(Applied::MfaCompleted { .. })), "{:?}", out[2]);
    assert_eq!(refused(&out[3]), "session_not_pending", "a full session needs no second factor");
    let reader = store.read().unwrap();
    assert!(reader.session("shop", &"1".repeat(64)).unwrap().is_none(), "the pending session ended");
    assert!(reader.session("shop", &"2".repeat(64)).unwrap().is_some_and(|s| !s.pending_mfa));
    drop(reader);
    let out = apply_all(
        &store,
        &[
            at(40, pending("4")),
            at(41, complete(MfaFactor::TotpStep(101), "4", "5")),
            at(42, complete(MfaFactor::RecoveryCode("r1".repeat(32)), "4", "5")),
            at(43, pending("6")),
            at(44, complete(MfaFactor::RecoveryCode("r1".repeat(32)), "6", "7")),
        ],
    );
    assert_eq!(refused(&out[1]), "mfa_factor_used", "a step is accepted once");
    assert!(matches!(out[2], Outcome::Applied(Applied::MfaCompleted { .. })), "{:?}", out[2]);
    assert_eq!(refused(&out[4]), "mfa_factor_used", "a recovery code is accepted once");

    // An admin update keeps the authenticator; disabling it spends a factor.
    let user = store.read().unwrap().user("shop", "u1").unwrap().unwrap();
    let renamed = crate::model::UserRecord { display_name: "Ada".into(), totp: None, revision: 2, ..user.clone() };
    let update = Command::UpdateUser { user: renamed, expected_revision: 1 };
    let disable = |factor| Command::DisableTotp { tenant: tenant.clone(), user_id: user_id.clone(), factor };
    let out = apply_all(
        &store,
        &[at(50, update), at(51, disable(MfaFactor::TotpStep(101))), at(52, disable(MfaFactor::TotpStep(102)))],
    );
    assert!(matches!(out[0], Outcome::Applied(_)), "{:?}", out[0]);
    assert_eq!(refused(&out[1]), "mfa_factor_used");
    assert!(matches!(out[2], Outcome::Applied(Applied::TotpDisabled)), "{:?}", out[2]);
    assert!(store.read().unwrap().user("shop", "u1").unwrap().unwrap().totp.is_none());
}

#[test]
fn login_failures_hold_an_account_double_the_hold_and_go_with_their_tenant() {
    use crate::command::LoginFailures;
    use crate::model::LockoutPolicy;
    let (_d, store) = fresh();
    apply_all(&store, &[bootstrap(), create("shop", 10)]);
    let policy = LockoutPolicy {
        limit: 5,
        window_ms: 60_000,
        first_hold_ms: 1_000,
        max_hold_ms: 60_000,
        forget_after_ms: 600_000,
    };
    let at = |at_ms: i64, command: Command| Proposal { origin: None, at_ms, actor: "anonymous".into(), command };
    let failed = |count: u32, last_ms: i64| Command::RecordLoginFailures {
        policy,
        failures: vec![
            LoginFailures { tenant: "shop".into(), account_sha256: "a".repeat(64), count, last_ms },
            LoginFailures { tenant: "gone".into(), account_sha256: "b".repeat(64), count, last_ms },
        ],
    };
    let read = || store.read().unwrap().lockout("shop", &"a".repeat(64)).unwrap();
    let out = apply_all(&store, &[at(100, failed(3, 100))]);
    assert!(matches!(out[0], Outcome::Applied(Applied::LoginFailuresCounted { held: 0 })), "{:?}", out[0]);
    assert_eq!(read().map(|r| (r.failures, r.held_until_ms)), Some((3, 0)));
    assert!(store.read().unwrap().lockout("gone", &"b".repeat(64)).unwrap().is_none(), "no tenant, no record");
    let out = apply_all(&store, &[at(200, failed(9, 200))]);
    assert!(matches!(out[0], Outcome::Applied(Applied::LoginFailuresCounted { held: 1 })), "{:?}", out[0]);
    assert_eq!(
        read().map(|r| (r.failures, r.held_until_ms)),
        Some((0, 1_200)),
        "held; the count never passes the limit"
    );
    apply_all(&store, &[at(1_300, failed(5, 1_300))]);
    assert_eq!(read().unwrap().held_until_ms, 3_300, "the next hold is twice as long");

    let clear = Command::ClearLoginFailures { tenant: "shop".into(), account_sha256: "a".repeat(64) };
    apply_all(&store, &[at(4_000, clear)]);
    assert!(read().is_none(), "a sign-in forgets the failures");

    apply_all(&store, &[at(5_000, failed(1, 5_000))]);
    assert_eq!(store.read().unwrap().forgotten_lockouts(5_000 + 600_000, &policy).unwrap(), 1);
    let out = apply_all(&store, &[at(5_000 + 600_000, Command::PruneLockouts { policy })]);
    assert!(matches!(out[0], Outcome::Applied(Applied::LockoutsPruned { count: 1 })), "{:?}", out[0]);
    apply_all(&store, &[at(700_000, failed(1, 700_000))]);
    assert!(read().is_some());
    apply_all(&store, &[at(700_001, Command::DeleteTenant { id: "shop".into() })]);
    assert!(read().is_none(), "a deleted tenant's records go with it");
}

#[test]
fn an_email_token_is_written_with_its_message_and_spent_once_for_its_purpose() {
    use crate::command::Redemption;
    use crate::model::{EmailPurpose, EmailTokenRecord, OutboxRecord};
    let (_d, store) = fresh();
    let mut shop = new_tenant("shop");
    shop.tenant.self_registration = true;
    let shop = Proposal { origin: None, at_ms: 10, actor: "cli:uid:0".into(), command: Command::CreateTenant(shop) };
    apply_all(&store, &[bootstrap(), shop]);
    let at = |at_ms: i64, command: Command| Proposal { origin: None, at_ms, actor: "user:u1".into(), command };
    apply_all(&store, &[at(20, registration("shop", "u1", "a@example.com", "a", false))]);
    let send = |digit: &str, purpose: EmailPurpose, to: &str| Command::SendEmailToken {
        token: EmailTokenRecord {
            v: 1,
            tenant: "shop".into(),
            token_sha256: digit.repeat(64),
            purpose,
            user_id: "u1".into(),
            email: to.into(),
            created_at_ms: 30,
            expires_at_ms: 1_000,
        },
        message: OutboxRecord {
            v: 1,
            tenant: "shop".into(),
            id: format!("m-{digit}"),
            to: to.into(),
            subject: "s".into(),
            body: sealed("dk-shop"),
            purpose,
            created_at_ms: 30,
            expires_at_ms: 1_000,
            attempts: 0,
            next_attempt_ms: 30,
        },
    };
    let redeem = |digit: &str, purpose: EmailPurpose, effect: Redemption| Command::RedeemEmailToken {
        tenant: "shop".into(),
        token_sha256: digit.repeat(64),
        purpose,
        effect,
    };
    let code = |out: &Outcome| match out {
        Outcome::Refused(r) => r.code(),
        Outcome::Applied(_) => "applied",
    };
    let out = apply_all(
        &store,
        &[
            at(30, send("1", EmailPurpose::VerifyEmail, "a@example.com")),
            at(31, send("2", EmailPurpose::PasswordReset, "someone@else.example")),
            at(32, send("3", EmailPurpose::SignInLink, "a@example.com")),
        ],
    );
    assert_eq!([code(&out[0]), code(&out[1]), code(&out[2])], ["applied", "inconsistent_command", "applied"]);
    assert_eq!(store.read().unwrap().outbox("shop", 10).unwrap().len(), 2, "a message with each token");

    let out = apply_all(
        &store,
        &[
            at(40, redeem("1", EmailPurpose::PasswordReset, Redemption::SetPassword { password_hash: "x".into() })),
            at(41, redeem("1", EmailPurpose::VerifyEmail, Redemption::Verify)),
            at(42, redeem("1", EmailPurpose::VerifyEmail, Redemption::Verify)),
            at(2_000, redeem("3", EmailPurpose::SignInLink, Redemption::SignIn(session_of("shop", "u1", "7", false)))),
        ],
    );
    assert_eq!(
        [code(&out[0]), code(&out[1]), code(&out[2]), code(&out[3])],
        ["email_token_invalid", "applied", "email_token_invalid", "email_token_invalid"],
        "another purpose, then once, then never again; an expired link is nothing"
    );
    let user = store.read().unwrap().user("shop", "u1").unwrap().unwrap();
    assert!(user.email_verified, "the address is proven");
    apply_all(&store, &[at(50, Command::PruneEmail), at(2_000, Command::PruneEmail)]);
    assert!(store.read().unwrap().outbox("shop", 10).unwrap().is_empty(), "expired messages are pruned");
    assert!(store.read().unwrap().email_token("shop", &"3".repeat(64)).unwrap().is_none());
}

#[test]
fn a_passkey_challenge_is_spent_once_and_the_counter_moves_only_from_the_value_checked() {
    use crate::command::SpentChallenge;
    use crate::model::PasskeyRecord;
    let (_d, store) = fresh();
    let mut shop = new_tenant("shop");
    shop.tenant.self_registration = true;
    let shop = Proposal { origin: None, at_ms: 10, actor: "cli:uid:0".into(), command: Command::CreateTenant(shop) };
    apply_all(&store, &[bootstrap(), shop]);
    let at = |at_ms: i64, command: Command| Proposal { origin: None, at_ms, actor: "user:u1".into(), command };
    apply_all(&store, &[at(20, registration("shop", "u1", "a@example.com", "a", false))]);
    let challenge = |c: &str| SpentChallenge { id: c.repeat(32), expires_at_ms: 10_000 };
    let passkey = |id: &str| PasskeyRecord {
        v: 1,
        tenant: "shop".into(),
        credential_id: id.into(),
        user_id: "u1".into(),
        name: "key".into(),
        passkey: "{}".into(),
        sign_count: 0,
        created_at_ms: 30,
        last_used_ms: 30,
    };
    let add = |id: &str, c: &str| Command::AddPasskey { passkey: passkey(id), challenge: challenge(c) };
    let sign_in = |c: &str, was: u32, now: u32, session: &str| Command::PasskeySignIn {
        tenant: "shop".into(),
        credential_id: "cred-1".into(),
        challenge: challenge(c),
        sign_count_was: was,
        sign_count: now,
        passkey: "{\"n\":1}".into(),
        session: session_of("shop", "u1", session, false),
    };
    let code = |out: &Outcome| match out {
        Outcome::Refused(r) => r.code(),
        Outcome::Applied(_) => "applied",
    };
    let out = apply_all(&store, &[at(30, add("cred-1", "a")), at(31, add("cred-2", "a")), at(32, add("cred-1", "b"))]);
    assert_eq!(
        [code(&out[0]), code(&out[1]), code(&out[2])],
        ["applied", "challenge_used", "passkey_exists"],
        "a challenge once; a credential registered to nobody yet"
    );
    let out = apply_all(
        &store,
        &[at(40, sign_in("c", 0, 1, "1")), at(41, sign_in("c", 1, 2, "2")), at(42, sign_in("d", 0, 2, "3"))],
    );
    assert_eq!(
        [code(&out[0]), code(&out[1]), code(&out[2])],
        ["applied", "challenge_used", "passkey_counter_changed"],
        "a sign-in challenge once; a counter checked against a stale value is refused"
    );
    let stored = store.read().unwrap().passkey("shop", "cred-1").unwrap().unwrap();
    assert_eq!((stored.sign_count, stored.passkey.as_str()), (1, "{\"n\":1}"));
    assert!(store.read().unwrap().challenge_spent("shop", &"c".repeat(32)).unwrap());
    apply_all(&store, &[at(50, Command::DeleteUser { tenant: "shop".into(), user_id: "u1".into() })]);
    assert!(store.read().unwrap().passkeys_of("shop", "u1").unwrap().is_empty(), "a deleted user's passkeys go");
}

#[test]
fn a_tenant_that_requires_a_second_factor_has_it_decided_in_apply() {
    use crate::command::SpentChallenge;
    let (_d, store) = fresh();
    let mut shop = new_tenant("shop");
    shop.tenant.self_registration = true;
    shop.tenant.require_mfa = true;
    let shop = Proposal { origin: None, at_ms: 10, actor: "cli:uid:0".into(), command: Command::CreateTenant(shop) };
    apply_all(&store, &[bootstrap(), shop]);
    let at = |at_ms: i64, command: Command| Proposal { origin: None, at_ms, actor: "user:u1".into(), command };
    let code = |out: &Outcome| match out {
        Outcome::Refused(r) => r.code(),
        Outcome::Applied(_) => "applied",
    };
    let setup_only = |command: Command| match command {
        Command::Register(mut r) => {
            r.session.setup_only = true;
            Command::Register(r)
        }
        other => other,
    };
    let out = apply_all(
        &store,
        &[
            at(20, registration("shop", "u1", "a@example.com", "a", false)),
            at(21, setup_only(registration("shop", "u1", "a@example.com", "a", false))),
        ],
    );
    assert_eq!(
        [code(&out[0]), code(&out[1])],
        ["mfa_setup_required", "applied"],
        "a full session needs a factor first"
    );
    let start = |digit: &str, setup: bool| {
        let mut s = session_of("shop", "u1", digit, false);
        s.setup_only = setup;
        Command::StartSession(s)
    };
    assert_eq!(code(&apply_all(&store, &[at(22, start("b", false))])[0]), "mfa_setup_required");

    // With a passkey, a password alone neither signs in nor may add another factor.
    let passkey = crate::model::PasskeyRecord {
        v: 1,
        tenant: "shop".into(),
        credential_id: "cred-1".into(),
        user_id: "u1".into(),
        name: "key".into(),
        passkey: "{}".into(),
        sign_count: 0,
        created_at_ms: 30,
        last_used_ms: 30,
    };
    let challenge = SpentChallenge { id: "c".repeat(32), expires_at_ms: 10_000 };
    apply_all(&store, &[at(30, Command::AddPasskey { passkey, challenge })]);
    assert_eq!(code(&apply_all(&store, &[at(31, start("c", true))])[0]), "passkey_required");
    assert_eq!(code(&apply_all(&store, &[at(32, start("d", false))])[0]), "passkey_required");
}

/// S5, S6, S14: an authorization code is issued only in a live, complete session to a client
/// of the code grant for one of its redirect URIs; it is spent once for its own client and
/// redirect URI; a second use, however presented, revokes the first use's tokens in the same
/// write; an ended session or a disabled user grants nothing; spent codes are kept until their
/// tokens expire.
#[test]
fn an_authorization_code_is_spent_once_for_its_client_and_redirect_uri() {
    use crate::model::{AuthorizationCodeRecord, CodeToken};
    let (_d, store) = fresh();
    let mut shop = new_tenant("shop");
    shop.tenant.self_registration = true;
    let shop = Proposal { origin: None, at_ms: 10, actor: "cli:uid:0".into(), command: Command::CreateTenant(shop) };
    let code_client = |id: &str| {
        let mut c = client("shop", id);
        c.grant_types = vec!["authorization_code".into()];
        c.redirect_uris = vec!["https://app.test/cb".into(), "http://127.0.0.1/cb".into()];
        c
    };
    let mut disabled_client = code_client("off");
    disabled_client.status = ClientStatus::Disabled;
    apply_all(
        &store,
        &[
            bootstrap(),
            shop,
            by(15, Command::CreateClient(code_client("web"))),
            by(16, Command::CreateClient(code_client("other"))),
            by(17, Command::CreateClient(client("shop", "svc"))),
            by(18, Command::CreateClient(disabled_client)),
        ],
    );
    apply_all(&store, &[by(20, registration("shop", "u1", "a@example.com", "a", false))]);
    let out = apply_all(&store, &[by(25, Command::StartSession(session_of("shop", "u1", "p", true)))]);
    assert!(matches!(out[0], Outcome::Applied(_)), "a sign-in waiting for its second factor: {:?}", out[0]);
    let code = |digit: &str, client_id: &str, session: &str, lifetime_ms: i64| AuthorizationCodeRecord {
        v: 1,
        tenant: "shop".into(),
        code_sha256: digit.repeat(64),
        client_id: client_id.into(),
        redirect_uri: "https://app.test/cb".into(),
        user_id: "u1".into(),
        session_sha256: session.repeat(64),
        scopes: vec!["openid".into()],
        nonce: Some("n".into()),
        code_challenge: "c".repeat(43),
        auth_time_ms: 20,
        amr: vec!["pwd".into()],
        created_at_ms: 100,
        expires_at_ms: 100 + lifetime_ms,
        redeemed: None,
    };
    let outcome = |out: &Outcome| match out {
        Outcome::Refused(r) => r.code().to_string(),
        Outcome::Applied(a) => format!("{a:?}").split([' ', '{']).next().unwrap().to_string(),
    };
    let loopback =
        AuthorizationCodeRecord { redirect_uri: "http://127.0.0.1:5000/cb".into(), ..code("8", "web", "a", 60_000) };
    let elsewhere =
        AuthorizationCodeRecord { redirect_uri: "https://evil.test/cb".into(), ..code("9", "web", "a", 60_000) };
    let cases = [
        (code("1", "web", "a", 60_000), "AuthorizationCodeIssued"),
        (code("1", "web", "a", 60_000), "inconsistent_command"),
        (code("2", "web", "b", 60_000), "session_ended"),
        (code("2", "web", "p", 60_000), "session_ended"),
        (code("3", "web", "a", 11 * 60_000), "inconsistent_command"),
        (code("3", "web", "a", 0), "inconsistent_command"),
        (code("4", "nobody", "a", 60_000), "unknown_client"),
        (code("4", "svc", "a", 60_000), "unauthorized_grant"),
        (code("4", "off", "a", 60_000), "client_disabled"),
        (elsewhere, "inconsistent_command"),
        (loopback, "AuthorizationCodeIssued"),
        (code("5", "web", "a", 1_000), "AuthorizationCodeIssued"),
        (code("6", "web", "a", 60_000), "AuthorizationCodeIssued"),
    ];
    for (c, expected) in cases {
        let what = format!(
            "{} {} {}",
            c.code_sha256.chars().next().unwrap(),
            c.client_id,
            c.session_sha256.chars().next().unwrap()
        );
        let out = apply_all(&store, &[by(100, Command::IssueAuthorizationCode(c))]);
        assert_eq!(outcome(&out[0]), expected, "{what}");
    }

    let redeem = |digit: &str, client_id: &str, redirect_uri: &str, jti: &str| Command::RedeemAuthorizationCode {
        tenant: "shop".into(),
        code_sha256: digit.repeat(64),
        client_id: client_id.into(),
        redirect_uri: redirect_uri.into(),
        tokens: vec![CodeToken { jti: jti.into(), exp_ms: 900_000 }],
        refresh: None,
    };
    let out = apply_all(
        &store,
        &[
            by(200, redeem("1", "other", "https://app.test/cb", "t0")),
            by(201, redeem("1", "web", "https://app.test/cb/", "t0")),
            by(202, redeem("1", "web", "https://app.test/cb", "t1")),
            by(2_000, redeem("5", "web", "https://app.test/cb", "t3")),
            by(204, redeem("0", "web", "https://app.test/cb", "t4")),
        ],
    );
    let outcomes: Vec<String> = out.iter().map(outcome).collect();
    assert_eq!(
        outcomes,
        [
            "authorization_code_invalid",
            "authorization_code_invalid",
            "AuthorizationCodeRedeemed",
            "authorization_code_invalid",
            "authorization_code_invalid"
        ],
        "another client's, another URI's, the one use, an expired code, an unknown one"
    );
    let Outcome::Applied(Applied::AuthorizationCodeRedeemed { code: spent }) = &out[2] else { unreachable!() };
    assert_eq!(
        (spent.user_id.as_str(), spent.nonce.as_deref()),
        ("u1", Some("n")),
        "the redemption hands back the grant"
    );
    assert!(!store.read().unwrap().is_revoked("shop", "t1").unwrap());

    // A second use, by any client, with any URI, even after the code's expiry, revokes what
    // the first issued, in the same write; the tokens it would have issued are not recorded.
    let out = apply_all(&store, &[by(90_000, redeem("1", "other", "https://evil.test/", "t9"))]);
    assert!(matches!(out[0], Outcome::Applied(Applied::AuthorizationCodeReused { revoked: 1 })), "{:?}", out[0]);
    let reader = store.read().unwrap();
    assert!(reader.is_revoked("shop", "t1").unwrap());
    assert!(!reader.is_revoked("shop", "t9").unwrap());
    let last = reader.audit_entries(reader.audit_head().unwrap().count, 1).unwrap();
    assert_eq!(last[0].outcome, "replayed:tokens_revoked", "{last:?}");
    drop(reader);

    // Signing out ends what a code grants; so does disabling its user.
    apply_all(&store, &[by(300, Command::EndSession { tenant: "shop".into(), id_sha256: "a".repeat(64) })]);
    let out = apply_all(&store, &[by(301, redeem("6", "web", "https://app.test/cb", "t5"))]);
    assert!(matches!(out[0], Outcome::Refused(Rejection::SessionEnded)), "{:?}", out[0]);
    let user = store.read().unwrap().user("shop", "u1").unwrap().unwrap();
    let disabled = crate::model::UserRecord { status: crate::model::UserStatus::Disabled, revision: 2, ..user };
    let out = apply_all(&store, &[by(401, Command::UpdateUser { user: disabled, expected_revision: 1 })]);
    assert!(matches!(out[0], Outcome::Applied(_)), "{:?}", out[0]);
    let out = apply_all(&store, &[by(402, redeem("8", "web", "http://127.0.0.1:5000/cb", "t6"))]);
    assert!(matches!(out[0], Outcome::Refused(Rejection::UserDisabled { .. })), "{:?}", out[0]);

    // Unspent codes go at their expiry; a spent one stays while its tokens may be valid.
    assert_eq!(store.read().unwrap().expired_authorization_codes(100_000).unwrap(), 3, "codes 5, 6 and 8");
    let out = apply_all(&store, &[by(100_000, Command::PruneAuthorizationCodes)]);
    assert!(matches!(out[0], Outcome::Applied(Applied::AuthorizationCodesPruned { count: 3 })), "{:?}", out[0]);
    assert!(store.read().unwrap().authorization_code("shop", &"1".repeat(64)).unwrap().is_some());
    apply_all(&store, &[by(100_001, Command::DeleteTenant { id: "shop".into() })]);
    assert!(store.read().unwrap().authorization_code("shop", &"1".repeat(64)).unwrap().is_none());
}

#[test]
fn a_consent_adds_scopes_for_an_active_user_and_goes_with_its_user_or_client() {
    use crate::model::ConsentRecord;
    let (_d, store) = fresh();
    let mut shop = new_tenant("shop");
    shop.tenant.self_registration = true;
    let shop = Proposal { origin: None, at_ms: 10, actor: "cli:uid:0".into(), command: Command::CreateTenant(shop) };
    let mut disabled = client("shop", "off");
    disabled.status = ClientStatus::Disabled;
    apply_all(
        &store,
        &[
            bootstrap(),
            shop,
            by(15, Command::CreateClient(client("shop", "web"))),
            by(16, Command::CreateClient(client("shop", "app"))),
            by(17, Command::CreateClient(disabled)),
        ],
    );
    apply_all(&store, &[by(20, registration("shop", "u1", "a@example.com", "a", false))]);
    let consent = |client_id: &str, user_id: &str, scopes: &[&str]| ConsentRecord {
        v: 1,
        tenant: "shop".into(),
        user_id: user_id.into(),
        client_id: client_id.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        granted_at_ms: 30,
    };
    let out = apply_all(
        &store,
        &[
            by(30, Command::GrantConsent(consent("web", "u1", &["openid", "email"]))),
            by(31, Command::GrantConsent(consent("web", "u1", &["profile", "openid"]))),
            by(32, Command::GrantConsent(consent("app", "u1", &["openid"]))),
            by(33, Command::GrantConsent(consent("off", "u1", &["openid"]))),
            by(34, Command::GrantConsent(consent("nobody", "u1", &["openid"]))),
            by(35, Command::GrantConsent(consent("web", "u2", &["openid"]))),
        ],
    );
    let refused: Vec<bool> = out.iter().map(|o| matches!(o, Outcome::Refused(_))).collect();
    assert_eq!(refused, [false, false, false, true, true, true], "{out:?}");
    let given = store.read().unwrap().consent("shop", "u1", "web").unwrap().unwrap();
    assert_eq!(given.scopes, ["email", "openid", "profile"], "added to, sorted, once each");
    assert!(given.covers(&["openid".into(), "email".into()]) && !given.covers(&["roles".into()]));

    // A deleted client's consents go with it; a deleted user's too.
    apply_all(&store, &[by(40, Command::DeleteClient { tenant: "shop".into(), client_id: "app".into() })]);
    assert!(store.read().unwrap().consent("shop", "u1", "app").unwrap().is_none());
    assert!(store.read().unwrap().consent("shop", "u1", "web").unwrap().is_some());
    apply_all(&store, &[by(41, Command::DeleteUser { tenant: "shop".into(), user_id: "u1".into() })]);
    assert!(store.read().unwrap().consent("shop", "u1", "web").unwrap().is_none());
}

#[test]
fn a_refresh_family_rotates_once_per_token_and_a_replay_revokes_it_whole() {
    use crate::model::{AuthorizationCodeRecord, CodeToken, RefreshFamilyRecord};
    let (_d, store) = fresh();
    let mut shop = new_tenant("shop");
    shop.tenant.self_registration = true;
    let shop = Proposal { origin: None, at_ms: 10, actor: "cli:uid:0".into(), command: Command::CreateTenant(shop) };
    let mut web = client("shop", "web");
    web.grant_types = vec!["authorization_code".into(), "refresh_token".into()];
    web.redirect_uris = vec!["https://app.test/cb".into()];
    apply_all(&store, &[bootstrap(), shop, by(15, Command::CreateClient(web))]);
    apply_all(&store, &[by(20, registration("shop", "u1", "a@example.com", "a", false))]);
    let family = |id: &str| RefreshFamilyRecord {
        v: 1,
        tenant: "shop".into(),
        family_id: id.into(),
        client_id: "web".into(),
        user_id: "u1".into(),
        scopes: vec!["openid".into(), "offline_access".into()],
        current_sha256: "0".repeat(64),
        generation: 0,
        auth_time_ms: 20,
        amr: vec!["pwd".into()],
        created_at_ms: 100,
        last_used_ms: 100,
        idle_ms: 10_000,
        expires_at_ms: 50_000,
        last_access: Some(CodeToken { jti: format!("{id}-a0"), exp_ms: 900_000 }),
        revoked: false,
    };
    let code = |digit: &str| AuthorizationCodeRecord {
        v: 1,
        tenant: "shop".into(),
        code_sha256: digit.repeat(64),
        client_id: "web".into(),
        redirect_uri: "https://app.test/cb".into(),
        user_id: "u1".into(),
        session_sha256: "a".repeat(64),
        scopes: vec!["openid".into(), "offline_access".into()],
        nonce: None,
        code_challenge: "c".repeat(43),
        auth_time_ms: 20,
        amr: vec!["pwd".into()],
        created_at_ms: 100,
        expires_at_ms: 60_000,
        redeemed: None,
    };
    let redeem = |digit: &str, f: Option<RefreshFamilyRecord>| Command::RedeemAuthorizationCode {
        tenant: "shop".into(),
        code_sha256: digit.repeat(64),
        client_id: "web".into(),
        redirect_uri: "https://app.test/cb".into(),
        tokens: vec![CodeToken { jti: format!("{digit}-t"), exp_ms: 900_000 }],
        refresh: f,
    };
    let rotate = |id: &str, client_id: &str, presented: &str, next: &str, jti: &str| Command::RotateRefreshToken {
        tenant: "shop".into(),
        family_id: id.into(),
        client_id: client_id.into(),
        presented_sha256: presented.repeat(64),
        next_sha256: next.repeat(64),
        access: CodeToken { jti: jti.into(), exp_ms: 900_000 },
    };
    let out = apply_all(
        &store,
        &[
            by(100, Command::IssueAuthorizationCode(code("1"))),
            by(100, Command::IssueAuthorizationCode(code("2"))),
            by(110, redeem("1", Some(family("f1")))),
            by(111, redeem("2", Some(family("f1")))),
        ],
    );
    assert!(matches!(out[2], Outcome::Applied(Applied::AuthorizationCodeRedeemed { .. })), "{:?}", out[2]);
    assert!(matches!(out[3], Outcome::Refused(_)), "a family id is used once: {:?}", out[3]);
    assert!(store.read().unwrap().refresh_family("shop", "f1").unwrap().is_some(), "written with the redemption");

    let out = apply_all(
        &store,
        &[
            by(200, rotate("f1", "other", "0", "1", "a1")),
            by(201, rotate("f1", "web", "0", "1", "a1")),
            by(202, rotate("f1", "web", "1", "2", "a2")),
        ],
    );
    assert!(matches!(out[0], Outcome::Refused(Rejection::RefreshTokenInvalid)), "another client's: {:?}", out[0]);
    assert!(matches!(out[1], Outcome::Applied(Applied::RefreshTokenRotated { .. })), "{:?}", out[1]);
    assert!(matches!(out[2], Outcome::Applied(Applied::RefreshTokenRotated { .. })), "{:?}", out[2]);
    let f1 = store.read().unwrap().refresh_family("shop", "f1").unwrap().unwrap();
    assert_eq!((f1.generation, f1.current_sha256.as_str(), f1.last_used_ms), (2, "2".repeat(64).as_str(), 202));

    // The first token again: the family is revoked with its last access token, in that write.
    let out = apply_all(&store, &[by(300, rotate("f1", "web", "0", "3", "a3"))]);
    assert!(matches!(out[0], Outcome::Applied(Applied::RefreshTokenReused)), "{:?}", out[0]);
    let reader = store.read().unwrap();
    assert!(reader.refresh_family("shop", "f1").unwrap().unwrap().revoked);
    assert!(reader.is_revoked("shop", "a2").unwrap() && !reader.is_revoked("shop", "a3").unwrap());
    let last = reader.audit_entries(reader.audit_head().unwrap().count, 1).unwrap();
    assert_eq!(last[0].outcome, "replayed:family_revoked");
    drop(reader);
    let out = apply_all(&store, &[by(301, rotate("f1", "web", "2", "4", "a4"))]);
    assert!(matches!(out[0], Outcome::Refused(Rejection::RefreshTokenInvalid)), "the current one went too");

    // A replayed code revokes the family its first use started; idle families end.
    let out = apply_all(&store, &[by(400, Command::IssueAuthorizationCode(code("3")))]);
    assert!(matches!(out[0], Outcome::Applied(_)), "{:?}", out[0]);
    apply_all(&store, &[by(401, redeem("3", Some(family("f3"))))]);
    apply_all(&store, &[by(402, redeem("3", None))]);
    assert!(store.read().unwrap().refresh_family("shop", "f3").unwrap().unwrap().revoked);
    let out = apply_all(&store, &[by(60_000, rotate("f3", "web", "0", "1", "a5"))]);
    assert!(matches!(out[0], Outcome::Refused(Rejection::RefreshTokenInvalid)), "{:?}", out[0]);
    // A new password revokes every family of the user, with their last access tokens (S14).
    apply_all(&store, &[by(500, Command::IssueAuthorizationCode(code("4")))]);
    apply_all(&store, &[by(501, redeem("4", Some(family("f4"))))]);
    assert!(!store.read().unwrap().refresh_family("shop", "f4").unwrap().unwrap().revoked);
    let set =
        Command::SetPassword { tenant: "shop".into(), user_id: "u1".into(), password_hash: "$argon2id$new".into() };
    let out = apply_all(&store, &[by(502, set)]);
    assert!(matches!(out[0], Outcome::Applied(_)), "{:?}", out[0]);
    let reader = store.read().unwrap();
    assert!(reader.refresh_family("shop", "f4").unwrap().unwrap().revoked);
    assert!(reader.is_revoked("shop", "f4-a0").unwrap());
    drop(reader);
    assert_eq!(store.read().unwrap().expired_refresh_families(1_000_000).unwrap(), 3);
    let out = apply_all(&store, &[by(1_000_000, Command::PruneRefreshFamilies)]);
    assert!(matches!(out[0], Outcome::Applied(Applied::RefreshFamiliesPruned { count: 3 })), "{:?}", out[0]);
}
